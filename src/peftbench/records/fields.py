"""Reading fields of a record that may be partial, failed or of an older version (never raises),
and the labels they are shown with in tables and progress lines."""

from __future__ import annotations

import math
from typing import Any


def number(x: Any) -> float | None:
    """A finite int or float as float; None for anything else (bool, str, NaN, missing)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(float(x)) else None


def value_at(record: dict[str, Any], *path: str) -> Any:
    """The value at `path` in nested dicts, or None where any step is missing or not a dict."""
    node: Any = record
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


# The `kind` field of a profile.json written by `peftbench profile` (read back by the report).
PROFILE_KIND = "peftbench-profile"


def model_label(name: str | None, *, short: bool = False) -> str:
    """Short model name: a local folder's last component, a hub id as written. `short` (the run
    list's column): the last component of any name, so a hub id loses its organisation too."""
    if not name:
        return "?"
    if short or name.startswith(("/", ".", "~")):
        return name.rstrip("/").split("/")[-1]
    return name


def status_label(record: dict[str, Any], unknown: str = "?") -> str:
    """'success', or the status joined with the error type ('failed:oom'); `unknown` stands for
    a missing error type."""
    status = str(record.get("status", "?"))
    if status == "success":
        return status
    return f"{status}:{(record.get('error') or {}).get('type', unknown)}"


def fmt_bytes(n: float | None) -> str:
    """A byte count as shown in tables and progress lines: '512 B', '1.5 MB', '2.0 GB'."""
    if n is None:
        return "-"
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KB", "MB"):
        n /= 1024
        if abs(n) < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GB"


def fmt_number(value: Any) -> str:
    """A setting's value as every table and label shows it: integers as written, floats in their
    shortest form, and floats below 0.01 or from 1e5 up in scientific notation without a padded
    exponent (5e-5, 1e-4, 2.5e-4, 1e-3, 0.1, 16), so one column never mixes 5e-05 with 0.0001."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value) or value == 0 or 0.01 <= abs(value) < 1e5:
        return f"{value:g}"
    mantissa, exponent = f"{value:.5e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def metrics_text(record: dict[str, Any], extra: tuple[str, ...] = ()) -> str:
    """The record's main metric, then each of `extra` it holds, as 'accuracy=0.8750 eval_loss=0.4012'
    (empty when it holds none: a failed run)."""
    metrics = record.get("metrics") or {}
    names = [record.get("main_metric") or "accuracy", *extra]
    shown = [k for i, k in enumerate(names) if k not in names[:i] and number(metrics.get(k)) is not None]
    return " ".join(f"{k}={metrics[k]:.4f}" for k in shown)


def settings_text(settings: dict[str, Any], sep: str = ", ") -> str:
    """Settings as 'key=value' items (numbers by `fmt_number`), e.g. a sweep run's axes."""
    return sep.join(f"{k}={fmt_number(v)}" for k, v in settings.items())
