"""The model as a run trains it: loaded for the task, the method applied, the precision policy, the CPU
ops and the head-token layer installed, and the batches it takes. One place, so that `peftbench probe`
and `peftbench profile` measure the very model a run trains."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peftbench.config.spec import RunSpec
from peftbench.core.distributed import world_size
from peftbench.core.precision import apply_dtype_policy
from peftbench.errors import SpecError
from peftbench.methods.base import MethodContext
from peftbench.methods.seed import method_load_kwargs


def prepare_model(spec: RunSpec, task: Any, method: Any, prepared: Any, compute_dtype: str,
                  device: str, on_loaded: Callable[[Any], None] | None = None,
                  ) -> tuple[Any, Any, Any, dict[str, Any], dict[str, Any]]:
    """Load the task's model, apply the method, the dtype policy and the CPU ops, move it to `device`;
    return (loaded, model, autocast dtype, precision, ops): `ops` holds the record's `cpu_ops` and
    `head_token` sections. One place, so that `peftbench profile` measures the very model a run trains.
    `on_loaded(loaded)` is called once the weights are read, before the method is applied (a run's
    progress line between the two waits)."""
    from peftbench.perf import head_token
    from peftbench.perf.cpu_ops import install as install_cpu_ops
    from peftbench.perf.flops import maybe_compile

    params = spec.method.params
    loaded = task.load_model(spec, prepared, method_load_kwargs(method, params, compute_dtype))
    if on_loaded:
        on_loaded(loaded)
    if loaded.family.kind not in task.model_kinds and loaded.family.kind != "unknown":
        raise SpecError(f"task '{spec.task}' cannot run on a {loaded.family.kind} model "
                        f"({loaded.model_type})", hint="pick a model of a family the task supports")
    model = method.prepare(method, params, MethodContext(loaded.model, loaded.family, task.peft_task_type, compute_dtype))
    amp_dtype, precision = apply_dtype_policy(model, method.name, compute_dtype)
    model.to(device)
    cpu_ops = (install_cpu_ops(model, device) if spec.train.cpu_ops
               else {"enabled": False, "reason": "train.cpu_ops is false"})
    head = head_token.install(model, enabled=spec.train.head_token_only, packing=spec.train.packing)
    maybe_compile(model, spec.train.compile)
    return loaded, model, amp_dtype, precision, {"cpu_ops": cpu_ops, "head_token": head}


def training_batches(spec: RunSpec, model: Any, task: Any) -> tuple[Any, Any]:
    """(collate, loss function) for training: the task's own, or packed rows with `train.packing`."""
    if not spec.train.packing:
        return task.collate, None
    from peftbench.perf.packing import (
        collate_packed_classification,
        packed_classification_loss,
        packing_problem,
    )

    # The packed loss calls the classifier's parts directly, past a DistributedDataParallel wrapper's forward,
    # whose hooks average the gradients: one process only.
    problem = (f"packed batches train in one process, this run has {world_size()}" if world_size() > 1
               else packing_problem(model))
    if problem:
        raise SpecError(f"train.packing cannot be used here: {problem}", hint="set train.packing: false")
    return collate_packed_classification, packed_classification_loss
