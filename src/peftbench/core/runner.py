"""`run(spec)`: one fine-tuning run from spec to record.

Order matters for honest failures: the spec and the data are checked before any model is
loaded; anything that fails after the run folder exists becomes a `failed` record; a failure
never replaces an earlier `success` record.

`run` reads as the phases of a run, in order: set up (check the spec, load the data, pick the
device), build the model (load it, apply the method), pre-flight, train, evaluate, save the
artifact, write the record.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from peftbench.config.spec import RunSpec
from peftbench.core import lm_eval
from peftbench.core.artifacts import save_artifact
from peftbench.core.build import prepare_model, training_batches
from peftbench.core.distributed import bind_device, describe, is_main_process
from peftbench.core.trackers import open_trackers
from peftbench.errors import (
    OutOfMemory,
    PeftbenchError,
    RunCanceled,
    SpecError,
    TrainingError,
    is_out_of_memory,
)
from peftbench.methods.base import METHODS
from peftbench.methods.seed import quantization_summary
from peftbench.records.failure import error_entry, error_message, os_failure, write_failure
from peftbench.records.io import (
    RESULT_FILE,
    SCHEMA_VERSION,
    atomic_write_json,
    check_writable,
    environment,
    git_commit,
    now_iso,
    read_record,
    run_dir_for,
)
from peftbench.runtime import signals
from peftbench.runtime.device import pick_device
from peftbench.runtime.progress import Phase, bars
from peftbench.tasks.base import TASKS, describe_data
from peftbench.trust.checks import preflight


def _write_failure(run_dir: Path, record: dict[str, Any]) -> None:
    """Only the main process writes; a failure never overwrites a finished success record."""
    if is_main_process():
        write_failure(run_dir, record)


@dataclass
class RunContext:
    """What the phases of one run share: the resolved spec, its task, method and data, and where it runs."""

    spec: RunSpec
    run_id: str
    task: Any
    method: Any
    prepared: Any  # the task's loaded data
    retention: Any  # the forgetting probe's data (trust.forgetting.load)
    device: str
    compute_dtype: str
    threads: int
    say: Callable[[str], None]
    progress: bool
    loading: Phase  # the model's loading, announced before torch is imported (it is part of the wait)
    lm_eval: Any = None  # the lm-eval tasks to score (evaluation.plan.Plan), None without any

    def note(self, text: str) -> None:
        """One line of the run's progress, prefixed with its id."""
        self.say(f"[peftbench] {self.run_id}: {text}")


@dataclass
class BuiltModel:
    """The model as it trains, and what training needs besides it."""

    loaded: Any  # models.loading's loaded model: tokenizer, family, path
    model: Any  # with the method applied, on the device
    amp_dtype: Any  # the autocast dtype, None in fp32
    ops: dict[str, Any]  # the record's `cpu_ops` and `head_token` sections
    collate_fn: Callable[..., dict[str, Any]]
    loss_fn: Callable[[Any, dict[str, Any]], Any] | None


@dataclass
class EncodedData:
    train: Any
    eval: Any
    pad_id: int
    validation: Any = None  # the selection split, where the task has one


def run(spec: RunSpec, out_dir: str | Path = "runs", *, progress: bool = True, force: bool = False,
        log: Any = None) -> dict[str, Any]:
    """Train and evaluate one spec; return its record (also written to `out_dir/<run_id>/result.json`).
    The spec and the data are checked before torch is imported: bad input fails in about a second."""
    say = log or (lambda msg: print(msg, file=sys.stderr))
    if not is_main_process():  # in a multi-process run only rank 0 talks
        say, progress = (lambda msg: None), False
    spec = spec.resolved().with_absolute_paths()  # the record's paths work from any folder
    run_id = spec.run_id()
    run_dir = run_dir_for(out_dir, run_id)
    existing = read_record(run_dir)
    if existing and existing.get("status") == "success" and not force:
        say(f"[peftbench] {run_id}: success record exists, skipping (use --force to rerun)")
        return existing

    ctx = set_up(spec, run_id, out_dir, say, progress)
    from transformers import set_seed

    record = new_record(ctx)
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker = open_trackers(spec, run_dir, Path(out_dir), run_id)  # report_to; a no-op by default
    try:
        set_seed(spec.train.seed)
        with bars(progress):
            train_and_evaluate(ctx, record, run_dir, tracker)
        signals.raise_if_received()  # a cancel whose KeyboardInterrupt was lost is still a cancel
    except KeyboardInterrupt:
        record.update(status="canceled", error=error_entry("canceled", signals.cancel_message()))
        record["timestamps"]["finished"] = now_iso()
        _write_failure(run_dir, record)
        raise RunCanceled(signals.cancel_message()) from None
    except BaseException as err:
        record_failure(run_dir, record, err)
    finally:
        tracker.finish(record)
    write_record(run_dir, record)
    return record


def set_up(spec: RunSpec, run_id: str, out_dir: str | Path, say: Callable[[str], None],
           progress: bool) -> RunContext:
    """Check the spec and load the data before torch is imported or any model is loaded; then pick the
    device, its compute dtype and the CPU threads."""
    from peftbench.models.loading import check_max_length, quiet_libraries
    from peftbench.perf.flops import configure_threads
    from peftbench.runtime.device import resolve_dtype
    from peftbench.trust import forgetting

    task = TASKS.get(spec.task)
    method = METHODS.get(spec.method.name)
    preflight(spec, method)
    check_max_length(spec)  # data.max_length within the model's positions, from its config.json
    prepared = task.load_data(spec)
    retention = forgetting.load(spec)
    lm_eval_tasks = lm_eval.lm_eval_plan(spec)  # lm-eval tasks resolved and built: a bad one fails before loading
    check_writable(out_dir)
    note = lambda text: say(f"[peftbench] {run_id}: {text}")  # noqa: E731
    note(f"data: {describe_data(prepared.info)}")
    loading = Phase(note, f"loading {spec.model.name_or_path} for {spec.method.name}")
    quiet_libraries()  # the first import of torch and transformers: every input check is behind us
    device = pick_device(spec.train.device)
    bind_device(device)
    compute_dtype = resolve_dtype(spec.model.dtype, device)
    threads = configure_threads(spec.train.num_threads, device)
    note(f"torch {sys.modules['torch'].__version__} on {device}: {compute_dtype}, {threads} thread(s), "
         f"after {loading.elapsed:.1f} s")
    return RunContext(spec, run_id, task, method, prepared, retention, device, compute_dtype, threads, say, progress, loading,
                      lm_eval_tasks)


def new_record(ctx: RunContext) -> dict[str, Any]:
    """The record's opening fields, with status `running`."""
    spec = ctx.spec
    return {
        "schema_version": SCHEMA_VERSION, "run_id": ctx.run_id, "status": "running", "error": None,
        "task": spec.task, "method": spec.method.name, "model_name": spec.model.name_or_path,
        "seed": spec.train.seed, "spec": spec.to_dict(),
        "timestamps": {"started": now_iso(), "finished": None},
        "environment": environment(), "git_commit": git_commit(),
        "trust_remote_code": spec.model.trust_remote_code,
        "data": ctx.prepared.info,
    }


def train_and_evaluate(ctx: RunContext, record: dict[str, Any], run_dir: Path, tracker: Any) -> None:
    """The phases after the run folder exists, filling `record`: any failure here becomes a failed record."""
    from peftbench.trust import diagnostics, forgetting

    built = build_model(ctx, record)
    data = encode_data(ctx, built)
    check_before_training(ctx, built, data, record)
    forgetting.before(ctx.retention, built.model, built.loaded.tokenizer, ctx.spec, data.pad_id, ctx.device,
                      built.amp_dtype)
    selection = model_selection(ctx, built, data)
    base = base_model(ctx, built, data, run_dir) if ctx.task.generative else None
    lm_eval_base = lm_eval.before_training(ctx, built, run_dir)
    weights_before = diagnostics.snapshot(built.model)
    outcome = train_model(ctx, built, data, selection, record, tracker)
    evaluate_model(ctx, built, selection, outcome, record, base)
    lm_eval.after_training(ctx, built, lm_eval_base, record)
    phase = Phase(ctx.note, "measuring the weight change" + (" and forgetting" if ctx.retention else ""))
    record["retention"] = forgetting.after(ctx.retention, built.model, ctx.spec, data.pad_id, ctx.device,
                                           built.amp_dtype)
    record["diagnostics"] = diagnostics.diagnose(built.model, weights_before)
    phase.done("measured")
    phase = Phase(ctx.note, "saving the trained weights")
    record["artifact"] = save_artifact(built.model, ctx.spec, run_dir)
    saved = record["artifact"]
    phase.done(f"saved {saved['kind']} ({(saved['size_bytes'] or 0) / 1e6:.1f} MB) to {run_dir / saved['path']}"
               if saved.get("saved") else "nothing to save")
    record["status"] = "success"


def build_model(ctx: RunContext, record: dict[str, Any]) -> BuiltModel:
    """Load the model and apply the method (`prepare_model`); record what was built."""
    from peftbench.models.loading import count_params
    from peftbench.perf.memory import model_footprint

    spec, method = ctx.spec, ctx.method
    loaded, model, amp_dtype, precision, ops = prepare_model(
        spec, ctx.task, method, ctx.prepared, ctx.compute_dtype, ctx.device,
        on_loaded=lambda m: ctx.note(f"read {m.model_type} weights after {ctx.loading.elapsed:.1f} s; applying {method.name}"))
    collate_fn, loss_fn = training_batches(spec, model, ctx.task)
    trainable, total = count_params(model)
    if trainable == 0:
        raise SpecError(f"method '{method.name}' left no trainable parameters",
                        hint="check method.layers / target_modules")
    record["model"] = {"path": loaded.path, "model_type": loaded.model_type, "family": loaded.family.name,
                       "footprint": model_footprint(model)}
    record["params"] = {"trainable": trainable, "total": total, "trainable_pct": 100.0 * trainable / total}
    record["precision"] = precision
    if hasattr(model, "peft_config"):
        record["peft_config"] = model.peft_config["default"].to_dict()
    if method.quantized:
        record["quantization"] = quantization_summary(model, spec.method.params)
    ctx.loading.done(f"loaded {loaded.model_type} ({total:,} parameters, "
               f"{trainable:,} trainable) on {ctx.device}")
    return BuiltModel(loaded, model, amp_dtype, ops, collate_fn, loss_fn)


def encode_data(ctx: RunContext, built: BuiltModel) -> EncodedData:
    """The train, validation and test sets in the model's tokens."""
    info, max_length = ctx.prepared.info, ctx.spec.data.max_length
    phase = Phase(ctx.note, f"tokenizing {describe_data({**info, 'label_names': None})} "
                           f"(max_length {max_length})")
    train_enc, eval_enc = ctx.task.encode(built.loaded, ctx.prepared, ctx.spec)
    encode_validation = getattr(ctx.task, "encode_validation", None)  # tasks without one evaluate on test
    validation = encode_validation(built.loaded, ctx.prepared, ctx.spec) if encode_validation else None
    lengths = [n for enc in (train_enc, eval_enc, validation) if enc is not None for n in enc.lengths()]
    cut = sum(n >= max_length for n in lengths)
    phase.done(f"tokenized {len(lengths):,} examples, {sum(lengths) / len(lengths):.0f} "
               f"tokens on average, {cut:,} cut at max_length")
    return EncodedData(train_enc, eval_enc, built.loaded.tokenizer.pad_token_id or 0, validation)


def check_before_training(ctx: RunContext, built: BuiltModel, data: EncodedData, record: dict[str, Any]) -> None:
    """Pre-flight: the task's checks of its encoded data, then the method's on one real batch."""
    from peftbench.trust.preflight import probe_batch, run_preflight

    task, spec = ctx.task, ctx.spec
    task_checks = getattr(task, "preflight_checks", None)  # checks of the task's encoded data
    phase = Phase(ctx.note, "pre-flight checks (one step on a real batch)")
    run_preflight(built.model, ctx.method, spec.method.params, built.loaded.family,
                  probe_batch(task, data.train, spec, data.pad_id, ctx.device),
                  autocast_dtype=built.amp_dtype, device=ctx.device, record=record,
                  data_checks=(lambda: task_checks(built.loaded, ctx.prepared, data.train, spec)) if task_checks else None,
                  warn=lambda text: ctx.note(f"warning: {text}"))
    phase.done("pre-flight checks passed")


def model_selection(ctx: RunContext, built: BuiltModel, data: EncodedData) -> Any:
    """The protocol's per-epoch evaluator (`protocol.Selection`), on the validation split where the
    task has one, else on the test set."""
    from peftbench.core.protocol import Selection

    task, spec = ctx.task, ctx.spec
    eval_bs = spec.train.eval_batch_size or spec.train.batch_size * 4

    def evaluate(m: Any, enc: Any = data.eval) -> dict[str, Any]:
        return task.evaluate(m, enc, ctx.prepared, batch_size=eval_bs, device=ctx.device,
                             autocast_dtype=built.amp_dtype, pad_id=data.pad_id)

    return Selection(spec, task.main_metric, evaluate, data.validation)


def train_model(ctx: RunContext, built: BuiltModel, data: EncodedData, selection: Any, record: dict[str, Any],
                tracker: Any) -> Any:
    """The training loop (`core.train.train`), evaluating each epoch through `selection`."""
    from peftbench.core.train import train

    spec = ctx.spec
    ctx.note(f"training {len(data.train)} examples, {spec.train.epochs} epoch(s), "
             f"{record['params']['trainable_pct']:.3f}% trainable, {record['precision']['compute_dtype']} "
             f"on {ctx.device}")
    metric, split = selection.metric, selection.per_epoch_split

    def on_log(kind: str, point: dict[str, Any]) -> None:
        tracker.log_point(kind, point)
        if kind == "eval":  # one line per epoch, after its bar and its evaluation's bar are gone
            ctx.note(f"epoch {point['epoch']}/{spec.train.epochs}: {split} {metric} "
                     f"{point.get(metric, float('nan')):.4f} (training so far {point['train_time_s']:.1f} s)")

    return train(built.model, data.train, selection, spec.train, device=ctx.device, autocast_dtype=built.amp_dtype,
                 pad_id=data.pad_id, progress=ctx.progress, collate_fn=built.collate_fn, loss_fn=built.loss_fn,
                 on_log=on_log)


def base_model(ctx: RunContext, built: BuiltModel, data: EncodedData, run_dir: Path) -> dict[str, Any]:
    """The untrained base model's scores on the test set (cached beside the runs): what a generative run
    must improve on."""
    from peftbench.core.baseline import base_model_scores

    phase = Phase(ctx.note, "scoring the untrained base model (cached for later runs)")
    scores = base_model_scores(ctx.spec, ctx.task, built.model, data.eval, ctx.prepared,
                             cache_dir=run_dir.parent / ".cache" / "base", compute_dtype=ctx.compute_dtype,
                             device=ctx.device, amp_dtype=built.amp_dtype, pad_id=data.pad_id)
    phase.done("base model scored")
    return scores


def evaluate_model(ctx: RunContext, built: BuiltModel, selection: Any, outcome: Any, record: dict[str, Any],
                   base: dict[str, Any] | None) -> None:
    """Restore the selected weights, evaluate them on the test set; record training, evaluation and protocol."""
    from peftbench.core.protocol import record_protocol

    spec = ctx.spec
    phase = Phase(ctx.note, "evaluating on the test split")
    final, selected = selection.finish(built.model)
    phase.done(f"test {ctx.task.main_metric} {final.get(ctx.task.main_metric, float('nan')):.4f}")
    predictions = final.pop("predictions", None)
    record["train"] = train_section(ctx, built, outcome)
    record["distributed"] = describe(spec.train)
    record["eval"] = {"time_s": outcome.eval_time_s, "split": selection.per_epoch_split, "per_epoch": outcome.epochs}
    record["protocol"] = record_protocol(spec, ctx.prepared.info, selection, selected)
    record["metrics"] = final
    record["main_metric"] = ctx.task.main_metric
    last_loss = record["train"]["final_loss"]
    record["overfit_gap"] = (final["eval_loss"] - last_loss) if last_loss is not None else None
    record["predictions"] = predictions
    judge = getattr(ctx.task, "judge_learning", None)  # baselines and the learned verdict (tasks/learning.py)
    record.update(judge(predictions, ctx.prepared, final, base) if judge else {})


def train_section(ctx: RunContext, built: BuiltModel, outcome: Any) -> dict[str, Any]:
    """The record's `train` section: time, throughput, padding, memory, loss curve, FLOPs and MFU."""
    from peftbench.perf.flops import perf_fields

    t = outcome.train_time_s
    section = {
        "time_s": t, "steps": outcome.steps, "epochs": ctx.spec.train.epochs, "samples": outcome.samples,
        "samples_per_s": outcome.samples / t if t else None,
        "tokens_per_s": outcome.real_tokens / t if t else None,
        "real_tokens": outcome.real_tokens, "computed_tokens": outcome.computed_tokens,
        "padding_efficiency": (outcome.local_real_tokens / outcome.computed_tokens
                               if outcome.computed_tokens else None),
        "overhead_share": max(0.0, 1 - outcome.compute_time_s / t) if t else None,
        "memory": outcome.memory, "peak_memory_bytes": outcome.memory.get("peak_bytes"),
        "memory_by_kind": outcome.memory_by_kind,
        "loss_curve": outcome.loss_curve,
        "final_loss": outcome.loss_curve[-1]["loss"] if outcome.loss_curve else None, **built.ops,
        "regularizer_loss": outcome.regularizer_loss,  # apart from final_loss, the task loss
        "cpu_heap": outcome.cpu_heap, "optimizer": outcome.optimizer,
    }
    section.update(perf_fields(built.model, outcome, device=ctx.device, compute_dtype=ctx.compute_dtype,
                               peak_tflops=ctx.spec.train.peak_tflops, threads=ctx.threads,
                               compiled=ctx.spec.train.compile, say=ctx.say))
    return section


def record_failure(run_dir: Path, record: dict[str, Any], err: BaseException) -> NoReturn:
    """Write the failed (or canceled) record; raise a peftbench error as it is, anything else as a TrainingError."""
    err = os_failure(err) or err  # disk full / permission denied: one clear line, not an internal error
    if not isinstance(err, PeftbenchError) and is_out_of_memory(err):  # e.g. in pre-flight or evaluation
        err = OutOfMemory.from_error(err)
    if signals.received() is not None and not isinstance(err, RunCanceled):  # whatever a cancel signal became
        err = RunCanceled(signals.cancel_message())
    reason = getattr(err, "reason", None) or ("canceled" if isinstance(err, RunCanceled) else
                                              getattr(err, "kind", None) or "error")
    message = error_message(err)
    record.update(status="canceled" if reason == "canceled" else "failed", error=error_entry(reason, message))
    record["timestamps"]["finished"] = now_iso()
    _write_failure(run_dir, record)
    if isinstance(err, PeftbenchError | KeyboardInterrupt):
        raise err
    raise TrainingError(message[:500], reason="error") from err


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Stamp the end, write the success record (rank 0) and remove the run's scratch folder."""
    record["timestamps"]["finished"] = now_iso()
    if is_main_process():
        atomic_write_json(run_dir / RESULT_FILE, record)
    shutil.rmtree(run_dir / ".tmp", ignore_errors=True)
