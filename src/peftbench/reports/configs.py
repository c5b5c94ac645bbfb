"""Configurations: runs that differ only by their training seed, grouped, labelled and summarized.

A configuration's numbers are seed summaries (mean, std, 95% t-interval) of its successful runs;
its label is the method name plus the settings that set it apart from the task's other
configurations of that method.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from peftbench.methods.base import SEED_METHODS
from peftbench.records.fields import fmt_number, model_label, number, value_at
from peftbench.reports.learning import config_learning
from peftbench.reports.stats import seed_summary
from peftbench.tasks.metrics import higher_is_better

# Costs from the record, each with its place in the record; all are lower-is-better. Peak memory is the
# peak of training memory counted by kind (perf/memory.py), the same on every device; the model footprint
# is the weights in memory as trained (a 4-bit base by its packed bytes), apart from the saved artifact.
COSTS = {
    "trainable_params": ("params", "trainable"),
    "train_time_s": ("train", "time_s"),
    "peak_memory_bytes": ("train", "memory_by_kind", "peak_bytes"),
    "model_footprint_bytes": ("model", "footprint", "bytes"),
    "artifact_bytes": ("artifact", "size_bytes"),
}
# Where a record has no such field (made before it existed), the field it replaced: the device's view
# (CUDA allocator peak, or the growth of process RSS on the CPU).
COST_FALLBACKS = {"peak_memory_bytes": ("train", "peak_memory_bytes")}


def selected_on_test(record: dict[str, Any]) -> bool:
    """The run chose weights or settings on the test split (allowed only explicitly): optimistic numbers."""
    return value_at(record, "protocol", "test_selection") is True or value_at(record, "tuning", "budget", "split") == "test"


def scalar_metrics(record: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in ((k, number(v)) for k, v in (record.get("metrics") or {}).items()) if v is not None}


def config_key(record: dict[str, Any]) -> str:
    """Everything that defines a configuration: the spec without the training seed and the run name."""
    spec = json.loads(json.dumps(record.get("spec") or {}))
    spec.pop("name", None)
    (spec.get("train") or {}).pop("seed", None)
    spec.setdefault("task", record.get("task"))
    if not record.get("spec"):
        spec = {"task": record.get("task"), "method": {"name": record.get("method")}, "run": record.get("run_id")}
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _flat_spec(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section in ("model", "data", "method", "train"):
        for k, v in (spec.get(section) or {}).items():
            if section == "train" and k == "seed":
                continue
            out[f"{section}.{k}"] = json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
    out["task"] = spec.get("task")
    out["save"] = spec.get("save")
    return out


@dataclass
class Config:
    """Runs of one configuration (they differ only by seed)."""

    config_id: str
    task: str
    model: str
    method: str
    spec: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)  # successful records
    failed: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""
    metric: str = "accuracy"
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    best: bool = False
    baseline: bool = False
    tuning_role: str | None = None  # 'default' or 'tuned' for the final runs of `peftbench tune`
    learning: dict[str, Any] = field(default_factory=dict)  # learning.config_learning of its runs

    @property
    def hparams(self) -> dict[str, Any]:
        method = self.spec.get("method") or {}
        train = self.spec.get("train") or {}
        return {"r": method.get("r"), "lr": train.get("lr"), "epochs": train.get("epochs")}

    @property
    def seeds(self) -> list[int]:
        return sorted(int(r.get("seed") or 0) for r in self.runs)

    @property
    def learned(self) -> bool | None:
        """True, False (known not to have learned: no stars, fronts or praise) or None (unknown)."""
        return self.learning.get("learned")

    @property
    def test_selection(self) -> bool:
        return any(selected_on_test(r) for r in self.runs)

    def mean(self, key: str) -> float | None:
        return (self.stats.get(key) or {}).get("mean")

    def to_dict(self) -> dict[str, Any]:
        return {
            "config_id": self.config_id, "label": self.label, "task": self.task, "model": self.model,
            "method": self.method, "hparams": self.hparams, "metric": self.metric,
            "higher_is_better": higher_is_better(self.metric), "seeds": self.seeds, "n_success": len(self.runs),
            "n_failed": len(self.failed), "runs": [r["run_id"] for r in self.runs],
            "failed_runs": [{"run_id": r.get("run_id"), "status": r.get("status"), "error": r.get("error")}
                            for r in self.failed],
            "best": self.best, "baseline": self.baseline, "tuning_role": self.tuning_role,
            "test_selection": self.test_selection, "stats": self.stats, "learning": self.learning,
        }


def record_costs(record: dict[str, Any]) -> dict[str, float | None]:
    return {name: cost_of(record, name) for name in COSTS}


def cost_of(record: dict[str, Any], name: str) -> float | None:
    """A cost of `COSTS` from the record, or from the field it replaced in older records."""
    value = number(value_at(record, *COSTS[name]))
    return value if value is not None or name not in COST_FALLBACKS else number(value_at(record, *COST_FALLBACKS[name]))


def group_configs(records: list[dict[str, Any]], *, metric: str | None = None,
                  bootstrap: bool = False) -> list[Config]:
    """Group records into configurations, label them and compute their seed summaries."""
    by_key: dict[str, Config] = {}
    for rec in records:
        key = config_key(rec)
        if key not in by_key:
            by_key[key] = Config(key, rec.get("task") or "classification", model_label(rec.get("model_name")),
                                 rec.get("method") or "?", rec.get("spec") or {},
                                 tuning_role=value_at(rec, "tuning", "role"))
        cfg = by_key[key]
        (cfg.runs if rec.get("status") == "success" else cfg.failed).append(rec)
    configs = list(by_key.values())
    _label(configs)
    for task in sorted({c.task for c in configs}):
        in_task = [c for c in configs if c.task == task]
        task_metric = _task_metric(in_task, metric)
        for c in in_task:
            c.metric = task_metric
            c.runs.sort(key=lambda r: int(r.get("seed") or 0))
            _summarize(c, bootstrap)
            c.learning = config_learning(c.runs)
        _mark_best(in_task)
    order = {m: i for i, m in enumerate(SEED_METHODS)}
    configs.sort(key=lambda c: (c.task, c.model, order.get(c.method, len(order)), c.method, c.label))
    return configs


def _task_metric(configs: list[Config], metric: str | None) -> str:
    """The requested metric where the task's records have it, else the task's own main metric."""
    runs = [r for c in configs for r in c.runs]
    if metric and any(metric in scalar_metrics(r) for r in runs):
        return metric
    mains = [r.get("main_metric") for r in runs if r.get("main_metric")]
    return max(set(mains), key=mains.count) if mains else (metric or "main_metric")


def _summarize(cfg: Config, bootstrap: bool) -> None:
    names = sorted({k for r in cfg.runs for k in scalar_metrics(r)})
    for name in names:
        cfg.stats[name] = seed_summary([scalar_metrics(r).get(name) for r in cfg.runs], bootstrap=bootstrap)
    for name in COSTS:
        cfg.stats[name] = seed_summary([record_costs(r)[name] for r in cfg.runs], bootstrap=False)
    cfg.stats["trainable_pct"] = seed_summary([number(value_at(r, "params", "trainable_pct")) for r in cfg.runs])
    cfg.stats["total_params"] = seed_summary([number(value_at(r, "params", "total")) for r in cfg.runs])


def _mark_best(configs: list[Config]) -> None:
    """★ on the best mean metric among configurations not known to have failed to learn."""
    scored = [c for c in configs if c.mean(c.metric) is not None and c.learned is not False]
    if not scored:
        return
    sign = 1.0 if higher_is_better(scored[0].metric) else -1.0
    top = max(sign * (c.mean(c.metric) or 0.0) for c in scored)
    for c in scored:  # ties share the mark
        c.best = math.isclose(sign * (c.mean(c.metric) or 0.0), top, rel_tol=1e-12, abs_tol=1e-12)


# How the final runs of `peftbench tune` are labelled; the settings the search chose are not spelled out.
TUNING_LABELS = {"default": "defaults", "tuned": "tuned"}
TUNED_KEYS = ("train.lr", "method.r", "method.alpha")


def differing_settings(specs: list[dict[str, Any]]) -> list[list[tuple[str, str]]]:
    """Per spec, (dotted key, 'key=value') for each setting in which the specs differ, the training
    seed aside: what tells configurations of one method apart, in report labels and `peftbench ls`."""
    flats = [_flat_spec(spec) for spec in specs]
    keys = sorted({k for f in flats for k in f})
    varying = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flats}) > 1]
    out = []
    for f in flats:
        parts = []
        for k in varying:
            short = k.split(".", 1)[1] if "." in k else k
            value = model_label(f.get(k)) if k == "model.name_or_path" and isinstance(f.get(k), str) else f.get(k)
            parts.append((k, f"{short}={_short(value)}"))
        out.append(parts)
    return out


def _label(configs: list[Config]) -> None:
    """Method name plus the settings that set it apart from same-method configurations
    ("lora (tuned)" / "lora (defaults)" for the final runs of a tuning search)."""
    groups: dict[tuple[str, str], list[Config]] = {}
    for c in configs:
        groups.setdefault((c.task, c.method), []).append(c)
    for group in groups.values():
        for c, settings in zip(group, differing_settings([c.spec for c in group]), strict=True):
            role = TUNING_LABELS.get(c.tuning_role or "")
            parts = [role] if role else []
            parts += [text for k, text in settings if not (role and k in TUNED_KEYS)]
            c.label = c.method + (f" ({', '.join(parts)})" if parts else "")
    seen: dict[str, int] = {}
    for c in configs:
        seen[c.label] = seen.get(c.label, 0) + 1
    for c in configs:
        if seen[c.label] > 1 or c.label == "":
            c.label = f"{c.label or c.method} [{c.config_id[:6]}]"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return fmt_number(value)
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def summed_confusion(cfg: Config) -> tuple[list[list[int]], list[str]] | None:
    """Confusion matrix summed over the configuration's seeds (counts stay integers)."""
    total: list[list[int]] | None = None
    labels: list[str] = []
    for r in cfg.runs:
        cm = value_at(r, "metrics", "confusion_matrix")
        if not isinstance(cm, list):
            continue
        labels = [str(x) for x in (value_at(r, "metrics", "labels") or range(len(cm)))]
        total = cm if total is None else [[x + y for x, y in zip(ra, rb, strict=True)] for ra, rb in zip(total, cm, strict=True)]
    return (total, labels) if total is not None else None
