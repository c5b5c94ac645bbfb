"""The decision a report opens with (reports/decision.py) on hand-built configurations and paired
tests: who is a candidate, which one is chosen under each priority, and the exact sentence."""

from __future__ import annotations

from typing import Any

import pytest

from peftbench.reports.configs import Config
from peftbench.reports.decision import MORE_SEEDS, decide, learning_line, meets_floors
from peftbench.tasks.learning import FIXES


def cfg(label: str, mean: float | None, *, seeds: int = 3, metric: str = "accuracy", ci: bool = True,
        learned: bool | None = True, **costs: float) -> Config:
    stats: dict[str, dict[str, Any]] = {name: {"mean": v} for name, v in costs.items()}
    if mean is not None:
        stats[metric] = {"mean": mean, **({"ci_low": mean - 0.01, "ci_high": mean + 0.02} if ci else {})}
    learning = {} if learned is None else {"learned": learned, "summary": f"{label} summary"}
    return Config(f"id-{label}", "classification", "m", label, {}, runs=[{"seed": s} for s in range(seeds)],
                  label=label, metric=metric, stats=stats, learning=learning)


def pair(a: str, b: str, *, significant: bool, better: str | None = None, pvalue: float | None = 0.5) -> dict[str, Any]:
    return {"a": a, "b": b, "significant": significant, "better": better, "pvalue": pvalue}


# ---- floors ------------------------------------------------------------------------------------------


def test_floors_hold_at_the_boundary_and_fail_without_a_mean() -> None:
    c = cfg("lora", 0.8, eval_loss=0.3)
    assert meets_floors(c, {}) and meets_floors(c, {"accuracy": ("min", 0.8), "eval_loss": ("max", 0.3)})
    assert not meets_floors(c, {"accuracy": ("min", 0.81)})
    assert not meets_floors(c, {"eval_loss": ("max", 0.29)})
    assert meets_floors(c, {"eval_loss": ("min", 0.29)}) and not meets_floors(c, {"accuracy": ("max", 0.79)})
    assert not meets_floors(c, {"f1_macro": ("min", 0.0)}) and not meets_floors(c, {"f1_macro": ("max", 1.0)})


# ---- nothing to recommend --------------------------------------------------------------------------


def test_no_configuration_with_a_mean_gives_no_decision() -> None:
    assert decide([], []) is None
    assert decide([cfg("lora", None), cfg("full", 0.9, seeds=0)], []) is None


def test_no_learner_against_the_majority_class_with_some_collapsed() -> None:
    a, b = cfg("lora", 0.5, learned=False), cfg("full", 0.5, learned=False)
    a.learning.update(baselines={"majority_class": "positive", "majority_accuracy": 0.54666}, collapsed=True)
    d = decide([a, b, cfg("ia3", None)], [])
    assert d == {"kind": "no_learner", "choice": None, "thin": False, "text": (
        "No method learned: lora, full did no better than always answering 'positive' (accuracy 0.5467) "
        f"(lora collapsed to one class), so nothing is recommended or awarded — try {FIXES}.")}
    b.learning["collapsed"] = True
    assert "(all collapsed to one class), so" in decide([a, b], [])["text"]


def test_no_learner_against_the_base_model_or_without_baselines() -> None:
    a = cfg("lora", 0.2, learned=False)
    assert decide([a], [])["text"] == f"No method learned: lora did not learn, so nothing is recommended or awarded — try {FIXES}."
    a.learning["baselines"] = {"base_model": {"rougeL": 0.2}}
    assert decide([a], [])["text"].startswith("No method learned: lora did no better than the untrained base model, so")


def test_below_the_floor_names_the_best_learner_and_the_floor() -> None:
    configs = [cfg("lora", 0.8), cfg("full", 0.7, seeds=1, ci=False), cfg("ia3", 0.95, learned=False)]
    d = decide(configs, [], floors={"accuracy": ("min", 0.9), "eval_loss": ("max", 0.25)})
    assert d == {"kind": "below_floor", "choice": None, "thin": False, "text": (
        "No method that learned meets accuracy ≥ 0.9 and eval_loss ≤ 0.25 (best: lora, accuracy 0.8000 "
        "(95% CI [0.7900, 0.8200], 3 seeds)), so nothing is recommended under that floor.")}
    low = [cfg("a", 0.3, metric="eval_loss"), cfg("b", 0.2, metric="eval_loss", seeds=1, ci=False)]
    d = decide(low, [], floors={"eval_loss": ("max", 0.1)})
    assert "(best: b, eval_loss 0.2000 (one seed))" in d["text"]


# ---- the recommendation ------------------------------------------------------------------------------


def test_the_only_configuration() -> None:
    d = decide([cfg("lora", 0.8)], [])
    assert d == {"kind": "recommend", "choice": "lora", "best": "lora", "prefer": "metric", "rivals": [],
                 "seeds": 3, "thin": False,
                 "text": "Use lora: accuracy 0.8000 (95% CI [0.7900, 0.8200], 3 seeds), the only configuration."}


def test_the_only_one_left_with_one_seed_is_thin() -> None:
    configs = [cfg("lora", 0.8, seeds=1, ci=False), cfg("full", 0.9, learned=False)]
    d = decide(configs, [])
    assert d["choice"] == "lora" and d["thin"] is True and d["seeds"] == 1
    assert d["text"] == ("Use lora: accuracy 0.8000 (one seed), the only one left (the others did not learn or miss "
                         f"the floor) — the evidence is thin (one seed, no interval): {MORE_SEEDS}.")
    assert MORE_SEEDS == "run more seeds (`--set train.seed=…` / a sweep axis)"


def test_significantly_best_names_the_largest_p_against_the_others() -> None:
    configs = [cfg("lora", 0.9), cfg("full", 0.7), cfg("ia3", 0.6, learned=None)]
    pairs = [pair("lora", "full", significant=True, better="lora", pvalue=0.01234),
             pair("ia3", "lora", significant=True, better="lora", pvalue=0.002)]
    d = decide(configs, pairs)
    assert d["choice"] == "lora" and d["rivals"] == [] and d["thin"] is False
    assert d["text"] == ("Use lora: accuracy 0.9000 (95% CI [0.8900, 0.9200], 3 seeds), significantly better than "
                         "every other method that learned (p=0.0123).")


def test_a_tie_is_thin_and_names_the_rivals_and_the_p() -> None:
    configs = [cfg("lora", 0.9), cfg("full", 0.88), cfg("ia3", 0.5)]
    pairs = [pair("full", "lora", significant=False, pvalue=0.3),
             pair("lora", "ia3", significant=True, better="lora", pvalue=0.001),
             pair("full", "ia3", significant=True, better="ia3", pvalue=0.001)]  # not against the best: ignored
    d = decide(configs, pairs)
    assert d["rivals"] == ["full"] and d["thin"] is True
    assert d["text"] == ("Use lora: accuracy 0.9000 (95% CI [0.8900, 0.9200], 3 seeds) — too little evidence to "
                         f"separate lora and full (p=0.3): {MORE_SEEDS}.")
    # No paired test at all: the rivals stand, with no p-value to quote.
    d = decide(configs[:2], [pair("full", "lora", significant=False, pvalue=None)])
    assert d["rivals"] == ["full"] and "separate lora and full (no paired test)" in d["text"]
    d = decide(configs[:2], [])
    assert d["rivals"] == ["full"] and "(no paired test)" in d["text"]


def test_significantly_worse_means_worse_than_the_best_not_just_significant() -> None:
    configs = [cfg("lora", 0.9), cfg("full", 0.8)]
    worse = decide(configs, [pair("lora", "full", significant=True, better="lora")])
    assert worse["rivals"] == [] and not worse["thin"]
    wrong_way = decide(configs, [pair("lora", "full", significant=True, better="full")])
    assert wrong_way["rivals"] == ["full"] and wrong_way["thin"]


@pytest.mark.parametrize("metric,means,best", [("accuracy", (0.7, 0.9), "b"), ("eval_loss", (0.7, 0.9), "a")])
def test_the_best_follows_the_metric_direction(metric: str, means: tuple[float, float], best: str) -> None:
    configs = [cfg("a", means[0], metric=metric), cfg("b", means[1], metric=metric)]
    pairs = [pair("a", "b", significant=True, better=best, pvalue=0.01)]
    assert decide(configs, pairs)["choice"] == best


@pytest.mark.parametrize("prefer,cost,word", [("memory", "peak_memory_bytes", "less peak memory"),
                                              ("time", "train_time_s", "faster training"),
                                              ("params", "trainable_params", "fewer trainable parameters")])
def test_a_cost_priority_picks_the_cheapest_of_the_tied(prefer: str, cost: str, word: str) -> None:
    configs = [cfg("lora", 0.9, **{cost: 30.0}), cfg("full", 0.89, **{cost: 12.0}),
               cfg("ia3", 0.88, **{cost: 6.0}), cfg("bitfit", 0.5, **{cost: 1.0})]
    pairs = [pair("lora", "full", significant=False, pvalue=0.2),
             pair("ia3", "lora", significant=False, pvalue=0.04567),
             pair("lora", "bitfit", significant=True, better="lora", pvalue=0.001)]
    d = decide(configs, pairs, prefer=prefer)
    assert d["choice"] == "ia3" and d["best"] == "lora" and d["prefer"] == prefer and d["rivals"] == ["lora", "full"]
    assert d["thin"] is False  # three seeds and a cost priority: no rival to separate
    assert d["text"] == (f"Use ia3 (priority: {prefer}): accuracy 0.8800 (95% CI [0.8700, 0.9000], 3 seeds), 5.0× "
                         f"{word} than the best-scoring lora, whose accuracy is not significantly different "
                         "(p=0.0457).")


def test_a_cost_priority_keeps_the_best_when_it_is_the_cheapest_or_costs_are_unknown() -> None:
    configs = [cfg("lora", 0.9, train_time_s=5.0), cfg("full", 0.89, train_time_s=50.0)]
    pairs = [pair("lora", "full", significant=False, pvalue=0.2)]
    d = decide(configs, pairs, prefer="time")
    assert d["choice"] == "lora" and d["rivals"] == ["full"] and d["thin"] is False
    assert d["text"] == "Use lora (priority: time): accuracy 0.9000 (95% CI [0.8900, 0.9200], 3 seeds)."
    unknown = [cfg("lora", 0.9), cfg("full", 0.89, train_time_s=1.0)]
    assert decide(unknown, pairs, prefer="time")["choice"] == "full"
    none = [cfg("lora", 0.9), cfg("full", 0.89)]
    assert decide(none, pairs, prefer="time")["choice"] == "lora"
    one_seed = decide([cfg("lora", 0.9, seeds=1, ci=False, train_time_s=5.0)], [], prefer="time")
    assert one_seed["thin"] and one_seed["text"].endswith(f"(one seed), the only configuration — the evidence is "
                                                          f"thin (one seed, no interval): {MORE_SEEDS}.")


def test_a_non_learner_or_a_config_below_the_floor_is_never_chosen() -> None:
    configs = [cfg("lora", 0.9, learned=False), cfg("full", 0.7, seeds=2, ci=False, eval_loss=0.4),
               cfg("ia3", 0.8, eval_loss=0.9)]
    d = decide(configs, [pair("full", "ia3", significant=False)], floors={"eval_loss": ("max", 0.5)})
    assert d["choice"] == "full" and d["text"].startswith("Use full: accuracy 0.7000 (2 seeds), the only one left")


# ---- the line about non-learners -------------------------------------------------------------------


def test_learning_line_names_the_non_learners_only_when_some_learned() -> None:
    learner, bad = cfg("lora", 0.9), cfg("ia3", 0.5, learned=False)
    no_runs = cfg("full", 0.5, learned=False, seeds=0)
    assert learning_line([learner, bad, no_runs]) == (
        f"Did not learn: ia3 (ia3 summary); shown apart, without stars, Pareto membership or cost praise — "
        f"try {FIXES}.")
    del bad.learning["summary"]
    assert learning_line([learner, bad]).startswith("Did not learn: ia3 (no); shown apart")
    assert learning_line([learner]) is None and learning_line([bad, no_runs]) is None
    assert learning_line([learner, cfg("x", 0.5, learned=None)]) is None


def test_a_cheaper_choice_over_a_best_without_the_cost_figure_states_no_ratio() -> None:
    configs = [cfg("lora", 0.9), cfg("full", 0.89, peak_memory_bytes=2e9), cfg("ia3", 0.88, peak_memory_bytes=0.0)]
    pairs = [pair("lora", "full", significant=False, pvalue=0.2), pair("ia3", "lora", significant=False, pvalue=0.3)]
    d = decide(configs, pairs, prefer="memory")
    assert d["choice"] == "ia3" and ", chosen for less peak memory over the best-scoring lora, whose" in d["text"]
    configs[0].stats["peak_memory_bytes"] = {"mean": 4e9}
    d = decide(configs, pairs, prefer="memory")
    assert d["choice"] == "ia3" and ", chosen for less peak memory over the best-scoring lora" in d["text"]
    configs[2].stats["peak_memory_bytes"] = {"mean": 1e9}
    assert ", 4.0× less peak memory than the best-scoring lora" in decide(configs, pairs, prefer="memory")["text"]


def test_two_seeds_are_not_thin_and_several_names_are_listed() -> None:
    d = decide([cfg("lora", 0.8, seeds=2, ci=False)], [])
    assert d["thin"] is False and d["text"] == "Use lora: accuracy 0.8000 (2 seeds), the only configuration."
    tied = decide([cfg("lora", 0.9), cfg("full", 0.89), cfg("ia3", 0.88)], [])
    assert tied["rivals"] == ["full", "ia3"] and "separate lora and full, ia3 (no paired test)" in tied["text"]
    a, b, c = (cfg(n, 0.5, learned=False) for n in ("lora", "full", "ia3"))
    a.learning["collapsed"] = b.learning["collapsed"] = True
    assert "(lora, full collapsed to one class)" in decide([a, b, c], [])["text"]
    assert learning_line([cfg("x", 0.9), a, b]).startswith(
        "Did not learn: lora (lora summary), full (full summary); shown apart")


def test_a_zero_mean_or_a_zero_cost_ranks_as_zero() -> None:
    configs = [cfg("lora", 0.0), cfg("full", 0.5)]
    assert decide(configs, [pair("lora", "full", significant=True, better="full")])["choice"] == "full"
    below = decide(configs, [], floors={"accuracy": ("min", 0.9)})
    assert "(best: full," in below["text"]
    cheap = [cfg("lora", 0.9, trainable_params=0.5), cfg("full", 0.9, trainable_params=0.0)]
    assert decide(cheap, [], prefer="params")["choice"] == "full"
