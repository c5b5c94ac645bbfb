"""Comparisons inside a task (reports/comparisons.py) on hand-built configurations: which seeds are
paired, which test decides, which configuration is the baseline, every number of the baseline
comparison, and the verdict sentence, each checked against its definition."""

from __future__ import annotations

from typing import Any

import pytest

from peftbench.reports.comparisons import (
    COST_RATIO_THRESHOLD,
    PAIRWISE_MAX_CONFIGS,
    compare_pair,
    compare_to_baseline,
    match_seeds,
    pairwise,
    pick_baseline,
    verdict,
)
from peftbench.reports.configs import Config
from peftbench.reports.stats import ALPHA, mcnemar_test, paired_bootstrap, welch_test


def run(seed: int | None, run_id: str = "", **fields: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"run_id": run_id or f"r{seed}", "status": "success", **fields}
    if seed is not None:
        rec["seed"] = seed
    return rec


def cfg(label: str, runs: list[dict[str, Any]] | None = None, *, metric: str = "accuracy", method: str = "",
        stats: dict[str, float | list[float]] | None = None, config_id: str = "", **extra: Any) -> Config:
    """A configuration with `stats` given as name -> mean or name -> seed values."""
    summary = {}
    for name, value in (stats or {}).items():
        values = value if isinstance(value, list) else [value]
        summary[name] = {"mean": sum(values) / len(values), "values": values}
    return Config(config_id or f"id-{label}", "classification", "m", method or label.split()[0], {},
                  runs=runs if runs is not None else [run(1)], label=label, metric=metric, stats=summary, **extra)


# ---- matched seeds --------------------------------------------------------------------------------


def test_runs_are_matched_by_seed_and_a_missing_seed_counts_as_zero() -> None:
    a = cfg("a", [run(None, "a0"), run(1, "a1"), run(3, "a3")])
    b = cfg("b", [run(3, "b3"), run(0, "b0"), run(5, "b5")])
    assert [(x["run_id"], y["run_id"]) for x, y in match_seeds(a, b)] == [("a0", "b0"), ("a3", "b3")]


def test_without_a_common_seed_runs_pair_in_order_up_to_the_shorter_list() -> None:
    a = cfg("a", [run(1, "a1"), run(2, "a2"), run(3, "a3")])
    b = cfg("b", [run(7, "b7"), run(8, "b8")])
    assert [(x["run_id"], y["run_id"]) for x, y in match_seeds(a, b)] == [("a1", "b7"), ("a2", "b8")]


# ---- paired tests between two configurations --------------------------------------------------------


def scored_run(seed: int, scores: list[float], name: str = "rouge1") -> dict[str, Any]:
    return run(seed, f"run-{seed}-{scores[0]}", predictions={"scores": {name: scores}})


def spread(center: float, n: int = 30) -> list[float]:
    return [center + 0.01 * ((i * 7) % 11 - 5) for i in range(n)]


@pytest.mark.parametrize("metric,sign", [("rouge1", 1.0), ("eval_loss", -1.0)])
def test_per_example_scores_give_a_paired_bootstrap_per_seed_and_the_largest_p(metric: str, sign: float) -> None:
    good, bad = 0.5 + 0.2 * sign, 0.5
    a = cfg("a", [scored_run(s, spread(good + 0.01 * s), metric) for s in (1, 2)], metric=metric,
            stats={metric: [good, good + 0.01]})
    b = cfg("b", [scored_run(s, spread(bad), metric) for s in (2, 1)], metric=metric, stats={metric: [bad, bad]})
    out = compare_pair(a, b)
    refs = [paired_bootstrap(spread(good + 0.01 * s), spread(bad)) for s in (1, 2)]
    assert [t["test"] for t in out["per_seed"]] == ["paired_bootstrap"] * 2
    assert [t["delta_good"] for t in out["per_seed"]] == pytest.approx([sign * r["delta"] for r in refs])
    assert [(t["seed_a"], t["seed_b"]) for t in out["per_seed"]] == [(1, 1), (2, 2)]
    assert [(t["run_a"], t["run_b"]) for t in out["per_seed"]] == [(a.runs[0]["run_id"], b.runs[1]["run_id"]),
                                                                   (a.runs[1]["run_id"], b.runs[0]["run_id"])]
    assert out["test"] == "paired_bootstrap" and out["pvalue"] == max(r["pvalue"] for r in refs)
    assert out["significant"] is True and out["direction"] == 1 and out["better"] == "a"
    assert out["delta"] == pytest.approx(0.2 * sign + 0.005)
    assert out["welch"] == welch_test([good, good + 0.01], [bad, bad]) and out["alpha"] == ALPHA
    assert (out["a"], out["b"], out["task"], out["metric"]) == ("a", "b", "classification", metric)


def test_class_predictions_give_mcnemar_and_different_eval_sets_give_no_test() -> None:
    gold = [0, 1] * 20
    right = list(gold)
    half = [g if i % 2 else 1 - g for i, g in enumerate(gold)]
    a = cfg("a", [run(1, "a1", predictions={"pred": right, "gold": gold})], stats={"accuracy": 1.0})
    b = cfg("b", [run(1, "b1", predictions={"pred": half, "gold": gold})], stats={"accuracy": 0.5})
    out = compare_pair(a, b)
    ref = mcnemar_test(right, half, gold)
    (t,) = out["per_seed"]
    assert t["test"] == "mcnemar" and t["pvalue"] == ref["pvalue"] and t["delta_good"] == ref["delta"] == 0.5
    assert out["significant"] and out["better"] == "a" and out["pvalue"] == ref["pvalue"]
    other = cfg("c", [run(1, "c1", predictions={"pred": half, "gold": [1 - g for g in gold]})],
                stats={"accuracy": 0.5})
    none = compare_pair(a, other)
    assert none["per_seed"] == [] and none["test"] is None and none["pvalue"] is None
    assert none["significant"] is False and none["better"] is None


@pytest.mark.parametrize("metric,a_values,b_values,better", [
    ("accuracy", [0.90, 0.91, 0.92], [0.50, 0.51, 0.52], "a"),
    ("accuracy", [0.50, 0.51, 0.52], [0.90, 0.91, 0.92], "b"),
    ("eval_loss", [0.50, 0.51, 0.52], [0.90, 0.91, 0.92], "a"),
    ("accuracy", [0.50, 0.70, 0.60], [0.52, 0.61, 0.65], None),
])
def test_without_per_example_data_welch_over_seed_values_decides(metric: str, a_values: list[float],
                                                                  b_values: list[float], better: str | None) -> None:
    out = compare_pair(cfg("a", [run(s) for s in (1, 2, 3)], metric=metric, stats={metric: a_values}),
                       cfg("b", [run(s) for s in (1, 2, 3)], metric=metric, stats={metric: b_values}))
    ref = welch_test(a_values, b_values)
    assert out["test"] == "welch" and out["pvalue"] == ref["pvalue"] and out["per_seed"] == []
    assert out["better"] == better and out["significant"] is (better is not None)
    if better is not None:
        assert out["direction"] == (1 if better == "a" else -1)


def test_welch_with_equal_means_has_no_direction_and_is_never_significant() -> None:
    out = compare_pair(cfg("a", stats={"accuracy": [0.5, 0.5]}), cfg("b", stats={"accuracy": [0.5, 0.5]}))
    assert out["test"] == "welch" and out["direction"] == 0 and out["significant"] is False
    one_seed = compare_pair(cfg("a", stats={"accuracy": [0.9]}), cfg("b", stats={"accuracy": [0.1]}))
    assert one_seed["test"] is None and one_seed["welch"] is None and one_seed["delta"] == pytest.approx(0.8)


def test_a_missing_mean_gives_no_delta_and_no_test() -> None:
    out = compare_pair(cfg("a", stats={"accuracy": [0.9, 0.8]}), cfg("b", stats={"eval_loss": [0.1, 0.2]}))
    assert out["delta"] is None and out["test"] is None and out["significant"] is False


def _many(n: int) -> list[Config]:
    return [cfg(f"c{i}", stats={}) for i in range(n)]


def test_up_to_the_limit_every_pair_is_tested_once_in_order() -> None:
    configs = [*_many(PAIRWISE_MAX_CONFIGS), cfg("idle", runs=[])]
    out = pairwise(configs)
    n = PAIRWISE_MAX_CONFIGS
    assert len(out) == n * (n - 1) // 2
    assert (out[0]["a"], out[0]["b"]) == ("c0", "c1") and (out[-1]["a"], out[-1]["b"]) == ("c10", "c11")


def test_past_the_limit_only_the_best_and_the_baseline_meet_the_others() -> None:
    configs = _many(PAIRWISE_MAX_CONFIGS + 1)
    configs[3].best = True
    configs[5].baseline = True
    out = pairwise(configs)
    n = PAIRWISE_MAX_CONFIGS + 1
    assert len(out) == 2 * (n - 1) - 1  # best-baseline once
    assert all("c3" in (p["a"], p["b"]) or "c5" in (p["a"], p["b"]) for p in out)
    assert (out[0]["a"], out[0]["b"]) == ("c3", "c0")
    assert sum({p["a"], p["b"]} == {"c3", "c5"} for p in out) == 1


# ---- the baseline -----------------------------------------------------------------------------------


def test_baseline_selector_label_then_method_then_config_id_then_run_id() -> None:
    lora = cfg("lora", stats={"accuracy": 0.6}, config_id="aaa111")
    lora4 = cfg("lora (r=4)", [run(1, "run-x")], method="lora", stats={"accuracy": 0.9}, config_id="bbb222")
    full = cfg("full (lr=0.001)", method="full", stats={"accuracy": 0.7}, config_id="ccc333")
    full2 = cfg("full (lr=0.0001)", method="full", stats={"accuracy": 0.8}, config_id="ddd444")
    idle = cfg("ia3", runs=[], stats={"accuracy": 0.99})
    configs = [lora, lora4, full, full2, idle]
    assert pick_baseline(configs, "lora") is lora  # the label first, though lora (r=4) scores higher
    assert pick_baseline(configs, "full") is full2  # the method: the best of its configurations
    assert pick_baseline(configs, "ccc") is full and pick_baseline(configs, "run-x") is lora4
    assert pick_baseline(configs, "ia3") is None and pick_baseline(configs, "nothing") is None
    assert pick_baseline(configs, None) is None and pick_baseline(configs, "") is None


def test_baseline_among_several_follows_the_metric_direction_and_skips_missing_means() -> None:
    low = cfg("full (lr=1)", method="full", metric="eval_loss", stats={"eval_loss": 0.2})
    high = cfg("full (lr=2)", method="full", metric="eval_loss", stats={"eval_loss": 0.4})
    unmeasured = cfg("full (lr=3)", method="full", metric="eval_loss", stats={})
    assert pick_baseline([high, unmeasured, low], "full") is low
    assert pick_baseline([unmeasured, high], "full") is high
    acc = [cfg("full (lr=1)", method="full", stats={}), cfg("full (lr=2)", method="full", stats={"accuracy": 0.1})]
    assert pick_baseline(acc, "full") is acc[1]


# ---- the comparison with the baseline ---------------------------------------------------------------


def per_class(f1: float, precision: float | None = None) -> dict[str, Any]:
    return {"metrics": {"accuracy": 0.0, "per_class": {"pos": {"f1": f1, "precision": precision, "recall": "x"},
                                                       "neg": {"f1": f1 / 2, "recall": f1}}}}


def test_every_number_of_the_baseline_comparison() -> None:
    method = cfg("lora", [run(1, **per_class(0.8, 0.6)), run(2, **per_class(0.6))],
                 stats={"accuracy": [0.8, 0.9], "eval_loss": 0.3, "only_here": 1.0, "trainable_params": 1e5,
                        "train_time_s": 10.0, "peak_memory_bytes": 100.0, "model_footprint_bytes": 40.0,
                        "artifact_bytes": 5.0, "aaa": 1.0},
                 learning={"learned": True, "reasons": ["why"]})
    method.runs[0]["metrics"].update(eval_loss=0.3, zero=1.0, aaa=1.0, f1_macro=0.7)
    base = cfg("full", [run(1, **{"metrics": {"accuracy": 0.5, "eval_loss": 0.5, "zero": 0.0, "f1_macro": 0.6,
                                             "per_class": {"pos": {"f1": 0.5, "precision": 0.4},
                                                           "neg": {"recall": 0.5}}}})],
               stats={"accuracy": 0.5, "eval_loss": 0.5, "zero": 0.0, "trainable_params": 2e6, "train_time_s": 30.0,
                      "peak_memory_bytes": 50.0, "model_footprint_bytes": 80.0, "artifact_bytes": 20.0,
                      "f1_macro": 0.6},
               learning={"learned": False})
    method.stats["zero"] = {"mean": 1.0}
    method.stats["f1_macro"] = {"mean": None}  # measured on one side only: no delta, and the next still come
    base.stats["aaa"] = {"mean": None}
    out = compare_to_baseline(method, base, {"test": "mcnemar", "pvalue": 0.01, "significant": True,
                                             "better": "lora"})
    assert out["deltas"] == {
        "accuracy": {"value": pytest.approx(0.85), "baseline": 0.5, "abs": pytest.approx(0.35), "rel_pct": pytest.approx(70.0),
                     "higher_is_better": True},
        "eval_loss": {"value": 0.3, "baseline": 0.5, "abs": pytest.approx(-0.2), "rel_pct": pytest.approx(-40.0),
                      "higher_is_better": False},
        "zero": {"value": 1.0, "baseline": 0.0, "abs": 1.0, "rel_pct": None, "higher_is_better": True},
    }
    assert out["per_class_deltas"] == {"pos": {"f1": pytest.approx(0.2), "precision": pytest.approx(0.2)},
                                       "neg": {"recall": pytest.approx(0.2)}}
    assert out["param_reduction_pct"] == pytest.approx(95.0) and out["x_fewer_params"] == pytest.approx(20.0)
    assert out["metric_per_million_params"] == method.mean("accuracy") / (1e5 / 1e6)
    assert out["baseline_metric_per_million_params"] == 0.5 / (2e6 / 1e6)
    assert out["speedup"] == pytest.approx(3.0) and out["memory_saving"] == pytest.approx(0.5)
    assert out["footprint_saving"] == pytest.approx(2.0) and out["size_ratio"] == pytest.approx(4.0)
    assert (out["label"], out["baseline"], out["task"], out["metric"]) == ("lora", "full", "classification", "accuracy")
    assert out["learned"] is True and out["baseline_learned"] is False and out["learning_reasons"] == ["why"]
    assert out["verdict"]["label"] == "better"
    assert out["verdict"]["text"] == ("Significantly better accuracy (Δ +0.3500, p=0.01); 20.0× fewer trainable "
                                      "parameters, 3.0× faster training, 2.0× more peak memory, 4.0× smaller saved "
                                      "artifact. (full itself did not learn.)")


def test_costs_without_both_sides_or_with_a_zero_cost_are_not_ratios() -> None:
    method = cfg("lora", stats={"accuracy": 0.8, "trainable_params": 0.0, "train_time_s": -1.0,
                                "model_footprint_bytes": 0.0, "artifact_bytes": 5.0})
    base = cfg("full", stats={"accuracy": 0.8, "trainable_params": 0.0, "peak_memory_bytes": 10.0,
                              "model_footprint_bytes": 8.0, "artifact_bytes": 0.0})
    out = compare_to_baseline(method, base, {"test": None, "pvalue": None})
    assert out["param_reduction_pct"] is None and out["x_fewer_params"] is None
    assert out["metric_per_million_params"] is None and out["baseline_metric_per_million_params"] is None
    assert out["speedup"] is None and out["memory_saving"] is None and out["size_ratio"] is None
    assert out["footprint_saving"] is None
    assert out["deltas"] == {} and out["per_class_deltas"] == {} and out["learning_reasons"] == []
    assert out["verdict"] == {"label": "not tested", "text": "Accuracy not measured on both sides."}


# ---- the verdict ------------------------------------------------------------------------------------


def comparison(delta: float | None, metric: str = "accuracy", **costs: float | None) -> dict[str, Any]:
    return {"label": "lora", "baseline": "full", "metric": metric,
            "deltas": {} if delta is None else {metric: {"abs": delta}},
            "x_fewer_params": None, "speedup": None, "memory_saving": None, "size_ratio": None, **costs}


SIG = {"test": "mcnemar", "pvalue": 0.001234, "significant": True, "better": "lora"}


@pytest.mark.parametrize("ratio,phrase", [
    (COST_RATIO_THRESHOLD, "1.1× faster training"),
    (2.0, "2.0× faster training"),
    (1 / COST_RATIO_THRESHOLD, "1.1× slower training"),
    (0.25, "4.0× slower training"),
    (1.09, "similar training time"),
    (0.92, "similar training time"),
])
def test_cost_phrases_need_the_ratio_past_the_threshold(ratio: float, phrase: str) -> None:
    out = verdict(comparison(0.1, speedup=ratio), SIG)
    assert out["text"] == f"Significantly better accuracy (Δ +0.1000, p=0.00123); {phrase}."


def test_every_cost_phrase_in_order() -> None:
    out = verdict(comparison(0.1, x_fewer_params=0.5, speedup=1.0, memory_saving=3.0, size_ratio=1.0), SIG)
    assert out["text"] == ("Significantly better accuracy (Δ +0.1000, p=0.00123); 2.0× more trainable parameters, "
                           "similar training time, 3.0× less peak memory, similar saved size.")
    out = verdict(comparison(0.1, x_fewer_params=1.0, memory_saving=1.0, size_ratio=2.0), SIG)
    assert out["text"].endswith("; similar trainable parameters, similar peak memory, 2.0× smaller saved artifact.")
    out = verdict(comparison(0.1, memory_saving=0.1, size_ratio=0.5), SIG)
    assert out["text"].endswith("; 10.0× more peak memory, 2.0× larger saved artifact.")


@pytest.mark.parametrize("metric,delta,test,label,text", [
    ("accuracy", -0.05, {**SIG, "better": "full"}, "worse",
     "Significantly worse accuracy (Δ -0.0500, p=0.00123)."),
    ("eval_loss", -0.05, SIG, "better", "Significantly better eval_loss (Δ -0.0500, p=0.00123)."),
    ("eval_loss", 0.05, SIG, "mixed",
     "Mixed: the paired test (p=0.00123) favours lora but mean eval_loss moves the other way (Δ +0.0500)."),
    ("accuracy", 0.0, SIG, "mixed",
     "Mixed: the paired test (p=0.00123) favours lora but mean accuracy moves the other way (Δ +0.0000)."),
    ("accuracy", 0.02, {"test": "welch", "pvalue": 0.2, "significant": False, "better": None},
     "no significant difference", "No significant difference in accuracy (Δ +0.0200, p=0.2)."),
    ("accuracy", 0.02, {"test": None, "pvalue": 0.2}, "not tested",
     "Accuracy Δ +0.0200 (no paired test possible)."),
    ("accuracy", 0.02, {"test": "welch", "pvalue": None}, "not tested",
     "Accuracy Δ +0.0200 (no paired test possible)."),
    ("accuracy", None, SIG, "not tested", "Accuracy not measured on both sides."),
])
def test_verdict_labels_and_sentences(metric: str, delta: float | None, test: dict[str, Any], label: str,
                                      text: str) -> None:
    assert verdict(comparison(delta, metric), test) == {"label": label, "text": text}


def test_a_non_learner_gets_its_first_reason_and_no_cost_praise() -> None:
    cmp = {**comparison(0.3, x_fewer_params=100.0), "learned": False, "learning_reasons": ["collapsed", "p=0.3"]}
    assert verdict(cmp, SIG) == {"label": "did not learn",
                                 "text": "Did not learn: collapsed; no comparison is claimed."}
    cmp["learning_reasons"] = []
    assert verdict(cmp, SIG)["text"] == "Did not learn: not above the majority class; no comparison is claimed."
    unknown = {**comparison(0.3), "learned": None, "baseline_learned": None}
    assert verdict(unknown, SIG)["label"] == "better" and "did not learn" not in verdict(unknown, SIG)["text"]


def test_cost_ratios_below_one_byte_or_second_are_ratios_too() -> None:
    method = cfg("lora", stats={"accuracy": 0.8, "train_time_s": 0.5, "artifact_bytes": 0.25})
    base = cfg("full", stats={"accuracy": 0.8, "train_time_s": 2.0, "artifact_bytes": 0.5})
    out = compare_to_baseline(method, base, {"test": None, "pvalue": None})
    assert out["speedup"] == 4.0 and out["size_ratio"] == 2.0


def test_per_example_scores_or_classes_on_one_side_only_give_no_paired_test() -> None:
    plain = cfg("b", [run(1, "b1")], stats={"rouge1": [0.2, 0.3]}, metric="rouge1")
    scored = cfg("a", [scored_run(1, spread(0.5))], stats={"rouge1": [0.5, 0.6]}, metric="rouge1")
    assert compare_pair(scored, plain)["per_seed"] == [] and compare_pair(plain, scored)["per_seed"] == []
    gold = [0, 1] * 10
    classes = cfg("c", [run(1, "c1", predictions={"pred": gold, "gold": gold})], stats={"rouge1": [0.9, 0.8]},
                  metric="rouge1")
    assert compare_pair(classes, plain)["per_seed"] == [] and compare_pair(plain, classes)["per_seed"] == []
    assert compare_pair(classes, plain)["test"] == "welch"
