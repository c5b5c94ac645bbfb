"""The table behind `peftbench ls`: one line per run record found under a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftbench.errors import SpecError
from peftbench.records.io import load_records

COLUMNS = ("run_id", "model", "task", "method", "hparams", "status", "metric", "time_s")


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


def row(record: dict[str, Any]) -> dict[str, str]:
    status = str(record.get("status", "?"))
    if status != "success":
        status = f"{status}:{(record.get('error') or {}).get('type', '?')}"
    main = record.get("main_metric") or "accuracy"
    value = (record.get("metrics") or {}).get(main)
    t = (record.get("train") or {}).get("time_s")
    model = str(record.get("model_name") or "?")
    return {
        "run_id": str(record.get("run_id", "?")),
        "model": Path(model).name if "/" in model else model,
        "task": str(record.get("task", "?")),
        "method": str(record.get("method", "?")),
        "hparams": key_hparams(record),
        "status": status,
        "metric": f"{main}={value:.4f}" if isinstance(value, int | float) else "-",
        "time_s": f"{t:.1f}" if isinstance(t, int | float) else "-",
    }


def runs_table(folder: str | Path, status: str | None = None) -> str:
    if not Path(folder).exists():
        raise SpecError(f"runs folder '{folder}' does not exist", hint="give the --out folder of a run or sweep")
    rows = [row(r) for r in load_records(folder)]
    if status:
        rows = [r for r in rows if r["status"].split(":")[0] == status]
    if not rows:
        return f"(no runs in {folder})"
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS), "  ".join("-" * widths[c] for c in COLUMNS)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip() for r in rows]
    return "\n".join(lines)
