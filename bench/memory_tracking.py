"""The step-time cost of counting training memory by kind (`perf.memory`), side by side in one process.

The model is built as a run builds it (`step_time.build`); each step is forward, backward, clipping and
AdamW on one synthetic batch. Steps alternate between no tracker, a tracker counting
activations on every step (the cost of a counted step: saved-tensor hooks, gradient hooks, optimizer-step
hook) and a tracker as a run uses it (activations counted only on steps with a new batch shape: here the
first), so that a noisy machine slows all alike; the script prints the median milliseconds per step of
each, their ratio to no tracker, and the peak by kind.

    python bench/memory_tracking.py --model tiny --method lora
    python bench/memory_tracking.py --model embedded --method full --length 128
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_time import build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=40, help="steps of each variant")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from peftbench.core.train import adamw
    from peftbench.models.loading import quiet_libraries
    from peftbench.perf.memory import MemoryByKind
    from peftbench.profiling.profile import synthetic
    from peftbench.tasks.base import TASKS

    quiet_libraries()
    torch.set_num_threads(args.threads)
    spec, loaded, model, amp_dtype, _ = build(args.model, args.method, args.length, args.threads)
    enc = synthetic("classification", loaded.tokenizer, args.batch_size, args.length, 0)
    batch = functools.partial(TASKS.get("classification").collate, multiple=1)(enc, list(range(args.batch_size)), 0)
    params, optimizer = adamw(model, spec.train)
    trackers = {"plain": None, "every step": MemoryByKind(model, every_step=True),  # a counted step's cost
                "as a run": MemoryByKind(model)}  # counts the first step only: the batches all have one shape
    model.train()

    def step(tracker: MemoryByKind | None) -> float:
        if tracker:
            tracker.attach(optimizer)
        t0 = time.perf_counter()
        with tracker.measured(tuple(batch["input_ids"].shape)) if tracker else contextlib.nullcontext(), \
                torch.autocast("cpu", dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext():
            model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - t0
        if tracker:
            tracker.detach()
        return elapsed

    for _ in range(3):  # warm-up: optimizer state, allocator
        step(None)
    times: dict[str, list[float]] = {name: [] for name in trackers}
    for _ in range(args.steps):
        for name, tracker in trackers.items():
            times[name].append(step(tracker))
    plain = statistics.median(times["plain"])
    print(f"{args.model} {args.method}, batch {args.batch_size}x{args.length}, {args.threads} thread(s), "
          f"{args.steps} steps each")
    for name in trackers:
        ms = statistics.median(times[name])
        print(f"  {name:10s}: {ms * 1000:8.2f} ms/step (median)   ratio {ms / plain:.3f}")
    tracker = trackers["every step"]
    r = tracker.result()
    print(f"  peak by kind {r['peak_bytes'] / 2**20:.2f} MiB: " +
          ", ".join(f"{k} {v / 2**20:.2f}" for k, v in r["at_peak"].items()))


if __name__ == "__main__":
    main()
