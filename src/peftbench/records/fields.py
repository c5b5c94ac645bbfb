"""Reading fields of a record that may be partial, failed or of an older version: never raises."""

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
