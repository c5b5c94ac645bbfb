"""From run records to what a report states: configurations, baseline comparisons, verdicts, tests.

Runs that differ only by their training seed form one configuration (`configs`); comparisons are
made inside a task only, and a difference is called better or worse only when a paired test says it
is significant (`comparisons`, docs/report.md). The trust sections come from `trust`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peftbench.errors import SpecError
from peftbench.records.fields import value_at
from peftbench.reports.comparisons import (
    COST_RATIO_THRESHOLD,
    compare_pair,
    compare_to_baseline,
    pairwise,
    pick_baseline,
)
from peftbench.reports.configs import Config, group_configs
from peftbench.reports.decision import PRIORITIES, decide
from peftbench.reports.stats import ALPHA
from peftbench.reports.trust import TARGET_FRACTION, add_trust_stats, task_trust


@dataclass
class Analysis:
    """Everything a report shows, per task."""

    configs: list[Config]
    tasks: list[str]
    baselines: dict[str, Config | None]
    comparisons: dict[str, list[dict[str, Any]]]
    pairs: dict[str, list[dict[str, Any]]]
    notes: list[str]
    trust: dict[str, dict[str, Any]] = field(default_factory=dict)  # per task: trust.task_trust
    target_fraction: float = TARGET_FRACTION
    decisions: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # per task: decision.decide
    best_comparisons: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # against the best learner

    def task_configs(self, task: str) -> list[Config]:
        return [c for c in self.configs if c.task == task]

    def best(self, task: str) -> Config | None:
        """The task's ★ configuration (the first on a tie), None when no configuration learned."""
        return next((c for c in self.task_configs(task) if c.best and c.runs), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": ALPHA, "cost_ratio_threshold": COST_RATIO_THRESHOLD, "target_fraction": self.target_fraction,
            "tasks": {t: {
                "metric": (self.task_configs(t) or [Config("", t, "", "", {})])[0].metric,
                "baseline": b.label if (b := self.baselines.get(t)) else None,
                "configs": [c.to_dict() for c in self.task_configs(t)],
                "comparisons": self.comparisons.get(t, []),
                "decision": self.decisions.get(t),
                "best": b.label if (b := self.best(t)) else None,
                "best_comparisons": self.best_comparisons.get(t, []),
                "pairs": self.pairs.get(t, []),
                "trust": self.trust.get(t, {}),
            } for t in self.tasks},
            "notes": self.notes,
        }


def _unique_runs(records: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    """The records with each run id once (the same folder found twice is noted and counted once)."""
    seen: set[str] = set()
    unique = []
    for r in records:
        rid = str(r.get("run_id"))
        if rid in seen:
            notes.append(f"run {rid} appears more than once; counted once")
            continue
        seen.add(rid)
        unique.append(r)
    return unique


def _against_baseline(configs: list[Config], base: Config, pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every other successful configuration of the task against its baseline, reusing the pair's test."""
    by_pair = {(p["a"], p["b"]): p for p in pairs}
    return [compare_to_baseline(c, base, by_pair.get((c.label, base.label)) or compare_pair(c, base))
            for c in configs if c is not base and c.runs]


def analyze(records: list[dict[str, Any]], *, baseline: str | None = "full", metric: str | None = None,
            bootstrap: bool = False, target_fraction: float = TARGET_FRACTION, prefer: str = "metric",
            floors: dict[str, tuple[str, float]] | None = None) -> Analysis:
    """Group, summarize, test and compare. Duplicate run ids (the same folder found twice) count once;
    tuning trials (validation-only search runs) are summarized in the tuning section, never compared.
    `prefer` and `floors` ({metric: ('min'|'max', value)}) steer the decision each task opens with."""
    if prefer not in PRIORITIES:
        raise SpecError(f"unknown priority '{prefer}'", hint=f"use --prefer with one of {', '.join(PRIORITIES)}")
    if not 0 < target_fraction <= 1:
        raise SpecError(f"target fraction {target_fraction} is outside (0, 1]", hint="pass e.g. --target-fraction 0.95")
    notes: list[str] = []
    unique = _unique_runs(records, notes)
    compared = [r for r in unique if value_at(r, "tuning", "role") != "trial"]
    if len(compared) < len(unique):
        notes.append(f"{len(unique) - len(compared)} tuning trial run(s) are left out of the dashboards and "
                     "comparisons: they only served the search on validation (see the tuning sections)")
    configs = group_configs(compared, metric=metric, bootstrap=bootstrap)
    add_trust_stats(configs, target_fraction)
    if any(value_at(r, "train", "memory", "kind") == "cpu_rss_growth" and not value_at(r, "train", "memory_by_kind")
           for r in unique):  # records made before memory was counted by kind
        notes.append("peak memory of CPU runs is the growth of process memory (RSS) during training: "
                     "it is noisy and small for adapter methods, so treat memory ratios of CPU runs as rough")
    tasks = sorted({c.task for c in configs})
    baselines: dict[str, Config | None] = {}
    comparisons: dict[str, list[dict[str, Any]]] = {}
    pairs: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        in_task = [c for c in configs if c.task == task]
        if metric and in_task and in_task[0].metric != metric:
            notes.append(f"task {task}: no run has metric '{metric}'; using '{in_task[0].metric}'")
        base = pick_baseline(in_task, baseline)
        baselines[task] = base
        if base is not None:
            base.baseline = True
        elif baseline:
            notes.append(f"task {task}: no successful run matches baseline '{baseline}', so no baseline "
                         "comparison (pick one with --baseline)")
        pairs[task] = pairwise(in_task)
        if base is not None:
            comparisons[task] = _against_baseline(in_task, base, pairs[task])
    trust = {task: task_trust([c for c in configs if c.task == task],
                              [r for r in unique if (r.get("task") or "classification") == task], target_fraction)
             for task in tasks}
    analysis = Analysis(configs, tasks, baselines, comparisons, pairs, notes, trust, target_fraction)
    for task in tasks:
        in_task = analysis.task_configs(task)
        analysis.decisions[task] = decide(in_task, pairs[task], prefer=prefer, floors=floors)
        best = analysis.best(task)
        if best is not None and best is not baselines.get(task):
            analysis.best_comparisons[task] = _against_baseline(in_task, best, pairs[task])
    return analysis
