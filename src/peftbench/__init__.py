"""peftbench: fair, fast, reproducible comparisons of fine-tuning methods.

Heavy modules (torch, transformers) load on first use, so importing peftbench is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["PeftbenchError", "RunSpec", "load_records", "run"]

if TYPE_CHECKING:
    from .errors import PeftbenchError
    from .records import load_records
    from .runner import run
    from .spec import RunSpec

_LAZY = {
    "RunSpec": ("spec", "RunSpec"),
    "run": ("runner", "run"),
    "load_records": ("records", "load_records"),
    "PeftbenchError": ("errors", "PeftbenchError"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'peftbench' has no attribute '{name}'")
