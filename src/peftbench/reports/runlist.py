"""The table behind `peftbench ls`: one line per run record found under a folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peftbench.errors import SpecError
from peftbench.records.fields import fmt_number, model_label, status_label
from peftbench.records.io import load_records
from peftbench.reports.configs import differing_settings
from peftbench.reports.tables import Cell, Row, terminal

# Settings `ls` shows in columns of their own (model) or never tells runs apart by (the run name).
_SHOWN_ELSEWHERE = ("model.name_or_path", "name")


def _key_settings(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(dotted key, 'key=value'): rank, learning rate, seed, and any method setting that differs
    from the method's default."""
    from peftbench.methods.base import METHODS

    spec = record.get("spec") or {}
    method = dict(spec.get("method") or {})
    name = method.pop("name", record.get("method"))
    train = spec.get("train") or {}
    parts = []
    if method.get("r") is not None:
        parts.append(("method.r", f"r={fmt_number(method['r'])}"))
    try:
        defaults = METHODS.get(str(name)).defaults
    except SpecError:
        defaults = {}
    parts += [(f"method.{k}", f"{k}={fmt_number(v)}") for k, v in method.items()
              if k != "r" and k in defaults and defaults[k] != v]
    parts += [(f"method.{k}", f"{k}={fmt_number(v)}") for k, v in method.items() if k not in defaults]
    if train.get("lr") is not None:
        parts.append(("train.lr", f"lr={fmt_number(train['lr'])}"))
    if train.get("seed") is not None:
        parts.append(("train.seed", f"seed={train['seed']}"))
    return parts


def key_hparams(record: dict[str, Any], differing: Sequence[tuple[str, str]] = ()) -> str:
    """Rank, learning rate, seed, any method setting that differs from the method's default, then
    the settings in `differing` (`configs.differing_settings`, as report labels name them) not
    shown already."""
    parts = _key_settings(record)
    shown = {k for k, _ in parts}
    parts += [(k, text) for k, text in differing if k not in shown and k not in _SHOWN_ELSEWHERE]
    return " ".join(text for _, text in parts)


def row(record: dict[str, Any], differing: Sequence[tuple[str, str]] = ()) -> Row:
    main = record.get("main_metric") or "accuracy"
    value = (record.get("metrics") or {}).get(main)
    t = (record.get("train") or {}).get("time_s")
    return {
        "run_id": Cell(str(record.get("run_id", "?"))),
        "model": Cell(model_label(record.get("model_name"), short=True)),
        "task": Cell(str(record.get("task", "?"))),
        "method": Cell(str(record.get("method", "?"))),
        "hparams": Cell(key_hparams(record, differing)),
        "status": Cell(status_label(record)),
        "metric": Cell(f"{main}={value:.4f}" if isinstance(value, int | float) else "-"),
        "time_s": Cell(f"{t:.1f}" if isinstance(t, int | float) else "-"),
    }


def differences(records: list[dict[str, Any]]) -> list[list[tuple[str, str]]]:
    """Per record, the settings in which it differs from the other runs of its task and method
    (the training seed aside), found as report labels find them."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(records):
        if isinstance(r.get("spec"), dict):  # a record without its spec has nothing to compare
            groups.setdefault((str(r.get("task")), str(r.get("method"))), []).append(i)
    out: list[list[tuple[str, str]]] = [[] for _ in records]
    for members in groups.values():
        for i, settings in zip(members, differing_settings([records[i]["spec"] for i in members]), strict=True):
            out[i] = settings
    return out


def runs_table(folder: str | Path, status: str | None = None) -> str:
    """Every run under `folder` (only those of `status`, e.g. 'failed', when given); runs of one
    task and method show the settings they differ in."""
    if not Path(folder).exists():
        raise SpecError(f"runs folder '{folder}' does not exist", hint="give the --out folder of a run or sweep")
    records = load_records(folder)
    rows = [row(r, d) for r, d in zip(records, differences(records), strict=True)]
    if status:
        rows = [r for r in rows if r["status"].text.split(":")[0] == status]
    return terminal(rows, empty=f"(no runs in {folder})", optional=("task", "time_s", "model"),
                    whole=("run_id", "metric"))
