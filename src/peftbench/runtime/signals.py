"""The signals that cancel a run or a sweep: SIGINT (Ctrl-C), SIGTERM (`kill`, job schedulers) and
SIGHUP (a closed terminal) all end it the same way, with the run in flight recorded `canceled`.

`install` puts one handler on the three signals, explicitly: a process started in the background
(`cmd &` in a non-interactive shell, nohup, a job scheduler) inherits SIGINT ignored, and Python then
never installs its own Ctrl-C handler. SIGTERM or SIGHUP ignored from the start stay ignored: that is
how nohup keeps a job running after its terminal closes.

The first signal raises `Interrupted` (a KeyboardInterrupt, so every Ctrl-C path handles it) in the
main thread and is remembered; later ones are only remembered, so that a second signal (a terminal's
group signal and the sweep's forwarded one, or Ctrl-C pressed twice) cannot cut short the writing of
the canceled record. A KeyboardInterrupt raised where Python cannot propagate it (inside a `__del__`
or a weakref callback: autograd frees saved tensors through one) is dropped without a word (Python
would print it with a traceback; `install` puts a hook on `sys.unraisablehook` that passes every other
exception on); `raise_if_received` at step boundaries turns the remembered signal into the cancel that
was lost.

The exit status of a canceled command is 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM,
129 for SIGHUP.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

CANCEL_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
_received: list[int] = []  # the cancel signals this process got, in order


class Interrupted(KeyboardInterrupt):
    """The cancel a signal asks for; `signum` is the signal."""

    def __init__(self, signum: int):
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    """'SIGTERM' for 15; the number as text for a signal Python does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def cancel_message(signum: int | None = None) -> str:
    """The canceled record's error message for the signal `signum` (default: the one received)."""
    signum = signum if signum is not None else received()
    if signum is None or signum == signal.SIGINT:
        return "run canceled by the user (Ctrl-C)"
    return f"run canceled by {signal_name(signum)}"


def _on_signal(signum: int, _frame: Any) -> None:
    _received.append(signum)
    if len(_received) == 1:
        raise Interrupted(signum)


def _shrug(_signum: int, _frame: Any) -> None:
    """The fork server's handler: nothing to do (what it forks must not inherit a received signal)."""


def _not_ignored(sig: int) -> bool:
    """SIGINT always counts; SIGTERM and SIGHUP unless ignored since the start (nohup ignores SIGHUP so that
    a closed terminal leaves the job running, and that choice is kept)."""
    return sig == signal.SIGINT or signal.getsignal(sig) != signal.SIG_IGN


class _DropInterrupted:
    """`sys.unraisablehook` while the handlers are installed: an `Interrupted` that Python could not raise
    is already remembered (`raise_if_received`), so it is not printed; anything else goes to `passed_on`."""

    def __init__(self, passed_on: Any):
        self.passed_on = passed_on

    def __call__(self, unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, Interrupted):
            self.passed_on(unraisable)


def install() -> None:
    """Cancel on SIGINT, SIGTERM and SIGHUP from now on (main thread only: Python's rule for handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if not isinstance(sys.unraisablehook, _DropInterrupted):
        sys.unraisablehook = _DropInterrupted(sys.unraisablehook)
    for sig in CANCEL_SIGNALS:
        if _not_ignored(sig):
            signal.signal(sig, _on_signal)


def shelter() -> None:
    """Note SIGTERM and SIGHUP without ending: for the fork server, which must outlive a signal sent to the
    whole process group until its run processes have recorded their cancel (it ends with its parent
    anyway). Not ignoring them keeps what the processes it forks see: `install` there still handles them,
    and a signal the sweep was started with ignored stays ignored."""
    for sig in CANCEL_SIGNALS:
        if sig != signal.SIGINT and _not_ignored(sig):
            signal.signal(sig, _shrug)


def default_termination() -> None:
    """SIGTERM and SIGHUP end this process again (a process forked from the sheltered fork server)."""
    for sig in CANCEL_SIGNALS:
        if sig != signal.SIGINT and _not_ignored(sig):
            signal.signal(sig, signal.SIG_DFL)


def received() -> int | None:
    """The first cancel signal this process got, or None."""
    return _received[0] if _received else None


def raise_if_received() -> None:
    """Raise `Interrupted` when a cancel signal came (its first KeyboardInterrupt may have been lost)."""
    if _received:
        raise Interrupted(_received[0])


def forget() -> None:
    """Forget the signals received (tests that install the handlers in their own process)."""
    _received.clear()


def exit_code(default: int = signal.SIGINT) -> int:
    """The exit status of a canceled command: 128 + the signal received (or `default`)."""
    return 128 + (received() or default)
