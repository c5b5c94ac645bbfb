"""Which lm-evaluation-harness tasks a run scores, resolved and checked before any model loads.

A task entry (in `evaluation.lm_eval.tasks` or `retention.lm_eval_tasks`) is one of:

- a task shipped with peftbench (`local_tasks/<name>.yaml`, e.g. `peftbench_sst2`): its YAML names its
  data files through `${PEFTBENCH_SHARED_DATA}` (default `../shared/data`, from the current folder, as
  in spec files), expanded here and made absolute; the data itself is never shipped;
- a task YAML file (a path ending in .yaml or .yml): lm-eval reads it as it is (`!function`, `include:`);
- any other name: a task of lm-eval's own registry, whose data set comes from the hub (the network or
  the hub cache).

Each entry is built once through lm-eval here (its YAML checked, its data read), so a wrong name or a
missing file fails in seconds, before the model is loaded. lm-eval is the optional extra
`peftbench[lmeval]`: without it a spec that asks for lm-eval fails with one line naming the extra.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from peftbench.config.multirun import substitute_env
from peftbench.config.spec import file_sha256
from peftbench.errors import DataError, SpecError
from peftbench.registry import did_you_mean

EXTRA_HINT = "pip install 'peftbench[lmeval]'"
LOCAL_TASKS = Path(__file__).resolve().parent / "local_tasks"
ROLES = ("evaluation", "retention")  # a task's score as the run's result, or as forgetting on general tasks


@dataclass(frozen=True)
class TaskRef:
    """One task entry, resolved: what lm-eval loads (`spec`: a config dict or a name/path) and the
    task names it yields."""

    entry: str  # as the spec writes it
    role: str  # one of ROLES
    source: str  # "shipped", "file" or "lm-eval"
    spec: Any
    names: tuple[str, ...]
    digest: str | None  # shipped: the expanded config and its data files; file: the YAML file


@dataclass
class Plan:
    """The lm-eval part of a run: its tasks and settings, and the lm-eval version that scores them."""

    version: str
    refs: list[TaskRef]
    num_fewshot: int | None
    limit: int | None
    batch_size: int
    manager: Any = field(default=None, repr=False)  # lm-eval's TaskManager, built once

    def role_of(self, name: str) -> str:
        return next(r.role for r in self.refs if name in r.names)

    def identity(self) -> dict[str, Any]:
        """What the scores depend on besides the model: for the base model's cache."""
        return {"lm_eval_version": self.version, "num_fewshot": self.num_fewshot, "limit": self.limit,
                "batch_size": self.batch_size,
                "tasks": [{"entry": r.entry, "role": r.role, "names": list(r.names), "digest": r.digest}
                          for r in self.refs]}


def lm_eval_version() -> str:
    """The installed lm-eval's version; the missing extra as one line."""
    try:
        import lm_eval
    except ImportError:
        raise SpecError("evaluation.lm_eval and retention.lm_eval_tasks need the lm-eval package, which is "
                        "not installed", hint=EXTRA_HINT) from None
    return str(lm_eval.__version__)


def shipped_tasks() -> dict[str, Path]:
    """The task definitions shipped with peftbench, by name."""
    return {p.stem: p for p in sorted(LOCAL_TASKS.glob("*.yaml"))}


@contextlib.contextmanager
def quiet_lm_eval(progress: bool = False) -> Iterator[None]:
    """lm-eval's and datasets' notices (and, unless `progress`, their progress bars) kept off the run's
    output; an error still propagates with its message."""
    loggers = [logging.getLogger(name) for name in ("lm_eval", "lm-eval", "datasets")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.ExitStack() as stack:
            if not progress:
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def plan(spec: Any) -> Plan | None:
    """The run's lm-eval plan, every task built once; None when the spec asks for no lm-eval task."""
    settings = spec.evaluation.lm_eval
    entries = [(t, "evaluation") for t in (settings.tasks if settings else [])]
    entries += [(t, "retention") for t in ((spec.retention and spec.retention.lm_eval_tasks) or [])]
    if not entries:
        return None
    version = lm_eval_version()
    written = [e for e, _ in entries]
    twice = next((e for e in written if written.count(e) > 1), None)
    if twice is not None:
        raise SpecError(f"lm-eval task '{twice}' is listed twice in evaluation.lm_eval.tasks and "
                        "retention.lm_eval_tasks", hint="list each task once")
    shipped = shipped_tasks()
    kinds = [(e, role, _source(e, shipped)) for e, role in entries]
    with quiet_lm_eval():
        from lm_eval.tasks import TaskManager

        manager = TaskManager(include_defaults=any(s == "lm-eval" for _, _, s in kinds))
        refs = [_resolve(e, role, source, shipped, manager) for e, role, source in kinds]
    names = [n for r in refs for n in r.names]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise SpecError(f"two lm-eval task entries both yield task '{clash}'", hint="list each task once")
    return Plan(version, refs, settings.num_fewshot if settings else None, settings.limit if settings else None,
                settings.batch_size if settings else 16, manager)


def _source(entry: str, shipped: dict[str, Path]) -> str:
    if entry in shipped:
        return "shipped"
    if entry.endswith((".yaml", ".yml")) or os.sep in entry:
        return "file"
    return "lm-eval"


def _resolve(entry: str, role: str, source: str, shipped: dict[str, Path], manager: Any) -> TaskRef:
    if source == "shipped":
        config, digest = shipped_config(shipped[entry])
        return TaskRef(entry, role, source, config, _load(entry, config, manager), digest)
    if source == "file":
        if not Path(entry).is_file():
            raise DataError(f"lm-eval task file '{entry}' does not exist",
                            hint="check the path (relative to the current folder)")
        return TaskRef(entry, role, source, entry, _load(entry, entry, manager), file_sha256(entry))
    if entry not in manager.all_tasks:
        raise SpecError(f"unknown lm-eval task '{entry}'.{did_you_mean(entry, manager.all_tasks)}",
                        hint=f"use a task shipped with peftbench ({', '.join(shipped)}), a task YAML file, "
                             "or a name listed by `lm-eval ls tasks`")
    return TaskRef(entry, role, source, entry, _load(entry, entry, manager), None)


def shipped_config(path: Path) -> tuple[dict[str, Any], str]:
    """A shipped task's config with `${PEFTBENCH_SHARED_DATA}` expanded and its data files made absolute
    (each must exist), and a digest of the config and the files' contents."""
    config = substitute_env(yaml.safe_load(path.read_text(encoding="utf-8")))
    files = config.get("dataset_kwargs", {}).get("data_files", {})
    for split, name in files.items():
        if not os.path.isfile(name):
            raise DataError(f"lm-eval task '{config['task']}' reads its {split} split from '{name}', which does "
                            "not exist", hint="set PEFTBENCH_SHARED_DATA to the folder holding sst2/ "
                                              "(default ../shared/data, from the current folder)")
        files[split] = os.path.abspath(name)
    blob = json.dumps(config, sort_keys=True) + "".join(str(file_sha256(f)) for f in files.values())
    return config, hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load(entry: str, spec: Any, manager: Any) -> tuple[str, ...]:
    """Build the task(s) once through lm-eval (YAML checked, data read): the task names they yield."""
    try:
        loaded = manager.load([spec])
    except Exception as err:  # lm-eval and datasets raise many kinds; each is a task that cannot be read
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise DataError(f"lm-eval cannot load task '{entry}': {first}",
                        hint="check the task YAML and its data files (a hub task needs the network or "
                             "the hub cache)") from None
    if not loaded["tasks"]:
        raise DataError(f"lm-eval task entry '{entry}' yields no task", hint="name a task, not an empty group")
    return tuple(loaded["tasks"])
