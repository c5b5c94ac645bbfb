"""The batch-size probe: per method, the largest batch that trains a step within a memory limit.

Each (method, batch size) trial runs one full optimizer step (forward, backward, AdamW update,
so optimizer state counts) on sequences of the full `max_length`, in its own process: an
out-of-memory crash ends that trial only, and every trial starts from a clean allocator. Peak
memory is the CUDA allocator peak on a GPU, or the process's peak resident set size (VmHWM) on the
CPU, where `memory_limit` is the only limit that applies.

`refresh_peaks` and `peak_cache_table` are `peftbench probe --peak`: the machine's GEMM peak (the
MFU denominator of CPU runs, `perf.peak`) probed afresh at each thread count, and the cache shown
with when and under what load each entry was probed.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from peftbench.config.spec import RunSpec
from peftbench.errors import SpecError

UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,
         "t": 1024**4, "tb": 1024**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_bytes(text: str) -> int:
    """'2GB', '512MiB', '1.5g', '1000000' -> bytes (binary units)."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in UNITS or float(m.group(1)) <= 0:
        raise SpecError(f"invalid memory size '{text}'", hint="write e.g. 2GB, 512MB or 1.5GiB")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


@dataclass
class Trial:
    batch_size: int
    ok: bool
    peak_bytes: int | None
    error: str | None = None
    baseline_bytes: int | None = None  # before the step (model loaded): peak - baseline = the step's own cost


@dataclass
class MethodProbe:
    method: str
    largest_batch_size: int | None
    trials: list[Trial] = field(default_factory=list)


def _peak_rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import psutil

    return psutil.Process().memory_info().rss


def _step(spec_dict: dict[str, Any], batch_size: int, max_length: int, device: str) -> tuple[int, int]:
    """In the trial's own process: one training step at `batch_size`; (peak bytes, baseline bytes)."""
    import torch

    from peftbench.core.build import prepare_model
    from peftbench.core.train import adamw
    from peftbench.methods.base import METHODS
    from peftbench.models.loading import quiet_libraries
    from peftbench.runtime.device import autocast, resolve_dtype
    from peftbench.tasks.base import TASKS, placeholder_data

    quiet_libraries()
    spec = RunSpec.from_dict(spec_dict).resolved()
    compute_dtype = resolve_dtype(spec.model.dtype, device)
    # The very model a run of this spec trains (method, dtype policy, CPU ops), with a two-class head.
    _, model, amp_dtype, _, _ = prepare_model(spec, TASKS.get("classification"), METHODS.get(spec.method.name),
                                              placeholder_data(), compute_dtype, device)
    model.train()
    _, opt = adamw(model, spec.train)  # the optimizer train.train builds
    vocab = int(getattr(model.config, "vocab_size", 1000) or 1000)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000 if vocab > 2000 else 1, vocab, (batch_size, max_length), generator=g)
    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
             "labels": torch.randint(0, 2, (batch_size,), generator=g).to(device)}
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = int(torch.cuda.memory_allocated())
    else:
        import psutil

        baseline = int(psutil.Process().memory_info().rss)
    with autocast(device, amp_dtype):
        loss = model(**batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated()), baseline
    return _peak_rss(), baseline


def _run_trial(spec_dict: dict[str, Any], batch_size: int, max_length: int, device: str,
               timeout_s: float) -> Trial:
    from peftbench.core.isolate import call_isolated

    got = call_isolated(_step, (spec_dict, batch_size, max_length, device), name=f"peftbench-probe-{batch_size}",
                        timeout_s=timeout_s)
    if got.reason is None:
        peak, baseline = got.value
        return Trial(batch_size, True, peak, None, baseline)
    return Trial(batch_size, False, None, f"oom: {got.message}" if got.reason == "oom" else got.message)


def probe(model: str, methods: list[str], max_length: int = 256, *, memory_limit: int | None = None,
          device: str = "auto", max_batch: int = 1024, dtype: str = "auto", timeout_s: float = 600,
          say: Any = None) -> dict[str, Any]:
    """For each method, double the batch size from 1 until a step fails or exceeds `memory_limit`."""
    from peftbench.runtime.device import pick_device

    if max_length <= 0 or max_batch <= 0:
        raise SpecError("--max-length and --max-batch must be positive", hint="e.g. --max-length 256")
    device = pick_device(device)
    if memory_limit is None:
        if device == "cuda":
            import torch

            memory_limit = int(torch.cuda.get_device_properties(0).total_memory)
        else:
            import psutil

            memory_limit = int(psutil.virtual_memory().available)
    results = []
    for name in methods:
        spec = RunSpec.from_dict({"model": {"name_or_path": model, "dtype": dtype}, "method": {"name": name},
                                  "data": {"max_length": max_length}})
        found = MethodProbe(name, None)
        bs = 1
        while bs <= max_batch:
            trial = _run_trial(spec.to_dict(), bs, max_length, device, timeout_s)
            if trial.ok and trial.peak_bytes is not None and trial.peak_bytes > memory_limit:
                trial.ok = False
                trial.error = "over the memory limit"
            found.trials.append(trial)
            if say:
                peak = f"{trial.peak_bytes / 2**20:.0f} MiB" if trial.peak_bytes else "-"
                say(f"[probe] {name} batch {bs}: {'ok' if trial.ok else trial.error} (peak {peak})")
            if not trial.ok:
                break
            found.largest_batch_size = bs
            bs *= 2
        results.append(found)
    return {"model": model, "device": device, "max_length": max_length, "memory_limit_bytes": memory_limit,
            "memory_kind": "cuda_max_allocated" if device == "cuda" else "cpu_peak_rss",
            "max_batch": max_batch, "methods": [asdict(r) for r in results]}


def probe_table(result: dict[str, Any]) -> str:
    head = f"{'method':<10} {'largest batch':>13}  peak memory per batch size"
    lines = [head, "-" * len(head)]
    for m in result["methods"]:
        trials = " ".join(f"{t['batch_size']}:{t['peak_bytes'] / 2**20:.0f}M" if t["ok"] else
                          f"{t['batch_size']}:x" for t in m["trials"])
        largest = m["largest_batch_size"]
        lines.append(f"{m['method']:<10} {largest if largest is not None else '-':>13}  {trials}")
    return "\n".join(lines)


# ---- the machine's GEMM peak (`peftbench probe --peak`) -----------------------------------------


def default_peak_threads() -> list[int]:
    """The thread counts a CPU run may use here: the one it would pick now and every physical core."""
    import psutil

    from peftbench.perf.flops import auto_threads

    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return sorted({auto_threads(physical, os.getloadavg()[0]), physical})


def parse_threads(text: str) -> list[int]:
    """'1,2' -> [1, 2]."""
    try:
        counts = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        raise SpecError(f"invalid --threads '{text}'", hint="write thread counts separated by commas, e.g. 1,2")
    return counts


def refresh_peaks(dtype: str = "auto", threads: list[int] | None = None, say: Any = None) -> list[dict[str, Any]]:
    """Probe the CPU GEMM peak afresh at each thread count; a probe on a quiet machine replaces its
    cache entry, one on a busy machine is shown and not cached (`perf.peak.cpu_peak`)."""
    import torch

    from peftbench.perf.peak import cpu_peak
    from peftbench.runtime.device import resolve_dtype

    dtype = resolve_dtype(dtype, "cpu")
    before = torch.get_num_threads()
    entries = []
    try:
        for count in threads or default_peak_threads():
            torch.set_num_threads(count)
            entry = cpu_peak(dtype, refresh=True)
            entries.append(entry)
            if say:
                kept = "cached" if entry["cached"] else f"not cached: {entry['busy'] or 'cache not writable'}"
                say(f"[probe] {dtype} at {count} thread(s): {entry['flops'] / 1e12:.4g} TFLOP/s ({kept})")
    finally:
        torch.set_num_threads(before)
    return entries


def _num(x: Any, spec: str) -> str:
    return format(x, spec) if isinstance(x, int | float) and not isinstance(x, bool) else "-"


def peak_cache_table(cache: dict[str, Any]) -> str:
    """The cached peaks, one line each: TFLOP/s, when, and the load the probe ran under."""
    head = (f"{'dtype':9} {'threads':>7} {'TFLOP/s':>8}  {'measured':25} {'load 1m':>7} {'others':>6} "
            f"{'steal':>6} {'share':>6}  key")
    lines = [head, "-" * len(head)]
    for key, e in sorted(cache.items()):
        e = e if isinstance(e, dict) else {}
        load = e.get("load") if isinstance(e.get("load"), dict) else {}
        flops = e.get("flops")
        lines.append(f"{e.get('dtype') or key.rsplit('-', 1)[-1]!s:9} {_num(e.get('threads'), '.0f'):>7} "
                     f"{_num(flops / 1e12 if isinstance(flops, int | float) else None, '.4g'):>8}  "
                     f"{e.get('measured') or '-'!s:25} {_num(load.get('load_1min'), '.2f'):>7} "
                     f"{_num(load.get('other_busy_cores'), '.2f'):>6} {_num(load.get('steal_share'), '.1%'):>6} "
                     f"{_num(load.get('cpu_share'), '.0%'):>6}  {key}")
    return "\n".join(lines)
