"""Output heads by module name: what adapters leave out, quantization skips and pre-flight treats apart."""

from __future__ import annotations

# Output heads of transformers' task models (sequence classification, LM, question answering).
HEAD_NAMES = ("classifier", "pre_classifier", "score", "lm_head", "qa_outputs")

# Modules that run once per sequence, not once per token: every head except the LM head, and the pooler.
PER_SEQUENCE_MODULES = ("pooler", *(name for name in HEAD_NAMES if name != "lm_head"))


def is_head(name: str) -> bool:
    """Whether a module or parameter name lies in an output head (or in peft's trainable head copy,
    `modules_to_save`)."""
    parts = name.split(".")
    return any(p in HEAD_NAMES for p in parts) or "modules_to_save" in parts


def runs_once_per_sequence(name: str) -> bool:
    """Whether a module name lies in a head or pooler that reads one position per sequence."""
    return any(p in PER_SEQUENCE_MODULES for p in name.split("."))
