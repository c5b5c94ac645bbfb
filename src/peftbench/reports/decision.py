"""The decision a report opens with: which configuration to use under the user's priority, and how
sure that is.

Only configurations that learned (or whose verdict is unknown) and meet every metric floor are
candidates. Priority `metric` picks the best mean metric; `memory`, `time` or `params` picks the
cheapest among the candidates whose metric is not significantly worse than the best one. The
sentence states the seeds and the interval or p-value behind the choice, and says plainly when the
evidence is too thin to separate the choice from a rival (one seed, or no significant difference).
"""

from __future__ import annotations

from typing import Any

from peftbench.reports.configs import Config
from peftbench.tasks.learning import FIXES
from peftbench.tasks.metrics import higher_is_better

PRIORITIES = {"metric": None, "memory": "peak_memory_bytes", "time": "train_time_s", "params": "trainable_params"}
COST_WORDS = {"peak_memory_bytes": "less peak memory", "train_time_s": "faster training",
              "trainable_params": "fewer trainable parameters"}
MORE_SEEDS = "run more seeds (`--set train.seed=…` / a sweep axis)"


def meets_floors(cfg: Config, floors: dict[str, tuple[str, float]]) -> bool:
    """Every floor holds for the configuration's mean: ('min', v) means ≥ v, ('max', v) means ≤ v."""
    for metric, (side, value) in floors.items():
        mean = cfg.mean(metric)
        if mean is None or (mean < value if side == "min" else mean > value):
            return False
    return True


def find_pair(pairs: list[dict[str, Any]], a: Config, b: Config) -> dict[str, Any] | None:
    return next((p for p in pairs if {p["a"], p["b"]} == {a.label, b.label}), None)


def _significantly_worse(c: Config, best: Config, pairs: list[dict[str, Any]]) -> bool:
    p = find_pair(pairs, c, best)
    return bool(p and p.get("significant") and p.get("better") == best.label)


def _metric_text(c: Config) -> str:
    st = c.stats.get(c.metric) or {}
    n = len(c.runs)
    if st.get("ci_low") is not None:
        return f"{c.metric} {st['mean']:.4f} (95% CI [{st['ci_low']:.4f}, {st['ci_high']:.4f}], {n} seeds)"
    return f"{c.metric} {st.get('mean', float('nan')):.4f} ({'one seed' if n == 1 else f'{n} seeds'})"


def _p_text(pairs: list[dict[str, Any]], a: Config, others: list[Config]) -> str:
    ps = [p["pvalue"] for o in others if (p := find_pair(pairs, a, o)) and p.get("pvalue") is not None]
    return f"p={max(ps):.3g}" if ps else "no paired test"


def _no_learner(configs: list[Config]) -> dict[str, Any]:
    base = next((c.learning.get("baselines") for c in configs if c.learning.get("baselines")), {}) or {}
    collapsed = [c.label for c in configs if c.learning.get("collapsed")]
    against = (f" did no better than always answering '{base['majority_class']}' "
               f"(accuracy {base['majority_accuracy']:.4f})" if base.get("majority_class") is not None
               else " did no better than the untrained base model" if base.get("base_model")
               else " did not learn")
    text = (f"No method learned: {', '.join(c.label for c in configs)}{against}"
            + ((" (all collapsed to one class)" if len(collapsed) == len(configs) else
                f" ({', '.join(collapsed)} collapsed to one class)") if collapsed else "")
            + f", so nothing is recommended or awarded — try {FIXES}.")
    return {"kind": "no_learner", "choice": None, "text": text, "thin": False}


def _floor_text(floors: dict[str, tuple[str, float]]) -> str:
    return " and ".join(f"{m} {'≥' if side == 'min' else '≤'} {v:g}" for m, (side, v) in floors.items())


def decide(configs: list[Config], pairs: list[dict[str, Any]], *, prefer: str = "metric",
           floors: dict[str, tuple[str, float]] | None = None) -> dict[str, Any] | None:
    """`{kind, choice, text, thin, ...}` for one task's configurations; None when none has a successful run."""
    ok = [c for c in configs if c.runs and c.mean(c.metric) is not None]
    if not ok:
        return None
    learners = [c for c in ok if c.learned is not False]
    if not learners:
        return _no_learner(ok)
    floors = floors or {}
    passing = [c for c in learners if meets_floors(c, floors)]
    sign = 1.0 if higher_is_better(ok[0].metric) else -1.0
    if not passing:
        top = max(learners, key=lambda c: sign * (c.mean(c.metric) or 0.0))
        return {"kind": "below_floor", "choice": None, "thin": False,
                "text": f"No method that learned meets {_floor_text(floors)} (best: {top.label}, "
                        f"{_metric_text(top)}), so nothing is recommended under that floor."}
    best = max(passing, key=lambda c: sign * (c.mean(c.metric) or 0.0))
    tied = [c for c in passing if c is not best and not _significantly_worse(c, best, pairs)]
    cost = PRIORITIES.get(prefer)
    choice = best
    if cost is not None:
        cheap = [c for c in [best, *tied] if c.mean(cost) is not None]
        choice = min(cheap, key=lambda c: c.mean(cost) or 0.0) if cheap else best
    return _recommend(choice, best, passing, tied, pairs, prefer, cost, len(ok))


def _recommend(choice: Config, best: Config, passing: list[Config], tied: list[Config], pairs: list[dict[str, Any]],
               prefer: str, cost: str | None, n_total: int) -> dict[str, Any]:
    """The recommendation sentence: choice, its metric with interval or seed count, and the evidence."""
    rivals = [c for c in [best, *tied] if c is not choice]
    thin = len(choice.runs) < 2 or (cost is None and bool(rivals))
    head = f"Use {choice.label}" + (f" (priority: {prefer})" if cost else "") + f": {_metric_text(choice)}"
    if cost and choice is not best:
        best_cost, choice_cost = best.mean(cost), choice.mean(cost)
        # A ratio only from two measured costs: the best-scoring one may lack the figure (then no "0.0×").
        than = (f"{best_cost / choice_cost:.1f}× {COST_WORDS[cost]} than" if best_cost and choice_cost
                else f"chosen for {COST_WORDS[cost]} over")
        body = (f", {than} the best-scoring {best.label}, whose {best.metric} "
                f"is not significantly different ({_p_text(pairs, choice, [best])})")
    elif len(passing) == 1:
        body = ", the only configuration" if n_total == 1 else ", the only one left (the others did not learn or miss the floor)"
    elif not rivals:
        others = [c for c in passing if c is not choice]
        body = f", significantly better than every other method that learned ({_p_text(pairs, choice, others)})"
    else:
        body = ""
    if cost is None and rivals:
        tail = (f" — too little evidence to separate {choice.label} and {', '.join(c.label for c in rivals)} "
                f"({_p_text(pairs, choice, rivals)}): {MORE_SEEDS}")
    elif len(choice.runs) < 2:
        tail = f" — the evidence is thin (one seed, no interval): {MORE_SEEDS}"
    else:
        tail = ""
    return {"kind": "recommend", "choice": choice.label, "best": best.label, "prefer": prefer,
            "rivals": [c.label for c in rivals], "seeds": len(choice.runs), "thin": thin,
            "text": head + body + tail + "."}


def learning_line(configs: list[Config]) -> str | None:
    """One sentence naming the configurations that did not learn (when some others did)."""
    bad = [c for c in configs if c.runs and c.learned is False]
    if not bad or len(bad) == len([c for c in configs if c.runs]):
        return None
    names = ", ".join(f"{c.label} ({c.learning.get('summary', 'no')})" for c in bad)
    return (f"Did not learn: {names}; shown apart, without stars, Pareto membership or cost praise — "
            f"try {FIXES}.")
