"""Comparisons inside a task: paired significance tests between configurations, and each
configuration against the task's baseline with a verdict stated from the numbers.

A difference is called better or worse only when a paired test over matched seeds says it is
significant (see docs/report.md); costs count only past `COST_RATIO_THRESHOLD`.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

from peftbench.records.fields import number, value_at
from peftbench.reports.configs import Config, scalar_metrics
from peftbench.reports.scores import class_predictions, per_example_scores
from peftbench.reports.stats import ALPHA, combine_seed_tests, mcnemar_test, paired_bootstrap, welch_test
from peftbench.tasks.metrics import higher_is_better

# A cost ratio (baseline / method) must pass this before the verdict calls a method faster,
# lighter or smaller: timings and CPU memory readings vary by a few percent between identical runs.
COST_RATIO_THRESHOLD = 1.10
# Above this many configurations in a task, each is tested against the best and the baseline only.
PAIRWISE_MAX_CONFIGS = 12


# ---- paired tests between configurations ------------------------------------------------------


def match_seeds(a: Config, b: Config) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Runs of the same seed when both configurations used it, else the i-th seed with the i-th."""
    by_a = {int(r.get("seed") or 0): r for r in a.runs}
    by_b = {int(r.get("seed") or 0): r for r in b.runs}
    common = sorted(set(by_a) & set(by_b))
    if common:
        return [(by_a[s], by_b[s]) for s in common]
    return list(zip(a.runs, b.runs, strict=False))


def _run_test(ra: dict[str, Any], rb: dict[str, Any], metric: str) -> dict[str, Any] | None:
    sa, sb = per_example_scores(ra, metric), per_example_scores(rb, metric)
    if sa is not None and sb is not None and len(sa) == len(sb):
        res = paired_bootstrap(sa, sb)
        # Direction in "A is better" terms, whatever way the metric points.
        res["delta_good"] = res["delta"] if higher_is_better(metric) else -res["delta"]
    else:
        ca, cb = class_predictions(ra), class_predictions(rb)
        if ca is None or cb is None or ca[1] != cb[1]:
            return None
        res = mcnemar_test(ca[0], cb[0], ca[1])
        res["delta_good"] = res["delta"]
    res.update(seed_a=ra.get("seed"), seed_b=rb.get("seed"), run_a=ra.get("run_id"), run_b=rb.get("run_id"))
    return res


def compare_pair(a: Config, b: Config) -> dict[str, Any]:
    """Paired significance of A vs B on the task's metric, over matched seeds."""
    metric = a.metric
    tests = [t for t in (_run_test(ra, rb, metric) for ra, rb in match_seeds(a, b)) if t is not None]
    va, vb = (a.stats.get(metric) or {}).get("values", []), (b.stats.get(metric) or {}).get("values", [])
    welch = welch_test(va, vb)
    ma, mb = a.mean(metric), b.mean(metric)
    delta = (ma - mb) if ma is not None and mb is not None else None
    out: dict[str, Any] = {"a": a.label, "b": b.label, "task": a.task, "metric": metric, "delta": delta,
                           "per_seed": tests, "welch": welch, "test": None, "pvalue": None,
                           "significant": False, "better": None, "alpha": ALPHA}
    if tests:
        combined = combine_seed_tests([{**t, "delta": t["delta_good"]} for t in tests])
        out.update(test=tests[0]["test"], pvalue=combined["pvalue"], significant=combined["significant"],
                   direction=combined["direction"])
    elif welch is not None and delta is not None:
        good = delta if higher_is_better(metric) else -delta
        direction = (good > 0) - (good < 0)
        out.update(test="welch", pvalue=welch["pvalue"], direction=direction,
                   significant=bool(welch["pvalue"] < ALPHA and direction != 0))
    if out["significant"]:
        out["better"] = a.label if out["direction"] > 0 else b.label
    return out


def pairwise(configs: list[Config]) -> list[dict[str, Any]]:
    """Tests between configurations of one task: all pairs, or best/baseline vs the rest when many."""
    ok = [c for c in configs if c.runs]
    if len(ok) <= PAIRWISE_MAX_CONFIGS:
        pairs = list(combinations(ok, 2))
    else:
        anchors = [c for c in ok if c.best or c.baseline]
        pairs = [(x, c) for x in anchors for c in ok if c is not x]
    seen: set[tuple[str, str]] = set()
    out = []
    for x, y in pairs:
        key = tuple(sorted((x.config_id, y.config_id)))
        if key in seen:
            continue
        seen.add(key)  # type: ignore[arg-type]
        out.append(compare_pair(x, y))
    return out


# ---- baseline comparison and verdicts ------------------------------------------------------------


def pick_baseline(configs: list[Config], selector: str | None) -> Config | None:
    """The baseline of one task: a configuration label, a method name, a config id or a run id.
    Several matches (e.g. full at two learning rates): the one with the best mean metric."""
    if not selector:
        return None
    ok = [c for c in configs if c.runs]
    matches = ([c for c in ok if c.label == selector] or [c for c in ok if c.method == selector]
               or [c for c in ok if c.config_id.startswith(selector)]
               or [c for c in ok if any(r.get("run_id") == selector for r in c.runs)])
    if not matches:
        return None
    sign = 1.0 if higher_is_better(matches[0].metric) else -1.0
    # A configuration without a mean metric ranks last, whichever way the metric points.
    return max(matches, key=lambda c: sign * m if (m := c.mean(c.metric)) is not None else -math.inf)


def _ratio(base: float | None, value: float | None) -> float | None:
    """base / value of a cost; None unless both are measured and above zero (no 0× or ∞× claims)."""
    if base is None or value is None or value <= 0 or base <= 0:
        return None
    return base / value


def _per_class_means(cfg: Config) -> dict[str, dict[str, float]]:
    acc: dict[str, dict[str, list[float]]] = {}
    for r in cfg.runs:
        for cls, vals in (value_at(r, "metrics", "per_class") or {}).items():
            for k in ("precision", "recall", "f1"):
                v = number((vals or {}).get(k))
                if v is not None:
                    acc.setdefault(str(cls), {}).setdefault(k, []).append(v)
    return {cls: {k: sum(v) / len(v) for k, v in d.items()} for cls, d in acc.items()}


def compare_to_baseline(cfg: Config, base: Config, test: dict[str, Any]) -> dict[str, Any]:
    """Every number of the comparison of one configuration against the baseline."""
    deltas = {}
    metric_names = {k for r in cfg.runs + base.runs for k in scalar_metrics(r)}  # not costs or trust figures
    for name in sorted(set(cfg.stats) & set(base.stats) & metric_names):
        a, b = cfg.mean(name), base.mean(name)
        if a is None or b is None:
            continue
        deltas[name] = {"value": a, "baseline": b, "abs": a - b, "rel_pct": (a - b) / abs(b) * 100 if b else None,
                        "higher_is_better": higher_is_better(name)}
    pc_a, pc_b = _per_class_means(cfg), _per_class_means(base)
    per_class = {cls: {k: pc_a[cls][k] - pc_b[cls][k] for k in pc_a[cls] if k in pc_b.get(cls, {})}
                 for cls in pc_a if cls in pc_b}
    tp, tp_base = cfg.mean("trainable_params"), base.mean("trainable_params")
    metric_value = cfg.mean(cfg.metric)
    out = {
        "label": cfg.label, "baseline": base.label, "task": cfg.task, "metric": cfg.metric, "deltas": deltas,
        "per_class_deltas": per_class,
        "param_reduction_pct": (1 - tp / tp_base) * 100 if tp is not None and tp_base else None,
        "x_fewer_params": _ratio(tp_base, tp),
        "metric_per_million_params": metric_value / (tp / 1e6) if metric_value is not None and tp else None,
        "baseline_metric_per_million_params": (base.mean(base.metric) / (tp_base / 1e6)
                                               if base.mean(base.metric) is not None and tp_base else None),
        "speedup": _ratio(base.mean("train_time_s"), cfg.mean("train_time_s")),
        "memory_saving": _ratio(base.mean("peak_memory_bytes"), cfg.mean("peak_memory_bytes")),
        "footprint_saving": _ratio(base.mean("model_footprint_bytes"), cfg.mean("model_footprint_bytes")),
        "size_ratio": _ratio(base.mean("artifact_bytes"), cfg.mean("artifact_bytes")),
        "test": test, "learned": cfg.learned, "baseline_learned": base.learned,
        "learning_reasons": cfg.learning.get("reasons", []),
    }
    out["verdict"] = verdict(out, test)
    return out


def _cost_phrase(ratio: float | None, better: str, worse: str, same: str) -> str | None:
    if ratio is None:
        return None
    if ratio >= COST_RATIO_THRESHOLD:
        return f"{ratio:.1f}× {better}"
    if ratio <= 1 / COST_RATIO_THRESHOLD:
        return f"{1 / ratio:.1f}× {worse}"
    return same


def verdict(comparison: dict[str, Any], test: dict[str, Any]) -> dict[str, str]:
    """A short verdict stated from the numbers: the quality call needs a significant paired test.
    A configuration that did not learn gets that verdict and no cost praise."""
    if comparison.get("learned") is False:
        reasons = comparison.get("learning_reasons") or ["not above the majority class"]
        return {"label": "did not learn", "text": f"Did not learn: {reasons[0]}; no comparison is claimed."}
    metric = comparison["metric"]
    d = comparison["deltas"].get(metric) or {}
    delta = d.get("abs")
    p = test.get("pvalue")
    if delta is None:
        label, quality = "not tested", f"{metric} not measured on both sides"
    elif test.get("test") is None or p is None:
        label = "not tested"
        quality = f"{metric} Δ {delta:+.4f} (no paired test possible)"
    elif test.get("significant"):
        label = "better" if test.get("better") == comparison["label"] else "worse"
        good = delta if higher_is_better(metric) else -delta
        if (good > 0) != (label == "better"):  # e.g. McNemar (correctness) against a mean F1 moving the other way
            label = "mixed"
            quality = (f"mixed: the paired test (p={p:.3g}) favours {test.get('better')} "
                       f"but mean {metric} moves the other way (Δ {delta:+.4f})")
        else:
            quality = f"significantly {label} {metric} (Δ {delta:+.4f}, p={p:.3g})"
    else:
        label = "no significant difference"
        quality = f"no significant difference in {metric} (Δ {delta:+.4f}, p={p:.3g})"
    costs = [c for c in (
        _cost_phrase(comparison["x_fewer_params"], "fewer trainable parameters", "more trainable parameters",
                     "similar trainable parameters"),
        _cost_phrase(comparison["speedup"], "faster training", "slower training", "similar training time"),
        _cost_phrase(comparison["memory_saving"], "less peak memory", "more peak memory", "similar peak memory"),
        _cost_phrase(comparison["size_ratio"], "smaller saved artifact", "larger saved artifact",
                     "similar saved size"),
    ) if c]
    text = quality[0].upper() + quality[1:] + (f"; {', '.join(costs)}." if costs else ".")
    if comparison.get("baseline_learned") is False:
        text += f" ({comparison['baseline']} itself did not learn.)"
    return {"label": label, "text": text}
