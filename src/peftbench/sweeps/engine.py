"""Sweeps: a YAML grid of runs, expanded to run specs and executed one isolated process per run.

A sweep file holds `defaults` (a run spec) and axes: `models`, `tasks`, `methods`, a `grid` of
dotted run-spec keys (`method.r: [8, 16]`, `train.lr: [1e-3, 1e-4]`) and `seeds`. `per_model` and
`per_method` hold overrides merged deeply (a nested key overrides only itself). Expansion is
deterministic; every run is identified by `RunSpec.run_id()`, a hash of its resolved spec, so a
changed hyper-parameter is a new run and never overwrites an old record.

Execution (`run_sweep`) keeps finished records: a rerun skips runs whose record is `success`,
reruns `canceled` ones and, with `retry_failed`, failed ones. A lock file refuses a second sweep
on the same output folder.
"""

from __future__ import annotations

import copy
import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.config.spec import RunSpec, deep_merge, load_yaml, set_dotted
from peftbench.errors import SpecError
from peftbench.records.io import RESULT_FILE, atomic_write_json, now_iso, read_record
from peftbench.registry import did_you_mean

SWEEP_KEYS = ("name", "defaults", "models", "tasks", "methods", "grid", "seeds", "per_model", "per_method",
              "max_runs", "timeout_s", "cpus_per_run", "gpus_per_run")
DEFAULT_MAX_RUNS = 1000
Record = dict[str, Any]
LOCK_FILE = ".sweep.lock"
SUMMARY_FILE = "sweep-summary.json"
FINAL_STATUSES = ("success", "failed", "canceled")


@dataclass
class PlannedRun:
    """One point of the grid: its resolved spec, its id, and the axis values that made it."""

    run_id: str
    spec: RunSpec
    axes: dict[str, Any]


@dataclass
class SweepSpec:
    name: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    models: list[Any] = field(default_factory=lambda: [None])
    tasks: list[Any] = field(default_factory=lambda: [None])
    methods: list[Any] = field(default_factory=lambda: [None])
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[Any] = field(default_factory=lambda: [None])
    per_model: dict[str, Any] = field(default_factory=dict)
    per_method: dict[str, Any] = field(default_factory=dict)
    max_runs: int = DEFAULT_MAX_RUNS
    timeout_s: float | None = None
    cpus_per_run: float = 1.0  # resources of one run on a Ray cluster (--executor ray)
    gpus_per_run: float = 0.0
    # Runs listed in full by a multi-run spec file (examples/*.yaml, see expand.py) instead of a grid.
    explicit: list[RunSpec] | None = None

    # ---- parsing ------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, source: str = "sweep spec") -> SweepSpec:
        if not isinstance(data, dict):
            raise SpecError(f"{source} must be a mapping, got {type(data).__name__}",
                            hint="write top-level keys such as 'defaults:', 'methods:', 'grid:', 'seeds:'")
        unknown = [k for k in data if k not in SWEEP_KEYS]
        if unknown:
            key = str(unknown[0])
            raise SpecError(f"unknown sweep key '{key}' in {source}.{did_you_mean(key, SWEEP_KEYS)}",
                            hint=f"valid keys: {', '.join(SWEEP_KEYS)}")
        out = cls()
        if data.get("name") is not None:
            out.name = str(data["name"])
        out.defaults = _mapping(data.get("defaults"), "defaults", source) or {}
        for axis in ("models", "tasks", "methods", "seeds"):
            if axis in data:
                values = _axis_list(data[axis], axis, source)
                for v in values:
                    ok = (isinstance(v, int) and not isinstance(v, bool)) if axis == "seeds" else \
                        isinstance(v, str | dict)
                    if not ok:
                        want = "integers" if axis == "seeds" else "names or mappings of run-spec keys"
                        raise SpecError(f"'{axis}' in {source} must hold {want}, got {v!r}",
                                        hint=f"write e.g. '{axis}: {'[0, 1]' if axis == 'seeds' else '[a, b]'}'")
                setattr(out, axis, values)
        grid = _mapping(data.get("grid"), "grid", source) or {}
        for key, values in grid.items():
            if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
                raise SpecError(f"grid key {key!r} in {source} is not a dotted run-spec key",
                                hint="write e.g. 'method.r: [8, 16]' or 'train.lr: [1e-3, 1e-4]'")
            out.grid[key] = _axis_list(values, f"grid.{key}", source)
        out.per_model = _mapping(data.get("per_model"), "per_model", source) or {}
        out.per_method = _mapping(data.get("per_method"), "per_method", source) or {}
        for section in ("per_model", "per_method"):
            for key, value in getattr(out, section).items():
                if not isinstance(value, dict):
                    raise SpecError(f"{section}.{key} in {source} must be a mapping of run-spec keys, got {value!r}",
                                    hint=f"write e.g. '{section}: {{{key}: {{train: {{lr: 1e-4}}}}}}'")
        if "max_runs" in data:
            mr = data["max_runs"]
            if not isinstance(mr, int) or isinstance(mr, bool) or mr <= 0:
                raise SpecError(f"max_runs must be a positive integer, got {mr!r}", hint="e.g. max_runs: 200")
            out.max_runs = mr
        for key in ("cpus_per_run", "gpus_per_run"):
            if key in data:
                v = data[key]
                if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
                    raise SpecError(f"{key} must be a non-negative number, got {v!r}", hint=f"e.g. {key}: 1")
                setattr(out, key, float(v))
        if data.get("timeout_s") is not None:
            t = data["timeout_s"]
            if not isinstance(t, int | float) or isinstance(t, bool) or t <= 0:
                raise SpecError(f"timeout_s must be a positive number of seconds, got {t!r}",
                                hint="e.g. timeout_s: 3600")
            out.timeout_s = float(t)
        return out

    @classmethod
    def from_yaml(cls, path: str | Path, model_override: str | None = None,
                  overrides: list[str] | None = None) -> SweepSpec:
        """A grid sweep file, or a multi-run spec file (models/methods as partial specs with axes)."""
        from peftbench.sweeps.expand import is_run_list, load_runs

        doc = load_yaml(path)
        if model_override or overrides or is_run_list(doc):
            runs = load_runs(str(path), model_override, overrides)
            return cls(explicit=runs, max_runs=int(doc.get("max_runs", DEFAULT_MAX_RUNS))
                       if isinstance(doc.get("max_runs"), int) else DEFAULT_MAX_RUNS)
        return cls.from_dict(doc, source=f"'{path}'")

    # ---- expansion ----------------------------------------------------------------------

    def size(self) -> int:
        """The number of grid points (before runs that resolve to the same spec are merged)."""
        n = len(self.models) * len(self.tasks) * len(self.methods) * len(self.seeds)
        for values in self.grid.values():
            n *= len(values)
        return n

    def expand(self) -> list[PlannedRun]:
        """Every run of the sweep in a stable order, validated, one entry per distinct run id."""
        if self.explicit is not None:
            return self._expand_explicit()
        n = self.size()
        if n == 0:
            empty = [a for a in ("models", "tasks", "methods", "seeds") if not getattr(self, a)]
            empty += [f"grid.{k}" for k, v in self.grid.items() if not v]
            raise SpecError(f"the sweep expands to zero runs: axis '{empty[0]}' is an empty list",
                            hint="give each axis at least one value (or remove the axis)")
        if n > self.max_runs:
            raise SpecError(f"the sweep expands to {n} runs, more than max_runs={self.max_runs}",
                            hint="shrink the grid or raise max_runs in the sweep file")
        keys = list(self.grid)
        planned: list[PlannedRun] = []
        seen: set[str] = set()
        for task, model, method, point, seed in itertools.product(
                self.tasks, self.models, self.methods, itertools.product(*self.grid.values()), self.seeds):
            data, axes = self._point(task, model, method, dict(zip(keys, point, strict=True)), seed)
            try:
                spec = RunSpec.from_dict(data).resolved()
            except SpecError as err:
                where = ", ".join(f"{k}={v}" for k, v in axes.items())
                raise SpecError(f"run ({where}): {err.message}", hint=err.hint) from None
            run_id = spec.run_id()
            if run_id not in seen:  # e.g. a rank grid applied to a method without ranks
                seen.add(run_id)
                planned.append(PlannedRun(run_id, spec, axes))
        return planned

    def _expand_explicit(self) -> list[PlannedRun]:
        assert self.explicit is not None
        if not self.explicit:
            raise SpecError("the spec file expands to zero runs", hint="list at least one model and one method")
        if len(self.explicit) > self.max_runs:
            raise SpecError(f"the spec file expands to {len(self.explicit)} runs, more than max_runs={self.max_runs}",
                            hint="shrink the axes or raise max_runs in the file")
        planned: list[PlannedRun] = []
        seen: set[str] = set()
        for spec in self.explicit:
            resolved = spec.resolved()
            run_id = resolved.run_id()
            if run_id not in seen:
                seen.add(run_id)
                planned.append(PlannedRun(run_id, resolved, {"name": spec.name, "method": spec.method.name}))
        return planned

    def _point(self, task: Any, model: Any, method: Any, point: dict[str, Any],
               seed: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        data = copy.deepcopy(self.defaults)
        if self.name and not data.get("name"):
            data["name"] = self.name
        axes: dict[str, Any] = {}
        if task is not None:
            frag = {"task": task} if isinstance(task, str) else task
            data = deep_merge(data, frag)
            axes["task"] = task if isinstance(task, str) else frag.get("task", "?")
        if model is not None:
            frag = {"name_or_path": model} if isinstance(model, str) else model
            data = deep_merge(data, {"model": frag})
            axes["model"] = frag.get("name_or_path", "?")
        if method is not None:
            frag = {"name": method} if isinstance(method, str) else method
            data = deep_merge(data, {"method": frag})
            axes["method"] = frag.get("name", "?")
        model_name = _section(data, "model").get("name_or_path")
        method_name = _section(data, "method").get("name", "lora")
        if isinstance(model_name, str) and model_name in self.per_model:
            data = deep_merge(data, self.per_model[model_name])
        if isinstance(method_name, str) and method_name in self.per_method:
            data = deep_merge(data, self.per_method[method_name])
        for key, value in point.items():
            path = key.split(".")
            # A method-section key a method does not have (a rank for IA3) does not apply to it.
            if path[0] == "method" and len(path) == 2 and not _method_has_key(method_name, path[1]):
                continue
            set_dotted(data, path, copy.deepcopy(value))
            axes[key] = value
        if seed is not None:
            set_dotted(data, ["train", "seed"], seed)
            axes["seed"] = seed
        return data, axes


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _method_has_key(name: Any, key: str) -> bool:
    from peftbench.methods.base import METHODS

    try:
        method = METHODS.get(str(name))
    except SpecError:
        return True  # validation of the run spec reports the unknown method
    return key in method.defaults or key in method.valid_keys()  # valid_keys imports peft: asked last


def _mapping(value: Any, key: str, source: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpecError(f"'{key}' in {source} must be a mapping, got {type(value).__name__}",
                        hint=f"write '{key}:' followed by indented 'key: value' lines")
    return value


def _axis_list(value: Any, key: str, source: str) -> list[Any]:
    if not isinstance(value, list):
        raise SpecError(f"'{key}' in {source} must be a list, got {value!r}",
                        hint=f"write e.g. '{key}: [a, b]'")
    return value


# ---- execution -----------------------------------------------------------------------------


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
    from peftbench.core.isolate import run_isolated
    from peftbench.core.runner import check_writable

    say = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
    planned = sweep.expand()
    out = Path(out_dir)
    check_writable(out)
    lock = acquire_lock(out)
    timeout = timeout_s if timeout_s is not None else sweep.timeout_s
    result = SweepResult(total=len(planned), statuses={})
    try:
        todo: list[PlannedRun] = []
        for run in planned:
            rec = read_record(out / run.run_id / RESULT_FILE)
            status = (rec or {}).get("status")
            if status == "success":
                result.statuses[run.run_id] = "skipped-success"
            elif status == "failed" and not retry_failed:
                result.statuses[run.run_id] = f"skipped-failed:{(rec.get('error') or {}).get('type', 'error')}"
            else:
                todo.append(run)
        say(f"[sweep] {len(planned)} runs: {len(planned) - len(todo)} already recorded, {len(todo)} to run"
            f"{f', timeout {timeout:g}s per run' if timeout else ''}")
        if executor != "local":
            _run_on_executor(todo, out, result, say, executor, address, sweep)
            return result
        durations: list[float] = []
        for i, run in enumerate(todo):
            where = ", ".join(f"{k}={v}" for k, v in run.axes.items())
            say(f"[sweep] run {i + 1}/{len(todo)} {run.run_id} ({where})")
            outcome = run_isolated(run.spec, run.run_id, out, timeout_s=timeout, progress=progress)
            result.statuses[run.run_id] = outcome.label
            durations.append(outcome.seconds)
            # The first run also pays the process server's start-up: leave it out once others exist.
            typical = durations[1:] or durations
            eta = sum(typical) / len(typical) * (len(todo) - i - 1)
            counts = result.counts()
            say(f"[sweep] {run.run_id}: {outcome.label}{f' ({outcome.message})' if outcome.message else ''} "
                f"in {outcome.seconds:.1f}s | done {i + 1}/{len(todo)} "
                f"(success {counts.get('success', 0)}, failed {counts.get('failed', 0)}) "
                f"| ETA {_fmt_duration(eta)}")
            if outcome.interrupted or outcome.status == "canceled":
                result.interrupted = True
                break
    finally:
        _write_summary(out, planned, result)
        lock.release()
    return result


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
            status = record.get("status", "failed")
            label = status if status != "failed" else f"failed:{(record.get('error') or {}).get('type', 'error')}"
            result.statuses[record.get("run_id", f"job-{done}")] = label
            say(f"[sweep:{name}] {record.get('run_id')}: {label} | done {done}/{len(jobs)}")
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
    out = Path(out_dir)
    return [rec for run in spec.expand() if (rec := read_record(out / run.run_id / RESULT_FILE))]


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
