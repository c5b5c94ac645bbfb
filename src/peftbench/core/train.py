"""The explicit training loop, on `accelerate`.

Only optimizer steps are inside the training clock; evaluation runs outside it and is timed
apart. Peak memory covers training only (CUDA allocator peak, or the growth of process RSS on
the CPU). The loss is checked for NaN/inf as training goes, so a diverging run stops at once.
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
from peftbench.perf.cpu_heap import retained_heap
from peftbench.runtime.device import autocast


def can_fuse_adamw(params: list[Any]) -> bool:
    """torch's fused AdamW (one kernel per step instead of a dozen passes per tensor) takes floating-point
    tensors on the CPU or CUDA: on the CPU the per-tensor AdamW took about a third of a MiniLM full
    fine-tuning step on SST-2 batches (bench/packing_step.py). The HF Trainer uses the fused kernel by
    default too (torch >= 2.8)."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


# ---- memory ---------------------------------------------------------------------------------


class PeakMemory:
    """Run-wide peak over the training phase only (paused during evaluation)."""

    def __init__(self, device: str, interval_s: float = 0.02):
        self.device = device
        self.interval_s = interval_s
        self.baseline = 0
        self.peak = 0
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
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
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
        if self.device != "cuda":
            self.peak = max(self.peak, self._rss())
            self._active.clear()

    def resume(self) -> None:
        if self.device != "cuda":
            self._active.set()

    def stop(self) -> dict[str, Any]:
        if self.device == "cuda":
            import torch

            return {"kind": "cuda_allocated", "peak_bytes": int(torch.cuda.max_memory_allocated()),
                    "peak_reserved_bytes": int(torch.cuda.max_memory_reserved()),
                    "baseline_bytes": int(self.baseline)}
        self.pause()
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
    loss_curve: list[dict[str, float]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    final_eval: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    cpu_heap: dict[str, Any] = field(default_factory=dict)


def train(model: Any, train_enc: Encoded, evaluate: Callable[[Any], dict[str, Any]], tspec: Any, *,
          device: str, autocast_dtype: Any, pad_id: int, progress: bool = True,
          collate_fn: Callable[..., dict[str, Any]] = collate,
          loss_fn: Callable[[Any, dict[str, Any]], Any] | None = None,
          on_log: Callable[[str, dict[str, Any]], None] | None = None) -> TrainOutcome:
    """Train for `tspec.epochs` (or `tspec.max_steps`), evaluating after each epoch outside the clock.
    `on_log(kind, point)` sees each loss-curve point ('train') and each epoch's eval ('eval') as made.
    `loss_fn(model, batch)` replaces `model(**batch).loss` for batches the model cannot take as they are
    (packed classification)."""
    import torch
    from accelerate import Accelerator
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    accelerator = Accelerator(cpu=(device == "cpu"), gradient_accumulation_steps=tspec.grad_accum,
                              **accelerator_options())
    dp = DataParallel(accelerator)  # one process: every dp call is a no-op
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tspec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=tspec.lr, fused=can_fuse_adamw(params),
    )
    out = TrainOutcome(optimizer={"name": "AdamW", "fused": bool(optimizer.defaults["fused"])})
    lengths = train_enc.lengths()
    steps_per_epoch = math.ceil(math.ceil(len(train_enc) / tspec.batch_size) / tspec.grad_accum)
    total_steps = tspec.max_steps or steps_per_epoch * tspec.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(tspec.warmup_ratio * total_steps), total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    amp = autocast(device, autocast_dtype)
    pad_kw = pad_multiple_kwargs(collate_fn, device)
    mem = PeakMemory(device)
    check_every_step = device == "cpu"  # .item() is free on the CPU; on CUDA it would sync each step
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not progress, leave=False, dynamic_ncols=True)
    running = torch.zeros((), device=accelerator.device)
    running_n = 0
    step = 0
    scopes = ExitStack()
    out.cpu_heap = scopes.enter_context(retained_heap(device, getattr(tspec, "cpu_ops", True)))
    mem.start()
    try:
        for epoch in range(tspec.epochs):
            if step >= total_steps:
                break
            batches = make_batches(lengths, tspec.batch_size, tspec.seed + epoch, True, tspec.group_by_length,
                                   tspec.length_group_batches)
            model.train()
            t_epoch = time.perf_counter()
            for micro, idx in enumerate(batches):
                shard = dp.shard(idx)  # this rank's slice of the global batch
                batch = collate_fn(train_enc, shard.idx, pad_id, **pad_kw)
                out.real_tokens += sum(lengths[i] for i in idx)
                out.real_sq_tokens += sum(lengths[i] ** 2 for i in idx)
                out.local_real_tokens += sum(lengths[i] for i in shard.idx)
                out.computed_tokens += batch["input_ids"].numel()  # this rank's padded batch
                out.samples += len(idx)
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                t0 = time.perf_counter()
                with accelerator.accumulate(model), amp:
                    loss = shard.scale(loss_fn(model, batch) if loss_fn else model(**batch).loss)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and tspec.max_grad_norm:
                        accelerator.clip_grad_norm_(params, tspec.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                out.compute_time_s += time.perf_counter() - t0
                running += loss.detach().float()
                running_n += 1
                if check_every_step and not math.isfinite(loss.item()):
                    raise NanLossError(f"loss became {loss.item()} at step {step + 1} (epoch {epoch + 1})",
                                       hint="lower train.lr or check the data")
                last_micro = (micro + 1) % tspec.grad_accum == 0 or micro + 1 == len(batches)
                if not last_micro:
                    continue
                step += 1
                bar.update(1)
                if step % tspec.log_every == 0 or step == total_steps:
                    avg = dp.mean(running / running_n).item()
                    if not math.isfinite(avg):
                        raise NanLossError(f"loss became {avg} by step {step}", hint="lower train.lr")
                    out.loss_curve.append({"step": step, "epoch": round(epoch + (micro + 1) / len(batches), 4),
                                           "loss": avg})
                    if on_log:
                        on_log("train", out.loss_curve[-1])
                    bar.set_postfix(loss=f"{avg:.4f}", epoch=epoch + 1)
                    running.zero_()
                    running_n = 0
                if step >= total_steps:
                    break
            out.train_time_s += time.perf_counter() - t_epoch
            mem.pause()
            t_eval = time.perf_counter()
            metrics = evaluate(dp.unwrap(model))
            out.eval_time_s += time.perf_counter() - t_eval
            out.epochs.append({"epoch": epoch + 1, "step": step, "train_time_s": out.train_time_s,  # clock so far
                               **{k: v for k, v in metrics.items() if isinstance(v, int | float)}})
            out.final_eval = metrics
            if on_log:
                on_log("eval", out.epochs[-1])
            mem.resume()
            if getattr(evaluate, "should_stop", False):  # early stopping (protocol.Selection)
                break
        if running_n:  # a tail shorter than log_every still belongs on the curve
            out.loss_curve.append({"step": step, "epoch": float(len(out.epochs)),
                                   "loss": dp.mean(running / running_n).item()})
            if on_log:
                on_log("train", out.loss_curve[-1])
    except KeyboardInterrupt:
        raise RunCanceled() from None
    except RuntimeError as err:
        if is_out_of_memory(err):
            raise OutOfMemory.from_error(err, "during training") from None
        raise
    finally:
        bar.close()
        out.memory = mem.stop()
        scopes.close()
    out.steps = step
    dp.finish(out)
    return out
