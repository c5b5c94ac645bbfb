"""Progress of a run: tqdm bars for loops (training steps, evaluation batches) and timed lines for the
phases between them (loading, tokenizing, saving).

One mechanism for every bar. Bars are off unless the caller turns them on (`bars(True)`, as a run
does when it shows progress), so library calls, probes and tests draw none; a bar closes when its
loop ends, so the lines printed between loops never land inside one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_BARS: ContextVar[bool] = ContextVar("peftbench_progress_bars", default=False)


@contextmanager
def bars(enabled: bool) -> Iterator[None]:
    """Draw progress bars inside this block (or not)."""
    token = _BARS.set(enabled)
    try:
        yield
    finally:
        _BARS.reset(token)


def bar(total: int, desc: str, unit: str = "batch", enabled: bool | None = None) -> Any:
    """A tqdm bar on stderr that vanishes when closed; shown when `enabled`, or (None) inside `bars(True)`."""
    from tqdm.auto import tqdm

    shown = _BARS.get() if enabled is None else enabled
    return tqdm(total=total, desc=desc, unit=unit, disable=not shown, leave=False, dynamic_ncols=True)


def batch_starts(n: int, batch_size: int, desc: str = "evaluating") -> Iterator[int]:
    """`range(0, n, batch_size)` with a bar over the batches."""
    starts = range(0, n, batch_size)
    with bar(len(starts), desc) as shown:
        for start in starts:
            yield start
            shown.update(1)


class SmoothedLoss:
    """An exponential moving average of the step losses, bias-corrected so that the first step shows
    its own loss (not a tenth of it): what a bar shows while the loss curve keeps exact window means."""

    def __init__(self, beta: float = 0.9) -> None:
        self.beta = beta
        self.value = 0.0
        self.n = 0

    def add(self, loss: float) -> float:
        self.n += 1
        self.value = self.beta * self.value + (1 - self.beta) * loss
        return self.mean

    @property
    def mean(self) -> float:
        return self.value / (1 - self.beta ** self.n) if self.n else float("nan")


class Phase:
    """A step of a run announced by one line and closed by another that carries its time:
    `phase = Phase(say, "loading x"); ...; phase.done("loaded x")` prints `loaded x in 3.2 s`."""

    def __init__(self, say: Callable[[str], None], text: str) -> None:
        self.say = say
        self.t0 = time.perf_counter()
        say(text)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def done(self, text: str) -> None:
        self.say(f"{text} in {self.elapsed:.1f} s")
