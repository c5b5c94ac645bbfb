"""`peftbench profile`: cost curves. Per method, training throughput and peak memory against
sequence length and batch size, and eval-mode forward latency with the adapter unmerged vs merged.

Each (method, length, batch size) is measured in its own process (as the batch-size probe does):
an out-of-memory kill ends that configuration only and becomes a row with its status, and every
configuration starts from a clean allocator. Inside, the model is built by `runner.prepare_model`
(the loading, method, dtype policy and device of a run) and trained by `train.train` itself, on
synthetic token ids of exactly the given length (no padding, so tokens/s is the throughput at that
length). `--warmup` steps come first and are not timed; the clock covers the next `--steps` steps,
read at each step's loss read-back. Peak memory is the training loop's own measure, as records
state it: the CUDA allocator peak, or on the CPU the growth of the process's resident set size over
the loaded model. Latency is the median of eval-mode forwards under `inference_mode` on one batch of
the same shape; the adapter is then merged (`merge_and_unload`) and timed again, and the merged
outputs are compared with the unmerged ones. Full and partial fine-tuning have nothing to merge.

Bounded and visible: the worker process (the fork server: torch, transformers, peft imported once,
tens of seconds on a busy machine) starts first, between two progress lines; each configuration says
when it starts and ends, runs under `timeout_s` (warm-up included, at most `MAX_WARMUP` steps), and
those left when a total `budget_s` is spent become `skipped` rows.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from peftbench.config.spec import RunSpec
from peftbench.errors import SpecError
from peftbench.profiling.limits import DEFAULT_TIMEOUT_S, MAX_WARMUP
from peftbench.records.fields import PROFILE_KIND, fmt_bytes
from peftbench.records.io import atomic_write_json, environment, git_commit, now_iso

PROFILE_VERSION = 1
PROFILE_FILE = "profile.json"
LABELS = ("0", "1")  # classification heads get two classes; the synthetic labels are random
ROW_KEYS = (
    "method", "length", "batch_size", "status", "error", "device", "compute_dtype", "precision", "cpu_ops", "threads",
    "trainable_params", "total_params", "warmup_steps", "steps", "tokens_per_step", "tokens", "padding_free",
    "time_s", "step_time_s", "step_times_s", "tokens_per_s", "samples_per_s", "peak_memory_bytes", "memory",
    "latency_calls", "latency_unmerged_ms", "latency_merged_ms", "merge", "merge_max_abs_diff",
    "adapter_max_abs_effect",
)


# ---- settings -------------------------------------------------------------------------------------


def parse_sizes(text: str, option: str) -> list[int]:
    """'64,128, 256' -> [64, 128, 256]: positive integers, sorted, duplicates dropped."""
    items = [t.strip() for t in str(text).split(",")]
    if not all(re.fullmatch(r"[0-9]+", t) and int(t) > 0 for t in items):
        raise SpecError(f"invalid {option} '{text}': expected positive integers separated by commas",
                        hint=f"e.g. {option} 64,128,256")
    return sorted({int(t) for t in items})


def resolve_model_ref(name: str, task: str) -> str:
    """'tiny' or 'tiny:<family>' -> the folder of that tiny random stand-in (built once, offline);
    any other reference (folder, hub id, 'embedded'...) is left to the loaders."""
    if Path(name).exists() or not (name == "tiny" or name.startswith("tiny:")):
        return name
    from peftbench.models.tiny import TINY_CONFIGS, tiny_model_path
    from peftbench.tasks.base import TASKS

    family = name.partition(":")[2] or TASKS.get(task).tiny_family
    TINY_CONFIGS.get(family)  # did-you-mean for an unknown family
    return str(tiny_model_path(family))


def _check_model(spec: RunSpec, lengths: list[int]) -> None:
    """From the config alone (no weights): the task fits the family and every length fits the model."""
    from peftbench.models.embedded import embedded_model_path
    from peftbench.models.families import family_for
    from peftbench.models.generative import EMBEDDED_BUILDERS
    from peftbench.models.loading import load_config, max_positions, resolve_model_path
    from peftbench.tasks.base import TASKS

    name = spec.model.name_or_path
    task = TASKS.get(spec.task)
    if name in EMBEDDED_BUILDERS and name != task.embedded_model:
        raise SpecError(f"task '{spec.task}' cannot run on '{name}'",
                        hint=f"use --model {task.embedded_model}" + (" for classification" if task.embedded_model == "embedded" else ""))
    config = load_config(str(embedded_model_path()) if name in EMBEDDED_BUILDERS else resolve_model_path(name),
                         spec.model)
    kind = family_for(config.model_type, spec.model.family).kind
    if name not in EMBEDDED_BUILDERS and kind not in task.model_kinds and kind != "unknown":
        raise SpecError(f"task '{spec.task}' cannot run on a {kind} model ({config.model_type})",
                        hint=f"pick --task to match the model ({', '.join(TASKS.names())})")
    limit = max_positions(config)
    if limit is not None and lengths[-1] > limit:
        raise SpecError(f"--lengths {lengths[-1]} is longer than the {limit} positions of '{name}'",
                        hint=f"use lengths up to {limit}")


def _method_names(methods: Sequence[str] | None) -> list[str]:
    from peftbench.methods.base import METHODS, SEED_METHODS

    names = list(dict.fromkeys(m.strip() for m in (methods or SEED_METHODS) if m.strip()))
    if not names:
        raise SpecError("--methods names no method", hint="e.g. --methods full,lora,ia3")
    for name in names:
        METHODS.get(name)  # did-you-mean for an unknown name
    return names


# ---- one configuration, in its own process ------------------------------------------------------------


def synthetic(task: str, tokenizer: Any, n: int, length: int, seed: int) -> Any:
    """`n` examples of exactly `length` random non-special token ids, shaped for the task's model:
    a classifier gets random labels, a causal LM carries loss on every token, a seq2seq model gets
    random targets of the same length."""
    import torch

    from peftbench.data.batching import Encoded
    from peftbench.tasks.base import TASKS

    model_type = TASKS.get(task).peft_task_type

    g = torch.Generator().manual_seed(seed)
    special = set(tokenizer.all_special_ids)
    allowed = torch.tensor([i for i in range(len(tokenizer)) if i not in special])

    def draw() -> list[list[int]]:
        return allowed[torch.randint(len(allowed), (n, length), generator=g)].tolist()

    ids = draw()
    if model_type == "SEQ_CLS":
        return Encoded(ids, torch.randint(0, len(LABELS), (n,), generator=g).tolist())
    return Encoded(ids, [], {"labels": [list(r) for r in ids] if model_type == "CAUSAL_LM" else draw()})


def _no_evaluation(_model: Any) -> dict[str, Any]:
    return {}


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _compared(out: Any) -> Any:
    """The outputs merged and unmerged models are compared on: the logits (for LM tasks at the last
    position only: a whole vocabulary per token would be large)."""
    logits = out.logits.float()
    return logits[:, -1] if logits.dim() == 3 else logits


def _latency(model: Any, inputs: dict[str, Any], amp: Callable[[], Any], device: str,
             calls: int) -> tuple[float, Any]:
    """Median wall time (ms) of `calls` forwards after one untimed call, and the outputs to compare."""
    import statistics

    import torch

    times = []
    with torch.inference_mode(), amp():
        out = model(**inputs)
        for _ in range(calls):
            _sync(device)
            t0 = time.perf_counter()
            out = model(**inputs)
            _sync(device)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times), _compared(out)


def _merge_latency(model: Any, inputs: dict[str, Any], amp: Callable[[], Any], device: str, calls: int,
                   unmerged: Any) -> dict[str, Any]:
    """Latency after `merge_and_unload`, how far merged outputs are from unmerged ones, and how far the
    adapter moves the outputs at all (a merge check means little if the adapter does nothing)."""
    import torch

    if not hasattr(model, "merge_and_unload"):  # full, partial; prompt learning has nothing to merge either
        return {"merge": "n/a"}
    with torch.inference_mode(), amp(), model.disable_adapter():
        base = _compared(model(**inputs))
    effect = float((unmerged - base).abs().max())
    try:
        merged_model = model.merge_and_unload()
    except Exception as err:
        return {"merge": f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}",
                "adapter_max_abs_effect": effect}
    merged_ms, merged = _latency(merged_model, inputs, amp, device, calls)
    return {"merge": "merged", "latency_merged_ms": merged_ms, "adapter_max_abs_effect": effect,
            "merge_max_abs_diff": float((merged - unmerged).abs().max())}


def measure(spec_dict: dict[str, Any], length: int, batch_size: int, steps: int, warmup: int,
            latency_calls: int) -> dict[str, Any]:
    """One configuration: `warmup` + `steps` steps of the training loop, then forward latency."""
    import functools
    import itertools
    import statistics

    from transformers import set_seed

    from peftbench.core.build import prepare_model
    from peftbench.core.train import train
    from peftbench.methods.base import METHODS
    from peftbench.models.loading import count_params, quiet_libraries
    from peftbench.perf.flops import configure_threads
    from peftbench.runtime.device import autocast, pick_device, resolve_dtype
    from peftbench.tasks.base import TASKS, placeholder_data

    quiet_libraries()
    spec = RunSpec.from_dict(spec_dict)
    device = pick_device(spec.train.device)
    compute_dtype = resolve_dtype(spec.model.dtype, device)
    threads = configure_threads(spec.train.num_threads, device)
    set_seed(spec.train.seed)
    task = TASKS.get(spec.task)
    loaded, model, amp_dtype, precision, ops = prepare_model(spec, task, METHODS.get(spec.method.name),
                                                             placeholder_data(LABELS), compute_dtype, device)
    cpu_ops = ops["cpu_ops"]
    trainable, total = count_params(model)
    pad_id = loaded.tokenizer.pad_token_id or 0
    enc = synthetic(spec.task, loaded.tokenizer, batch_size * (warmup + steps), length, spec.train.seed)
    collate_fn = functools.partial(task.collate, multiple=1)  # no rounding up: exactly `length` tokens
    marks: list[float] = []
    tspec = spec.train.model_copy(update={"epochs": 1, "batch_size": batch_size, "max_steps": warmup + steps,
                                          "log_every": 1, "grad_accum": 1})
    outcome = train(model, enc, _no_evaluation, tspec, device=device, autocast_dtype=amp_dtype, pad_id=pad_id,
                    progress=False, collate_fn=collate_fn,
                    on_log=lambda kind, _point: marks.append(time.perf_counter()) if kind == "train" else None)
    step_times = [b - a for a, b in itertools.pairwise(marks[warmup - 1:])]
    timed = sum(step_times)
    per_step = outcome.computed_tokens // max(1, outcome.steps)
    row = {
        "device": device, "compute_dtype": compute_dtype, "precision": precision, "cpu_ops": cpu_ops, "threads": threads,
        "trainable_params": trainable, "total_params": total, "warmup_steps": warmup, "steps": len(step_times),
        "tokens_per_step": per_step, "tokens": per_step * len(step_times),
        "padding_free": outcome.computed_tokens == outcome.real_tokens, "time_s": timed,
        "step_time_s": statistics.median(step_times), "step_times_s": step_times,
        "tokens_per_s": per_step * len(step_times) / timed if timed else None,
        "samples_per_s": batch_size * len(step_times) / timed if timed else None,
        "peak_memory_bytes": outcome.memory.get("peak_bytes"), "memory": outcome.memory,
        "latency_calls": latency_calls,
    }
    batch = {k: v.to(device) for k, v in collate_fn(enc, list(range(batch_size)), pad_id).items()}
    if not getattr(model.config, "is_encoder_decoder", False):  # seq2seq builds its decoder inputs from labels
        batch.pop("labels")
    model.eval()
    amp = functools.partial(autocast, device, amp_dtype)
    row["latency_unmerged_ms"], unmerged = _latency(model, batch, amp, device, latency_calls)
    row.update(_merge_latency(model, batch, amp, device, latency_calls, unmerged))
    return row


# ---- the command --------------------------------------------------------------------------------------


def _row(method: str, length: int, batch_size: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(method=method, length=length, batch_size=batch_size, status="ok")
    row.update(values)
    return row


def _say_row(row: dict[str, Any]) -> str:
    """What a measured configuration gave, in one line."""
    if row["status"] != "ok":
        return f"{row['status']}: {row['error']}"
    merged = f", merged {row['latency_merged_ms']:.3g} ms" if row["latency_merged_ms"] is not None else ""
    return (f"{row['tokens_per_s']:,.0f} tokens/s, peak {fmt_bytes(row['peak_memory_bytes'])}, "
                   f"latency {row['latency_unmerged_ms']:.3g} ms{merged}")


def profile(model: str, methods: Sequence[str] | None = None, lengths: Sequence[int] = (64, 128, 256),
            batch_sizes: Sequence[int] = (8,), *, task: str = "classification", steps: int = 5, warmup: int = 1,
            latency_calls: int = 10, seed: int = 0, device: str = "auto", dtype: str = "auto",
            num_threads: int | None = None, out_dir: str | Path = "profile",
            timeout_s: float | None = DEFAULT_TIMEOUT_S, budget_s: float | None = None,
            say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every (method, batch size, length); write `out_dir/profile.json` after each row (an
    interrupted profile keeps what it measured). `timeout_s` bounds each configuration, `budget_s` the
    whole profile (None: unbounded). Returns the result; `reports.cost_curves.write_profile_report`
    renders it (profile.md and plots/)."""
    from peftbench.core.runner import check_writable
    from peftbench.runtime.device import pick_device
    from peftbench.tasks.base import TASKS

    TASKS.get(task)  # did-you-mean for an unknown task, first
    names = _method_names(methods)
    lengths, batch_sizes = sorted(set(lengths)), sorted(set(batch_sizes))
    if not lengths or not batch_sizes or min(*lengths, *batch_sizes) <= 0:
        raise SpecError("lengths and batch sizes must be positive integers", hint="e.g. --lengths 64,128 --batch-sizes 8")
    if steps < 1 or warmup < 1 or latency_calls < 1:
        raise SpecError("steps, warmup and latency calls must be at least 1", hint="e.g. --steps 5 --warmup 1")
    if warmup > MAX_WARMUP:
        raise SpecError(f"warmup {warmup} is above {MAX_WARMUP} steps", hint=f"use --warmup 1 to {MAX_WARMUP}")
    if any(t is not None and t <= 0 for t in (timeout_s, budget_s)):
        raise SpecError("timeout and budget must be positive seconds", hint="e.g. --timeout 300 --budget 1800")
    path = resolve_model_ref(model, task)
    specs = _specs(path, task, names, lengths, device, dtype, seed, num_threads)
    _check_model(specs[0], lengths)
    out = Path(out_dir)
    check_writable(out)
    picked = pick_device(device)
    result: dict[str, Any] = {
        "kind": PROFILE_KIND, "schema_version": PROFILE_VERSION, "model_name": model, "model_path": path,
        "task": task, "device": picked, "memory_kind": "cuda_allocated" if picked == "cuda" else "cpu_rss_growth",
        "settings": {"methods": [s.method.name for s in specs], "lengths": lengths, "batch_sizes": batch_sizes,
                     "steps": steps, "warmup": warmup, "latency_calls": latency_calls, "seed": seed, "dtype": dtype,
                     "num_threads": num_threads, "timeout_s": timeout_s, "budget_s": budget_s},
        "timestamps": {"started": now_iso(), "finished": None},
        "load_average": {"start": os.getloadavg()[0], "end": None},
        "environment": environment(), "git_commit": git_commit(), "rows": [],
    }
    pace = Pace(len(specs) * len(batch_sizes) * len(lengths), timeout_s, budget_s, say or (lambda _msg: None))
    pace.start_workers()
    for spec in specs:
        for batch_size in batch_sizes:
            _measure_lengths(spec, batch_size, lengths, (steps, warmup, latency_calls), result, out, pace)
    result["timestamps"]["finished"] = now_iso()
    result["load_average"]["end"] = os.getloadavg()[0]
    atomic_write_json(out / PROFILE_FILE, result)
    return result


def _specs(path: str, task: str, names: list[str], lengths: list[int], device: str, dtype: str, seed: int,
           num_threads: int | None) -> list[RunSpec]:
    """One validated spec per method, checked like a run's before anything loads."""
    from peftbench.methods.base import METHODS
    from peftbench.trust.checks import preflight

    specs = []
    for name in names:
        spec = RunSpec.from_dict({"task": task, "model": {"name_or_path": path, "dtype": dtype},
                                  "method": {"name": name}, "data": {"max_length": lengths[-1]},
                                  "train": {"device": device, "seed": seed, "num_threads": num_threads}}).resolved()
        preflight(spec, METHODS.get(name))
        specs.append(spec)
    return specs


class Pace:
    """The profile's clock and progress lines: configurations counted `k/N`, each one's time limit
    (the per-configuration timeout, cut to what is left of the total budget)."""

    def __init__(self, total: int, timeout_s: float | None, budget_s: float | None, say: Callable[[str], None]):
        self.total, self.done, self.timeout_s, self.budget_s, self.say = total, 0, timeout_s, budget_s, say
        self.deadline = None if budget_s is None else time.monotonic() + budget_s

    def start_workers(self) -> None:
        """Start the fork server now, between two lines, rather than silently inside the first configuration."""
        from peftbench.core.isolate import call_isolated

        limit = f", at most {self.timeout_s:g} s each" if self.timeout_s else ""
        budget = f", {self.budget_s:g} s in all" if self.budget_s else ""
        self.say(f"[profile] {self.total} configurations, each in its own process{limit}{budget}")
        self.say("[profile] starting the worker process (it imports torch, transformers and peft once)...")
        t0 = time.perf_counter()
        call_isolated(os.getpid, (), name="peftbench-profile-start")
        self.say(f"[profile] worker process ready after {time.perf_counter() - t0:.1f} s")

    def limit(self) -> float | None:
        """The time the next configuration may take; 0 when the budget is spent."""
        if self.deadline is None:
            return self.timeout_s
        left = max(0.0, self.deadline - time.monotonic())
        return left if self.timeout_s is None else min(left, self.timeout_s)

    def label(self, method: str, length: int, batch_size: int) -> str:
        return f"[profile] {self.done + 1}/{self.total} {method} length {length} batch {batch_size}"


def _measure_lengths(spec: RunSpec, batch_size: int, lengths: list[int], counts: tuple[int, int, int],
                     result: dict[str, Any], out: Path, pace: Pace) -> None:
    """Measure one method at one batch size over the lengths, shortest first, each in its own process;
    after an out-of-memory, the longer lengths are skipped. Each row is written as soon as it exists."""
    from peftbench.core.isolate import call_isolated

    name = spec.method.name
    oom_at = None
    for length in lengths:
        label, limit, t0 = pace.label(name, length, batch_size), pace.limit(), time.perf_counter()
        if oom_at is not None:  # a longer sequence than one that ran out of memory
            row = _row(name, length, batch_size, status="skipped", error=f"out of memory at length {oom_at}")
        elif limit is not None and limit <= 0:
            row = _row(name, length, batch_size, status="skipped", error=f"time budget of {pace.budget_s:g} s spent")
        else:
            pace.say(f"{label}: started")
            got = call_isolated(measure, (spec.to_dict(), length, batch_size, *counts),
                                name=f"peftbench-profile-{name}-{length}x{batch_size}", timeout_s=limit)
            row = (_row(name, length, batch_size, **got.value) if got.reason is None else
                   _row(name, length, batch_size, status=got.reason, error=got.message))
            oom_at = length if got.reason == "oom" else None
        result["rows"].append(row)
        atomic_write_json(out / PROFILE_FILE, result)
        pace.say(f"{label}: {_say_row(row)} ({time.perf_counter() - t0:.1f} s)")
        pace.done += 1
