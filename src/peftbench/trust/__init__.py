"""Checks that keep comparisons honest: spec checks before loading (`checks.py`), pre-flight checks before
the first step (`preflight.py`), weight-change diagnostics and forgetting."""
