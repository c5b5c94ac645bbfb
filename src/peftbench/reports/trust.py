"""What a report adds from the trust fields of records: tuning, protocol, forgetting, weight change,
time to target. Each section is built only from what records hold; without data it is empty and the
report leaves it out.

- Tuning (`tuning`, records of `peftbench tune`): per search, the budget, the best validation
  score and settings, and the test metric of the defaults and of the tuned settings over the same
  seeds. Trials only served the search: `analysis.analyze` keeps them out of every comparison.
- Protocol (`protocol`): which split each reported number came from; configurations that selected
  on the test split (`protocol.test_selection`, or a tuning search on test) are flagged.
- Forgetting (`retention`): means over seeds and the learning-vs-forgetting Pareto front.
- Weight change (`diagnostics`): summary means and per-layer profiles, averaged over seeds.
- Time to target: `time_to_target`.

Definitions are in docs/report.md.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from peftbench.records.fields import model_label, number, value_at
from peftbench.reports.configs import Config, scalar_metrics
from peftbench.reports.stats import pareto_front, seed_summary
from peftbench.tasks.metrics import higher_is_better

# Time to target: the training time at which a run's per-epoch metric first came within this share
# of its final value (`time_to_target`; `peftbench report --target-fraction`).
TARGET_FRACTION = 0.95

# Record numbers summarized per configuration (mean over seeds), with their place in the record.
FORGETTING_STATS = {
    "forgetting": ("retention", "forgetting"),
    "retention_drift": ("retention", "drift"),
    "probe_before_accuracy": ("retention", "probe", "before_accuracy"),
    "probe_after_accuracy": ("retention", "probe", "after_accuracy"),
    "lm_eval_forgetting": ("lm_eval", "retention_forgetting"),  # mean drop on retention.lm_eval_tasks
}
WEIGHT_CHANGE_STATS = {
    "dw_layers": ("diagnostics", "summary", "layers"),
    "dw_mean_rel_norm": ("diagnostics", "summary", "mean_rel_norm"),
    "dw_max_rel_norm": ("diagnostics", "summary", "max_rel_norm"),
    "dw_mean_effective_rank": ("diagnostics", "summary", "mean_effective_rank"),
    "dw_intruders_total": ("diagnostics", "summary", "intruders_total"),
    "dw_layers_with_intruders": ("diagnostics", "summary", "layers_with_intruders"),
}
RECORD_STATS = {**FORGETTING_STATS, **WEIGHT_CHANGE_STATS}
LAYER_KEYS = ("rel_norm", "effective_rank", "intruders")
# Module-name words shortened on per-layer plot ticks ('' drops the word).
LAYER_WORDS = {"attention": "attn", "self": "", "output": "out", "intermediate": "inter", "dense": "", "layer": "",
               "SelfAttention": "attn", "EncDecAttention": "xattn", "DenseReluDense": "ffn"}
TICK_CHARS = 20


# ---- per run ---------------------------------------------------------------------------------------


def time_to_target(record: dict[str, Any], metric: str, fraction: float = TARGET_FRACTION) -> dict[str, Any] | None:
    """Training time at which the run's per-epoch `metric` first came within `fraction` of its final value.

    Reached at the first evaluation with value / final ≥ fraction (higher-is-better metrics) or
    final / value ≥ fraction (lower-is-better), "final" being the curve's last value, so both sides
    of a comparison are on the same split. The time is the training clock at that evaluation
    (`eval.per_epoch[].train_time_s`); records made before that field existed get the step share
    of `train.time_s`. None without a curve or with a final value ≤ 0 (no ratio)."""
    curve = [(e, v) for e in (value_at(record, "eval", "per_epoch") or [])
             if isinstance(e, dict) and (v := number(e.get(metric))) is not None]
    if not curve or curve[-1][1] <= 0:
        return None
    final = curve[-1][1]
    up = higher_is_better(metric)
    total, steps = number(value_at(record, "train", "time_s")), number(value_at(record, "train", "steps"))
    for entry, value in curve:
        ratio = value / final if up else (final / value if value > 0 else 0.0)
        if ratio < fraction - 1e-12:
            continue
        seconds, source = number(entry.get("train_time_s")), "recorded"
        step = number(entry.get("step"))
        if seconds is None and total is not None and steps and step is not None:
            seconds, source = total * step / steps, "step share of train.time_s"
        return {"seconds": seconds, "epoch": entry.get("epoch"), "step": entry.get("step"), "value": value,
                "final": final, "target": final * fraction if up else final / fraction, "fraction": fraction,
                "time_source": source if seconds is not None else None,
                "share_of_train_time": seconds / total if seconds is not None and total else None}
    return None  # only with fraction > 1: the last point reaches any fraction ≤ 1 of itself


def record_values(record: dict[str, Any], metric: str, fraction: float = TARGET_FRACTION) -> dict[str, float | None]:
    """The trust numbers of one run (forgetting, weight change, time to target), for tables and exports."""
    values = {name: number(value_at(record, *path)) for name, path in RECORD_STATS.items()}
    reached = time_to_target(record, metric, fraction)
    values["time_to_target_s"] = reached["seconds"] if reached else None
    return values


def add_trust_stats(configs: list[Config], fraction: float = TARGET_FRACTION) -> None:
    """Seed summaries of the trust numbers, only for those some run of the configuration has."""
    for c in configs:
        per_run = [record_values(r, c.metric, fraction) for r in c.runs]
        for name in (*RECORD_STATS, "time_to_target_s"):
            if any(v[name] is not None for v in per_run):
                c.stats[name] = seed_summary([v[name] for v in per_run])


# ---- per task --------------------------------------------------------------------------------------


def task_trust(configs: list[Config], records: list[dict[str, Any]],
               fraction: float = TARGET_FRACTION) -> dict[str, Any]:
    """The trust sections of one task (`records`: all of the task's records, tuning trials included)."""
    sections = {
        "protocol": protocol_summary(configs),
        "tuning": tuning_summaries(configs, records),
        "forgetting": forgetting_points(configs),
        "weight_change": layer_profiles(configs),
        "time_to_target": [
            {"label": c.label, "run_id": r.get("run_id"), "seed": r.get("seed"), "metric": c.metric, **reached}
            for c in configs for r in c.runs if (reached := time_to_target(r, c.metric, fraction))],
    }
    return {k: v for k, v in sections.items() if v}


def protocol_summary(configs: list[Config]) -> dict[str, Any]:
    """Which split the numbers came from (as the records state it) and the test-selected configurations."""
    runs = [r for c in configs for r in c.runs]
    numbers_from: dict[str, list[str]] = {}
    for r in runs:
        for key, split in (value_at(r, "protocol", "numbers_from") or {}).items():
            if split not in numbers_from.setdefault(key, []):
                numbers_from[key].append(split)
    selection = sorted({s for r in runs if (s := value_at(r, "protocol", "selection", "split"))})
    tests = {(str(value_at(r, "protocol", "splits", "test", "source")), value_at(r, "protocol", "splits", "test", "n"))
             for r in runs if value_at(r, "protocol", "splits", "test", "source")}
    flagged = [c.label for c in configs if c.test_selection]
    if not numbers_from and not flagged:
        return {}
    return {"numbers_from": numbers_from, "selection_split": selection,
            "test_split": [{"source": s, "n": n} for s, n in sorted(tests, key=str)], "test_selected": flagged}


def tuning_summaries(configs: list[Config], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per tuning search (`tuning.tune_id`): budget, best trial, defaults vs tuned on test."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if tune_id := value_at(r, "tuning", "tune_id"):
            by_id.setdefault(str(tune_id), []).append(r)
    labels = {(value_at(r, "tuning", "tune_id"), c.tuning_role): c.label for c in configs for r in c.runs}
    return [_tuning_summary(tune_id, recs, labels) for tune_id, recs in sorted(by_id.items())]


def _tuning_summary(tune_id: str, recs: list[dict[str, Any]], labels: dict[tuple[Any, Any], str]) -> dict[str, Any]:
    def role(name: str) -> list[dict[str, Any]]:
        return sorted((r for r in recs if value_at(r, "tuning", "role") == name and r.get("status") == "success"),
                      key=lambda r: int(r.get("seed") or 0))

    finals, trials = role("default") + role("tuned"), role("trial")
    # Final runs carry the budget as spent (trials run, search time); trials only the budget asked for.
    budgets = [b for r in finals + recs if (b := value_at(r, "tuning", "budget"))]
    budget = budgets[0] if budgets else {}
    metric = budget.get("metric") or recs[0].get("main_metric") or "accuracy"
    up = higher_is_better(metric)
    best_validation = next((v for r in finals if (v := number(value_at(r, "tuning", "best_validation"))) is not None), None)
    best_params = value_at(role("tuned")[0], "tuning", "params") if role("tuned") else None
    scored = [(v, r) for r in trials
              if (v := number(value_at(r, "protocol", "selection", "validation_metrics", metric))) is not None]
    if scored and (best_validation is None or best_params is None):  # a search whose final runs are absent
        value, best = (max if up else min)(scored, key=lambda x: x[0])
        best_validation = value if best_validation is None else best_validation
        best_params = best_params or value_at(best, "tuning", "params")
    sides = {}
    for name, key in (("default", "defaults"), ("tuned", "tuned")):
        runs = role(name)
        sides[key] = {"label": labels.get((tune_id, name)), "params": value_at(runs[0], "tuning", "params") if runs else None,
                      "seeds": [r.get("seed") for r in runs],
                      "test": seed_summary([scalar_metrics(r).get(metric) for r in runs])}
    a, b = sides["defaults"]["test"]["mean"], sides["tuned"]["test"]["mean"]
    return {
        "tune_id": tune_id, "method": recs[0].get("method"), "model": model_label(recs[0].get("model_name")),
        "metric": metric, "higher_is_better": up, "split": budget.get("split"),
        "test_selection": budget.get("split") == "test",
        "budget": {"trials": budget.get("trials"), "timeout_s": budget.get("timeout_s"),
                   "trials_run": budget.get("trials_run", len(trials) or None),
                   "trials_complete": budget.get("trials_complete"), "search_time_s": budget.get("search_time_s")},
        "trial_records": len(trials), "best_validation": best_validation, "best_params": best_params,
        **sides, "delta": b - a if a is not None and b is not None else None,
    }


def forgetting_points(configs: list[Config]) -> list[dict[str, Any]]:
    """Task metric vs forgetting per configuration (means over seeds), with Pareto-front membership:
    forgetting lower is better, the metric in its own direction. Configurations whose forgetting is
    measured differently (probe accuracy drop vs representation drift; the drop on lm-eval retention
    tasks, `lm_eval_drop`) get separate fronts. Configurations that did not learn are shown but never
    on a front."""
    groups: dict[str, list[tuple[Config, float]]] = {}
    for c in configs:
        if c.mean(c.metric) is None:
            continue
        if c.mean("forgetting") is not None:
            kinds = Counter(value_at(r, "retention", "forgetting_metric") for r in c.runs
                            if value_at(r, "retention", "forgetting") is not None)
            groups.setdefault(str(kinds.most_common(1)[0][0]), []).append((c, c.mean("forgetting")))
        if c.mean("lm_eval_forgetting") is not None:
            groups.setdefault("lm_eval_drop", []).append((c, c.mean("lm_eval_forgetting")))
    out = []
    for kind, group in sorted(groups.items()):
        metric = group[0][0].metric
        learners = [(c, f) for c, f in group if c.learned is not False]  # non-learners are never on a front
        mask = pareto_front([(c.mean(metric), f) for c, f in learners], [higher_is_better(metric), False])
        front = {c.config_id for (c, _), on in zip(learners, mask, strict=True) if on}
        out += [{"label": c.label, "config_id": c.config_id, "forgetting_metric": kind, "forgetting": f,
                 "metric": metric, "value": c.mean(metric), "pareto": c.config_id in front, "baseline": c.baseline,
                 "learned": c.learned}
                for c, f in group]
    return out


# ---- per-layer weight change -------------------------------------------------------------------------


def merge_orders(orders: list[list[str]]) -> list[str]:
    """One order holding every name in which each list keeps its own order (a topological order of
    "comes before in some list"); names no list orders are placed in natural order (block numbers as
    numbers), so a configuration that adapts only the top blocks lands after the lower ones."""
    import heapq
    from itertools import pairwise

    names = list(dict.fromkeys(n for order in orders for n in order))
    after: dict[str, set[str]] = {n: set() for n in names}
    waiting = dict.fromkeys(names, 0)
    for order in orders:
        for a, b in pairwise(order):
            if b not in after[a]:
                after[a].add(b)
                waiting[b] += 1
    ready = [(_natural(n), n) for n in names if not waiting[n]]
    heapq.heapify(ready)
    merged: list[str] = []
    done: set[str] = set()
    while len(merged) < len(names):
        # Nothing ready means the lists disagree (a cycle): take the naturally first name left.
        name = heapq.heappop(ready)[1] if ready else min((n for n in names if n not in done), key=_natural)
        if name in done:
            continue
        done.add(name)
        merged.append(name)
        for nxt in after[name]:
            waiting[nxt] -= 1
            if not waiting[nxt] and nxt not in done:
                heapq.heappush(ready, (_natural(nxt), nxt))
    return merged


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in name.split("."))


def short_layer_names(names: list[str]) -> list[str]:
    """Tick labels: from the block index on, common words shortened ('…layer.0.attention.self.query' →
    '0.attn.query'); labels that would be equal get the first letters of their top module ('enc.', 'dec.')."""
    def short(name: str) -> str:
        parts = name.split(".")
        start = next((i for i, p in enumerate(parts) if p.isdigit()), max(0, len(parts) - 2))
        words = [LAYER_WORDS.get(p, p) for p in parts[start:]]
        return ".".join(w for w in words if w) or parts[-1]

    shorts = [short(n) for n in names]
    counts = Counter(shorts)
    shorts = [f"{n.split('.')[0][:3]}.{s}" if counts[s] > 1 else s for n, s in zip(names, shorts, strict=True)]
    return [s if len(s) <= TICK_CHARS else s[:8] + "…" + s[-(TICK_CHARS - 9):] for s in shorts]


def layer_profiles(configs: list[Config]) -> dict[str, Any]:
    """Per-layer ΔW numbers of each configuration (means over seeds), aligned on one layer order."""
    orders: list[list[str]] = []
    per_config = []
    for c in configs:
        acc: dict[str, dict[str, list[float]]] = {}
        for r in c.runs:
            layers = value_at(r, "diagnostics", "layers")
            if not isinstance(layers, dict) or not layers:
                continue
            if list(layers) not in orders:
                orders.append(list(layers))
            for name, st in layers.items():
                for key in LAYER_KEYS:
                    if (v := number((st or {}).get(key))) is not None:
                        acc.setdefault(name, {}).setdefault(key, []).append(v)
        if acc:
            per_config.append((c, acc))
    if not per_config:
        return {}
    order = merge_orders(orders)
    return {
        "layers": order, "short_names": short_layer_names(order),
        "configs": [{"label": c.label, "config_id": c.config_id, "seeds": len(c.runs),
                     **{key: [(sum(v) / len(v)) if (v := acc.get(name, {}).get(key)) else None for name in order]
                        for key in LAYER_KEYS}}
                    for c, acc in per_config],
    }


def source_name(source: str | None) -> str:
    """A split's file as shown in a report: its name, not its full path."""
    return Path(source).name if source else "?"
