"""peftbench: fair, fast, reproducible comparisons of fine-tuning methods.

Heavy modules (torch, transformers) load on first use, so importing peftbench is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["PeftbenchError", "Record", "RunSpec", "load_records", "load_spec", "report", "run", "sweep"]

if TYPE_CHECKING:
    from peftbench.api import Record, load_spec, run
    from peftbench.config.spec import RunSpec
    from peftbench.errors import PeftbenchError
    from peftbench.records.io import load_records
    from peftbench.reports.build import build_report as report
    from peftbench.sweeps.engine import sweep

_LAZY = {
    "RunSpec": ("config.spec", "RunSpec"),
    "run": ("api", "run"),
    "load_spec": ("api", "load_spec"),
    "Record": ("api", "Record"),
    "load_records": ("records.io", "load_records"),
    "PeftbenchError": ("errors", "PeftbenchError"),
    "sweep": ("sweeps.engine", "sweep"),
    "report": ("reports.build", "build_report"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'peftbench' has no attribute '{name}'")
