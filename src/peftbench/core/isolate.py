"""One run in its own process, so that a crash, an out-of-memory kill or a hang cannot take down
the process that started it.

Runs are forked from a `multiprocessing` fork server that imported torch, transformers and peft
once (a bare interpreter spends seconds on those imports per run). The fork server itself never
computes and never touches CUDA, so each child starts clean. A child dies with the fork server,
and the fork server with its parent: killing a sweep with SIGKILL leaves no orphan run behind to
write a record later.

The runner writes its own record for every failure it can see (NaN loss, OOM raised by torch,
errors, Ctrl-C). When the child dies without writing one (killed, timed out, crashed in C code),
`run_isolated` writes the `failed` (or `canceled`) record itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.data.token_cache import TOKEN_CACHE_ENV
from peftbench.records.failure import failure_record, write_failure
from peftbench.records.io import RESULT_FILE, now_iso, read_record
from peftbench.runtime import signals

PRELOAD = ["peftbench.core._preload"]
SWEEP_PID_ENV = "PEFTBENCH_SWEEP_PID"  # the process that starts runs (the fork server's parent)
SERVER_PID_ENV = "PEFTBENCH_SERVER_PID"  # the fork server (the run processes' parent)
_CONTEXT: Any = None


@dataclass
class Outcome:
    status: str  # success | failed | canceled
    reason: str | None
    message: str | None
    seconds: float
    interrupted: bool = False  # the user pressed Ctrl-C: the caller should stop

    @property
    def label(self) -> str:
        return f"failed:{self.reason}" if self.status == "failed" else self.status


def process_context() -> Any:
    """The multiprocessing context runs start from (a fork server with the heavy imports done)."""
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing

        os.environ[SWEEP_PID_ENV] = str(os.getpid())  # the fork server checks it is still our child

        if "forkserver" in multiprocessing.get_all_start_methods():
            _CONTEXT = multiprocessing.get_context("forkserver")
            _CONTEXT.set_forkserver_preload(PRELOAD)
        else:  # no fork server (Windows): a fresh interpreter per run, slower but just as isolated
            _CONTEXT = multiprocessing.get_context("spawn")
    return _CONTEXT


def die_with_parent(parent_env: str) -> None:
    """Linux: SIGKILL this process when its parent dies (no orphan keeps training).

    `parent_env` names the environment variable holding the parent's pid, set before this process
    started: if the parent is already gone by the time prctl takes effect, exit at once.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    expected = os.environ.get(parent_env)
    if expected and expected.isdigit() and os.getppid() != int(expected):
        os._exit(137)


def _child(spec_dict: dict[str, Any], out_dir: str, progress: bool, cache_dir: str | None, conn: Any) -> None:
    """Entry point of the run process: run, then report (status, reason, message) on `conn`."""
    die_with_parent(SERVER_PID_ENV)
    signals.install()  # SIGTERM and SIGHUP (only noted by the fork server) cancel the run like SIGINT
    if cache_dir:
        os.environ[TOKEN_CACHE_ENV] = cache_dir
    import threading

    from tqdm import tqdm

    # tqdm's default lock is a multiprocessing semaphore; a run process that ends with os._exit never
    # releases it, and the resource tracker then warns about "leaked semaphore objects". One process
    # needs only a thread lock.
    tqdm.set_lock(threading.RLock())
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run
    from peftbench.errors import PeftbenchError, RunCanceled

    code = 0
    try:
        record = run(RunSpec.from_dict(spec_dict), out_dir, progress=progress)
        conn.send(("success", None, None) if record.get("status") == "success" else
                  (record.get("status"), (record.get("error") or {}).get("type"),
                   (record.get("error") or {}).get("message")))
    except (RunCanceled, KeyboardInterrupt):
        with contextlib.suppress(Exception):
            conn.send(("canceled", "canceled", signals.cancel_message()))
        code = signals.exit_code()
    except PeftbenchError as err:  # raised before the runner had a run folder (bad data, bad model...)
        conn.send(("failed", getattr(err, "reason", None) or "error", err.one_line()))
        code = 1
    except BaseException as err:
        conn.send(("failed", "error", f"{type(err).__name__}: {str(err)[:1000]}"))
        code = 1
    finally:
        conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown (slow with torch loaded; nothing left to flush)


def _remove_stale_temp_files(run_dir: Path) -> None:
    """Temporary files of atomic writes cut short by a kill (the sweep lock says no one else writes)."""
    for tmp in run_dir.glob(f".{RESULT_FILE}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def _record_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _stop(proc: Any, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if the process is still alive after `grace_s`."""
    if not proc.is_alive():
        return
    proc.terminate()
    proc.join(grace_s)
    if proc.is_alive():
        proc.kill()
        proc.join()


def _wait_after_interrupt(proc: Any, signum: int, wait_s: float = 30.0) -> None:
    """Let the run record itself as canceled: send it the signal the sweep got, once a second until it
    ends (the run process takes the first one it sees and only notes the others, so a signal it also
    got from the terminal does no harm, and one sent before it installed its handler is sent again)."""
    deadline = time.monotonic() + wait_s
    try:
        while proc.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signum)
            proc.join(1)
    except KeyboardInterrupt:  # a second Ctrl-C where no handler notes it (the Python API): stop waiting
        pass
    _stop(proc, grace_s=2)


def killed_by(exit_code: int | None) -> str | None:
    """The message for a process that a signal ended (exit code -N), or None. SIGKILL is what the
    system's out-of-memory killer sends, but not only it: the message says so and asserts nothing."""
    if exit_code is None or exit_code >= 0:
        return None
    name = signals.signal_name(-exit_code)
    if exit_code == -signal.SIGKILL:
        return (f"run process was killed by {name}; possibly out of memory "
                "(if so, lower train.batch_size or data.max_length)")
    return f"run process was killed by {name}"


def _classify(exit_code: int | None, timed_out: bool, canceled: bool, timeout_s: float | None,
              reported: tuple[str, str | None, str | None] | None) -> tuple[str, str, str]:
    if canceled:
        return "canceled", "canceled", signals.cancel_message()
    if timed_out:
        return "failed", "timeout", f"run exceeded the per-run timeout of {timeout_s:g}s and was stopped"
    if reported and reported[0] in ("failed", "canceled"):
        return reported[0], reported[1] or "error", reported[2] or "run failed"
    killed = killed_by(exit_code)
    if killed:
        return "failed", "killed", killed
    return "failed", "error", f"run process exited with code {exit_code} without writing a record"


def run_isolated(spec: Any, run_id: str, out_dir: Path, *, timeout_s: float | None = None,
                 progress: bool = True, cache_dir: Path | None = None) -> Outcome:
    """Run one spec in a child process; always leave a final record in `out_dir/run_id`."""
    ctx = process_context()
    run_dir = out_dir / run_id
    _remove_stale_temp_files(run_dir)
    before = _record_bytes(run_dir / RESULT_FILE)
    recv, send = ctx.Pipe(duplex=False)
    cache = str(cache_dir if cache_dir is not None else out_dir / ".cache" / "tokens")
    proc = ctx.Process(target=_child, args=(spec.to_dict(), str(out_dir), progress, cache, send),
                       name=f"peftbench-run-{run_id}")
    started = now_iso()
    t0 = time.monotonic()
    timed_out = canceled = False
    try:
        proc.start()
        send.close()
        proc.join(timeout_s)
        if proc.is_alive():  # SIGKILL: a SIGTERM would be the run's cancel signal, recorded as canceled
            timed_out = True
            proc.kill()
            proc.join()
    except KeyboardInterrupt as err:
        canceled = True
        _wait_after_interrupt(proc, getattr(err, "signum", signal.SIGINT))
    reported = None
    with contextlib.suppress(EOFError, OSError):
        if recv.poll():
            reported = recv.recv()
    recv.close()
    seconds = time.monotonic() - t0
    after = _record_bytes(run_dir / RESULT_FILE)
    rec = read_record(run_dir) if after is not None and after != before else None
    if rec is not None and rec.get("status") in ("success", "failed", "canceled"):
        err = rec.get("error") or {}
        return Outcome(rec["status"], err.get("type"), err.get("message"), seconds, interrupted=canceled)
    status, reason, message = _classify(proc.exitcode, timed_out, canceled, timeout_s, reported)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_failure(run_dir, failure_record(run_id, status, reason, message, spec=spec, started=started,
                                          process={"exit_code": proc.exitcode, "recorded_by": "sweep"}),
                  raise_os_errors=True)
    return Outcome(status, reason, message, seconds, interrupted=canceled)


# ---- one measurement in its own process (probe, profile) ---------------------------------------------


@dataclass
class Returned:
    """What a measuring process gave back: its value, or why there is none."""

    value: Any = None
    reason: str | None = None  # None when `value` holds the result; else oom | error | timeout
    message: str | None = None


def _call_child(target: Any, args: tuple[Any, ...], conn: Any) -> None:
    """Entry point of a measuring process: send ('ok', value) or ('error', reason, one-line message)."""
    die_with_parent(SERVER_PID_ENV)
    signals.default_termination()
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())  # as in `_child`: no multiprocessing semaphore left behind
    from peftbench.errors import PeftbenchError, is_out_of_memory

    try:
        msg: tuple[Any, ...] = ("ok", target(*args))
    except BaseException as err:
        oom = getattr(err, "reason", None) == "oom" or is_out_of_memory(err)
        text = err.one_line() if isinstance(err, PeftbenchError) else \
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        msg = ("error", "oom" if oom else "error", text[:500])
    with contextlib.suppress(Exception):
        conn.send(msg)
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown, as run processes do


def call_isolated(target: Any, args: tuple[Any, ...], *, name: str, timeout_s: float | None = None) -> Returned:
    """`target(*args)` in a process forked from the fork server, so that an out-of-memory kill or a
    crash ends that measurement only, and each one starts from a clean allocator. `target` must be a
    module-level function and its value picklable."""
    ctx = process_context()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_call_child, args=(target, args, send), name=name)
    proc.start()
    send.close()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    msg = None
    timed_out = False
    try:
        # Read while waiting (a large value must not block the child on a full pipe). A value is
        # accepted only if it arrives before the deadline: each wait ends at the deadline at the latest.
        while msg is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                timed_out = True
                break
            if recv.poll(0.2 if remaining is None else min(0.2, remaining)):
                with contextlib.suppress(EOFError, OSError):
                    msg = recv.recv()
                break
            if not proc.is_alive():
                if recv.poll(0):
                    with contextlib.suppress(EOFError, OSError):
                        msg = recv.recv()
                break
        if timed_out:
            _stop(proc, grace_s=2)
        else:
            proc.join()
    except BaseException:
        _stop(proc, grace_s=2)
        raise
    finally:
        recv.close()
    if msg is not None:
        return Returned(value=msg[1]) if msg[0] == "ok" else Returned(reason=msg[1], message=msg[2])
    if timed_out:
        return Returned(reason="timeout", message=f"timeout after {timeout_s:g}s")
    _, reason, message = _classify(proc.exitcode, False, False, timeout_s, None)
    if proc.exitcode == -signal.SIGKILL:  # profile and probe step up sizes: the kill marks the memory limit
        reason = "oom"
    return Returned(reason=reason, message=message.replace("run process", "process"))
