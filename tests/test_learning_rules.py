"""The rules of "did it learn?" (tasks/learning.py), each against its definition: the majority and
chance baselines, the two tests against the majority predictor (checked against a plain-Python
reference over the same resamples), the collapse boundary, the reasons' wording, and the
generative verdict against the untrained base model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from peftbench.tasks.learning import (
    ALPHA,
    accuracy_pvalue,
    classification_learning,
    f1_pvalue,
    generative_learning,
    improvement_pvalue,
    majority_baselines,
    majority_class,
)

LABELS = ["neg", "pos"]


def reference_f1_pvalue(pred: list[int], gold: list[int], k: int, majority: int) -> float:
    """Share of 2000 resamples (numpy's default_rng(0), one draw) where the run's macro F1 is not above
    the always-`majority` predictor's, both computed by counting."""
    n = len(gold)
    idx = np.random.default_rng(0).integers(0, n, (2000, n))
    not_above = 0
    for row in idx.tolist():
        g, p = [gold[i] for i in row], [pred[i] for i in row]
        f1s = []
        for c in range(k):
            tp = sum(1 for a, b in zip(g, p, strict=True) if a == c and b == c)
            denom = g.count(c) + p.count(c)
            f1s.append(2 * tp / denom if denom else 0.0)
        n_major = g.count(majority)
        not_above += sum(f1s) / k <= 2 * n_major / (n_major + n) / k
    return not_above / 2000


def reference_improvement_pvalue(tuned: list[float], base: list[float], higher: bool) -> float:
    diff = np.asarray(tuned) - np.asarray(base)
    diff = diff if higher else -diff
    idx = np.random.default_rng(0).integers(0, len(diff), (2000, len(diff)))
    return float((diff[idx].mean(1) <= 0).mean())


# ---- baselines ------------------------------------------------------------------------------------


def test_majority_class_breaks_ties_to_the_lowest_id() -> None:
    assert majority_class([2, 1, 1, 2, 0]) == 1 and majority_class([3, 3, 0]) == 3 and majority_class([]) == 0


def test_baselines_count_classes_beyond_the_label_names() -> None:
    assert majority_baselines([0, 3, 3], ["a", "b"]) == {
        "majority_class": "3", "majority_accuracy": pytest.approx(2 / 3),
        "majority_f1_macro": pytest.approx((2 * (2 / 3) / (1 + 2 / 3)) / 4), "chance_accuracy": 0.25,
        "n_eval": 3, "n_classes": 4}
    assert majority_baselines([1, 0, 0], LABELS)["majority_class"] == "neg"
    assert majority_baselines([2, 2, 0], LABELS)["majority_class"] == "2"  # one past the names
    assert majority_baselines([], ["only"])["n_classes"] == 1 and majority_baselines([], ["only"])["chance_accuracy"] == 1.0
    assert majority_baselines([], LABELS) == {"majority_class": "neg", "majority_accuracy": 0.0,
                                              "majority_f1_macro": 0.0, "chance_accuracy": 0.5, "n_eval": 0,
                                              "n_classes": 2}


# ---- the two tests --------------------------------------------------------------------------------


def test_accuracy_pvalue_is_the_one_sided_exact_binomial_with_the_rate_clamped() -> None:
    assert accuracy_pvalue(14, 20, 0.5) == pytest.approx(binomtest(14, 20, 0.5, alternative="greater").pvalue)
    assert accuracy_pvalue(0, 0, 0.5) == 1.0
    assert accuracy_pvalue(5, 10, 1.2) == pytest.approx(1.0) and accuracy_pvalue(5, 10, -0.1) == 0.0


@pytest.mark.parametrize("pred,gold,k,majority", [
    ([0, 1, 2, 2, 1, 0, 1, 1, 2, 0] * 4, [0, 1, 2, 1, 1, 0, 2, 1, 2, 1] * 4, 3, 1),
    ([1] * 30 + [0] * 10, [1] * 25 + [0] * 15, 2, 1),
    ([0, 1] * 20, [1, 0] * 20, 3, 0),
    # A run close to the majority predictor: p = 0.057, neither 0 nor 1, so every resample counts.
    ([2, 1, 1, 0, 1, 0, 2, 2, 1, 0, 0, 2, 0, 0, 1, 0, 0, 1, 2, 1, 1, 2, 0, 0, 1, 1, 1, 1, 1, 2, 2, 1, 0, 2, 0, 1, 2, 2,
      2, 2], [0, 1, 2, 1, 1, 0, 2, 1, 2, 1] * 4, 3, 1),
])
def test_f1_pvalue_matches_a_counting_reference(pred: list[int], gold: list[int], k: int, majority: int) -> None:
    assert f1_pvalue(pred, gold, k, majority) == reference_f1_pvalue(pred, gold, k, majority)


def test_f1_pvalue_over_large_eval_sets_uses_all_resamples() -> None:
    gold = [0, 1, 1] * 900
    assert f1_pvalue([1] * len(gold), gold, 2, 1) == 1.0  # the majority predictor is never above itself
    assert f1_pvalue(gold, gold, 2, 1) == 0.0
    assert f1_pvalue([], [], 2, 0) == 1.0


# ---- the verdict ---------------------------------------------------------------------------------


def test_a_collapsed_run_has_every_reason_in_words() -> None:
    gold = [1] * 12 + [0] * 8
    out = classification_learning([1] * 20, gold, LABELS)
    p_acc = binomtest(12, 20, 0.6, alternative="greater").pvalue
    assert out["learning"] == {
        "learned": False, "collapsed": True, "dominant_class": "pos", "dominant_share": 1.0,
        "accuracy_pvalue": pytest.approx(p_acc), "f1_macro_pvalue": 1.0, "alpha": ALPHA,
        "test": "one-sided exact binomial (accuracy) and paired bootstrap (macro F1) against the majority predictor",
        "reasons": ["collapsed to one class: predicts 'pos' for 100% of 20 eval examples",
                    f"accuracy 0.6000 is not significantly above always answering 'pos' (0.6000; exact binomial "
                    f"p={p_acc:.3g})",
                    "macro F1 is not significantly above the majority predictor's 0.3750 (bootstrap p=1)"]}
    assert out["baselines"] == majority_baselines(gold, LABELS)
    assert ALPHA == 0.05


def test_a_run_that_learned_has_no_reasons() -> None:
    gold = [0, 1] * 20
    out = classification_learning(gold, gold, LABELS)["learning"]
    assert out["learned"] is True and out["reasons"] == [] and out["f1_macro_pvalue"] == 0.0
    assert out["accuracy_pvalue"] == pytest.approx(0.5 ** 40) and not out["collapsed"]
    assert out["dominant_class"] == "neg" and out["dominant_share"] == 0.5


@pytest.mark.parametrize("n_dominant,gold_dominant,collapsed", [(19, 10, True), (18, 10, False),
                                                                (20, 19, False), (20, 18, True)])
def test_collapse_starts_at_95_percent_unless_the_gold_labels_are_as_lopsided(n_dominant: int, gold_dominant: int,
                                                                              collapsed: bool) -> None:
    pred = [0] * n_dominant + [1] * (20 - n_dominant)
    gold = [0] * gold_dominant + [1] * (20 - gold_dominant)
    out = classification_learning(pred, gold, LABELS)["learning"]
    assert out["collapsed"] is collapsed and out["dominant_share"] == n_dominant / 20
    assert any(r.startswith("collapsed to one class") for r in out["reasons"]) is collapsed


def test_predictions_and_gold_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        classification_learning([0, 1], [0, 1, 1], LABELS)


def test_no_eval_examples_learn_nothing() -> None:
    out = classification_learning([], [], LABELS)["learning"]
    assert out["reasons"][0].startswith("accuracy 0.0000 is not significantly above always answering 'neg' (0.0000;")
    assert out["learned"] is False and out["collapsed"] is False and len(out["reasons"]) == 2
    assert out["dominant_class"] == "neg" and out["dominant_share"] == 0.0
    assert out["accuracy_pvalue"] == 1.0 and out["f1_macro_pvalue"] == 1.0


# ---- generative tasks ------------------------------------------------------------------------------


def test_improvement_pvalue_matches_its_definition() -> None:
    tuned, base = [0.3, 0.15, 0.3, 0.2, 0.4] * 6, [0.2, 0.2, 0.2, 0.25, 0.3] * 6
    assert improvement_pvalue(tuned, base, True) == reference_improvement_pvalue(tuned, base, True)
    assert improvement_pvalue(base, tuned, False) == reference_improvement_pvalue(base, tuned, False)
    assert 0.0 < improvement_pvalue(tuned, base, True) < 0.05
    assert improvement_pvalue([0.2] * 10, [0.2] * 10, True) == 1.0  # no difference is no improvement
    assert improvement_pvalue([], [], True) == 1.0


def test_generative_verdict_records_the_base_models_numbers_and_the_test_used() -> None:
    out = generative_learning("rougeL", True, {"rougeL": 0.3}, {"rougeL": 0.2, "n": 5, "cached": True, "name": "x"},
                              base_cached=True)
    assert out == {"baselines": {"base_model": {"rougeL": 0.2, "n": 5}, "base_model_cached": True},
                   "learning": {"learned": True, "reasons": [], "collapsed": False, "base_metric": 0.2,
                                "metric": "rougeL", "improvement_pvalue": None, "alpha": ALPHA,
                                "test": "the main metric against the untrained base model's (no per-example scores)"}}
    assert generative_learning("rougeL", True, {"rougeL": 0.3}, {"rougeL": 0.2})["baselines"]["base_model_cached"] is False
    assert generative_learning("rougeL", True, {"rougeL": 0.3}, {"rougeL": "x", "bleu": 1.5}) == {
        "baselines": {"base_model": {"bleu": 1.5}, "base_model_cached": False}, "learning": None}
    assert generative_learning("rougeL", True, {}, {"rougeL": 0.2})["learning"] is None


def test_generative_verdict_with_per_example_scores() -> None:
    tuned, base = [0.3, 0.15, 0.3, 0.2, 0.4] * 6, [0.2, 0.2, 0.2, 0.25, 0.3] * 6
    out = generative_learning("rougeL", True, {"rougeL": 0.25}, {"rougeL": 0.23}, (tuned, base))["learning"]
    assert out["learned"] is True and out["improvement_pvalue"] == improvement_pvalue(tuned, base, True)
    assert out["test"] == "one-sided paired bootstrap of per-example scores against the untrained base model"
    flat = generative_learning("rougeL", True, {"rougeL": 0.25}, {"rougeL": 0.23}, ([0.3, 0.1] * 5, [0.2, 0.19] * 5))
    p = improvement_pvalue([0.3, 0.1] * 5, [0.2, 0.19] * 5, True)
    assert p >= ALPHA and flat["learning"]["reasons"] == [
        f"rougeL 0.25 is not significantly above the untrained base model's 0.23 (paired bootstrap p={p:.3g})"]


@pytest.mark.parametrize("metric,higher,tuned,base,reason", [
    ("perplexity", False, 5.0, 10.0, None),
    ("perplexity", False, 12.0, 10.0, "perplexity 12 is not below the untrained base model's 10"),
    ("rougeL", True, 0.2, 0.2, "rougeL 0.2 is not above the untrained base model's 0.2"),
    ("perplexity", False, 10.0, 10.0, "perplexity 10 is not below the untrained base model's 10"),
])
def test_generative_verdict_direction_and_ties(metric: str, higher: bool, tuned: float, base: float,
                                               reason: str | None) -> None:
    out = generative_learning(metric, higher, {metric: tuned}, {metric: base})["learning"]
    assert out["learned"] is (reason is None) and out["reasons"] == ([reason] if reason else [])
