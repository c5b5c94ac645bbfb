"""Weight-change diagnostics: how much, in how many directions, and in which new directions.

For every adapted (or trained) linear layer, with W the pre-trained weight and ΔW the learned
change (W' = W + ΔW):

- `rel_norm` = ‖ΔW‖_F / ‖W‖_F.
- `effective_rank` of ΔW: exp of the Shannon entropy of its normalized singular values
  (Roy & Vetterli, 2007); between 1 and min(shape); at most r for LoRA.
- `intruders`: "intruder dimensions" (Shuttleworth et al., 2024, "LoRA vs Full Fine-tuning: An
  Illusion of Equivalence"): among the top `INTRUDER_TOP_K` = 10 left singular vectors of W',
  those whose largest |cosine similarity| with *every* left singular vector of W is below
  `INTRUDER_COSINE` = 0.5, i.e. new high-magnitude directions that were not in W.

ΔW per method: LoRA `scaling·B·A`; DoRA the full re-normalized weight minus W; QLoRA from the
dequantized 4-bit base; IA3 `W·(l − 1)`; full/partial the trained weight minus a copy of W
taken before training (a CPU copy of every trained linear weight: memory the size of those
weights). Every run is diagnosed from the weights in memory after training, whatever its `save`
setting, so runs that keep no artifact (`save: none`) have diagnostics too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from peftbench.models.heads import is_head

INTRUDER_TOP_K = 10
INTRUDER_COSINE = 0.5
SINGLE_THREAD_MAX_ELEMENTS = 4_000_000


def _linear_weights(model: Any) -> dict[str, Any]:
    """Trained linear weights by module name, each as (out_features, in_features): GPT-2's
    `Conv1D` stores its weight transposed, so it is turned round here."""
    import torch
    from transformers.pytorch_utils import Conv1D

    out = {}
    for name, m in model.named_modules():
        if "lora_" in name or not isinstance(m, (torch.nn.Linear, Conv1D)):
            continue
        if m.weight.requires_grad and not is_head(name + ".weight"):
            out[name] = m.weight.T if isinstance(m, Conv1D) else m.weight
    return out


def snapshot(model: Any) -> dict[str, Any] | None:
    """Before training: CPU copies of the trained linear weights (full/partial only)."""
    if hasattr(model, "peft_config"):
        return None
    return {name: w.detach().to("cpu", copy=True) for name, w in _linear_weights(model).items()}


def _out_in(layer: Any, weight: Any) -> Any:
    """`weight` as (out_features, in_features), whatever layout the base layer stores."""
    return weight.T if getattr(layer, "fan_in_fan_out", False) else weight


def _base_weight(layer: Any) -> Any:
    from peft.utils.integrations import dequantize_module_weight

    base = layer.get_base_layer()
    return _out_in(layer, dequantize_module_weight(base).detach().float())


def _peft_pairs(model: Any) -> list[tuple[str, Any, Any]]:
    """(name, W, ΔW) for every adapted layer of a peft model."""
    import torch

    out = []
    for name, m in model.named_modules():
        if hasattr(m, "lora_A") and "default" in m.lora_A:
            w = _base_weight(m)
            delta = _out_in(m, m.get_delta_weight("default").detach().float())  # stored in the base layout
            magnitude = getattr(m, "lora_magnitude_vector", None)
            if magnitude is not None and "default" in magnitude:  # DoRA: W' = m · (W + ΔW) / ‖W + ΔW‖_row
                combined = w + delta
                scale = magnitude["default"].weight.detach().float() / torch.linalg.norm(combined, dim=1)
                delta = scale[:, None] * combined - w
            out.append((name, w, delta))
        elif hasattr(m, "ia3_l") and "default" in m.ia3_l:
            w = _base_weight(m)
            vec = m.ia3_l["default"].detach().float().reshape(-1)
            scale = vec[None, :] if m.is_feedforward else vec[:, None]
            out.append((name, w, w * (scale - 1)))
    return out


def effective_rank(singular_values: Any) -> float:
    s = singular_values[singular_values > 0]
    if s.numel() == 0:
        return 0.0
    p = s / s.sum()
    return float(math.exp(-(p * p.log()).sum().item()))


def layer_stats(w: Any, delta: Any) -> dict[str, Any]:
    with _svd_threads(w):
        return _layer_stats(w.float(), delta.float())


def _layer_stats(w: Any, delta: Any) -> dict[str, Any]:
    import torch

    sd = torch.linalg.svdvals(delta)
    u0, _, _ = torch.linalg.svd(w, full_matrices=False)
    u1, _, _ = torch.linalg.svd(w + delta, full_matrices=False)
    k = min(INTRUDER_TOP_K, u1.shape[1])
    best_cos = (u1[:, :k].T @ u0).abs().max(dim=1).values
    w_norm = torch.linalg.norm(w).item()
    d_norm = torch.linalg.norm(delta).item()
    return {"shape": list(w.shape), "delta_norm": d_norm, "rel_norm": d_norm / w_norm if w_norm else None,
            "effective_rank": effective_rank(sd), "intruders": int((best_cos < INTRUDER_COSINE).sum().item()),
            "min_top_cosine": float(best_cos.min().item())}


@contextmanager
def _svd_threads(w: Any) -> Iterator[None]:
    """One CPU thread for small matrices: their SVDs gain nothing from threads, and on a busy
    machine thread-pool contention makes them up to 40× slower (3 s instead of 0.08 s at 384×384)."""
    import torch

    if w.device.type != "cpu" or w.numel() > SINGLE_THREAD_MAX_ELEMENTS:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def diagnose(model: Any, before: dict[str, Any] | None) -> dict[str, Any]:
    """The record's `diagnostics` section, from the model's weights in memory (`before`: the
    `snapshot` taken before training, for full and partial fine-tuning)."""
    import torch

    with torch.no_grad():
        if hasattr(model, "peft_config"):
            pairs = _peft_pairs(model)
        else:
            now = _linear_weights(model)
            pairs = [(n, w0.float(), now[n].detach().to("cpu").float() - w0.float())
                     for n, w0 in (before or {}).items() if n in now]
        # Names as in the base model (no 'base_model.model.' prefix), so methods line up per layer.
        layers = {name.removeprefix("base_model.model."): layer_stats(w, d.to(w.device)) for name, w, d in pairs}
    rel = [v["rel_norm"] for v in layers.values() if v["rel_norm"] is not None]
    ranks = [v["effective_rank"] for v in layers.values()]
    intruders = [v["intruders"] for v in layers.values()]
    return {
        "thresholds": {"intruder_top_k": INTRUDER_TOP_K, "intruder_cosine": INTRUDER_COSINE},
        "summary": {
            "layers": len(layers),
            "mean_rel_norm": sum(rel) / len(rel) if rel else None,
            "max_rel_norm": max(rel) if rel else None,
            "mean_effective_rank": sum(ranks) / len(ranks) if ranks else None,
            "intruders_total": sum(intruders),
            "layers_with_intruders": sum(1 for i in intruders if i),
        },
        "layers": layers,
    }
