"""Signals end a run or a sweep like Ctrl-C: SIGTERM (exit 143) and SIGHUP (exit 129) record the run in
flight `canceled` and write the sweep summary; SIGINT cancels even a job started with SIGINT ignored (`&`,
nohup); a run process killed by a signal is recorded with that signal, not as a guessed out-of-memory.

Real processes on the tiny BERT. Each test waits for a line the run prints (`: training `) before it
signals, and the runs train for 10^5 epochs, so the signal always lands in a run that is still going;
timeouts only guard against a hang.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from conftest import tiny_spec
from peftbench.records.failure import failure_record, write_failure
from peftbench.runtime import signals
from sweep_helpers import check_complete, cli_cmd, cli_env, tiny_sweep, write_yaml

pytestmark = pytest.mark.reliability
FOREVER = 100_000  # epochs: the run trains until it is canceled


def _as_from_a_terminal() -> None:
    """The signals at their defaults, whatever the shell that started pytest ignored."""
    for sig in signals.CANCEL_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def _in_the_background() -> None:
    """What `cmd &` in a non-interactive shell, nohup or a job scheduler leave: SIGINT ignored."""
    _as_from_a_terminal()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start(args: list[str], log: Path, preexec: Callable[[], None], **popen: object) -> subprocess.Popen:
    with log.open("ab") as fh:
        return subprocess.Popen(cli_cmd(*args), stdout=fh, stderr=subprocess.STDOUT, env=cli_env(),
                                preexec_fn=preexec, **popen)


def _wait_for(log: Path, text: str, proc: subprocess.Popen, guard_s: float = 300) -> None:
    """Until `text` is in the log (the process has reached that point); fails if it exits first."""
    deadline = time.monotonic() + guard_s
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"exited {proc.returncode} before '{text}':\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"'{text}' never appeared:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def _exit_code(proc: subprocess.Popen, log: Path) -> int:
    try:
        return proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"still running after the signal:\n{log.read_text()[-3000:]}") from None


def _long_run_spec(tmp_path: Path, tiny_bert: Path, files: tuple[Path, Path]) -> Path:
    spec = tiny_spec(tiny_bert, files, epochs=FOREVER)
    spec["data"].update(n_train=16, n_eval=16)
    return write_yaml(tmp_path / "spec.yaml", spec)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_cancel_a_run(tmp_path, tiny_bert, sentiment_files, sig, code) -> None:
    out, log = tmp_path / "runs", tmp_path / "run.log"
    proc = _start(["run", "--config", str(_long_run_spec(tmp_path, tiny_bert, sentiment_files)),
                   "--out", str(out), "--quiet"], log, _as_from_a_terminal)
    _wait_for(log, ": training ", proc)
    proc.send_signal(sig)
    assert _exit_code(proc, log) == code, log.read_text()[-3000:]
    text = log.read_text()
    assert "recorded 'canceled'" in text and "Traceback" not in text
    (rec,) = check_complete(out).values()
    assert rec["status"] == "canceled" and rec["error"]["type"] == "canceled"
    assert rec["error"]["message"] == f"run canceled by {signal.Signals(sig).name}"
    assert rec["params"]["trainable"] > 0  # the runner's own record, with what the run had built


def _sweep_file(tmp_path: Path, tiny_bert: Path, files: tuple[Path, Path], **grid: list) -> Path:
    """A sweep whose first run trains until canceled; the second is one step."""
    spec = tiny_sweep(tiny_bert, files, methods=["lora"], seeds=[0], grid={"train.epochs": [FOREVER, 1], **grid})
    spec["defaults"]["train"]["max_steps"] = None
    return write_yaml(tmp_path / "sweep.yaml", spec)


def _summary(out: Path) -> dict:
    return json.loads((out / "sweep-summary.json").read_text())


def test_sigint_cancels_a_sweep_started_with_sigint_ignored(tmp_path, tiny_bert, sentiment_files) -> None:
    """A background sweep inherits SIGINT ignored; the explicit handler still makes SIGINT cancel it."""
    out, log = tmp_path / "runs", tmp_path / "sweep.log"
    proc = _start(["sweep", "--config", str(_sweep_file(tmp_path, tiny_bert, sentiment_files)), "--out", str(out), "--quiet"],
                  log, _in_the_background)
    _wait_for(log, ": training ", proc)
    proc.send_signal(signal.SIGINT)  # to the sweep only: no terminal signals its run process
    assert _exit_code(proc, log) == 130, log.read_text()[-3000:]
    (rec,) = check_complete(out).values()
    assert rec["status"] == "canceled" and rec["error"]["message"] == "run canceled by the user (Ctrl-C)"
    assert rec["spec"]["train"]["epochs"] == FOREVER
    summary = _summary(out)
    assert summary["interrupted"] is True
    assert sorted(r["status"] for r in summary["runs"]) == ["canceled", "not-run"]


def test_sigterm_to_the_process_group_cancels_a_sweep(tmp_path, tiny_bert, sentiment_files) -> None:
    """A job scheduler signals every process of the job: the run process records its own cancel (the fork
    server between it and the sweep outlives the signal), the sweep writes its summary and exits 143."""
    out, log = tmp_path / "runs", tmp_path / "sweep.log"
    proc = _start(["sweep", "--config", str(_sweep_file(tmp_path, tiny_bert, sentiment_files)), "--out", str(out), "--quiet"],
                  log, _as_from_a_terminal, start_new_session=True)
    _wait_for(log, ": training ", proc)
    group = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGTERM)
    assert _exit_code(proc, log) == 143, log.read_text()[-3000:]
    _gone, alive = psutil.wait_procs(group, timeout=60)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    (rec,) = check_complete(out).values()
    assert rec["status"] == "canceled" and rec["error"]["message"] == "run canceled by SIGTERM"
    assert "process" not in rec and rec["params"]["trainable"] > 0  # written by the run, not for it
    assert _summary(out)["interrupted"] is True


def test_a_run_process_killed_by_a_signal_is_recorded_with_it(tmp_path, tiny_bert, sentiment_files) -> None:
    """SIGKILL of a run process: `killed`, naming the signal and out of memory as a possibility only; the
    sweep goes on to its next run and `ls` lists the record."""
    out, log = tmp_path / "runs", tmp_path / "sweep.log"
    proc = _start(["sweep", "--config", str(_sweep_file(tmp_path, tiny_bert, sentiment_files)), "--out", str(out), "--quiet"],
                  log, _as_from_a_terminal)
    _wait_for(log, ": training ", proc)
    (run,) = [p for p in psutil.Process(proc.pid).children(recursive=True)
              if p.ppid() != proc.pid]  # the run process is the fork server's child
    run.send_signal(signal.SIGKILL)
    assert _exit_code(proc, log) == 1, log.read_text()[-3000:]  # a failed run: exit 1
    recs = check_complete(out).values()
    killed = next(r for r in recs if r["spec"]["train"]["epochs"] == FOREVER)
    assert killed["status"] == "failed" and killed["error"]["type"] == "killed"
    assert killed["error"]["message"].startswith("run process was killed by SIGKILL; possibly out of memory")
    assert killed["process"] == {"exit_code": -9, "recorded_by": "sweep"}
    assert sorted(r["status"] for r in recs) == ["failed", "success"]
    listed = subprocess.run(cli_cmd("ls", str(out)), capture_output=True, text=True, env=cli_env(), timeout=120)
    assert listed.returncode == 0 and "failed:killed" in listed.stdout, listed.stdout + listed.stderr


def test_old_oom_records_and_new_killed_records_both_list(tmp_path, tiny_bert, sentiment_files) -> None:
    """Records written before `killed` existed (SIGKILL recorded as `oom`) still load and list as they were."""
    from peftbench.config.spec import RunSpec
    from peftbench.reports.runlist import runs_table

    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files))
    old = ("run process was killed by SIGKILL, most likely by the system's out-of-memory killer "
           "(lower train.batch_size or data.max_length)")
    for run_id, reason, message in (("old", "oom", old), ("new", "killed", "run process was killed by SIGKILL")):
        write_failure(tmp_path / run_id, failure_record(run_id, "failed", reason, message, spec=spec,
                                                        process={"exit_code": -9, "recorded_by": "sweep"}))
    table = runs_table(str(tmp_path), None)
    assert "failed:oom" in table and "failed:killed" in table


@pytest.fixture()
def handlers():
    """The pytest process's own signal handlers, put back after a test installs peftbench's."""
    saved, hook = {sig: signal.getsignal(sig) for sig in signals.CANCEL_SIGNALS}, sys.unraisablehook
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    sys.unraisablehook = hook
    signals.forget()


def test_install_keeps_sighup_ignored_under_nohup_but_never_sigint(handlers) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup: the job outlives its terminal
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signals.install()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, signal.SIG_DFL, signal.default_int_handler)
    assert signal.getsignal(signal.SIGTERM) is signal.getsignal(signal.SIGINT)


class _RaisesInDel:
    def __del__(self) -> None:
        signal.raise_signal(signal.SIGTERM)  # its KeyboardInterrupt is raised here, and Python drops it


class _FailsInDel:
    def __del__(self) -> None:
        raise ValueError("not a signal")


def test_a_cancel_lost_in_a_del_still_cancels_the_run(handlers, tmp_path, tiny_bert, sentiment_files,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The KeyboardInterrupt of a signal that lands in a `__del__` (autograd frees saved tensors through one)
    is dropped without a traceback: the remembered signal cancels the run at its next step all the same.
    Other exceptions Python cannot raise still reach the hook that was there before."""
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run
    from peftbench.errors import RunCanceled

    shown: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: shown.append(u.exc_value))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signals.install()
    signals.install()  # a second install wraps the hook once only
    obj = _RaisesInDel()
    del obj  # no exception reaches here, and nothing is printed
    assert signals.received() == signal.SIGTERM and shown == []
    other = _FailsInDel()
    del other
    assert [type(e) for e in shown] == [ValueError]
    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, epochs=3))
    with pytest.raises(RunCanceled, match="run canceled by SIGTERM"):
        run(spec, tmp_path / "runs", progress=False)
    (rec,) = check_complete(tmp_path / "runs").values()
    assert rec["status"] == "canceled" and rec["error"]["message"] == "run canceled by SIGTERM"


def test_exit_codes_and_messages_name_the_signal() -> None:
    assert [signals.exit_code(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)] == [130, 143, 129]
    assert signals.cancel_message(signal.SIGINT) == "run canceled by the user (Ctrl-C)"
    assert signals.cancel_message(signal.SIGHUP) == "run canceled by SIGHUP"
