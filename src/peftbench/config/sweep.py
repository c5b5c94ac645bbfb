"""The sweep file: a YAML grid of runs, parsed to a `SweepSpec` and expanded to run specs.

A sweep file holds `defaults` (a run spec) and axes: `models`, `tasks`, `methods`, a `grid` of
dotted run-spec keys (`method.r: [8, 16]`, `train.lr: [1e-3, 1e-4]`) and `seeds`. `per_model` and
`per_method` hold overrides merged deeply (a nested key overrides only itself); `tiny` is the profile
`--model-override tiny` merges over every run (as in `peftbench.config.multirun`); `${NAME}` is never
expanded here. Expansion is deterministic; every run is identified by
`RunSpec.run_id()`, a hash of its resolved spec, so a changed hyper-parameter is a new run and never
overwrites an old record. A multi-run spec file (`peftbench.config.multirun`, the layout of
examples/) is read into a `SweepSpec` too, as its list of runs; `--set` and `--model-override` apply
to either layout.

Running a sweep is `peftbench.sweeps.engine.run_sweep`.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.config.dotted import deep_merge, load_yaml, parse_overrides, set_dotted
from peftbench.config.multirun import load_runs, override_model, sweep_layout
from peftbench.config.spec import RunSpec
from peftbench.errors import SpecError
from peftbench.registry import did_you_mean

SWEEP_FILE_KEYS = ("name", "defaults", "models", "tasks", "methods", "grid", "seeds", "per_model", "per_method",
                   "max_runs", "timeout_s", "cpus_per_run", "gpus_per_run", "tiny")
DEFAULT_MAX_RUNS = 1000


@dataclass
class PlannedRun:
    """One point of the grid: its resolved spec, its id, and the axis values that made it."""

    run_id: str
    spec: RunSpec
    axes: dict[str, Any]


@dataclass
class SweepSpec:
    """A validated sweep file: the defaults and the axes of its grid (an axis of `[None]` leaves the
    defaults' value), or the runs of a multi-run spec file (`explicit`)."""

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
    # Runs listed in full by a multi-run spec file (examples/*.yaml, see config/multirun.py) instead of a grid.
    explicit: list[RunSpec] | None = None
    tiny: dict[str, Any] = field(default_factory=dict)  # merged over every run with --model-override tiny
    model_override: str | None = None  # --model-override: a model for every run, or 'tiny'
    overrides: list[tuple[list[str], Any]] = field(default_factory=list)  # --set, parsed; applied last

    # ---- parsing ------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, source: str = "sweep spec") -> SweepSpec:
        """A validated sweep from the mapping of a sweep file (`source` names it in errors)."""
        if not isinstance(data, dict):
            raise SpecError(f"{source} must be a mapping, got {type(data).__name__}",
                            hint="write top-level keys such as 'defaults:', 'methods:', 'grid:', 'seeds:'")
        unknown = [k for k in data if k not in SWEEP_FILE_KEYS]
        if unknown:
            key = str(unknown[0])
            raise SpecError(f"unknown sweep key '{key}' in {source}.{did_you_mean(key, SWEEP_FILE_KEYS)}",
                            hint=f"valid keys: {', '.join(SWEEP_FILE_KEYS)}")
        out = cls()
        if data.get("name") is not None:
            out.name = str(data["name"])
        out.defaults = _mapping(data.get("defaults"), "defaults", source) or {}
        out.tiny = _mapping(data.get("tiny"), "tiny", source) or {}
        out._read_axes(data, source)
        out._read_overrides(data, source)
        out._read_limits(data)
        return out

    def _read_axes(self, data: dict[str, Any], source: str) -> None:
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
                setattr(self, axis, values)
        grid = _mapping(data.get("grid"), "grid", source) or {}
        for key, values in grid.items():
            if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
                raise SpecError(f"grid key {key!r} in {source} is not a dotted run-spec key",
                                hint="write e.g. 'method.r: [8, 16]' or 'train.lr: [1e-3, 1e-4]'")
            self.grid[key] = _axis_list(values, f"grid.{key}", source)

    def _read_overrides(self, data: dict[str, Any], source: str) -> None:
        self.per_model = _mapping(data.get("per_model"), "per_model", source) or {}
        self.per_method = _mapping(data.get("per_method"), "per_method", source) or {}
        for section in ("per_model", "per_method"):
            for key, value in getattr(self, section).items():
                if not isinstance(value, dict):
                    raise SpecError(f"{section}.{key} in {source} must be a mapping of run-spec keys, got {value!r}",
                                    hint=f"write e.g. '{section}: {{{key}: {{train: {{lr: 1e-4}}}}}}'")

    def _read_limits(self, data: dict[str, Any]) -> None:
        if "max_runs" in data:
            mr = data["max_runs"]
            if not isinstance(mr, int) or isinstance(mr, bool) or mr <= 0:
                raise SpecError(f"max_runs must be a positive integer, got {mr!r}", hint="e.g. max_runs: 200")
            self.max_runs = mr
        for key in ("cpus_per_run", "gpus_per_run"):
            if key in data:
                v = data[key]
                if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
                    raise SpecError(f"{key} must be a non-negative number, got {v!r}", hint=f"e.g. {key}: 1")
                setattr(self, key, float(v))
        if data.get("timeout_s") is not None:
            t = data["timeout_s"]
            if not isinstance(t, int | float) or isinstance(t, bool) or t <= 0:
                raise SpecError(f"timeout_s must be a positive number of seconds, got {t!r}",
                                hint="e.g. timeout_s: 3600")
            self.timeout_s = float(t)

    @classmethod
    def from_yaml(cls, path: str | Path, model_override: str | None = None,
                  overrides: list[str] | None = None) -> SweepSpec:
        """A grid sweep file, or a multi-run spec file (models/methods as partial specs with axes);
        `--model-override` and `--set` apply to every run of either."""
        doc = load_yaml(path)
        if sweep_layout(doc) == "runs":
            out = cls(explicit=load_runs(str(path), model_override, overrides))
            out._read_limits(doc)
            return out
        out = cls.from_dict(doc, source=f"'{path}'")
        out.model_override = model_override or None
        out.overrides = parse_overrides(overrides or [])
        return out

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
        return self._command_line(data, model), axes

    def _command_line(self, data: dict[str, Any], model: Any) -> dict[str, Any]:
        """`--model-override`, then the `--set` items, over a run; a models entry must then name a model."""
        model_section = _section(data, "model")
        if self.model_override:
            family = model_section.get("family")
            entry = {"name": model_section.get("name_or_path") or model,
                     "tiny": {"family": family} if family and family != "auto" else {}}
            data = override_model(data, self.model_override, self.tiny, entry)
        for path, value in self.overrides:
            set_dotted(data, path, copy.deepcopy(value))
        if model is not None and not _section(data, "model").get("name_or_path"):
            raise SpecError(f"models entry {model!r} names no model (no name_or_path): it would train the default "
                            "model under that entry", hint="add name_or_path to the entry (or to defaults.model), or "
                                                           "pass --model-override tiny (or a model)")
        return data


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
