"""The table behind `peftbench ls`: one line per run record found under a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftbench.errors import SpecError
from peftbench.records.fields import model_label, status_label
from peftbench.records.io import load_records
from peftbench.reports.tables import Cell, Row, terminal


def key_hparams(record: dict[str, Any]) -> str:
    """Rank, learning rate, seed, and any method setting that differs from the method's default."""
    from peftbench.methods.base import METHODS

    spec = record.get("spec") or {}
    method = dict(spec.get("method") or {})
    name = method.pop("name", record.get("method"))
    train = spec.get("train") or {}
    parts = []
    if method.get("r") is not None:
        parts.append(f"r={method['r']}")
    try:
        defaults = METHODS.get(str(name)).defaults
    except SpecError:
        defaults = {}
    parts += [f"{k}={v}" for k, v in method.items() if k != "r" and k in defaults and defaults[k] != v]
    parts += [f"{k}={v}" for k, v in method.items() if k not in defaults]
    if train.get("lr") is not None:
        parts.append(f"lr={train['lr']:g}")
    if train.get("seed") is not None:
        parts.append(f"seed={train['seed']}")
    return " ".join(parts)


def row(record: dict[str, Any]) -> Row:
    main = record.get("main_metric") or "accuracy"
    value = (record.get("metrics") or {}).get(main)
    t = (record.get("train") or {}).get("time_s")
    return {
        "run_id": Cell(str(record.get("run_id", "?"))),
        "model": Cell(model_label(record.get("model_name"), short=True)),
        "task": Cell(str(record.get("task", "?"))),
        "method": Cell(str(record.get("method", "?"))),
        "hparams": Cell(key_hparams(record)),
        "status": Cell(status_label(record)),
        "metric": Cell(f"{main}={value:.4f}" if isinstance(value, int | float) else "-"),
        "time_s": Cell(f"{t:.1f}" if isinstance(t, int | float) else "-"),
    }


def runs_table(folder: str | Path, status: str | None = None) -> str:
    """Every run under `folder` (only those of `status`, e.g. 'failed', when given)."""
    if not Path(folder).exists():
        raise SpecError(f"runs folder '{folder}' does not exist", hint="give the --out folder of a run or sweep")
    rows = [row(r) for r in load_records(folder)]
    if status:
        rows = [r for r in rows if r["status"].text.split(":")[0] == status]
    return terminal(rows, empty=f"(no runs in {folder})")
