"""From run records to what a report states: configurations, baseline comparisons, verdicts, tests.

Runs that differ only by their training seed form one configuration; its numbers are seed
summaries (mean, std, 95% t-interval). Comparisons are made inside a task only, and a difference
is called better or worse only when a paired test says it is significant (see docs/report.md).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from peftbench.records.fields import number, value_at
from peftbench.reports.stats import (
    ALPHA,
    combine_seed_tests,
    mcnemar_test,
    paired_bootstrap,
    seed_summary,
    welch_test,
)
from peftbench.tasks.metrics import higher_is_better

# A cost ratio (baseline / method) must pass this before the verdict calls a method faster,
# lighter or smaller: timings and CPU memory readings vary by a few percent between identical runs.
COST_RATIO_THRESHOLD = 1.10
# Above this many configurations in a task, each is tested against the best and the baseline only.
PAIRWISE_MAX_CONFIGS = 12
# Time to target: the training time at which a run's per-epoch metric first came within this share
# of its final value (report_trust.time_to_target; `peftbench report --target-fraction`).
TARGET_FRACTION = 0.95
METHOD_ORDER = ["full", "partial", "lora", "qlora", "dora", "ia3"]
# Costs from the record, each with its place in the record; all are lower-is-better.
COSTS = {
    "trainable_params": ("params", "trainable"),
    "train_time_s": ("train", "time_s"),
    "peak_memory_bytes": ("train", "peak_memory_bytes"),
    "artifact_bytes": ("artifact", "size_bytes"),
}


def model_label(name: str | None) -> str:
    """Short model name: a local folder's last component, a hub id as written."""
    if not name:
        return "?"
    if name.startswith(("/", ".", "~")):
        return name.rstrip("/").split("/")[-1]
    return name


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

    @property
    def hparams(self) -> dict[str, Any]:
        method = self.spec.get("method") or {}
        train = self.spec.get("train") or {}
        return {"r": method.get("r"), "lr": train.get("lr"), "epochs": train.get("epochs")}

    @property
    def seeds(self) -> list[int]:
        return sorted(int(r.get("seed") or 0) for r in self.runs)

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
            "test_selection": self.test_selection, "stats": self.stats,
        }


def record_costs(record: dict[str, Any]) -> dict[str, float | None]:
    return {name: number(value_at(record, *path)) for name, path in COSTS.items()}


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
        _mark_best(in_task)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
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
    scored = [c for c in configs if c.mean(c.metric) is not None]
    if not scored:
        return
    sign = 1.0 if higher_is_better(scored[0].metric) else -1.0
    top = max(sign * (c.mean(c.metric) or 0.0) for c in scored)
    for c in scored:  # ties share the mark
        c.best = math.isclose(sign * (c.mean(c.metric) or 0.0), top, rel_tol=1e-12, abs_tol=1e-12)


# How the final runs of `peftbench tune` are labelled; the settings the search chose are not spelled out.
TUNING_LABELS = {"default": "defaults", "tuned": "tuned"}
TUNED_KEYS = ("train.lr", "method.r", "method.alpha")


def _label(configs: list[Config]) -> None:
    """Method name plus the settings that set it apart from same-method configurations
    ("lora (tuned)" / "lora (defaults)" for the final runs of a tuning search)."""
    groups: dict[tuple[str, str], list[Config]] = {}
    for c in configs:
        groups.setdefault((c.task, c.method), []).append(c)
    for group in groups.values():
        flats = [_flat_spec(c.spec) for c in group]
        keys = sorted({k for f in flats for k in f})
        varying = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flats}) > 1]
        for c, f in zip(group, flats, strict=True):
            role = TUNING_LABELS.get(c.tuning_role or "")
            parts = [role] if role else []
            for k in varying:
                if role and k in TUNED_KEYS:
                    continue
                short = k.split(".", 1)[1] if "." in k else k
                value = model_label(f.get(k)) if k == "model.name_or_path" and isinstance(f.get(k), str) else f.get(k)
                parts.append(f"{short}={_short(value)}")
            c.label = c.method + (f" ({', '.join(parts)})" if parts else "")
    seen: dict[str, int] = {}
    for c in configs:
        seen[c.label] = seen.get(c.label, 0) + 1
    for c in configs:
        if seen[c.label] > 1 or c.label == "":
            c.label = f"{c.label or c.method} [{c.config_id[:6]}]"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


# ---- paired tests between configurations ------------------------------------------------------


# Per-example stand-ins for corpus-level metrics that have no per-example form (same direction).
PER_EXAMPLE_ALIASES = {"perplexity": ("perplexity", "loss", "eval_loss", "nll")}


def per_example_scores(record: dict[str, Any], metric: str) -> list[float] | None:
    """Per-example scores of a metric, for the paired bootstrap of generation tasks: saved ones
    (`predictions.scores[metric]`, `predictions.per_example[metric]` or `predictions[metric]`; for
    perplexity, per-example losses), else ROUGE recomputed from saved generated and reference texts."""
    preds = record.get("predictions")
    if not isinstance(preds, dict):
        return None
    for name in PER_EXAMPLE_ALIASES.get(metric, (metric,)):
        for holder in (preds.get("scores"), preds.get("per_example"), preds):
            if isinstance(holder, dict):
                values = holder.get(name)
                if isinstance(values, list) and values and all(number(v) is not None for v in values):
                    return [float(v) for v in values]
    texts, refs = preds.get("pred"), preds.get("gold")
    if metric.startswith("rouge") and _all_str(texts) and _all_str(refs) and len(texts) == len(refs):
        return rouge_per_example(texts, refs, metric)
    return None


def _all_str(values: Any) -> bool:
    return isinstance(values, list) and bool(values) and all(isinstance(v, str) for v in values)


def rouge_per_example(predictions: list[str], references: list[str], rouge_type: str) -> list[float]:
    """Per-example ROUGE F1 with the summarization task's own settings (stemming, sentence split),
    so that their mean is the record's corpus score."""
    from rouge_score import rouge_scorer

    from peftbench.tasks.generative import sentence_lines

    scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=True)
    return [scorer.score(sentence_lines(r), sentence_lines(p))[rouge_type].fmeasure
            for p, r in zip(predictions, references, strict=True)]


def _class_predictions(record: dict[str, Any]) -> tuple[list[int], list[int]] | None:
    """Predicted and gold class ids (generated texts are not classes: no McNemar on them)."""
    preds = record.get("predictions")
    if not isinstance(preds, dict):
        return None
    pred, gold = preds.get("pred"), preds.get("gold")
    if isinstance(pred, list) and isinstance(gold, list) and all(isinstance(x, int) for x in pred + gold):
        return pred, gold
    return None


def _match_seeds(a: Config, b: Config) -> list[tuple[dict[str, Any], dict[str, Any]]]:
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
        ca, cb = _class_predictions(ra), _class_predictions(rb)
        if ca is None or cb is None or ca[1] != cb[1]:
            return None
        res = mcnemar_test(ca[0], cb[0], ca[1])
        res["delta_good"] = res["delta"]
    res.update(seed_a=ra.get("seed"), seed_b=rb.get("seed"), run_a=ra.get("run_id"), run_b=rb.get("run_id"))
    return res


def compare_pair(a: Config, b: Config) -> dict[str, Any]:
    """Paired significance of A vs B on the task's metric, over matched seeds."""
    metric = a.metric
    tests = [t for t in (_run_test(ra, rb, metric) for ra, rb in _match_seeds(a, b)) if t is not None]
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
    return max(matches, key=lambda c: sign * (c.mean(c.metric) if c.mean(c.metric) is not None else -math.inf))


def _ratio(base: float | None, value: float | None) -> float | None:
    if base is None or value is None or value <= 0:
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
        "size_ratio": _ratio(base.mean("artifact_bytes"), cfg.mean("artifact_bytes")),
        "test": test,
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
    """A short verdict stated from the numbers: the quality call needs a significant paired test."""
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
    return {"label": label, "text": text}


@dataclass
class Analysis:
    """Everything a report shows, per task."""

    configs: list[Config]
    tasks: list[str]
    baselines: dict[str, Config | None]
    comparisons: dict[str, list[dict[str, Any]]]
    pairs: dict[str, list[dict[str, Any]]]
    notes: list[str]
    trust: dict[str, dict[str, Any]] = field(default_factory=dict)  # per task: report_trust.task_trust
    target_fraction: float = TARGET_FRACTION

    def task_configs(self, task: str) -> list[Config]:
        return [c for c in self.configs if c.task == task]

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": ALPHA, "cost_ratio_threshold": COST_RATIO_THRESHOLD, "target_fraction": self.target_fraction,
            "tasks": {t: {
                "metric": (self.task_configs(t) or [Config("", t, "", "", {})])[0].metric,
                "baseline": b.label if (b := self.baselines.get(t)) else None,
                "configs": [c.to_dict() for c in self.task_configs(t)],
                "comparisons": self.comparisons.get(t, []),
                "pairs": self.pairs.get(t, []),
                "trust": self.trust.get(t, {}),
            } for t in self.tasks},
            "notes": self.notes,
        }


def analyze(records: list[dict[str, Any]], *, baseline: str | None = "full", metric: str | None = None,
            bootstrap: bool = False, target_fraction: float = TARGET_FRACTION) -> Analysis:
    """Group, summarize, test and compare. Duplicate run ids (the same folder found twice) count once;
    tuning trials (validation-only search runs) are summarized in the tuning section, never compared."""
    from peftbench.errors import SpecError
    from peftbench.reports.trust import add_trust_stats, task_trust

    if not 0 < target_fraction <= 1:
        raise SpecError(f"target fraction {target_fraction} is outside (0, 1]", hint="pass e.g. --target-fraction 0.95")
    notes: list[str] = []
    seen: set[str] = set()
    unique = []
    for r in records:
        rid = str(r.get("run_id"))
        if rid in seen:
            notes.append(f"run {rid} appears more than once; counted once")
            continue
        seen.add(rid)
        unique.append(r)
    compared = [r for r in unique if value_at(r, "tuning", "role") != "trial"]
    if len(compared) < len(unique):
        notes.append(f"{len(unique) - len(compared)} tuning trial run(s) are left out of the dashboards and "
                     "comparisons: they only served the search on validation (see the tuning sections)")
    configs = group_configs(compared, metric=metric, bootstrap=bootstrap)
    add_trust_stats(configs, target_fraction)
    if any(value_at(r, "train", "memory", "kind") == "cpu_rss_growth" for r in unique):
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
            by_pair = {(p["a"], p["b"]): p for p in pairs[task]}
            comparisons[task] = []
            for c in in_task:
                if c is base or not c.runs:
                    continue
                test = by_pair.get((c.label, base.label)) or compare_pair(c, base)
                comparisons[task].append(compare_to_baseline(c, base, test))
    trust = {task: task_trust([c for c in configs if c.task == task],
                              [r for r in unique if (r.get("task") or "classification") == task], target_fraction)
             for task in tasks}
    return Analysis(configs, tasks, baselines, comparisons, pairs, notes, trust, target_fraction)

