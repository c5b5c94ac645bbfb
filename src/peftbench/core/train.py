"""The explicit training loop, on `accelerate`.

Only optimizer steps are inside the training clock; evaluation runs outside it and is timed
apart. Memory covers training only: counted by kind (`perf.memory`: parameters, gradients,
optimizer state, saved activations), and as the device sees it (CUDA allocator peak, or the growth
of process RSS on the CPU) as a diagnostic. The loss is checked for NaN/inf as training goes, so
a diverging run stops at once. The loss curve holds the task loss; a regularizer the method adds to
it (AdaLoRA's orthogonality term) is trained on but recorded apart (`regularizer_loss`), so that
every method's loss means the same thing.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from peftbench.core.distributed import DataParallel, accelerator_options
from peftbench.data.batching import Encoded, collate, make_batches, pad_multiple_kwargs
from peftbench.errors import NanLossError, OutOfMemory, RunCanceled, is_out_of_memory
from peftbench.models.heads import TaskLoss
from peftbench.perf.cpu_heap import retained_heap
from peftbench.perf.load import sampled_load
from peftbench.perf.memory import MemoryByKind
from peftbench.runtime import progress, signals
from peftbench.runtime.device import autocast
from peftbench.runtime.progress import SmoothedLoss


def can_fuse_adamw(params: list[Any]) -> bool:
    """Whether torch's fused AdamW (one kernel per step instead of a dozen passes per tensor) takes
    these tensors: floating-point, on the CPU or CUDA. It matters on the CPU, where the per-tensor
    AdamW costs about a third of a MiniLM full fine-tuning step (bench/packing_step.py)."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


# ---- memory ---------------------------------------------------------------------------------


class PeakMemory:
    """The device's view of training memory, paused during evaluation: on CUDA the allocator's peak
    (allocated and reserved) of the training phase only, on the CPU the growth of process RSS. A
    diagnostic: the figure reports compare is `perf.memory`'s count by kind."""

    def __init__(self, device: str, interval_s: float = 0.02):
        self.device = device
        self.interval_s = interval_s
        self.baseline = 0
        self.peak = 0
        self.peak_reserved = 0
        self._active = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _rss(self) -> int:
        import psutil

        return psutil.Process().memory_info().rss

    def start(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            self.baseline = torch.cuda.memory_allocated()
            self.resume()
            return
        self.baseline = self.peak = self._rss()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        self.resume()

    def _poll(self) -> None:
        while not self._stop.is_set():
            if self._active.is_set():
                self.peak = max(self.peak, self._rss())
            time.sleep(self.interval_s)

    def pause(self) -> None:
        """Fold in the peak so far; what runs until `resume` (evaluation) is not counted."""
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            self.peak = max(self.peak, int(torch.cuda.max_memory_allocated()))
            self.peak_reserved = max(self.peak_reserved, int(torch.cuda.max_memory_reserved()))
            return
        self.peak = max(self.peak, self._rss())
        self._active.clear()

    def resume(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
            return
        self._active.set()

    def stop(self) -> dict[str, Any]:
        self.pause()
        if self.device == "cuda":
            return {"kind": "cuda_allocated", "peak_bytes": self.peak, "peak_reserved_bytes": self.peak_reserved,
                    "baseline_bytes": int(self.baseline)}
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=1)
        return {"kind": "cpu_rss_growth", "peak_bytes": int(max(0, self.peak - self.baseline)),
                "peak_rss_bytes": int(self.peak), "baseline_bytes": int(self.baseline)}


# ---- the loop -------------------------------------------------------------------------------


@dataclass
class TrainOutcome:
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    steps: int = 0
    samples: int = 0
    real_tokens: int = 0
    computed_tokens: int = 0
    real_sq_tokens: int = 0  # Σ length² over the examples trained on: the attention FLOP term
    local_real_tokens: int = 0  # this rank's real tokens: the numerator of its padding efficiency
    compute_time_s: float = 0.0
    loss_curve: list[dict[str, float]] = field(default_factory=list)  # the task loss, regularizers apart
    regularizer_loss: float = 0.0  # what the method adds to the task loss, over the last loss-curve point
    epochs: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    memory_by_kind: dict[str, Any] = field(default_factory=dict)
    final_eval: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    cpu_heap: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)  # the machine's load while training (perf/load.py)


def adamw(model: Any, tspec: Any) -> tuple[list[Any], Any]:
    """(trainable parameters, AdamW over them): weight decay on matrices only, fused where it can be."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tspec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=tspec.lr, fused=can_fuse_adamw(params),
    )
    return params, optimizer


def batch_shape(batch: dict[str, Any]) -> tuple[int, ...]:
    """Every dimension of the batch's tensors, in key order: what a micro-step's activations grow with."""
    return tuple(d for k in sorted(batch) for d in getattr(batch[k], "shape", ()))


def total_steps(n_examples: int, tspec: Any) -> int:
    """Optimizer steps of the run: `tspec.max_steps`, else every epoch's batches over `grad_accum`."""
    steps_per_epoch = math.ceil(math.ceil(n_examples / tspec.batch_size) / tspec.grad_accum)
    return tspec.max_steps or steps_per_epoch * tspec.epochs


class TrainingLoop:
    """One training run's moving parts (accelerator, optimizer, scheduler, progress bar) and its state
    between steps: the step count, the running loss since the last loss-curve point, the outcome so far."""

    def __init__(self, model: Any, tspec: Any, n_examples: int, *, device: str, autocast_dtype: Any,
                 progress: bool, collate_fn: Callable[..., dict[str, Any]],
                 loss_fn: Callable[[Any, dict[str, Any]], Any] | None,
                 on_log: Callable[[str, dict[str, Any]], None] | None) -> None:
        import torch
        from accelerate import Accelerator
        from transformers import get_linear_schedule_with_warmup

        self.tspec, self.collate_fn, self.loss_fn, self.on_log = tspec, collate_fn, loss_fn, on_log
        self.accelerator = Accelerator(cpu=(device == "cpu"), gradient_accumulation_steps=tspec.grad_accum,
                                       **accelerator_options())
        self.dp = DataParallel(self.accelerator)  # one process: every dp call is a no-op
        self.params, optimizer = adamw(model, tspec)
        self.memory = MemoryByKind(model)  # training memory by kind (perf/memory.py)
        self.memory.attach(optimizer)
        self.out = TrainOutcome(optimizer={"name": "AdamW", "fused": bool(optimizer.defaults["fused"])})
        self.total_steps = total_steps(n_examples, tspec)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(tspec.warmup_ratio * self.total_steps),
                                                    self.total_steps)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.amp = autocast(device, autocast_dtype)
        self.pad_kw = pad_multiple_kwargs(collate_fn, device)
        self.check_every_step = device == "cpu"  # .item() is free on the CPU; on CUDA it would sync each step
        self.progress = progress
        self.bar: Any = None  # each epoch's bar (train_epoch)
        self.shown_loss = SmoothedLoss()  # the bar's loss, from the first step on
        self.loss_read_at = 0.0  # when the bar last read the loss (CUDA: at most once a second)
        self.running = torch.zeros((), device=self.accelerator.device)
        self.running_reg = torch.zeros((), device=self.accelerator.device)  # regularizer since the last point
        self.running_n = 0
        self.task_loss = TaskLoss(model)
        self.step = 0

    def train_epoch(self, epoch: int, enc: Encoded, lengths: list[int], pad_id: int) -> None:
        """One epoch's batches (or those left before `total_steps`), on the training clock."""
        tspec = self.tspec
        batches = make_batches(lengths, tspec.batch_size, tspec.seed + epoch, True, tspec.group_by_length,
                               tspec.length_group_batches)
        self.model.train()
        steps = min(math.ceil(len(batches) / tspec.grad_accum), self.total_steps - self.step)
        self.bar = progress.bar(steps, f"epoch {epoch + 1}/{tspec.epochs}", unit="step", enabled=self.progress)
        t_epoch = time.perf_counter()
        try:
            for micro, idx in enumerate(batches):
                signals.raise_if_received()  # a cancel whose KeyboardInterrupt was lost (raised in a __del__)
                loss, task = self.micro_step(enc, lengths, idx, pad_id)
                self.running += task.float()
                self.running_reg += (loss.detach() - task).float()
                self.running_n += 1
                if self.check_every_step and not math.isfinite(loss.item()):
                    raise NanLossError(f"loss became {loss.item()} at step {self.step + 1} (epoch {epoch + 1})",
                                       hint="lower train.lr or check the data")
                self.show_loss(task)
                last_micro = (micro + 1) % tspec.grad_accum == 0 or micro + 1 == len(batches)
                if not last_micro:
                    continue
                self.step += 1
                self.bar.update(1)
                if self.step % tspec.log_every == 0 or self.step == self.total_steps:
                    self.log_loss(round(epoch + (micro + 1) / len(batches), 4))
                if self.step >= self.total_steps:
                    break
        finally:
            self.out.train_time_s += time.perf_counter() - t_epoch
            self.bar.close()

    def show_loss(self, task: Any) -> None:
        """Put the smoothed task loss on the bar: every step on the CPU, where reading it back is free;
        at most once a second on CUDA, where each read waits for the device."""
        if self.bar.disable:
            return
        now = time.perf_counter()
        if not self.check_every_step and now - self.loss_read_at < 1.0:
            return
        self.loss_read_at = now
        self.bar.set_postfix_str(f"loss={self.shown_loss.add(float(task.item())):.4f}", refresh=False)

    def micro_step(self, enc: Encoded, lengths: list[int], idx: list[int], pad_id: int) -> tuple[Any, Any]:
        """Forward and backward on one batch (this rank's shard of it); the optimizer steps when
        gradient accumulation is complete. Returns (the loss trained on, the task loss in it, detached):
        they differ by the regularizer a method adds (AdaLoRA's orthogonality term)."""
        out, model, accelerator = self.out, self.model, self.accelerator
        shard = self.dp.shard(idx)  # this rank's slice of the global batch
        batch = self.collate_fn(enc, shard.idx, pad_id, **self.pad_kw)
        out.real_tokens += sum(lengths[i] for i in idx)
        out.real_sq_tokens += sum(lengths[i] ** 2 for i in idx)
        out.local_real_tokens += sum(lengths[i] for i in shard.idx)
        out.computed_tokens += batch["input_ids"].numel()  # this rank's padded batch
        out.samples += len(idx)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        t0 = time.perf_counter()
        with self.memory.measured(batch_shape(batch)), accelerator.accumulate(model), self.amp:
            self.task_loss.take()  # drop a loss an evaluation's forward left behind
            loss = shard.scale(self.loss_fn(model, batch) if self.loss_fn else model(**batch).loss)
            task = self.task_loss.take()
            task = loss.detach() if task is None else shard.scale(task.detach())
            accelerator.backward(loss)
            if accelerator.sync_gradients and self.tspec.max_grad_norm:
                accelerator.clip_grad_norm_(self.params, self.tspec.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        out.compute_time_s += time.perf_counter() - t0
        return loss, task

    def log_loss(self, epoch_position: float) -> None:
        """A loss-curve point: the mean loss since the previous one (across ranks); stops on NaN/inf."""
        avg = self.dp.mean(self.running / self.running_n).item()
        if not math.isfinite(avg):
            raise NanLossError(f"loss became {avg} by step {self.step}", hint="lower train.lr")
        self.add_point(epoch_position, avg)
        self.reset_running()

    def reset_running(self) -> None:
        """Close a loss-curve window: its mean regularizer becomes the outcome's, the sums restart."""
        self.out.regularizer_loss = self.dp.mean(self.running_reg / self.running_n).item()
        self.running.zero_()
        self.running_reg.zero_()
        self.running_n = 0

    def log_tail(self) -> None:
        """A tail shorter than `log_every` still belongs on the curve."""
        if self.running_n:
            self.add_point(float(len(self.out.epochs)), self.dp.mean(self.running / self.running_n).item())
            self.reset_running()

    def add_point(self, epoch_position: float, loss: float) -> None:
        self.out.loss_curve.append({"step": self.step, "epoch": epoch_position, "loss": loss})
        if self.on_log:
            self.on_log("train", self.out.loss_curve[-1])

    def evaluate_epoch(self, epoch: int, evaluate: Callable[[Any], dict[str, Any]]) -> None:
        """Evaluate after an epoch, on the evaluation clock; its numbers join `out.epochs`."""
        out = self.out
        t_eval = time.perf_counter()
        metrics = evaluate(self.dp.unwrap(self.model))
        out.eval_time_s += time.perf_counter() - t_eval
        out.epochs.append({"epoch": epoch + 1, "step": self.step, "train_time_s": out.train_time_s,  # clock so far
                           **{k: v for k, v in metrics.items() if isinstance(v, int | float)}})
        out.final_eval = metrics
        if self.on_log:
            self.on_log("eval", out.epochs[-1])


def train(model: Any, train_enc: Encoded, evaluate: Callable[[Any], dict[str, Any]], tspec: Any, *,
          device: str, autocast_dtype: Any, pad_id: int, progress: bool = True,
          collate_fn: Callable[..., dict[str, Any]] = collate,
          loss_fn: Callable[[Any, dict[str, Any]], Any] | None = None,
          on_log: Callable[[str, dict[str, Any]], None] | None = None) -> TrainOutcome:
    """Train for `tspec.epochs` (or `tspec.max_steps`), evaluating after each epoch outside the clock.
    `on_log(kind, point)` sees each loss-curve point ('train') and each epoch's eval ('eval') as made.
    `loss_fn(model, batch)` replaces `model(**batch).loss` for batches the model cannot take as they are
    (packed classification)."""
    loop = TrainingLoop(model, tspec, len(train_enc), device=device, autocast_dtype=autocast_dtype,
                        progress=progress, collate_fn=collate_fn, loss_fn=loss_fn, on_log=on_log)
    out = loop.out
    lengths = train_enc.lengths()
    mem = PeakMemory(device)
    scopes = ExitStack()
    out.cpu_heap = scopes.enter_context(retained_heap(device, getattr(tspec, "cpu_ops", True)))
    out.load = scopes.enter_context(sampled_load())
    mem.start()
    try:
        for epoch in range(tspec.epochs):
            if loop.step >= loop.total_steps:
                break
            loop.train_epoch(epoch, train_enc, lengths, pad_id)
            mem.pause()
            loop.evaluate_epoch(epoch, evaluate)
            mem.resume()
            if getattr(evaluate, "should_stop", False):  # early stopping (protocol.Selection)
                break
        loop.log_tail()
    except KeyboardInterrupt:
        raise RunCanceled(signals.cancel_message()) from None
    except RuntimeError as err:
        if is_out_of_memory(err):
            raise OutOfMemory.from_error(err, "during training") from None
        raise
    finally:
        loop.task_loss.close()
        out.memory = mem.stop()
        out.memory_by_kind = loop.memory.result()
        loop.memory.detach()
        scopes.close()
    out.steps = loop.step
    loop.dp.finish(out)
    return out
