"""The machine's load while something is timed, so that a time says what it was taken under.

On a shared machine other work moves training times by 2–3× between runs, and it can make a GEMM
peak probe read a tenth of what the same probe reads on a quiet machine. Three figures describe a
timed window (from Linux's /proc; elsewhere only the load average, the rest None):

- `*_1min`: the 1-minute load average (runnable threads, this process's own included; it follows
  a change over about a minute, so on a short window it says more about what came before).
- `other_busy_cores`: the cores kept busy by other work during the window: busy CPU time of all
  cores (/proc/stat: user, nice, system, irq, softirq) minus this process's own CPU time, over the
  window's wall time. Other processes of the same job (data-parallel ranks) count as other work.
- `steal_share`: the share of the cores' time the hypervisor gave to other guests (/proc/stat
  `steal`), where the kernel reports it; None where it does not.
- `cpu_share`: this process's CPU time over the window's wall time per thread it ran (1.0: its
  threads had their cores to themselves); only where the caller says how many threads ran.

`load_differs` says when two windows ran under clearly different load (`CORES_APART`, `RATIO_APART`,
`STEAL_APART`); `busy_reason` when a window was too busy to measure a machine's peak in.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from peftbench.records.fields import number

CORES_APART = 0.5  # other work differs by at least half a core ...
RATIO_APART = 1.5  # ... and (1 + others) differs by at least this factor
STEAL_APART = 0.10  # or the steal share differs by 10 points
BUSY_MARGIN_CORES = 0.5  # a peak probe tolerates this much other work beyond the cores it leaves free
BUSY_CPU_SHARE = 0.85  # ... and needs at least this share of a core per probe thread
BUSY_STEAL = 0.10


@dataclass(frozen=True)
class Snapshot:
    """The counters at one moment; two of them make a window."""

    wall_s: float  # time.monotonic()
    load_1min: float | None
    ticks: tuple[int, int, int | None] | None  # (total, busy, steal) clock ticks of all cores, /proc/stat
    own_cpu_s: float  # this process's user + system CPU time, all threads


def load_1min() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def parse_proc_stat(text: str) -> tuple[int, int, int | None] | None:
    """(total, busy, steal) ticks from /proc/stat's aggregate `cpu` line; None if absent.

    Fields: user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is
    already inside user and nice, so it is not added again."""
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] != "cpu":
            continue
        try:
            v = [int(x) for x in parts[1:9]]
        except ValueError:
            return None
        if len(v) < 4:
            return None
        reported = len(v) == 8  # kernels before 2.6.11 have no steal field
        v += [0] * (8 - len(v))
        user, nice, system, _idle, _iowait, irq, softirq, steal = v
        return sum(v), user + nice + system + irq + softirq, steal if reported else None
    return None


def proc_ticks() -> tuple[int, int, int | None] | None:
    try:
        with open("/proc/stat") as fh:
            return parse_proc_stat(fh.read())
    except OSError:
        return None


def snapshot() -> Snapshot:
    t = os.times()
    return Snapshot(time.monotonic(), load_1min(), proc_ticks(), t.user + t.system)


def window(a: Snapshot, b: Snapshot, threads: int | None = None) -> dict[str, Any]:
    """The load between two snapshots of this process (see the module docstring for the fields)."""
    dt = b.wall_s - a.wall_s
    own = max(0.0, b.own_cpu_s - a.own_cpu_s)
    out: dict[str, Any] = {"window_s": dt, "cpus": os.cpu_count(), "other_busy_cores": None, "steal_share": None,
                           "cpu_share": own / (dt * threads) if threads and dt > 0 else None}
    if a.ticks is None or b.ticks is None or dt <= 0:
        return out
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total, busy = b.ticks[0] - a.ticks[0], b.ticks[1] - a.ticks[1]
    out["other_busy_cores"] = max(0.0, busy / hz - own) / dt
    if total > 0 and a.ticks[2] is not None and b.ticks[2] is not None:
        out["steal_share"] = (b.ticks[2] - a.ticks[2]) / total
    return out


@contextlib.contextmanager
def sampled_load(interval_s: float = 1.0) -> Iterator[dict[str, Any]]:
    """Scope of a timed phase; yields the dict it fills on exit: `start_1min`, `end_1min`,
    `mean_1min` (over samples every `interval_s` and both ends) and `window` (the fields above)."""
    result: dict[str, Any] = {}
    start = snapshot()
    samples = [start.load_1min]
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(interval_s):
            samples.append(load_1min())

    thread = threading.Thread(target=poll, name="peftbench-load", daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join(timeout=interval_s + 1)
        end = snapshot()
        samples.append(end.load_1min)
        known = [s for s in samples if s is not None]
        w = window(start, end)
        w.pop("cpu_share")
        result.update(start_1min=start.load_1min, end_1min=end.load_1min,
                      mean_1min=sum(known) / len(known) if known else None, samples=len(known), **w)


def others(load: Any, threads: Any = None) -> float | None:
    """Cores busy with other work: `other_busy_cores`, else the mean load average less the run's own
    threads (a rough stand-in, for loads recorded without /proc)."""
    if not isinstance(load, dict):
        return None
    direct = number(load.get("other_busy_cores"))
    if direct is not None:
        return direct
    mean, t = number(load.get("mean_1min")), number(threads)
    return max(0.0, mean - t) if mean is not None and t is not None else None


def load_differs(a: Any, b: Any, threads_a: Any = None, threads_b: Any = None) -> str | None:
    """Why two windows ran under clearly different load, or None (also when either is unknown)."""
    oa, ob = others(a, threads_a), others(b, threads_b)
    if oa is not None and ob is not None:
        lo, hi = sorted((oa, ob))
        if hi - lo >= CORES_APART and (1 + hi) / (1 + lo) >= RATIO_APART:
            return f"{oa:.1f} vs {ob:.1f} cores busy with other work"
    sa = number(a.get("steal_share")) if isinstance(a, dict) else None
    sb = number(b.get("steal_share")) if isinstance(b, dict) else None
    if sa is not None and sb is not None and abs(sa - sb) >= STEAL_APART:
        return f"CPU steal {sa:.0%} vs {sb:.0%}"
    return None


def busy_reason(load: dict[str, Any], threads: int) -> str | None:
    """Why a window was too busy for a peak measurement at `threads` threads, or None when quiet:
    other work beyond the cores left free, probe threads short of their cores, or steal."""
    cpus = load.get("cpus") or os.cpu_count() or 1
    other, share, steal = (number(load.get(k)) for k in ("other_busy_cores", "cpu_share", "steal_share"))
    free = max(0, cpus - threads)
    if other is not None and other > free + BUSY_MARGIN_CORES:
        return f"{other:.1f} of {cpus} cores busy with other work ({threads} thread(s) probed)"
    if share is not None and share < BUSY_CPU_SHARE:
        return f"the probe's {threads} thread(s) got {share:.0%} of their cores"
    if steal is not None and steal > BUSY_STEAL:
        return f"CPU steal {steal:.0%}"
    if other is None and share is None:
        now = number(load.get("load_1min"))
        if now is not None and now > free + BUSY_MARGIN_CORES:
            return f"1-minute load {now:.1f} on {cpus} cores"
    return None


def merge_windows(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Windows taken apart (e.g. alternating steps of two variants) as one: their wall times added,
    other busy cores and steal weighted by each window's wall time."""
    total = sum(number(w.get("window_s")) or 0.0 for w in windows)
    out: dict[str, Any] = {"window_s": total, "cpus": os.cpu_count(), "other_busy_cores": None, "steal_share": None}
    for key in ("other_busy_cores", "steal_share"):
        pairs = [(number(w.get(key)), number(w.get("window_s")) or 0.0) for w in windows]
        known = [(v, dt) for v, dt in pairs if v is not None]
        weight = sum(dt for _, dt in known)
        if known and weight > 0:
            out[key] = sum(v * dt for v, dt in known) / weight
    return out
