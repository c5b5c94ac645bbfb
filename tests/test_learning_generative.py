"""Generative runs are judged against the untrained base model on the same eval set: real tiny runs of
summarization (T5) and instruction tuning (GPT-2), the base model evaluated once and cached, and the
statistics of the verdict."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from conftest import load_schema
from peftbench.config.spec import RunSpec
from peftbench.core.runner import run
from peftbench.models.tiny import tiny_model_path
from peftbench.tasks.learning import generative_learning, improvement_pvalue

torch = pytest.importorskip("torch")


@pytest.fixture
def pairs(tmp_path: Path) -> str:
    rows = [{"dialogue": f"A: I have {i} apples\nB: ok, {i} apples then", "summary": f"A has {i} apples.",
             "prompt": f"How many apples does A have? {i}", "completion": f"{i} apples"} for i in range(12)]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(rows))
    return str(path)


def _spec(task: str, family: str, data: str, method: str, lr: float | None = None) -> RunSpec:
    return RunSpec.from_dict({
        "task": task, "model": {"name_or_path": str(tiny_model_path(family)), "dtype": "float32"},
        "data": {"train": data, "eval": data, "n_train": 8, "n_eval": 6, "max_length": 32, "max_target_length": 16,
                 **({"preset": "samsum"} if task == "summarization" else {})},
        "method": {"name": method}, "train": {"max_steps": 2, "batch_size": 4, "lr": lr, "num_threads": 1},
        "generation": {"max_new_tokens": 6}, "save": "none"})


def test_summarization_run_is_judged_against_the_cached_base_model(tmp_path: Path, pairs: str) -> None:
    out = tmp_path / "runs"
    first = run(_spec("summarization", "t5", pairs, "lora"), out, progress=False)
    base = first["baselines"]["base_model"]
    assert set(base) >= {"rougeL", "rouge1", "eval_loss"} and first["baselines"]["base_model_cached"] is False
    learning = first["learning"]
    assert isinstance(learning["learned"], bool) and learning["metric"] == "rougeL"
    assert learning["base_metric"] == base["rougeL"]
    assert "paired bootstrap" in learning["test"]
    jsonschema.validate(first, load_schema("record"))
    (cached,) = (out / ".cache" / "base").glob("*.json")
    # The p-value against a reference: per-example ROUGE-L of the tuned and the base summaries (rouge_score
    # itself), then a one-sided bootstrap of their mean difference with another generator.
    assert learning["improvement_pvalue"] == pytest.approx(
        _reference_improvement_pvalue(first["predictions"], json.loads(cached.read_text())["predictions"]), abs=0.03)
    better = first["metrics"]["rougeL"] > base["rougeL"]
    assert learning["learned"] is (better and learning["improvement_pvalue"] < learning["alpha"])

    # Another method on the same model and data: the base model is not evaluated again.
    second = run(_spec("summarization", "t5", pairs, "ia3"), out, progress=False)
    assert second["baselines"]["base_model_cached"] is True
    assert second["baselines"]["base_model"] == base
    assert len(list((out / ".cache" / "base").glob("*.json"))) == 1


def _reference_improvement_pvalue(tuned: dict, base: dict) -> float:
    import numpy as np
    from rouge_score import rouge_scorer

    assert tuned["gold"] == base["gold"]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    diff = np.array([scorer.score(g, t)["rougeL"].fmeasure - scorer.score(g, b)["rougeL"].fmeasure
                     for t, b, g in zip(tuned["pred"], base["pred"], tuned["gold"], strict=True)])
    rng = np.random.default_rng(12345)
    means = diff[rng.integers(0, diff.size, (20_000, diff.size))].mean(1)
    return float((means <= 0).mean())


def test_a_run_that_does_not_move_did_not_learn(tmp_path: Path, pairs: str) -> None:
    """LoRA starts as the identity; with a negligible learning rate the tuned model is the base model."""
    rec = run(_spec("instruction", "gpt2", pairs, "lora", lr=1e-12), tmp_path / "runs", progress=False)
    base = rec["baselines"]["base_model"]["perplexity"]
    assert rec["metrics"]["perplexity"] == pytest.approx(base, rel=1e-6)
    assert rec["learning"]["learned"] is False
    assert rec["learning"]["reasons"] == [
        f"perplexity {rec['metrics']['perplexity']:.4g} is not below the untrained base model's {base:.4g}"]
    assert rec["learning"]["improvement_pvalue"] is None and "no per-example" in rec["learning"]["test"]


def test_the_base_evaluation_leaves_the_random_state_alone(tmp_path: Path, pairs: str) -> None:
    from peftbench.core.baseline import base_model_scores
    from peftbench.tasks.base import TASKS

    spec = _spec("instruction", "gpt2", pairs, "full").resolved()
    task = TASKS.get("instruction")
    prepared = task.load_data(spec)
    loaded = task.load_model(spec, prepared, {})
    _, eval_enc = task.encode(loaded, prepared, spec)
    loaded.model.train()
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    scores = base_model_scores(spec, task, loaded.model, eval_enc, prepared, cache_dir=tmp_path / "cache",
                               compute_dtype="float32", device="cpu", amp_dtype=None, pad_id=0)
    assert torch.equal(torch.rand(4), expected)
    assert loaded.model.training  # back in training mode
    assert scores["cached"] is False and scores["metrics"]["perplexity"] > 1


@pytest.mark.parametrize(("tuned", "base", "higher", "significant"), [
    ([0.5] * 40, [0.1] * 40, True, True),
    ([0.1] * 40, [0.5] * 40, True, False),
    ([0.3, 0.1] * 20, [0.1, 0.3] * 20, True, False),  # the same mean: no evidence
    ([1.0] * 40, [2.0] * 40, False, True),  # lower is better (a loss)
])
def test_improvement_pvalue(tuned: list[float], base: list[float], higher: bool, significant: bool) -> None:
    assert (improvement_pvalue(tuned, base, higher) < 0.05) is significant


def test_generative_verdict_wording() -> None:
    worse = generative_learning("rougeL", True, {"rougeL": 0.1}, {"rougeL": 0.2})
    assert worse["learning"]["learned"] is False
    assert worse["learning"]["reasons"] == ["rougeL 0.1 is not above the untrained base model's 0.2"]
    better = generative_learning("rougeL", True, {"rougeL": 0.3}, {"rougeL": 0.2})
    assert better["learning"]["learned"] is True and better["learning"]["reasons"] == []
    noisy = generative_learning("rougeL", True, {"rougeL": 0.21}, {"rougeL": 0.2},
                                ([0.3, 0.12] * 10, [0.2, 0.2] * 10))
    assert noisy["learning"]["learned"] is False and "not significantly above" in noisy["learning"]["reasons"][0]
    assert generative_learning("rougeL", True, {}, {"rougeL": 0.2})["learning"] is None
