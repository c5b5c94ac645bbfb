"""Output heads by module name (what adapters leave out, quantization skips and pre-flight treats apart),
and the task loss the head computes, apart from any regularizer a method adds to it."""

from __future__ import annotations

import functools
from typing import Any

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


class TaskLoss:
    """The task loss the transformers model's own head computes on each forward, captured before a
    peft tuner adds a regularizer to it (AdaLoRA adds its orthogonality term to `outputs.loss`, in
    place). The transformers model under the peft wrapper gets a `forward` that keeps a differentiable
    copy of its output's `loss` (an instance attribute rather than a hook: AdaLoRA calls
    `model.forward` directly, past hooks); `take()` hands the latest one over (None when no forward
    since produced a loss, e.g. a loss computed outside the model's forward). `close()` restores the
    model's own `forward`."""

    def __init__(self, model: Any) -> None:
        from peftbench.models.loading import transformers_model

        self.last: Any = None
        self.inner = transformers_model(model)
        self.own = self.inner.__dict__.get("forward")  # an instance forward already set, if any
        forward = self.inner.forward

        @functools.wraps(forward)  # the same signature: peft inspects it (prefix tuning's past_key_values)
        def forward_keeping_loss(*args: Any, **kwargs: Any) -> Any:
            output = forward(*args, **kwargs)
            self.capture(output)
            return output

        self.inner.forward = forward_keeping_loss

    def capture(self, output: Any) -> None:
        import torch

        loss = getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor):
            self.last = loss.clone()  # a copy: the in-place regularizer addition must not reach it

    def take(self) -> Any:
        loss, self.last = self.last, None
        return loss

    def close(self) -> None:
        if self.own is None:
            self.inner.__dict__.pop("forward", None)
        else:
            self.inner.forward = self.own

    def __enter__(self) -> TaskLoss:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
