"""Load marks: the machine's load beside each run's time, and a mark on time comparisons made under
clearly different load.

A record's `train.load` says what the machine was doing while the run trained (`perf/load.py`). On a
shared machine other work moves training times by 2–3×, so a speed-up between a configuration timed
on a quiet machine and one timed under load says more about the load than about the methods. A
comparison is marked when the two configurations' runs ran under clearly different load
(`perf.load.load_differs`: cores busy with other work, or CPU steal); records without load fields
(older ones) are never marked, and show '-'.
"""

from __future__ import annotations

from typing import Any

from peftbench.perf.load import load_differs, others
from peftbench.records.fields import number, value_at

LOAD_MARK = "⚠"


def run_load(record: dict[str, Any]) -> dict[str, Any] | None:
    load = value_at(record, "train", "load")
    return load if isinstance(load, dict) else None


def runs_load(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The mean load over runs (cores busy with other work, steal share); None when no run has one."""
    busy = [v for r in runs if (v := others(run_load(r), value_at(r, "train", "threads"))) is not None]
    steal = [v for r in runs if (v := number(value_at(r, "train", "load", "steal_share"))) is not None]
    if not busy and not steal:
        return None
    return {"other_busy_cores": sum(busy) / len(busy) if busy else None,
            "steal_share": sum(steal) / len(steal) if steal else None}


def load_mark(runs: list[dict[str, Any]], base_runs: list[dict[str, Any]]) -> str:
    """'⚠ <why> ...' when the two sets of runs trained under clearly different load (`runs` first), 'similar' when both
    loads are known and alike, '-' when either is unknown."""
    a, b = runs_load(runs), runs_load(base_runs)
    if a is None or b is None:
        return "-"
    why = load_differs(a, b)
    return f"{LOAD_MARK} {why} (this configuration vs the reference): times not comparable" if why else "similar"


def comparison_load_mark(analysis: Any, task: str, comparison: dict[str, Any]) -> str:
    """`load_mark` for one row of a comparison table (its configuration against the reference)."""
    by_label = {c.label: c for c in analysis.task_configs(task)}
    cfg, base = by_label.get(comparison.get("label")), by_label.get(comparison.get("baseline"))
    if cfg is None or base is None:
        return "-"
    return load_mark(cfg.runs, base.runs)


def run_load_text(record: dict[str, Any]) -> str:
    """One run's load: mean 1-minute load average, cores busy with other work and steal, e.g.
    '1.9; others 1.0; steal 0%'; '-' for a record without load fields."""
    load = run_load(record)
    if load is None:
        return "-"
    mean, busy, steal = (number(load.get(k)) for k in ("mean_1min", "other_busy_cores", "steal_share"))
    parts = [f"{mean:.2f}" if mean is not None else "-"]
    if busy is not None:
        parts.append(f"others {busy:.1f}")
    if steal is not None:
        parts.append(f"steal {steal:.0%}")
    return "; ".join(parts)
