"""Failure records: what is recorded for a run that did not succeed, and how it is written.

A failure record has the fields of a run record that are known without a finished run: the
identity of the run, its `status` (failed or canceled), `error` (`type`: the reason, `message`: one
line) and its timestamps. The runner fills in its own record as it goes; the builders here serve
whoever records a run the runner could not record (its process died, its spec did not validate).
Writing one never replaces a `success` record.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from peftbench.errors import DiskFull, PeftbenchError, from_os_error
from peftbench.records.io import RESULT_FILE, SCHEMA_VERSION, atomic_write_json, now_iso, read_record

MESSAGE_LIMIT = 2000  # characters of an error message kept in a record
Record = dict[str, Any]


def error_message(err: BaseException) -> str:
    """One line for an error: a PeftbenchError's own line, else `Type: text`."""
    return err.one_line() if isinstance(err, PeftbenchError) else f"{type(err).__name__}: {err}"


# How a full disk reads in the text of errors that carry no errno: safetensors' Rust writer ("I/O error: No
# space left on device (os error 28)"), and libraries that re-raise an OSError as text.
DISK_FULL_TEXT = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")


def os_failure(err: BaseException) -> PeftbenchError | None:
    """The one clear error for an operating-system failure behind `err`, else None.

    A full disk is `DiskFull` (reason `disk_full`) wherever it shows: an OSError with ENOSPC/EDQUOT,
    such an error as the `__cause__` or `__context__` of the one raised (a library that wraps it), or
    the error text of a writer that keeps no errno (safetensors). Other OSErrors go to `from_os_error`
    (permissions, a read-only disk). A PeftbenchError is already one clear error and stays as it is."""
    if isinstance(err, PeftbenchError):
        return None
    seen: set[int] = set()
    link: BaseException | None = err
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        found = from_os_error(link) if isinstance(link, OSError) else None
        if isinstance(found, DiskFull):
            return found
        first = str(link).splitlines()[0][:200] if str(link) else ""
        if any(marker in first.lower() for marker in DISK_FULL_TEXT):
            return DiskFull(f"No space left on device ({type(link).__name__}: {first})",
                            hint="free disk space or choose another --out folder")
        link = link.__cause__ or link.__context__
    return from_os_error(err)


def error_entry(reason: str, message: str) -> dict[str, str]:
    """The record's `error` field."""
    return {"type": reason, "message": message[:MESSAGE_LIMIT]}


def failure_record(run_id: str | None, status: str, reason: str, message: str, *, spec: Any,
                   started: str | None = None, process: dict[str, Any] | None = None) -> Record:
    """The record of a run that ended `status` (failed or canceled) for `reason`.

    `spec` is the run's validated spec (a RunSpec): the record then names the run (task, method,
    model, seed) like a runner's record. A dict is a spec as it was given, which may not validate:
    it is kept as it is and nothing is derived from it. `process` says who recorded a run whose
    process ended without a record (`exit_code`, `recorded_by`).
    """
    record: Record = {}
    named = not isinstance(spec, dict)
    if named:
        record["schema_version"] = SCHEMA_VERSION
    record.update(run_id=run_id, status=status, error=error_entry(reason, message))
    if named:
        record.update(task=spec.task, method=spec.method.name, model_name=spec.model.name_or_path,
                      seed=spec.train.seed, spec=spec.to_dict())
    else:
        record["spec"] = spec
    record["timestamps"] = {"started": started, "finished": now_iso()}
    if named:
        record["trust_remote_code"] = spec.model.trust_remote_code
    if process is not None:
        record["process"] = process
    return record


def write_failure(run_dir: Path, record: Record, *, raise_os_errors: bool = False) -> None:
    """Write a failure record into `run_dir`; a `success` record there stays, and the failure goes
    next to it as `failed-<time>.json`.

    A write that fails (a full disk) is raised with `raise_os_errors` (a sweep stops: the next runs
    could not be recorded either); otherwise it is reported on stderr, so that a run that is already
    failing goes on reporting its own error.
    """
    existing = read_record(run_dir)
    path = run_dir / RESULT_FILE
    if existing and existing.get("status") == "success":
        path = run_dir / f"failed-{time.strftime('%Y%m%dT%H%M%S')}.json"
    try:
        atomic_write_json(path, record)
    except OSError as err:
        if raise_os_errors:
            raise
        print(f"[peftbench] could not write the failure record {path}: {err}", file=sys.stderr)
