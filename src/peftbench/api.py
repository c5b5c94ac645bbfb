"""The Python API: what the CLI does, as typed functions that return plain record dicts.

`peftbench.run`, `peftbench.load_spec` and `peftbench.load_records` come from here (lazily, so
`import peftbench` stays cheap). A record is the JSON document of docs/records.md, as a dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from peftbench.config.spec import RunSpec, apply_overrides, load_yaml
from peftbench.errors import SpecError

Record = dict[str, Any]
"""One run's record (`<out>/<run_id>/result.json`): spec, status, metrics, timing, memory..."""

SpecLike = RunSpec | Mapping[str, Any] | str | Path
"""A `RunSpec`, a dict of its sections, or the path of a YAML spec file."""


def load_spec(spec: SpecLike, overrides: list[str] | None = None) -> RunSpec:
    """Validate a spec given in any of the accepted forms; `overrides` are `--set` items ('train.lr=1e-4')."""
    if isinstance(spec, RunSpec):
        return spec.with_overrides(overrides) if overrides else spec
    if isinstance(spec, str | Path):
        data: Any = load_yaml(spec)
    elif isinstance(spec, Mapping):
        data = dict(spec)
    else:
        raise SpecError(f"a spec must be a RunSpec, a dict or a YAML path, got {type(spec).__name__}",
                        hint="pass e.g. {'method': {'name': 'lora'}} or 'spec.yaml'")
    return RunSpec.from_dict(apply_overrides(data, overrides or []))


def run(spec: SpecLike, out_dir: str | Path = "runs", *, overrides: list[str] | None = None, force: bool = False,
        progress: bool = True, log: Callable[[str], None] | None = None) -> Record:
    """Train and evaluate one spec; return its record, also written to `<out_dir>/<run_id>/result.json`.

    An existing success record is returned as is unless `force`. Errors the user can fix raise
    `peftbench.PeftbenchError` subclasses with a one-line message; a failed run still leaves its record.
    """
    from peftbench.core.runner import run as run_one

    return run_one(load_spec(spec, overrides), out_dir, progress=progress, force=force, log=log)
