"""peftbench: fair, fast, reproducible comparisons of fine-tuning methods.

Heavy modules (torch, transformers) load on first use, so importing peftbench is cheap.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["PeftbenchError", "Record", "RunSpec", "load_records", "load_spec", "report", "run", "sweep"]

if TYPE_CHECKING:
    from .api import Record, load_spec, run
    from .errors import PeftbenchError
    from .records import load_records
    from .spec import RunSpec

_LAZY = {
    "RunSpec": ("spec", "RunSpec"),
    "run": ("api", "run"),
    "load_spec": ("api", "load_spec"),
    "Record": ("api", "Record"),
    "load_records": ("records", "load_records"),
    "PeftbenchError": ("errors", "PeftbenchError"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'peftbench' has no attribute '{name}'")


# `peftbench.sweep(...)` and `peftbench.report(...)` are API calls named like the modules that
# implement them. The package keeps the *module* under each name (so `from peftbench import sweep`,
# `peftbench.sweep.<function>` and patch paths keep working) and makes it callable: calling the
# module calls its entry function.
CALLABLE_MODULES = {"sweep": "sweep", "report": "build_report"}


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        entry = CALLABLE_MODULES[self.__name__.rpartition(".")[2]]
        return getattr(self, entry)(*args, **kwargs)


def _module_slot(name: str) -> property:
    """A package attribute that imports its module on first use and keeps it callable, whoever
    imports it first (the import system stores a new submodule on its package through the setter)."""

    def get(pkg: types.ModuleType) -> Any:
        if name not in pkg.__dict__:
            try:
                importlib.import_module(f"{pkg.__name__}.{name}")
            except ModuleNotFoundError as err:
                if err.name != f"{pkg.__name__}.{name}":
                    raise
                raise AttributeError(f"peftbench.{name} is not part of this peftbench version") from None
        return pkg.__dict__[name]

    def put(pkg: types.ModuleType, module: Any) -> None:
        if type(module) is types.ModuleType:
            module.__class__ = _CallableModule
        pkg.__dict__[name] = module

    return property(get, put)


class _Package(types.ModuleType):
    sweep = _module_slot("sweep")
    report = _module_slot("report")


sys.modules[__name__].__class__ = _Package
