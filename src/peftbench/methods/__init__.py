"""Fine-tuning methods: importing this package registers every method in `METHODS`."""

from peftbench.methods import peft_methods, seed  # noqa: F401  (seed registers first: peft_methods imports it)
from peftbench.methods.base import METHODS

__all__ = ["METHODS"]
