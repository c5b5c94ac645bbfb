"""The bounds of `peftbench profile`, light to import (the command's options name them)."""

MAX_WARMUP = 10  # untimed steps per configuration: one pays the one-time costs, more only cost time
DEFAULT_TIMEOUT_S = 300.0  # per configuration; a tiny model takes seconds, a large one minutes
