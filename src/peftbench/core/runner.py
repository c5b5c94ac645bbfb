"""`run(spec)`: one fine-tuning run from spec to record.

Order matters for honest failures: the spec and the data are checked before any model is
loaded; anything that fails after the run folder exists becomes a `failed` record; a failure
never replaces an earlier `success` record.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peftbench.config.spec import RunSpec
from peftbench.core.distributed import bind_device, describe, is_main_process, world_size
from peftbench.core.trackers import open_trackers
from peftbench.errors import (
    OutOfMemory,
    PeftbenchError,
    RunCanceled,
    SpecError,
    TrainingError,
    from_os_error,
    is_out_of_memory,
)
from peftbench.methods.base import METHODS, MethodContext, method_load_kwargs, quantization_summary
from peftbench.records.io import (
    RESULT_FILE,
    SCHEMA_VERSION,
    atomic_write_json,
    dir_size,
    environment,
    git_commit,
    now_iso,
    read_record,
    replace_dir,
)
from peftbench.runtime.device import pick_device
from peftbench.tasks.base import TASKS
from peftbench.trust.checks import preflight

ADAPTER_METHODS_KEEP_FP32 = ("full", "partial")


def run_dir_for(out_dir: str | Path, run_id: str) -> Path:
    root = Path(out_dir).resolve()
    target = (root / run_id).resolve()
    if root not in target.parents:
        raise SpecError(f"run id '{run_id}' would escape the output folder", hint="use a plain run name")
    return target


def check_writable(out_dir: str | Path) -> None:
    root = Path(out_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise SpecError(f"output folder '{out_dir}' is not writable: {err.strerror}",
                        hint="choose another --out folder or fix its permissions") from None


def apply_dtype_policy(model: Any, method_name: str, compute_dtype: str) -> tuple[Any, dict[str, Any]]:
    """Decide how bf16 is used. Full/partial keep fp32 master weights under autocast; adapter
    methods hold the frozen base in bf16 once (no per-step casts) and train fp32 adapters and head."""
    import torch

    if compute_dtype == "float32":
        return None, {"compute_dtype": "float32", "autocast": False, "frozen_base_dtype": "float32"}
    dtype = getattr(torch, compute_dtype)
    frozen_cast = method_name not in ADAPTER_METHODS_KEEP_FP32
    if frozen_cast:
        for p in model.parameters():
            if p.is_floating_point():
                p.data = p.data.to(torch.float32 if p.requires_grad else dtype)
    return dtype, {"compute_dtype": compute_dtype, "autocast": True,
                   "frozen_base_dtype": compute_dtype if frozen_cast else "float32"}


def prepare_model(spec: RunSpec, task: Any, method: Any, prepared: Any, compute_dtype: str,
                  device: str) -> tuple[Any, Any, Any, dict[str, Any], dict[str, Any]]:
    """Load the task's model, apply the method, the dtype policy and the CPU ops, move it to `device`;
    return (loaded, model, autocast dtype, precision, ops): `ops` holds the record's `cpu_ops` and
    `head_token` sections. One place, so that `peftbench profile` measures the very model a run trains."""
    from peftbench.perf import head_token
    from peftbench.perf.cpu_ops import install as install_cpu_ops
    from peftbench.perf.flops import maybe_compile

    params = spec.method.params
    loaded = task.load_model(spec, prepared, method_load_kwargs(method, params, compute_dtype))
    if loaded.family.kind not in task.families and loaded.family.kind != "unknown":
        raise SpecError(f"task '{spec.task}' cannot run on a {loaded.family.kind} model "
                        f"({loaded.model_type})", hint="pick a model of a family the task supports")
    model = method.prepare(method, params, MethodContext(loaded.model, loaded.family, spec.task, compute_dtype))
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


def save_artifact(model: Any, spec: RunSpec, run_dir: Path) -> dict[str, Any]:
    """Save what the method produces (adapter or full model) and measure its size on disk."""
    if not is_main_process():  # rank 0 saves the (identical) weights
        return {"saved": False, "path": None, "size_bytes": None}

    def _save(target: Path, source: Any = model) -> int:
        # Written aside, then swapped in: a failed save (disk full) never damages an earlier artifact.
        staging = target.with_name(f".{target.name}.saving-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            source.save_pretrained(str(staging), safe_serialization=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        replace_dir(staging, target)
        return dir_size(target)

    if spec.save == "none":
        with tempfile.TemporaryDirectory(dir=run_dir) as tmp:
            return {"saved": False, "path": None, "size_bytes": _save(Path(tmp) / "artifact")}
    if spec.save == "merged" and hasattr(model, "merge_and_unload"):
        target = run_dir / "merged"
        merged = model.merge_and_unload()
        return {"saved": True, "kind": "merged", "path": "merged", "size_bytes": _save(target, merged)}
    kind = "adapter" if hasattr(model, "peft_config") else "model"
    target = run_dir / kind
    return {"saved": True, "kind": kind, "path": kind, "size_bytes": _save(target)}


def _write_failure(run_dir: Path, record: dict[str, Any]) -> None:
    """Failures never overwrite a finished success record."""
    if not is_main_process():
        return
    existing = read_record(run_dir)
    path = run_dir / RESULT_FILE
    if existing and existing.get("status") == "success":
        path = run_dir / f"failed-{time.strftime('%Y%m%dT%H%M%S')}.json"
    try:
        atomic_write_json(path, record)
    except OSError as err:  # e.g. the disk is full: report the run's own error, not this one
        print(f"[peftbench] could not write the failure record {path}: {err}", file=sys.stderr)


def run(spec: RunSpec, out_dir: str | Path = "runs", *, progress: bool = True, force: bool = False,
        log: Any = None) -> dict[str, Any]:
    """Train and evaluate one spec; return its record (also written to `out_dir/<run_id>/result.json`)."""
    from transformers import set_seed

    from peftbench.models.loading import count_params, quiet_libraries
    from peftbench.runtime.device import resolve_dtype

    quiet_libraries()

    say = log or (lambda msg: print(msg, file=sys.stderr))
    if not is_main_process():  # in a multi-process run only rank 0 talks
        say, progress = (lambda msg: None), False
    spec = spec.resolved()
    run_id = spec.run_id()
    run_dir = run_dir_for(out_dir, run_id)
    existing = read_record(run_dir)
    if existing and existing.get("status") == "success" and not force:
        say(f"[peftbench] {run_id}: success record exists, skipping (use --force to rerun)")
        return existing

    task = TASKS.get(spec.task)
    method = METHODS.get(spec.method.name)
    params = spec.method.params
    preflight(spec, method)
    prepared = task.load_data(spec)
    from peftbench.trust import forgetting

    retention = forgetting.load(spec)
    check_writable(out_dir)
    device = pick_device(spec.train.device)
    bind_device(device)
    compute_dtype = resolve_dtype(spec.model.dtype, device)
    from peftbench.perf.flops import configure_threads, perf_fields

    threads = configure_threads(spec.train.num_threads, device)

    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "status": "running", "error": None,
        "task": spec.task, "method": spec.method.name, "model_name": spec.model.name_or_path,
        "seed": spec.train.seed, "spec": spec.to_dict(),
        "timestamps": {"started": now_iso(), "finished": None},
        "environment": environment(), "git_commit": git_commit(),
        "trust_remote_code": spec.model.trust_remote_code,
        "data": prepared.info,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker = open_trackers(spec, run_dir, Path(out_dir), run_id)  # report_to; a no-op by default
    try:
        set_seed(spec.train.seed)
        say(f"[peftbench] {run_id}: loading {spec.model.name_or_path} for {spec.method.name}")
        loaded, model, amp_dtype, precision, ops = prepare_model(spec, task, method, prepared, compute_dtype, device)
        collate_fn, loss_fn = training_batches(spec, model, task)
        trainable, total = count_params(model)
        if trainable == 0:
            raise SpecError(f"method '{method.name}' left no trainable parameters",
                            hint="check method.layers / target_modules")
        record["model"] = {"path": loaded.path, "model_type": loaded.model_type, "family": loaded.family.name}
        record["params"] = {"trainable": trainable, "total": total, "trainable_pct": 100.0 * trainable / total}
        record["precision"] = precision
        if hasattr(model, "peft_config"):
            record["peft_config"] = model.peft_config["default"].to_dict()
        if method.quantized:
            record["quantization"] = quantization_summary(model, params)

        train_enc, eval_enc = task.encode(loaded, prepared, spec)
        pad_id = loaded.tokenizer.pad_token_id or 0
        from peftbench.trust.preflight import probe_batch, run_preflight

        task_checks = getattr(task, "preflight_checks", None)  # checks of the task's encoded data
        run_preflight(model, method, params, loaded.family, probe_batch(task, train_enc, spec, pad_id, device),
                      autocast_dtype=amp_dtype, device=device, record=record,
                      data_checks=(lambda: task_checks(loaded, prepared, train_enc, spec)) if task_checks else None,
                      warn=lambda text: say(f"[peftbench] {run_id}: warning: {text}"))
        forgetting.before(retention, model, loaded.tokenizer, spec, pad_id, device, amp_dtype)
        eval_bs = spec.train.eval_batch_size or spec.train.batch_size * 4

        def evaluate(m: Any, enc: Any = eval_enc) -> dict[str, Any]:
            return task.evaluate(m, enc, prepared, batch_size=eval_bs, device=device,
                                 autocast_dtype=amp_dtype, pad_id=pad_id)

        from peftbench.core.protocol import Selection, record_protocol

        encode_validation = getattr(task, "encode_validation", None)  # tasks without one evaluate on test
        selection = Selection(spec, task.main_metric, evaluate,
                              encode_validation(loaded, prepared, spec) if encode_validation else None)

        from peftbench.core.train import train
        from peftbench.trust import diagnostics

        weights_before = diagnostics.snapshot(model, spec)

        say(f"[peftbench] {run_id}: training {len(train_enc)} examples, {spec.train.epochs} epoch(s), "
            f"{record['params']['trainable_pct']:.3f}% trainable, {precision['compute_dtype']} on {device}")
        outcome = train(model, train_enc, selection, spec.train, device=device, autocast_dtype=amp_dtype,
                        pad_id=pad_id, progress=progress, collate_fn=collate_fn, loss_fn=loss_fn,
                        on_log=tracker.log_point)
        final, selected = selection.finish(model)
        predictions = final.pop("predictions", None)
        last_loss = outcome.loss_curve[-1]["loss"] if outcome.loss_curve else None
        t = outcome.train_time_s
        record["train"] = {
            "time_s": t, "steps": outcome.steps, "epochs": spec.train.epochs, "samples": outcome.samples,
            "samples_per_s": outcome.samples / t if t else None,
            "tokens_per_s": outcome.real_tokens / t if t else None,
            "real_tokens": outcome.real_tokens, "computed_tokens": outcome.computed_tokens,
            "padding_efficiency": (outcome.local_real_tokens / outcome.computed_tokens
                                   if outcome.computed_tokens else None),
            "overhead_share": max(0.0, 1 - outcome.compute_time_s / t) if t else None,
            "memory": outcome.memory, "peak_memory_bytes": outcome.memory.get("peak_bytes"),
            "loss_curve": outcome.loss_curve, "final_loss": last_loss, **ops,
            "cpu_heap": outcome.cpu_heap, "optimizer": outcome.optimizer,
        }
        record["train"].update(perf_fields(model, outcome, device=device, compute_dtype=compute_dtype,
                                           peak_tflops=spec.train.peak_tflops, threads=threads,
                                           compiled=spec.train.compile))
        record["distributed"] = describe(spec.train)
        record["eval"] = {"time_s": outcome.eval_time_s, "split": selection.per_epoch_split, "per_epoch": outcome.epochs}
        record["protocol"] = record_protocol(spec, prepared.info, selection, selected)
        record["metrics"] = final
        record["main_metric"] = task.main_metric
        record["overfit_gap"] = (final["eval_loss"] - last_loss) if last_loss is not None else None
        record["predictions"] = predictions
        record["retention"] = forgetting.after(retention, model, spec, pad_id, device, amp_dtype)
        record["diagnostics"] = diagnostics.diagnose(model, spec, weights_before)
        record["artifact"] = save_artifact(model, spec, run_dir)
        record["status"] = "success"
    except KeyboardInterrupt:
        record.update(status="canceled", error={"type": "canceled", "message": "run canceled by the user (Ctrl-C)"})
        record["timestamps"]["finished"] = now_iso()
        _write_failure(run_dir, record)
        raise RunCanceled() from None
    except BaseException as err:
        err = from_os_error(err) or err  # disk full / permission denied: one clear line, not an internal error
        if not isinstance(err, PeftbenchError) and is_out_of_memory(err):  # e.g. in pre-flight or evaluation
            err = OutOfMemory.from_error(err)
        reason = getattr(err, "reason", None) or ("canceled" if isinstance(err, RunCanceled) else
                                                  getattr(err, "kind", None) or "error")
        message = err.one_line() if isinstance(err, PeftbenchError) else f"{type(err).__name__}: {err}"
        record.update(status="canceled" if reason == "canceled" else "failed",
                      error={"type": reason, "message": message[:2000]})
        record["timestamps"]["finished"] = now_iso()
        _write_failure(run_dir, record)
        if isinstance(err, PeftbenchError | KeyboardInterrupt):
            raise err
        raise TrainingError(message[:500], reason="error") from err
    finally:
        tracker.finish(record)
    record["timestamps"]["finished"] = now_iso()
    if is_main_process():
        atomic_write_json(run_dir / RESULT_FILE, record)
    shutil.rmtree(run_dir / ".tmp", ignore_errors=True)
    return record
