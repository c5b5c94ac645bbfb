"""Where runs execute besides this machine: a Ray cluster (a task per run).

On this machine a sweep runs each run in a process of its own (`peftbench.core.isolate`, the
sweep's `local` executor). An executor here takes jobs (a spec and an output folder) and yields
each job's record as it finishes. Its worker function is `run_job`, which a job gives the same
record as a run in this process; a failure comes back as a `failed` record, never as an exception
that stops the other runs.

Ray is imported only when the Ray executor is asked for (`pip install 'peftbench[ray]'`). Fault
handling is Ray's: a task whose worker or node dies is retried (`max_retries`). Records are always
written by the driver too, so the output folder holds every record even when the workers' disks are
not shared; artifacts (adapters) stay where the worker wrote them, so put `out_dir` on a shared
filesystem to keep them together.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from peftbench.errors import PeftbenchError, SpecError
from peftbench.records.failure import error_message, failure_record
from peftbench.records.io import RESULT_FILE, atomic_write_json, read_record

Record = dict[str, Any]


@dataclass(frozen=True)
class Job:
    """One run to execute: the spec (as a dict, so that it travels as JSON) and where to write."""

    spec: dict[str, Any]
    out_dir: str
    force: bool = False


class Executor(Protocol):
    name: str

    def map(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Record]]:
        """Run every job; yield each with its record as it finishes (in any order)."""
        ...


def run_job(job: Job) -> Record:
    """Run one job where this is called. Failures come back as their record."""
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run, run_dir_for

    try:
        spec = RunSpec.from_dict(job.spec)
        run_id = spec.run_id()
    except PeftbenchError as err:
        return _failure_record(job, None, err)
    try:
        return run(spec, job.out_dir, progress=False, force=job.force, log=lambda _msg: None)
    except Exception as err:
        existing = read_record(run_dir_for(job.out_dir, run_id))
        if existing and existing.get("status") != "success":
            return existing  # the runner's own failed record, with its details
        return _failure_record(job, run_id, err)


def _failure_record(job: Job, run_id: str | None, err: BaseException) -> Record:
    """For failures before the runner had a run folder (bad spec, missing data)."""
    return failure_record(run_id, "failed", getattr(err, "kind", "error"), error_message(err), spec=job.spec)


def _keep(job: Job, record: Record) -> None:
    """Write the record on the driver's side when the worker's copy is not there (other disk,
    or a failure before any run folder existed)."""
    run_id = record.get("run_id")
    if not run_id:
        return
    path = Path(job.out_dir) / run_id / RESULT_FILE
    if read_record(path) is None:
        atomic_write_json(path, record)


class RayExecutor:
    """A Ray task per run, with `num_cpus`/`num_gpus` from `cpus_per_run`/`gpus_per_run`.

    `address`: None starts (or joins) a local Ray instance, "auto" joins the cluster this machine
    belongs to, "ray://head:10001" a remote one. An already initialised Ray is used as it is.
    """

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0,
                 max_retries: int = 3):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SpecError("the ray executor needs the ray package",
                            hint="pip install 'peftbench[ray]', or use the local executor") from None
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self.max_retries = max_retries

    def map(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Record]]:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        task = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run,
                          max_retries=self.max_retries)(run_job)
        pending = {task.remote(job): job for job in jobs}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                try:
                    record = ray.get(done[0])
                except Exception as err:  # the task itself failed past its retries
                    record = _failure_record(job, _run_id(job), err)
                _keep(job, record)
                yield job, record
        finally:
            for ref in pending:  # interrupted: do not leave runs behind on the cluster
                ray.cancel(ref)


EXECUTORS: dict[str, type[RayExecutor]] = {"ray": RayExecutor}


def get_executor(name: str, **options: Any) -> Executor:
    """The executor called `name` (`ray`); options go to its constructor."""
    if name not in EXECUTORS:
        raise SpecError(f"unknown executor '{name}'",
                        hint=f"use one of: {', '.join(EXECUTORS)} (a sweep's default, local, runs a process per run "
                             "on this machine)")
    return EXECUTORS[name](**options)


def _run_id(job: Job) -> str | None:
    from peftbench.config.spec import RunSpec

    try:
        return RunSpec.from_dict(job.spec).run_id()
    except PeftbenchError:
        return None
