"""Running sweeps: every run of a sweep file (`peftbench.config.sweep`) in its own process, and
the runs of a multi-run spec file (`peftbench.config.multirun`) one after the other.

`run_sweep` keeps finished records: a rerun skips runs whose record is `success`, reruns
`canceled` ones and, with `retry_failed`, failed ones. A lock file refuses a second sweep on the
same output folder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.config.multirun import load_runs
from peftbench.config.sweep import PlannedRun, SweepSpec
from peftbench.errors import SpecError
from peftbench.records.failure import error_message, failure_record
from peftbench.records.fields import metrics_text, settings_text, status_label
from peftbench.records.io import atomic_write_json, now_iso, read_run_record, require_file_path

Record = dict[str, Any]
LOCK_FILE = ".sweep.lock"
SUMMARY_FILE = "sweep-summary.json"


@dataclass
class SweepResult:
    total: int
    statuses: dict[str, str]  # run id -> success | failed:<reason> | canceled | skipped-...
    interrupted: bool = False

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.statuses.values():
            key = s.split(":")[0]
            out[key] = out.get(key, 0) + 1
        return out


def _fmt_duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def acquire_lock(out_dir: Path) -> Any:
    """The sweep lock on `out_dir`, or a SpecError naming the folder when another sweep holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(out_dir / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SpecError(f"another sweep is already running on output folder '{out_dir}' "
                        f"(lock file {out_dir / LOCK_FILE} is held)",
                        hint="wait for it to finish, or give this sweep another --out folder") from None
    return lock


def run_sweep(sweep: SweepSpec, out_dir: str | Path, *, retry_failed: bool = False,
              timeout_s: float | None = None, progress: bool = True,
              echo: Callable[[str], None] | None = None, executor: str = "local",
              address: str | None = None) -> SweepResult:
    """Run every planned run in its own process (or as a Ray task with `executor="ray"`); failures
    become records and the sweep goes on. Resume, locking and the summary are the same for both."""
    from peftbench.core.runner import check_writable

    say = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
    planned = sweep.expand()
    out = Path(out_dir)
    check_writable(out)
    require_file_path(out / LOCK_FILE, "sweep lock file")
    require_file_path(out / SUMMARY_FILE, "sweep summary")
    lock = acquire_lock(out)
    timeout = timeout_s if timeout_s is not None else sweep.timeout_s
    result = SweepResult(total=len(planned), statuses={})
    scanned = False
    try:
        todo = _still_to_run(planned, out, result, retry_failed)
        scanned = True
        say(f"[sweep] {len(planned)} runs: {len(planned) - len(todo)} already recorded, {len(todo)} to run"
            f"{f', timeout {timeout:g}s per run' if timeout else ''}")
        if executor == "local":
            _run_locally(todo, out, result, say, timeout, progress)
        else:
            _run_on_executor(todo, out, result, say, executor, address, sweep)
    except KeyboardInterrupt:  # a cancel signal between runs: the summary still says the sweep stopped
        result.interrupted = True
        raise
    finally:
        if scanned:  # a summary only from records read correctly, never from a scan cut short
            _write_summary(out, planned, result)
        lock.release()
    return result


def _still_to_run(planned: list[PlannedRun], out: Path, result: SweepResult, retry_failed: bool) -> list[PlannedRun]:
    """Resume: the runs without a final record to keep; the others are marked skipped in `result`.
    A record that is not well-formed, or an untrusted run folder, is reported, moved aside and rerun."""
    todo: list[PlannedRun] = []
    for run in planned:
        rec = read_run_record(out, run.run_id)
        status = (rec or {}).get("status")
        if status == "success":
            result.statuses[run.run_id] = "skipped-success"
        elif status == "failed" and not retry_failed:
            result.statuses[run.run_id] = f"skipped-{status_label(rec, 'error')}"
        else:
            todo.append(run)
    return todo


def _run_locally(todo: list[PlannedRun], out: Path, result: SweepResult, say: Callable[[str], None],
                 timeout: float | None, progress: bool) -> None:
    """The local executor: each run in a process of its own, one at a time; Ctrl-C stops the sweep."""
    from peftbench.core.isolate import run_isolated

    durations: list[float] = []
    for i, run in enumerate(todo):
        say(f"[sweep] run {i + 1}/{len(todo)} {run.run_id} ({settings_text(run.axes)})")
        outcome = run_isolated(run.spec, run.run_id, out, timeout_s=timeout, progress=progress)
        result.statuses[run.run_id] = outcome.label
        durations.append(outcome.seconds)
        # The first run also pays the process server's start-up: leave it out once others exist.
        typical = durations[1:] or durations
        eta = sum(typical) / len(typical) * (len(todo) - i - 1)
        counts = result.counts()
        metric = metrics_text(read_run_record(out, run.run_id) or {}) if outcome.status == "success" else ""
        say(f"[sweep] {run.run_id}: {outcome.label}{f' ({outcome.message})' if outcome.message else ''} "
            f"in {outcome.seconds:.1f}s{f', {metric}' if metric else ''} | done {i + 1}/{len(todo)} "
            f"(success {counts.get('success', 0)}, failed {counts.get('failed', 0)}) "
            f"| ETA {_fmt_duration(eta)}")
        if outcome.interrupted or outcome.status == "canceled":
            result.interrupted = True
            break


def _run_on_executor(todo: list[PlannedRun], out: Path, result: SweepResult, say: Callable[[str], None],
                     name: str, address: str | None, sweep: SweepSpec) -> None:
    """Hand the runs to another engine (Ray): it schedules and retries; records land in `out`."""
    from peftbench.sweeps.executors import Job, get_executor

    options: dict[str, Any] = {}
    if name == "ray":
        options = {"address": address, "cpus_per_run": sweep.cpus_per_run, "gpus_per_run": sweep.gpus_per_run}
    engine = get_executor(name, **options)
    jobs = [Job(run.spec.to_dict(), str(out)) for run in todo]
    try:
        for done, (_, record) in enumerate(engine.map(jobs), 1):
            status = record.get("status", "failed")  # a record without a status counts as a failure
            label = status if status != "failed" else status_label({**record, "status": status}, "error")
            result.statuses[record.get("run_id", f"job-{done}")] = label
            metric = metrics_text(record) if status == "success" else ""
            say(f"[sweep:{name}] {record.get('run_id')}: {label}{f', {metric}' if metric else ''} "
                f"| done {done}/{len(jobs)}")
    except KeyboardInterrupt:
        result.interrupted = True


def sweep(spec: SweepSpec | dict[str, Any] | str | Path, out_dir: str | Path = "runs", **options: Any) -> list[Record]:
    """Python API: run a sweep (a SweepSpec, its dict, or a YAML path) and return its runs' records,
    in plan order (runs already recorded included)."""
    if isinstance(spec, str | Path):
        spec = SweepSpec.from_yaml(spec)
    elif isinstance(spec, dict):
        spec = SweepSpec.from_dict(spec)
    options.setdefault("progress", False)
    run_sweep(spec, out_dir, **options)
    return planned_records(spec, out_dir)


def planned_records(spec: SweepSpec, out_dir: str | Path) -> list[Record]:
    """The records of a sweep's planned runs found in `out_dir`, in plan order."""
    out = Path(out_dir)
    return [rec for run in spec.expand() if (rec := read_run_record(out, run.run_id))]


def _write_summary(out: Path, planned: list[PlannedRun], result: SweepResult) -> None:
    atomic_write_json(out / SUMMARY_FILE, {
        "written": now_iso(), "total": result.total, "interrupted": result.interrupted,
        "counts": result.counts(),
        "runs": [{"run_id": r.run_id, "axes": r.axes, "status": result.statuses.get(r.run_id, "not-run")}
                 for r in planned],
    })


def summary_text(result: SweepResult) -> str:
    counts = result.counts()
    failed = sorted((rid, s) for rid, s in result.statuses.items() if s.startswith(("failed", "skipped-failed")))
    parts = [f"{k} {v}" for k, v in sorted(counts.items())]
    lines = [f"sweep: {result.total} runs: {', '.join(parts) or 'none run'}"
             + (" (interrupted)" if result.interrupted else "")]
    lines += [f"  {s:<24} {rid}" for rid, s in failed]
    return "\n".join(lines)


def run_spec_file(config: str, out: str, *, model_override: str | None = None, overrides: list[str] | None = None,
                  progress: bool = True, force: bool = False, say: Any = print) -> list[Record]:
    """Run every run of a spec file in turn, in this process. A failed run is recorded and
    reported; the others still run."""
    from peftbench.core.runner import run
    from peftbench.errors import PeftbenchError, RunCanceled

    specs = load_runs(config, model_override, overrides)
    say(f"[peftbench] {config}: {len(specs)} run(s)")
    records = []
    for i, spec in enumerate(specs, 1):
        say(f"[peftbench] run {i}/{len(specs)}: {spec.name or spec.method.name}")
        try:
            record = run(spec, out, progress=progress, force=force)
            records.append(record)
            say(f"[peftbench] run {i}/{len(specs)} {record['status']}: {metrics_text(record, ('eval_loss',))}")
        except RunCanceled:
            raise
        except PeftbenchError as err:
            say(f"[peftbench] run {i}/{len(specs)} failed: {err.one_line()}")
            records.append(failure_record(spec.run_id(), "failed", err.kind, error_message(err), spec=spec))
    return records
