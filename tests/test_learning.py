"""Did it learn? The majority/chance baselines and the verdict (tasks/learning.py), and what the
report makes of runs that did not learn (no stars, no Pareto membership, no praise, a first screen
that says so) or that did (one recommendation with its evidence)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

LABELS = ["negative", "positive"]
# The scenario: 150 eval reviews, 82 positive (always answering "positive" scores 0.5467).
GOLD = [1] * 82 + [0] * 68
random.Random(5).shuffle(GOLD)
TRAINABLE = {"full": 22_700_000, "lora": 150_000, "ia3": 17_000}


def noisy(gold: list[int], accuracy: float, seed: int) -> list[int]:
    """Predictions that are right on a fixed share of examples, wrong ones spread over both classes."""
    rng = random.Random(seed)
    wrong = set(rng.sample(range(len(gold)), round(len(gold) * (1 - accuracy))))
    return [1 - g if i in wrong else g for i, g in enumerate(gold)]


def record(method: str, pred: list[int], *, seed: int = 1, gold: list[int] = GOLD, verdict: bool = True,
           time_s: float = 10.0) -> dict[str, Any]:
    """A success record as the runner writes it (metrics from the task's own metric function);
    `verdict=False` leaves out `baselines`/`learning`, as records made before they existed."""
    from peftbench.tasks.learning import classification_learning
    from peftbench.tasks.metrics import classification_metrics

    metrics = classification_metrics(gold, pred, LABELS)
    metrics["eval_loss"] = 0.6931
    rec: dict[str, Any] = {
        "schema_version": 1, "run_id": f"{method}-{seed}", "status": "success", "task": "classification",
        "method": method, "model_name": "embedded", "seed": seed, "main_metric": "accuracy", "metrics": metrics,
        "spec": {"task": "classification", "model": {"name_or_path": "embedded"}, "method": {"name": method},
                 "train": {"seed": seed, "epochs": 1, "lr": 1e-4}},
        "params": {"trainable": TRAINABLE[method], "total": 22_700_000,
                   "trainable_pct": 100 * TRAINABLE[method] / 22_700_000},
        "train": {"time_s": time_s, "peak_memory_bytes": 2**30}, "artifact": {"size_bytes": 4 * TRAINABLE[method]},
        "predictions": {"pred": pred, "gold": gold},
    }
    if verdict:
        rec.update(classification_learning(pred, gold, LABELS))
    return rec


def collapsed_runs(verdict: bool = True) -> list[dict[str, Any]]:
    """The issue's runs: three methods, one epoch, every eval review predicted 'negative'."""
    return [record(m, [0] * len(GOLD), verdict=verdict) for m in ("full", "lora", "ia3")]


# ---- the statistics ------------------------------------------------------------------------------


def test_baselines_and_verdict_of_a_collapsed_run() -> None:
    from scipy.stats import binomtest

    from peftbench.tasks.learning import classification_learning

    out = classification_learning([0] * 150, GOLD, LABELS)
    base, learning = out["baselines"], out["learning"]
    assert base["majority_class"] == "positive" and base["majority_accuracy"] == pytest.approx(82 / 150)
    assert base["chance_accuracy"] == 0.5 and base["n_eval"] == 150 and base["n_classes"] == 2
    # Always 'positive': F1 of that class is 2p/(1+p), the other class scores 0.
    assert base["majority_f1_macro"] == pytest.approx((2 * (82 / 150) / (1 + 82 / 150)) / 2)
    assert learning["learned"] is False and learning["collapsed"] is True
    assert learning["dominant_class"] == "negative" and learning["dominant_share"] == 1.0
    assert learning["accuracy_pvalue"] == pytest.approx(binomtest(68, 150, 82 / 150, alternative="greater").pvalue)
    assert any("collapsed to one class" in r for r in learning["reasons"])


@pytest.mark.parametrize("accuracy,learned", [(0.85, True), (0.55, False), (0.65, True)])
def test_verdict_follows_the_binomial_test_against_the_majority(accuracy: float, learned: bool) -> None:
    from scipy.stats import binomtest

    from peftbench.tasks.learning import classification_learning

    pred = noisy(GOLD, accuracy, seed=3)
    out = classification_learning(pred, GOLD, LABELS)["learning"]
    correct = sum(p == g for p, g in zip(pred, GOLD, strict=True))
    p = binomtest(correct, 150, 82 / 150, alternative="greater").pvalue
    assert out["accuracy_pvalue"] == pytest.approx(p)
    assert out["learned"] is learned and bool(p < 0.05) is learned and not out["collapsed"]


def test_lopsided_gold_is_not_a_collapse_but_a_one_class_model_is() -> None:
    from peftbench.tasks.learning import classification_learning

    gold = [0] * 97 + [1] * 3
    perfect = classification_learning(gold, gold, LABELS)["learning"]
    assert perfect["dominant_share"] == 0.97 and not perfect["collapsed"]
    skewed = [0] * 60 + [1] * 40
    one_class = classification_learning([0] * 97 + [1] * 3, skewed, LABELS)["learning"]
    assert one_class["collapsed"] and not one_class["learned"]


# ---- the report on runs that did not learn -------------------------------------------------------


@pytest.mark.parametrize("verdict", [True, False], ids=["new-records", "old-records"])
def test_nothing_learned_awards_nothing_and_says_so_first(verdict: bool, tmp_path: Path) -> None:
    """The issue's scenario, from records with the verdict and from old ones (computed from predictions)."""
    from peftbench.reports.build import write_report
    from peftbench.reports.sections import terminal_report

    html_path, analysis = write_report(collapsed_runs(verdict), tmp_path)
    configs = analysis.task_configs("classification")
    assert [c.learned for c in configs] == [False, False, False]
    assert not any(c.best for c in configs)
    decision = analysis.decisions["classification"]
    assert decision["kind"] == "no_learner" and decision["choice"] is None
    assert decision["text"].startswith("No method learned")
    assert "'positive' (accuracy 0.5467)" in decision["text"] and "peftbench tune" in decision["text"]
    for cmp in analysis.comparisons["classification"]:
        assert cmp["verdict"]["label"] == "did not learn" and "fewer" not in cmp["verdict"]["text"]
    text = terminal_report(analysis)
    assert text.splitlines()[1].startswith("⚠ No method learned") and "★" not in text
    assert "-- did not learn --" in text and "collapsed to 'negative'" in text
    md = (tmp_path / "report.md").read_text()
    assert md.index("No method learned") < md.index("### Dashboard") and "| ★" not in md
    html = html_path.read_text()
    assert "<p class='lead warn'>⚠ No method learned" in html
    exported = json.loads((tmp_path / "report.json").read_text())
    assert {r["learned"] for r in exported} == {False} and {r["majority_accuracy"] for r in exported} == {82 / 150}
    saved = json.loads((tmp_path / "analysis.json").read_text())["tasks"]["classification"]
    assert saved["best"] is None and saved["decision"]["kind"] == "no_learner"


def test_non_learners_are_never_on_a_pareto_front() -> None:
    from peftbench.reports.analysis import analyze
    from peftbench.reports.trust import forgetting_points

    runs = [record("full", noisy(GOLD, 0.9, 1)), record("lora", noisy(GOLD, 0.8, 2)), record("ia3", [0] * 150)]
    for r, forgot in zip(runs, (0.2, 0.1, 0.0), strict=True):
        r["retention"] = {"forgetting": forgot, "forgetting_metric": "probe_accuracy_drop"}
    analysis = analyze(runs)
    points = {p["label"]: p for p in forgetting_points(analysis.task_configs("classification"))}
    # ia3 forgot least: on the front were it not a non-learner.
    assert points["ia3"]["pareto"] is False and points["ia3"]["learned"] is False
    assert points["full"]["pareto"] and points["lora"]["pareto"]
    assert [c.label for c in analysis.configs if c.best] == ["full"]
    ia3 = next(c for c in analysis.comparisons["classification"] if c["label"] == "ia3")
    assert ia3["verdict"]["label"] == "did not learn" and "fewer trainable parameters" not in ia3["verdict"]["text"]


# ---- the recommendation ------------------------------------------------------------------------


def learning_runs(seeds: tuple[int, ...]) -> list[dict[str, Any]]:
    """lora clearly ahead of full and ia3 (each seed right on 92% vs 70%), same eval set."""
    out = []
    for s in seeds:
        out += [record("full", noisy(GOLD, 0.70, 10 + s), seed=s, time_s=40.0),
                record("lora", noisy(GOLD, 0.92, 20 + s), seed=s, time_s=20.0),
                record("ia3", noisy(GOLD, 0.70, 30 + s), seed=s, time_s=15.0)]
    return out


def test_several_seeds_give_one_recommendation_with_its_interval() -> None:
    from peftbench.reports.analysis import analyze

    analysis = analyze(learning_runs((1, 2, 3)))
    d = analysis.decisions["classification"]
    lora = next(c for c in analysis.configs if c.method == "lora")
    st = lora.stats["accuracy"]
    assert d["kind"] == "recommend" and d["choice"] == "lora" and not d["thin"] and d["seeds"] == 3
    assert d["text"].startswith(f"Use lora: accuracy {st['mean']:.4f} (95% CI [{st['ci_low']:.4f}, "
                                f"{st['ci_high']:.4f}], 3 seeds), significantly better than every other method that learned")
    assert d["text"].endswith(".") and ". " not in d["text"]  # one sentence
    # The best is compared with everyone, besides the baseline comparison.
    assert {c["baseline"] for c in analysis.best_comparisons["classification"]} == {"lora"}


def test_one_seed_says_the_evidence_is_thin() -> None:
    from peftbench.reports.analysis import analyze

    d = analyze(learning_runs((1,))).decisions["classification"]
    assert d["choice"] == "lora" and d["thin"] and "(one seed)" in d["text"]
    assert "the evidence is thin" in d["text"] and "--set train.seed=" in d["text"]


def test_tied_methods_are_not_separated() -> None:
    from peftbench.reports.analysis import analyze

    runs = [record("lora", noisy(GOLD, 0.80, 1)), record("ia3", noisy(GOLD, 0.79, 2))]
    d = analyze(runs).decisions["classification"]
    assert d["thin"] and d["rivals"] == ["ia3"] and "too little evidence to separate lora and ia3" in d["text"]


def test_priority_and_floor_change_the_choice() -> None:
    from peftbench.reports.analysis import analyze

    runs = [record("lora", noisy(GOLD, 0.80, 1), time_s=20.0), record("ia3", noisy(GOLD, 0.79, 2), time_s=5.0),
            record("full", noisy(GOLD, 0.60, 3), time_s=50.0)]
    d = analyze(runs, prefer="params").decisions["classification"]
    assert d["choice"] == "ia3" and "fewer trainable parameters than the best-scoring lora" in d["text"]
    assert analyze(runs, prefer="time").decisions["classification"]["choice"] == "ia3"
    floor = analyze(runs, floors={"accuracy": ("min", 0.85)}).decisions["classification"]
    assert floor["kind"] == "below_floor" and "accuracy ≥ 0.85" in floor["text"] and floor["choice"] is None


def test_cli_prefer_and_metric_floors(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from peftbench.cli.app import cli
    from peftbench.records.io import atomic_write_json

    for r in learning_runs((1,)):
        atomic_write_json(tmp_path / "runs" / r["run_id"] / "result.json", r)
    ok = CliRunner().invoke(cli, ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"),
                                  "--prefer", "params", "--min-accuracy", "0.6"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines()[1].startswith("Use ")
    typo = CliRunner().invoke(cli, ["report", str(tmp_path / "runs"), "--min-acuracy", "0.6"])
    assert typo.exit_code == 2 and "no record has metric 'acuracy'" in typo.output
    bad = CliRunner().invoke(cli, ["report", str(tmp_path / "runs"), "--min-accuracy", "high"])
    assert bad.exit_code == 2 and "needs a number" in bad.output


def test_a_real_run_records_its_baselines_and_verdict(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    """The runner writes `baselines` and `learning` from its own eval predictions, valid against the schema."""
    import jsonschema

    from conftest import load_schema, tiny_spec
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run
    from peftbench.reports.learning import run_learning
    from peftbench.tasks.learning import classification_learning

    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora", seed=1, max_steps=2, num_threads=1))
    rec = run(spec, tmp_path, progress=False, log=lambda _msg: None)
    jsonschema.validate(rec, load_schema("record"))
    preds = rec["predictions"]
    expected = classification_learning(preds["pred"], preds["gold"], rec["metrics"]["labels"])
    assert rec["baselines"] == expected["baselines"] and rec["learning"] == expected["learning"]
    gold = preds["gold"]
    assert rec["baselines"]["majority_accuracy"] == max(gold.count(c) for c in set(gold)) / len(gold)
    # An old record (without the fields) gets the same verdict from its predictions.
    old = {k: v for k, v in rec.items() if k not in ("baselines", "learning")}
    assert run_learning(old)["learning"] == rec["learning"] and run_learning(old)["source"] == "predictions"


def test_figures_leave_out_non_learners_and_draw_the_majority_line(tmp_path: Path) -> None:
    from peftbench.reports.analysis import analyze
    from peftbench.reports.plots import pareto, reference_lines

    mixed = analyze([record("full", noisy(GOLD, 0.9, 1)), record("ia3", [0] * 150)]).task_configs("classification")
    assert reference_lines(mixed, "accuracy") == [("majority class", 82 / 150), ("chance", 0.5)]
    assert reference_lines(mixed, "eval_loss") == []
    assert pareto(mixed, tmp_path / "mixed.png", title="t") is not None
    none = analyze(collapsed_runs()).task_configs("classification")
    assert pareto(none, tmp_path / "none.png", title="t") is None and not (tmp_path / "none.png").exists()
