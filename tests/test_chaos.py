"""Chaos: a sweep killed again and again (SIGKILL, SIGTERM or SIGINT, to the sweep alone or to its whole
process group) at random points, and resumed after each kill.

After every kill: each record present is whole and final (success, failed or canceled; never half a
file, never `running`), every finished record is byte-identical to what it was before, no process of the
sweep is left. SIGTERM and SIGINT end it with 143 and 130 and a summary that says it was interrupted
(or, where the signal came after the last run was done, a summary in which every run is finished).
At the end a resume finishes the sweep: every run ends in exactly one record, `success`, and nothing else
is left in the output folder.

The random points come from the sweep's own progress, not from a clock: the kill waits for the k-th
occurrence (k of 1 or 2) of a run loading its model, a run starting to train, or the sweep reporting a
run done. The default run makes 3 kills, one per signal; `make test-slow` (the `slow` marker) makes 20.
`PEFTBENCH_CHAOS_SEED` replays a sequence of kills.
"""

from __future__ import annotations

import contextlib
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
from sweep_helpers import check_complete, cli_cmd, cli_env, record_files, tiny_sweep, write_yaml

pytestmark = pytest.mark.reliability
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
EXIT = {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 143, signal.SIGINT: 130}
POINTS = (": loading ", ": training ", "| done ")  # a run loads its model, starts training, is reported done


def _as_from_a_terminal() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


class Chaos:
    """One output folder's sweep, killed and resumed; `finished` holds the success records seen so far."""

    def __init__(self, root: Path, spec_file: Path, expected: list[str]):
        self.root, self.spec_file, self.expected = root, spec_file, expected
        self.out = root / "runs"
        self.finished: dict[str, bytes] = {}
        self.starts = 0

    def start(self) -> tuple[subprocess.Popen, Path]:
        self.starts += 1
        log = self.root / f"sweep-{self.starts}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(cli_cmd("sweep", "--config", str(self.spec_file), "--out", str(self.out), "--quiet"),
                                    stdout=fh, stderr=subprocess.STDOUT, env=cli_env(),
                                    preexec_fn=_as_from_a_terminal, start_new_session=True)
        return proc, log

    def kill_at(self, point: str, k: int, sig: int, group: bool) -> bool:
        """Start (resume) the sweep, wait for the k-th `point`, send `sig`; False when it finished first."""
        proc, log = self.start()
        deadline = time.monotonic() + 300  # a guard against a hang, not a window
        while log.read_text(errors="replace").count(point) < k and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)] \
            if proc.poll() is None else []
        with contextlib.suppress(ProcessLookupError):  # it finished just before
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        code = proc.wait(timeout=240)
        what = f"{signal.Signals(sig).name} to the {'group' if group else 'sweep'} at {point!r} #{k}"
        assert code in (EXIT[sig], 0), f"{what}: exit {code}\n{log.read_text()[-3000:]}"
        _gone, alive = psutil.wait_procs(procs, timeout=60)
        assert not [p for p in alive if _running(p)], f"{what}: processes left behind: {alive}"
        self.check(what, interrupted=code != 0 and sig != signal.SIGKILL)
        return code != 0

    def check(self, what: str, interrupted: bool) -> None:
        recs = check_complete(self.out)  # every record whole, final and of this sweep
        assert set(recs) <= set(self.expected), what
        now = record_files(self.out)
        for rid, blob in self.finished.items():
            assert now.get(rid) == blob, f"{what}: the finished record {rid} changed"
        self.finished = {rid: b for rid, b in now.items() if json.loads(b)["status"] == "success"}
        assert not list(self.out.glob("*/failed-*.json")), what  # nothing failed beside a success
        if interrupted:  # unless the signal came after the last run was done and the summary written
            summary = json.loads((self.out / "sweep-summary.json").read_text())
            done = sorted(r["run_id"] for r in summary["runs"] if r["status"] in ("success", "skipped-success"))
            assert summary["interrupted"] is True or done == sorted(self.expected) == sorted(self.finished), what

    def finish(self) -> None:
        """Resume to the end: exactly one success record per run, nothing else."""
        proc, log = self.start()
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
        self.check("the last resume", interrupted=False)
        assert sorted(self.finished) == sorted(self.expected)
        left = sorted(p.name for p in self.out.iterdir() if p.is_dir() and not p.name.startswith("."))
        assert left == sorted(self.expected)
        assert not list(self.out.glob("*/.result.json.*.tmp"))


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _chaos(tmp_path: Path, tiny_bert: Path, files: tuple[Path, Path], kills: int, seed: int,
           signals: tuple[int, ...]) -> None:
    spec = tiny_sweep(tiny_bert, files, methods=["lora"], grid={"method.r": [2, 4, 8]}, seeds=[0, 1])
    spec_file = write_yaml(tmp_path / "sweep.yaml", spec)
    expected = [r.run_id for r in SweepSpec.from_yaml(spec_file).expand()]
    rng = random.Random(seed)
    chaos, done, folders = None, 0, 0
    while done < kills:
        if chaos is None:  # a fresh folder: the previous one's sweep finished before a kill
            folders += 1
            (tmp_path / f"f{folders}").mkdir()
            chaos = Chaos(tmp_path / f"f{folders}", spec_file, expected)
        sig = signals[done % len(signals)]
        if chaos.kill_at(rng.choice(POINTS), rng.choice((1, 2)), sig, group=rng.random() < 0.5):
            done += 1
        else:
            chaos.finish()
            chaos = None
    if chaos is not None:
        chaos.finish()


def test_chaos_three_kills(tmp_path, tiny_bert, sentiment_files) -> None:
    """One kill per signal at random points, resuming after each (the default run)."""
    _chaos(tmp_path, tiny_bert, sentiment_files, kills=3, seed=int(os.environ.get("PEFTBENCH_CHAOS_SEED", 5)),
           signals=SIGNALS)


@pytest.mark.slow
def test_chaos_twenty_kills(tmp_path, tiny_bert, sentiment_files) -> None:
    """20 kills at random points, the signal drawn at random too."""
    rng = random.Random(int(os.environ.get("PEFTBENCH_CHAOS_SEED", 28)))
    _chaos(tmp_path, tiny_bert, sentiment_files, kills=20, seed=rng.randrange(1 << 30),
           signals=tuple(rng.choice(SIGNALS) for _ in range(20)))
