"""Keep freed tensor memory inside the process while a run trains on the CPU (Linux, glibc).

glibc serves every block above its mmap threshold (at most 32 MiB, however warm the process) with
a fresh `mmap` and hands it back with `munmap` when freed. A training step on the CPU frees and
allocates the same large tensors again and again (attention scores of 16 × 12 × 256 × 256 fp32
are 50 MB), so the kernel faults in and zeroes every page of each of them, every step: for a
MiniLM full fine-tuning step at 16 × 256 on one thread, about 400,000 page faults and over a
second of system time.

While training, `retained_heap` raises glibc's mmap threshold to 1 GiB and its trim threshold to
its maximum, so freed blocks stay in the heap and the next step reuses them without a fault.
This is the allocator behaviour that Intel's CPU-training guides get by preloading jemalloc or
tcmalloc, done without a preload. The cost: the process keeps what it freed until the run ends
(peak RSS a few per cent higher). On leaving, both thresholds are set to the values a warm
process reaches on its own (32 MiB and 64 MiB) and the retained memory is returned to the system.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import sys
from collections.abc import Iterator
from typing import Any

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
TRAIN_MMAP_THRESHOLD = 1 << 30
TRAIN_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int
WARM_MMAP_THRESHOLD = 32 << 20  # glibc's dynamic threshold stops here (64-bit)
WARM_TRIM_THRESHOLD = 2 * WARM_MMAP_THRESHOLD  # and sets the trim threshold to twice it


def _glibc() -> Any | None:
    """The C library when it is glibc on Linux (the only one with these mallopt parameters), else None."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _set(libc: Any, mmap_threshold: int, trim_threshold: int) -> bool:
    """Both thresholds; True when glibc took both (mallopt returns 1 on success)."""
    took_mmap = libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)
    took_trim = libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)
    return bool(took_mmap and took_trim)


@contextlib.contextmanager
def retained_heap(device: str, enabled: bool = True) -> Iterator[dict[str, Any]]:
    """Scope of a CPU training loop; yields the record's `train.cpu_heap` section."""
    if not enabled:
        yield {"retained": False, "reason": "train.cpu_ops is false"}
        return
    if device != "cpu":
        yield {"retained": False, "reason": f"not used on {device}"}
        return
    libc = _glibc()
    if libc is None:
        yield {"retained": False, "reason": f"needs glibc on Linux (here: {sys.platform} {platform.libc_ver()[0] or '?'})"}
        return
    if not _set(libc, TRAIN_MMAP_THRESHOLD, TRAIN_TRIM_THRESHOLD):
        _set(libc, WARM_MMAP_THRESHOLD, WARM_TRIM_THRESHOLD)
        yield {"retained": False, "reason": "glibc refused the thresholds (mallopt returned 0)"}
        return
    section = {"retained": True, "mmap_threshold_bytes": TRAIN_MMAP_THRESHOLD,
               "trim_threshold_bytes": TRAIN_TRIM_THRESHOLD}
    try:
        yield section
    finally:
        section["restored"] = _set(libc, WARM_MMAP_THRESHOLD, WARM_TRIM_THRESHOLD)
        libc.malloc_trim(0)
