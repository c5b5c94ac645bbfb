"""Fine-tuning methods: importing this package registers every method in `METHODS` (the installed peft's
other method types by their lower-case names on first need; `verified.py` says where each was verified)."""

from peftbench.methods import peft_methods, seed  # noqa: F401  (seed registers first: peft_methods imports it)
from peftbench.methods.base import METHODS

__all__ = ["METHODS"]
