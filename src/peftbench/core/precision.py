"""How a run uses bf16/fp16: autocast for full and partial fine-tuning, a cast frozen base for adapters."""

from __future__ import annotations

from typing import Any

BASE_TRAINING_METHODS = ("full", "partial")  # they train base weights: fp32 masters under autocast


def apply_dtype_policy(model: Any, method_name: str, compute_dtype: str) -> tuple[Any, dict[str, Any]]:
    """Decide how bf16 is used. Full/partial keep fp32 master weights under autocast; adapter
    methods hold the frozen base in bf16 once (no per-step casts) and train fp32 adapters and head."""
    import torch

    if compute_dtype == "float32":
        return None, {"compute_dtype": "float32", "autocast": False, "frozen_base_dtype": "float32"}
    dtype = getattr(torch, compute_dtype)
    frozen_cast = method_name not in BASE_TRAINING_METHODS
    if frozen_cast:
        for p in model.parameters():
            if p.is_floating_point():
                p.data = p.data.to(torch.float32 if p.requires_grad else dtype)
    return dtype, {"compute_dtype": compute_dtype, "autocast": True,
                   "frozen_base_dtype": compute_dtype if frozen_cast else "float32"}
