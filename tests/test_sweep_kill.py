"""Crash safety of sweeps, through the real CLI in a separate process.

SIGKILL of the sweep at random moments: every record present stays complete, finished records stay
byte-identical, the resumed sweep ends with exactly one success record per run. Ctrl-C records the
run in flight as canceled. A second sweep on the same folder is refused while the first holds it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from peftbench.config.sweep import SweepSpec
from peftbench.sweeps.engine import acquire_lock
from sweep_helpers import check_complete, cli_cmd, cli_env, record_files, tiny_sweep, write_yaml

pytestmark = pytest.mark.reliability


def _sigint_as_in_a_terminal() -> None:
    """A sweep typed at a terminal gets Ctrl-C; one started under `cmd &` or nohup inherits SIGINT ignored,
    and Python then never installs its KeyboardInterrupt handler. The test plays the terminal, so it restores
    the default whatever the shell that started pytest did."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(spec_file: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    with log.open("ab") as fh:
        return subprocess.Popen(cli_cmd("sweep", "--config", str(spec_file), "--out", str(out), "--quiet", *extra),
                                stdout=fh, stderr=subprocess.STDOUT, env=cli_env(),
                                preexec_fn=_sigint_as_in_a_terminal)


def _wait_for(log: Path, pattern: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pattern in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            return
        time.sleep(0.05)
    raise AssertionError(f"'{pattern}' never appeared in {log}:\n{log.read_text()[-3000:]}")


def _kill_tree_root(proc: subprocess.Popen) -> None:
    """SIGKILL the sweep process only; its run processes must die with it."""
    descendants = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _gone, alive = psutil.wait_procs(descendants, timeout=30)
    alive = [p for p in alive if _running(p)]  # a zombie is dead, waiting for a reaper
    assert not alive, f"run processes outlived the killed sweep: {alive}"


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill_rounds(tmp_path: Path, tiny_bert: Path, files: tuple[Path, Path], kills: int, seed: int) -> None:
    spec_file = write_yaml(tmp_path / "sweep.yaml", tiny_sweep(tiny_bert, files))
    expected = [r.run_id for r in SweepSpec.from_yaml(spec_file).expand()]
    assert len(expected) == 12
    out = tmp_path / "runs"
    log = tmp_path / "sweep.log"
    rng = random.Random(seed)
    finished: dict[str, bytes] = {}
    survived = 0
    for _ in range(kills):
        n_lines = log.read_text().count("[sweep] run ") if log.exists() else 0
        proc = _start(spec_file, out, log)
        # A random moment once runs are going: loading, training, saving or writing a record.
        _wait_for(log, "[sweep] run ", proc) if n_lines == 0 else time.sleep(0)
        while proc.poll() is None and log.read_text().count("[sweep] run ") <= n_lines:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.2))
        if proc.poll() is not None:
            break  # the sweep finished before the kill: nothing left to interrupt
        _kill_tree_root(proc)
        survived += 1
        recs = check_complete(out)
        assert set(recs) <= set(expected)
        now = record_files(out)
        for rid, blob in finished.items():
            assert now[rid] == blob, f"finished record {rid} changed after a kill"
        finished = {rid: b for rid, b in now.items() if json.loads(b)["status"] == "success"}
    assert survived == kills, f"the sweep finished after {survived} kills; expected {kills}"
    proc = _start(spec_file, out, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    recs = check_complete(out)
    assert sorted(recs) == sorted(expected)  # one record per run, no duplicates, nothing extra
    assert all(r["status"] == "success" for r in recs.values())
    run_dirs = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert run_dirs == sorted(expected)
    now = record_files(out)
    for rid, blob in finished.items():
        assert now[rid] == blob, f"finished record {rid} changed on resume"
    assert not list(out.glob("*/.result.json.*.tmp"))  # no half-written record left behind


def test_sigkill_ten_random_moments(tmp_path, tiny_bert, sentiment_files) -> None:
    """SIGKILL the sweep at 10 random moments, resuming after each: records stay whole and unchanged."""
    _kill_rounds(tmp_path, tiny_bert, sentiment_files, kills=10,
                 seed=int(os.environ.get("PEFTBENCH_KILL_SEED", 11)))


def _count(log: Path, text: str) -> int:
    return log.read_text(errors="replace").count(text)


def test_killed_run_is_recorded_then_ctrl_c_cancels_and_lock_refuses_second_sweep(
        tmp_path, tiny_bert, sentiment_files) -> None:
    spec = tiny_sweep(tiny_bert, sentiment_files, methods=["lora"], grid={}, seeds=[0, 1])
    spec["defaults"]["train"].update(max_steps=None, epochs=200)  # long enough to be interrupted in training
    spec_file = write_yaml(tmp_path / "sweep.yaml", spec)
    first, second = (r.run_id for r in SweepSpec.from_yaml(spec_file).expand())
    out = tmp_path / "runs"
    log = tmp_path / "sweep.log"
    proc = _start(spec_file, out, log)
    try:
        _wait_for(log, ": training ", proc)
        # While it runs, a second sweep on the same folder is refused with a clear message.
        again = subprocess.run(cli_cmd("sweep", "--config", str(spec_file), "--out", str(out)), capture_output=True,
                               text=True, env=cli_env(), timeout=120)
        assert again.returncode == 2
        assert "another sweep is already running" in again.stderr and "Traceback" not in again.stderr
        # SIGKILL the run process (as the out-of-memory killer would): recorded, and the sweep goes on.
        sweep = psutil.Process(proc.pid)
        runs = [p for p in sweep.children(recursive=True) if p.ppid() != proc.pid]
        assert len(runs) == 1
        runs[0].send_signal(signal.SIGKILL)
        while proc.poll() is None and _count(log, ": training ") < 2:
            time.sleep(0.05)
        # Ctrl-C in a terminal signals the whole foreground group: the sweep and its run processes.
        for p in [sweep, *sweep.children(recursive=True)]:
            p.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "recorded 'canceled'" in text and "failed:killed" in text
    recs = check_complete(out)
    assert sorted(recs) == sorted([first, second])
    assert recs[first]["status"] == "failed" and recs[first]["error"]["type"] == "killed"  # not a guessed oom
    assert "killed by SIGKILL; possibly out of memory" in recs[first]["error"]["message"]
    assert recs[first]["process"]["exit_code"] == -9
    assert recs[second]["status"] == "canceled" and recs[second]["error"]["type"] == "canceled", (
        recs[second].get("error"), recs[second].get("process"), text[-3000:])
    summary = json.loads((out / "sweep-summary.json").read_text())
    assert summary["interrupted"] is True
    lock = acquire_lock(out)  # released on exit
    lock.release()


def test_lock_message_in_process(tmp_path) -> None:
    from peftbench.errors import SpecError

    lock = acquire_lock(tmp_path)
    try:
        with pytest.raises(SpecError, match="another sweep is already running"):
            acquire_lock(tmp_path)
    finally:
        lock.release()
