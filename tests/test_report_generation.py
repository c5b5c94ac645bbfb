"""Reports on generation tasks: real short summarization and instruction runs on tiny models."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def gen_records(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """t5 summarization (lora, ia3 x 2 seeds) and gpt2 instruction (lora, ia3 x 2 seeds), 2 steps each."""
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run
    from peftbench.models.tiny import tiny_model_path
    from peftbench.records.io import load_records

    root = tmp_path_factory.mktemp("gen")
    dialogues = [{"dialogue": f"Ann: I have {i} cats.\nBob: Nice, {i} is a lot!", "summary": f"Ann has {i} cats."}
                 for i in range(14)]
    instructions = [{"instruction": f"Add {i} and 2.", "context": "", "response": f"It is {i + 2}."}
                    for i in range(14)]
    out = root / "runs"
    for task, family, rows in (("summarization", "t5", dialogues), ("instruction", "gpt2", instructions)):
        train, eval_ = root / f"{task}-train.json", root / f"{task}-eval.json"
        train.write_text(json.dumps(rows[:8]))
        eval_.write_text(json.dumps(rows[8:]))
        for method in ("lora", "ia3"):
            for seed in (1, 2):
                spec = RunSpec.from_dict({
                    "task": task, "model": {"name_or_path": str(tiny_model_path(family)), "dtype": "float32"},
                    "data": {"train": str(train), "eval": str(eval_), "max_length": 32, "max_target_length": 16},
                    "method": {"name": method},
                    "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "log_every": 1, "num_threads": 1,
                              "seed": seed},
                    "generation": {"max_new_tokens": 6}, "save": "none",
                })
                run(spec, out, progress=False, log=lambda _msg: None)
    recs = load_records(out)
    assert len(recs) == 8 and all(r["status"] == "success" for r in recs)
    return recs


def test_summarization_pairs_use_per_example_rouge(gen_records: list[dict[str, Any]]) -> None:
    from peftbench.reports.analysis import analyze
    from peftbench.reports.scores import per_example_scores

    summ = [r for r in gen_records if r["task"] == "summarization"]
    for r in summ:
        scores = per_example_scores(r, "rougeL")
        assert scores is not None and len(scores) == len(r["predictions"]["pred"])
        assert sum(scores) / len(scores) == pytest.approx(r["metrics"]["rougeL"])
    analysis = analyze(gen_records)
    assert analysis.tasks == ["instruction", "summarization"]
    (pair,) = analysis.pairs["summarization"]
    assert pair["metric"] == "rougeL" and pair["test"] == "paired_bootstrap" and len(pair["per_seed"]) == 2
    # Each seed's p-value against a reference two-sided bootstrap of the same runs' per-example scores,
    # matched by seed; the pair's p-value is the largest (intersection-union test).
    by_id = {r["run_id"]: r for r in summ}
    refs = []
    for test in pair["per_seed"]:
        assert test["seed_a"] == test["seed_b"]
        ref = _reference_two_sided_pvalue(per_example_scores(by_id[test["run_a"]], "rougeL"),
                                          per_example_scores(by_id[test["run_b"]], "rougeL"))
        assert test["pvalue"] == pytest.approx(ref, abs=0.03)
        refs.append(test["pvalue"])
    assert pair["pvalue"] == max(refs)
    # Two steps leave lora and ia3 with the same summaries (p = 1): give ia3 the reference summary on two
    # eval examples, so that the per-example differences vary and the p-value lies inside (0, 1).
    perturbed = copy.deepcopy(gen_records)
    for r in perturbed:
        if r["task"] == "summarization" and r["method"] == "ia3":
            preds = r["predictions"]
            preds["pred"] = preds["gold"][:2] + preds["pred"][2:]
    by_id = {r["run_id"]: r for r in perturbed}
    (pair,) = analyze(perturbed).pairs["summarization"]
    for test in pair["per_seed"]:
        ref = _reference_two_sided_pvalue(per_example_scores(by_id[test["run_a"]], "rougeL"),
                                          per_example_scores(by_id[test["run_b"]], "rougeL"))
        assert 0.05 < ref < 0.5 and test["pvalue"] == pytest.approx(ref, abs=0.04)  # one-sided: half of it


def _reference_two_sided_pvalue(a: list[float], b: list[float]) -> float:
    """2·min(P(mean diff ≤ 0), P(mean diff ≥ 0)) over 20,000 resamples; 1 or 0 when the differences are constant."""
    import numpy as np

    diff = np.asarray(a) - np.asarray(b)
    if diff.std() == 0:
        return 1.0 if diff.mean() == 0 else 0.0
    means = diff[np.random.default_rng(12345).integers(0, diff.size, (20_000, diff.size))].mean(1)
    return min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))


def test_instruction_without_per_example_scores_falls_back_to_welch(gen_records: list[dict[str, Any]]) -> None:
    from scipy import stats

    from peftbench.reports.analysis import analyze

    analysis = analyze(gen_records)
    (pair,) = analysis.pairs["instruction"]
    assert pair["metric"] == "perplexity" and pair["test"] == "welch"
    by = {c.label: c for c in analysis.task_configs("instruction")}
    a, b = by[pair["a"]], by[pair["b"]]
    ref = stats.ttest_ind(a.stats["perplexity"]["values"], b.stats["perplexity"]["values"], equal_var=False)
    assert pair["pvalue"] == pytest.approx(ref.pvalue)
    # Lower perplexity is better: the best configuration has the smallest mean.
    best = [c for c in analysis.task_configs("instruction") if c.best]
    assert best and best[0].mean("perplexity") == min(c.mean("perplexity") for c in by.values())


def test_rouge_per_example_mean_is_the_corpus_score() -> None:
    from peftbench.tasks.metrics import rouge_per_example, rouge_scores

    preds = ["Ann has two cats. She likes them.", "Bob runs home", "", "the meeting moved to Friday"]
    refs = ["Ann has 2 cats.", "Bob is running home.", "Nothing happened.", "The meeting is on Friday. Bring notes."]
    corpus = rouge_scores(preds, refs)
    for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        per = rouge_per_example(preds, refs, kind)
        assert sum(per) / len(per) == pytest.approx(corpus[kind])
    assert rouge_per_example(preds, refs, "rouge1")[2] == 0.0


def test_generation_report_renders(gen_records: list[dict[str, Any]], tmp_path: Path) -> None:
    from peftbench.reports.build import build_report

    html_path = build_report(gen_records, tmp_path / "rep")
    text = html_path.read_text()
    assert "Task: summarization (metric: rougeL)" in text and "Task: instruction (metric: perplexity)" in text
    assert "paired_bootstrap" in text and "welch" in text
    for r in gen_records:
        assert r["run_id"] in text
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "no successful run matches baseline 'full'" in md
