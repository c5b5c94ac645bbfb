"""Time (or profile) single optimizer steps of a run's model: for before/after comparisons of CPU work.

The model is built as a run builds it (`runner.prepare_model`: dtype policy, CPU ops); the step is
forward, backward, clipping and AdamW on one synthetic batch without padding. Prints each step's
time and the peak RSS; `--profile` prints torch.profiler's operator table, grouped by input shape.

`--heap default` leaves glibc's thresholds alone (a run retains freed blocks while training: cpu_heap.py).

To compare two versions of the code, run it from each checkout in turn, alternating, in one shell:

    for i in 1 2 3; do (cd ../old && python bench/step_time.py); python bench/step_time.py; done

`--ab head-token` instead alternates steps with and without the first-token last layer (head_token.py)
in one process, and prints both medians and their ratio. Every timing is printed with the load it was
taken under (`peftbench.perf.load`: cores busy with other work, CPU steal, the 1-minute load average),
so that two invocations can be compared; `--ab` withholds the ratio when its two variants' steps ran
under clearly different load (exit 2), unless `--allow-load-mismatch`.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path.cwd() / "src"))  # the checkout it is run from, not the installed copy


def build(model_ref: str, method: str, length: int, threads: int, dtype: str = "auto") -> tuple[Any, ...]:
    """(spec, loaded, model, autocast dtype, precision): a classification model built as a run builds it."""
    from transformers import set_seed

    from peftbench.config.spec import RunSpec
    from peftbench.core.build import prepare_model
    from peftbench.methods.base import METHODS
    from peftbench.profiling.profile import LABELS, resolve_model_ref
    from peftbench.runtime.device import resolve_dtype
    from peftbench.tasks.base import TASKS, placeholder_data

    dtype = resolve_dtype(dtype, "cpu")
    spec = RunSpec.from_dict({"task": "classification", "method": {"name": method},
                              "model": {"name_or_path": resolve_model_ref(model_ref, "classification"), "dtype": dtype},
                              "data": {"max_length": length},
                              "train": {"device": "cpu", "num_threads": threads}}).resolved()
    set_seed(0)
    loaded, model, amp_dtype, precision, _ = prepare_model(spec, TASKS.get("classification"), METHODS.get(method),
                                                          placeholder_data(LABELS), dtype, "cpu")
    return spec, loaded, model, amp_dtype, precision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--heap", choices=("retained", "default"), default="retained",
                    help="glibc thresholds as a run sets them while training (cpu_heap.py), or glibc's own")
    ap.add_argument("--ab", choices=("head-token",), help="alternate steps with this change on and off")
    ap.add_argument("--allow-load-mismatch", action="store_true",
                    help="with --ab: print the ratio even when the two variants' steps ran under different load")
    args = ap.parse_args()

    import functools

    import torch

    from peftbench.models.loading import quiet_libraries
    from peftbench.perf.cpu_heap import retained_heap
    from peftbench.perf.load import sampled_load
    from peftbench.profiling.profile import synthetic
    from peftbench.tasks.base import TASKS

    quiet_libraries()
    torch.set_num_threads(args.threads)
    _, loaded, model, amp_dtype, precision = build(args.model, args.method, args.length, args.threads)
    task = TASKS.get("classification")
    enc = synthetic("classification", loaded.tokenizer, args.batch_size, args.length, 0)
    batch = functools.partial(task.collate, multiple=1)(enc, list(range(args.batch_size)), 0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)  # as train.train builds it on the CPU
    model.train()

    def step() -> None:
        amp = torch.autocast("cpu", dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
        with amp:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with retained_heap("cpu", args.heap == "retained"):  # as train.train scopes it
        for _ in range(2):  # warm-up: first-call allocations and kernel selection
            step()
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                for _ in range(args.steps):
                    step()
            print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=30))
            return
        if args.ab == "head-token":
            _alternate_head_token(model, step, args.steps, args.allow_load_mismatch)
            return
        times = []
        with sampled_load(interval_s=0.5) as load:
            for _ in range(args.steps):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{args.method} {args.batch_size}x{args.length} {precision['compute_dtype']} heap {args.heap}: step s "
              f"{' '.join(f'{t:.3f}' for t in times)} (min {min(times):.3f}); peak RSS {rss_mb:.0f} MB")
        print(f"load: {load_text(load)}")


def load_text(load: dict[str, Any]) -> str:
    """'1-min 1.85 (start 1.70, end 1.90); others 1.0 cores; steal 0%' ('-' for what is unknown)."""
    def fmt(key: str, spec: str) -> str:
        v = load.get(key)
        return format(v, spec) if isinstance(v, int | float) else "-"

    one_min = (f"1-min {fmt('mean_1min', '.2f')} (start {fmt('start_1min', '.2f')}, end {fmt('end_1min', '.2f')}); "
               if "mean_1min" in load else "")
    return f"{one_min}others {fmt('other_busy_cores', '.1f')} cores; steal {fmt('steal_share', '.0%')}"


def _alternate_head_token(model: Any, step: Any, rounds: int, allow_mismatch: bool = False) -> None:
    """Steps with the first-token last layer and with the whole layer, alternating: one machine state for both
    (each variant's load is measured over its own steps, and the ratio withheld when they differ)."""
    import statistics

    from peftbench.perf import head_token
    from peftbench.perf.load import load_differs, merge_windows, snapshot, window

    if head_token.installed(model) is None:
        sys.exit(f"step_time: the head-token layer is not in use for this model ({type(model).__name__})")

    windows: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}

    def timed(variant: str) -> float:
        before = snapshot()
        t0 = time.perf_counter()
        step()
        seconds = time.perf_counter() - t0
        windows[variant].append(window(before, snapshot()))
        return seconds

    on: list[float] = []
    off: list[float] = []
    for _ in range(rounds):
        on.append(timed("on"))
        head_token.remove(model)
        off.append(timed("off"))
        head_token.install(model)
    a, b = statistics.median(off), statistics.median(on)
    load_off, load_on = merge_windows(windows["off"]), merge_windows(windows["on"])
    print(f"whole last layer: step s {' '.join(f'{t:.3f}' for t in off)} (median {a:.3f}); load: {load_text(load_off)}")
    print(f"head token only:  step s {' '.join(f'{t:.3f}' for t in on)} (median {b:.3f}); load: {load_text(load_on)}")
    why = load_differs(load_off, load_on)
    if why and not allow_mismatch:
        print(f"step_time: ratio withheld, the two variants' steps ran under different load ({why}); "
              "rerun on a quieter machine, or pass --allow-load-mismatch", file=sys.stderr)
        sys.exit(2)
    print(f"ratio {a / b:.3f}x" + (f"  (⚠ load differs: {why})" if why else ""))


if __name__ == "__main__":
    main()
