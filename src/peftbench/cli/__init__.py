"""The `peftbench` command: one module per command group; `main` is the console entry point."""

from peftbench.cli.app import main

__all__ = ["main"]
