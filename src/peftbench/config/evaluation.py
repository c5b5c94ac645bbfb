"""Checks of the spec's lm-eval parts (`evaluation.lm_eval`, `retention.lm_eval_tasks`) against the rest of it."""

from __future__ import annotations

from typing import Any

from peftbench.errors import SpecError
from peftbench.tasks import TASKS


def check_lm_eval(spec: Any) -> None:
    """lm-eval scores a causal LM's log-likelihoods: refused for other tasks. A retention section names a
    file, lm-eval tasks or both. (Whether lm-eval is installed and the tasks exist is checked when a run
    sets up: `evaluation.plan`.)"""
    wanted = [k for k, v in (("evaluation.lm_eval", spec.evaluation.lm_eval),
                             ("retention.lm_eval_tasks", spec.retention and spec.retention.lm_eval_tasks)) if v]
    causal = [name for name, t in TASKS.items() if t.peft_task_type == "CAUSAL_LM"]
    if wanted and spec.task not in causal:
        raise SpecError(f"{wanted[0]} scores causal LMs, not task '{spec.task}' "
                        f"({TASKS.get(spec.task).model_description} models)",
                        hint=f"use it with task {' or '.join(repr(n) for n in causal)}, or remove {wanted[0]}")
    if spec.retention is not None and not spec.retention.file and not spec.retention.lm_eval_tasks:
        raise SpecError("the retention section names neither a file nor lm_eval_tasks",
                        hint="set retention.file, retention.lm_eval_tasks, or both")
