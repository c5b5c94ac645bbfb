"""The lm-eval phases of a run (`evaluation.lm_eval`, `retention.lm_eval_tasks`; `peftbench[lmeval]`).

- Set-up (`plan`, before any model loads): the tasks are resolved and built once (`evaluation.plan`).
- Before training: lm-eval's wrapper scores a fixed probe on the untrained model, and the base model's
  lm-eval scores come from the cache or are made (`baseline.lm_eval_base_scores`, adapters off).
- After training, on the selected weights: the pre-flight check `lm_eval_adapter_active` (stored with
  the other pre-flight checks in `record['preflight']`; a failure stops the run as a failed record),
  then the tuned model's scores, in memory.

The record's `lm_eval` section holds, per task, the metric with base and tuned values and their
standard errors, the change, the forgetting (for `retention` tasks: how much worse the tuned model
is, positive = forgot) and the per-item scores of both models (docs/records.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.core.baseline import adapters_off, lm_eval_base_scores
from peftbench.evaluation.plan import Plan
from peftbench.evaluation.plan import plan as lm_eval_plan
from peftbench.runtime.progress import Phase

__all__ = ["LmEvalBase", "after_training", "before_training", "lm_eval_plan", "record_section"]


@dataclass
class LmEvalBase:
    """The untrained model through lm-eval: its task scores and its probe log-likelihoods."""

    tasks: dict[str, Any]
    cached: bool
    probe: list[float]


def before_training(ctx: Any, built: Any, run_dir: Path) -> LmEvalBase | None:
    """The base model's probe and lm-eval scores (None without lm-eval tasks)."""
    from peftbench.evaluation import harness

    plan: Plan | None = ctx.lm_eval
    if plan is None:
        return None
    tokenizer = built.loaded.tokenizer
    phase = Phase(ctx.note, "scoring the untrained base model with lm-eval (cached for later runs)")
    with adapters_off(built.model):
        probe = harness.probe(harness.make_lm(built.model, tokenizer, batch_size=plan.batch_size,
                                              amp_dtype=built.amp_dtype))
    base = lm_eval_base_scores(ctx.spec, plan, built.model, tokenizer, cache_dir=run_dir.parent / ".cache" / "base",
                               compute_dtype=ctx.compute_dtype, device=ctx.device, amp_dtype=built.amp_dtype)
    phase.done(f"base model scored on {_scores_text(base['tasks'])}" + (" (cached)" if base["cached"] else ""))
    return LmEvalBase(base["tasks"], bool(base["cached"]), probe)


def after_training(ctx: Any, built: Any, base: LmEvalBase | None, record: dict[str, Any]) -> None:
    """The adapter check, then the tuned model's lm-eval scores into `record['lm_eval']`."""
    from peftbench.evaluation import harness

    if base is None:
        return
    plan: Plan = ctx.lm_eval
    phase = Phase(ctx.note, "scoring the tuned model with lm-eval")
    lm = harness.make_lm(built.model, built.loaded.tokenizer, batch_size=plan.batch_size, amp_dtype=built.amp_dtype)
    check = harness.adapter_check(base.probe, harness.probe(lm))
    preflight = record.setdefault("preflight", {"passed": True, "checks": {}, "time_s": 0.0})
    preflight["checks"]["lm_eval_adapter_active"] = check
    preflight["passed"] = bool(preflight["passed"] and check["passed"])
    harness.raise_if_failed(check)
    tuned = harness.evaluate(lm, plan)
    record["lm_eval"] = record_section(plan, base, tuned, phase.elapsed)
    phase.done(f"tuned model scored on {_scores_text(tuned)}")


def _scores_text(tasks: dict[str, Any]) -> str:
    return ", ".join(f"{name} {t['metric']} {t['value']:.4f}" if t.get("value") is not None else name
                     for name, t in tasks.items())


def _value(summary: dict[str, Any] | None) -> dict[str, Any]:
    summary = summary or {}
    return {"value": summary.get("value"), "stderr": summary.get("stderr")}


def _paired_items(b: dict[str, Any] | None, t: dict[str, Any]) -> dict[str, Any] | None:
    """Base and tuned per-item scores side by side, when both scored the same documents."""
    if not b or not b.get("items") or not t.get("items") or b.get("items_sha256") != t.get("items_sha256") \
            or b["items"]["doc_id"] != t["items"]["doc_id"]:
        return None
    return {"doc_id": t["items"]["doc_id"], "base": b["items"]["score"], "tuned": t["items"]["score"]}


def record_section(plan: Plan, base: LmEvalBase, tuned: dict[str, Any], time_s: float) -> dict[str, Any]:
    """The record's `lm_eval` section (docs/records.md)."""
    tasks: dict[str, Any] = {}
    for ref in plan.refs:
        for name in ref.names:
            t, b = tuned[name], base.tasks.get(name)
            delta = (t["value"] - b["value"]) if b and None not in (t["value"], b["value"]) else None
            tasks[name] = {
                "role": ref.role, "entry": ref.entry, "source": ref.source, "metric": t["metric"],
                "filter": t["filter"], "higher_is_better": t["higher_is_better"], "n": t["n"],
                "num_fewshot": t["num_fewshot"], "task_version": t["task_version"],
                "base": _value(b), "tuned": _value(t), "delta": delta,
                "forgetting": None if delta is None else (-delta if t["higher_is_better"] else delta),
                "metrics": {"base": (b or {}).get("metrics"), "tuned": t["metrics"]},
                "items": _paired_items(b, t), "items_sha256": t["items_sha256"],
            }
    drops = [t["forgetting"] for t in tasks.values() if t["role"] == "retention" and t["forgetting"] is not None]
    return {"version": plan.version, "num_fewshot": plan.num_fewshot, "limit": plan.limit,
            "batch_size": plan.batch_size, "base_cached": base.cached, "time_s": time_s, "tasks": tasks,
            "retention_forgetting": sum(drops) / len(drops) if drops else None}
