"""The machine's peak FLOP/s for MFU, and the checks that keep it honest.

The peak comes from `train.peak_tflops`, else a table of common GPUs (dense bf16/fp16, fp32
without TF32), else, on a CPU, a GEMM probe in the run's dtype at the run's thread count, cached per
machine in `gemm_peak.json` under $PEFTBENCH_CACHE (default ~/.cache/peftbench).

A probe on a busy machine reads low (a probe taken while both cores of a 2-core machine ran other
work read a tenth of the quiet figure), and every run divided by a cached low peak reports an MFU
above 1. So:

- each probe records when and under what load it ran (1-minute load average, other busy cores,
  CPU steal, the share of their cores its threads got: `peftbench.perf.load`), and is cached only
  when the machine was quiet (`load.busy_reason`);
- each CPU run checks a cached peak: when the run achieved more than it, or one short check GEMM
  reads more than `CHECK_MARGIN` × it (load only lowers a GEMM's reading, so a higher reading proves
  the cache low), the peak is probed again and a quiet re-probe replaces the entry;
- an MFU above 1 is not recorded as `mfu`: it is `mfu_valid: false` with the reason (`mfu_fields`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from peftbench.perf.load import busy_reason, snapshot, window
from peftbench.records.fields import number
from peftbench.records.io import atomic_write_json, now_iso

# Dense (no sparsity) peak TFLOP/s by dtype; matched as a substring of the device name, first hit wins.
GPU_PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0}),
    ("H100 PCIe", {"bfloat16": 756.0, "float16": 756.0, "float32": 51.0}),
    ("H100", {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0}),
    ("GH200", {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0}),
    ("B200", {"bfloat16": 2250.0, "float16": 2250.0, "float32": 80.0}),
    ("A100", {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5}),
    ("A10G", {"bfloat16": 70.0, "float16": 70.0, "float32": 35.0}),
    ("A10", {"bfloat16": 125.0, "float16": 125.0, "float32": 31.2}),
    ("L40S", {"bfloat16": 362.0, "float16": 362.0, "float32": 91.6}),
    ("L4", {"bfloat16": 121.0, "float16": 121.0, "float32": 30.3}),
    ("RTX 4090", {"bfloat16": 165.0, "float16": 165.0, "float32": 82.6}),
    ("V100", {"float16": 125.0, "float32": 15.7}),
    ("T4", {"float16": 65.0, "float32": 8.1}),
)

PROBE_SHAPE = (2048, 2048, 2048)
CHECK_SECONDS = 0.1  # each CPU run's check of a cached peak: one timed GEMM of PROBE_SHAPE after two warm-ups
CHECK_MARGIN = 1.2  # a check reading this much above the cached peak proves the cache low



def gpu_peak_tflops(device_name: str, dtype: str) -> float | None:
    for key, peaks in GPU_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peaks.get(dtype)
    return None


def cache_file() -> Path:
    """The machine-peak cache: $PEFTBENCH_CACHE/gemm_peak.json, else ~/.cache/peftbench/gemm_peak.json."""
    root = os.environ.get("PEFTBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "peftbench")
    return Path(root) / "gemm_peak.json"


def read_cache() -> dict[str, Any]:
    """The cached probes by machine key; empty when absent or unreadable."""
    path = cache_file()
    try:
        cache = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def write_cache(cache: dict[str, Any]) -> bool:
    """Whether the cache could be written (a read-only home only costs a re-probe next time)."""
    try:
        atomic_write_json(cache_file(), cache)
    except OSError:
        return False
    return True


def machine_key(dtype: str, threads: int) -> str:
    """Same CPU model, flags, thread count, torch version and dtype: same cached peak."""
    import torch

    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "")
        flags = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("flags")), "")
    except OSError:
        model, flags = platform.processor(), ""
    digest = hashlib.sha256(f"{model}|{flags}|{platform.machine()}".encode()).hexdigest()[:12]
    return f"{digest}-t{threads}-torch{torch.__version__}-{dtype}"


def gemm_probe(dtype: str, seconds: float = 1.0, shape: tuple[int, int, int] = PROBE_SHAPE) -> float:
    """Best-of-reps FLOP/s of one square matmul in `dtype` on the CPU (best: other load only lowers it)."""
    import torch

    from peftbench.runtime.device import torch_dtype

    m, k, n = shape
    dt = torch_dtype(dtype)
    a = torch.randn(m, k).to(dt)
    b = torch.randn(k, n).to(dt)
    for _ in range(2):
        a @ b
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2.0 * m * k * n / (time.perf_counter() - t0))
    return best


def probe_peak(dtype: str) -> dict[str, Any]:
    """A fresh GEMM probe at torch's thread count, with when and under what load it ran (`load`) and
    why the machine was too busy for it to stand as the peak (`busy`, None when quiet)."""
    import torch

    threads = torch.get_num_threads()
    before = snapshot()
    flops = gemm_probe(dtype)
    load = {"load_1min": before.load_1min, **window(before, snapshot(), threads)}
    load.pop("window_s")
    return {"flops": flops, "dtype": dtype, "threads": threads, "shape": list(PROBE_SHAPE), "measured": now_iso(),
            "load": load, "busy": busy_reason(load, threads)}


def cpu_peak(dtype: str, refresh: bool = False, replaces: dict[str, Any] | None = None) -> dict[str, Any]:
    """The peak entry for this machine, dtype and thread count: the cached one, or a fresh probe that
    is cached only when the machine was quiet. `source` says which: `gemm_probe_cached`, `gemm_probe`
    or `gemm_probe_busy` (fresh, not cached); `cached` whether the entry is in the cache now.
    `replaces`: the stale entry a refresh replaces, kept beside the new one (removed from the cache
    when the machine is too busy for the new one to stand in its place)."""
    import torch

    key = machine_key(dtype, torch.get_num_threads())
    cache = read_cache()
    old = cache.get(key)
    if not refresh and isinstance(old, dict) and number(old.get("flops")):
        return {**old, "key": key, "source": "gemm_probe_cached", "cached": True}
    entry = probe_peak(dtype)
    if replaces:
        entry["replaces"] = replaces
    cached = False
    if entry["busy"] is None:
        cache[key] = entry
        cached = write_cache(cache)
    elif replaces and key in cache:  # proven too low, and no quiet probe to replace it: the next run probes afresh
        del cache[key]
        write_cache(cache)
    return {**entry, "key": key, "source": "gemm_probe" if entry["busy"] is None else "gemm_probe_busy",
            "cached": cached}


def cpu_peak_flops(dtype: str, refresh: bool = False) -> tuple[float, str]:
    """(FLOP/s, source) of `cpu_peak`."""
    entry = cpu_peak(dtype, refresh)
    return float(entry["flops"]), entry["source"]


def stale_reason(entry: dict[str, Any], achieved: float | None, dtype: str) -> str | None:
    """Why a cached peak is wrong, or None: the run achieved more, or a short check GEMM reads more
    than `CHECK_MARGIN` × the peak (a GEMM under load only reads less, so more proves the cache low)."""
    peak = float(entry["flops"])
    if achieved is not None and achieved > peak:
        return f"the run achieved {achieved / 1e12:.4g} TFLOP/s, above the cached peak"
    check = gemm_probe(dtype, seconds=CHECK_SECONDS)
    if check > CHECK_MARGIN * peak:
        return f"a check GEMM read {check / 1e12:.4g} TFLOP/s, {check / peak:.1f}× the cached peak"
    return None


def peak_flops(device: str, dtype: str, override_tflops: float | None = None) -> tuple[float | None, str]:
    """Peak FLOP/s for MFU and where it came from: spec, GPU table, CPU probe; (None, why) if unknown."""
    if override_tflops:
        return override_tflops * 1e12, "spec"
    if device == "cuda":
        import torch

        name = torch.cuda.get_device_name()
        tf = gpu_peak_tflops(name, dtype)
        return (tf * 1e12, f"table:{name}") if tf else (None, f"unknown GPU '{name}': set train.peak_tflops")
    return cpu_peak_flops(dtype)


def peak_entry(device: str, dtype: str, override_tflops: float | None = None) -> dict[str, Any]:
    """`peak_flops` as an entry (`flops`, `source`); on the CPU the probe's whole entry (`cpu_peak`)."""
    if override_tflops or device == "cuda":
        flops, source = peak_flops(device, dtype, override_tflops)
        return {"flops": flops, "source": source}
    return cpu_peak(dtype)


def refreshed_peak(entry: dict[str, Any], achieved: float | None, dtype: str) -> tuple[dict[str, Any],
                                                                                   dict[str, Any] | None]:
    """(the entry to divide by, the refresh or None). A cached CPU peak that `stale_reason` finds wrong,
    or a probe of this run that the run outran, is probed again; a quiet re-probe replaces the cache
    entry. Both readings are lower bounds of the machine's peak, so the higher one is used."""
    source, flops = entry.get("source"), entry.get("flops")
    if source == "gemm_probe_cached":
        reason = stale_reason(entry, achieved, dtype)
    elif source in ("gemm_probe", "gemm_probe_busy") and achieved is not None and flops and achieved > flops:
        reason = f"the run achieved {achieved / 1e12:.4g} TFLOP/s, above the peak probed before training"
    else:
        reason = None
    if reason is None:
        return entry, None
    before = {"flops": flops, "measured": entry.get("measured"), "load": entry.get("load")}
    fresh = cpu_peak(dtype, refresh=True, replaces={**before, "reason": reason})
    used = fresh if fresh["flops"] >= flops else entry
    kept = ("cache replaced" if fresh["cached"] else
            f"stale entry removed, not cached: {fresh['busy'] or 'the cache is not writable'}")
    note = (f"peak refreshed: {source} {flops / 1e12:.4g} TFLOP/s (measured {entry.get('measured') or '?'}) -> "
            f"{fresh['flops'] / 1e12:.4g} TFLOP/s re-probed ({kept}); {reason}")
    return used, {"before_tflops": flops / 1e12, "before_measured": entry.get("measured"),
                  "before_load": entry.get("load"), "after_tflops": fresh["flops"] / 1e12,
                  "after_load": fresh.get("load"), "cached": fresh["cached"], "reason": reason, "note": note}


def mfu_fields(achieved: float | None, peak: float | None, source: str) -> dict[str, Any]:
    """`mfu`, `mfu_valid` and `mfu_invalid_reason`: an MFU above 1 is no measurement (the peak is
    wrong for this run), so it is recorded as invalid with the ratio in the reason, never as `mfu`."""
    if not achieved:
        return {"mfu": None, "mfu_valid": False, "mfu_invalid_reason": "no training time or FLOPs"}
    if not peak:
        return {"mfu": None, "mfu_valid": False, "mfu_invalid_reason": f"no peak: {source}"}
    ratio = achieved / peak
    if ratio > 1.0:
        return {"mfu": None, "mfu_valid": False,
                "mfu_invalid_reason": f"achieved {achieved / 1e12:.4g} TFLOP/s is {ratio:.3g}× the peak "
                                      f"{peak / 1e12:.4g} TFLOP/s ({source}): the peak is wrong for this run"}
    return {"mfu": ratio, "mfu_valid": True, "mfu_invalid_reason": None}


def probe_circumstances(entry: dict[str, Any]) -> dict[str, Any] | None:
    """When, at how many threads and under what load the CPU peak in use was probed; None otherwise."""
    if not str(entry.get("source", "")).startswith("gemm_probe"):
        return None
    return {k: entry.get(k) for k in ("measured", "threads", "load", "busy", "cached")}
