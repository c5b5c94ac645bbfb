"""Where the training time goes: FLOP estimates, peak FLOP/s, MFU, threads and `torch.compile`.

Training FLOPs are counted per matmul weight, from the real (non-padding) tokens:

    FLOPs = Σ_linear c · W · T  +  12 · n_layers · d_model · Σ_seq L²

- `W` is the weight's element count and `T` the real tokens that went through it.
- `c = 6` for a trainable weight (forward 2, activation gradient 2, weight gradient 2): full
  fine-tuning is thus ≈ 6·N·T. `c = 4` for a frozen weight that still passes gradients back
  (forward 2 + activation gradient 2): adapter methods are ≈ 4·N·T plus the adapters' own
  6·(r·d_in + r·d_out)·T, as peft's `lora_A`/`lora_B` are linear layers themselves. `c = 2` for a
  frozen weight below every trainable parameter (no gradient reaches it), as in partial fine-tuning.
- Per-sequence heads (pooler, classifier, score) run once per example, not per token: left out
  (< 2 % of MiniLM's matmul FLOPs). Embedding lookups are not matmuls: left out. A tied causal-LM
  head is an `nn.Linear` and is counted.
- Attention (QKᵀ and AV, which hold no weights): 4·L²·d per layer and sequence forward, twice that
  backward, so 12·L²·d. The causal half is not subtracted (as in the PaLM MFU definition).
- When the last layer computes only the token the head reads (head_token.py), its query, attention-output
  and feed-forward weights count once per sequence (`T` = sequences), and its attention 12·L·d (one
  query row): only the work done is counted.

MFU = FLOPs / training wall time / peak FLOP/s. The peak, its cache and its checks are in
`peftbench.perf.peak` (re-exported here); an MFU above 1 is recorded as invalid, never as `mfu`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from peftbench.models.heads import runs_once_per_sequence
from peftbench.perf.peak import (
    mfu_fields,
    peak_entry,
    probe_circumstances,
    refreshed_peak,
)

# ---- FLOPs -----------------------------------------------------------------------------------


def linear_flop_terms(model: Any) -> list[tuple[str, int, int]]:
    """(name, weight elements, FLOPs per token) for each per-token linear layer, in module order."""
    import torch

    from peftbench.models.loading import numel_of

    rows: list[tuple[str, int, bool]] = []
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        if runs_once_per_sequence(name):
            continue
        w = mod.weight
        qs = getattr(w, "quant_state", None)
        n = int(numel_of(qs.shape)) if qs is not None and getattr(qs, "shape", None) is not None else w.numel()
        rows.append((name, n, bool(w.requires_grad)))
    first_trainable = next((i for i, p in enumerate(model.parameters()) if p.requires_grad), None)
    # Weights that come before every trainable parameter get no gradient: forward only.
    param_index = {id(p): i for i, p in enumerate(model.parameters())}
    out = []
    for name, n, trainable in rows:
        mod = model.get_submodule(name)
        idx = param_index.get(id(mod.weight), 0)
        if trainable:
            c = 6
        elif first_trainable is not None and idx > first_trainable:
            c = 4
        else:
            c = 2
        out.append((name, n, c * n))
    return out


def attention_dims(model: Any) -> tuple[int, int]:
    """(layers, hidden size) from the model's config; (0, 0) when unknown."""
    cfg = getattr(model, "config", None)
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None) or 0
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None) or getattr(cfg, "d_model", None) or 0
    return int(layers), int(hidden)


def runs_per_sequence(model: Any) -> Any:
    """A predicate on linear-layer names: True for those that run once per sequence (head_token.py)."""
    from peftbench.perf.head_token import installed

    prefixes = (installed(model) or {}).get("per_sequence", [])
    return lambda name: any(name == p or name.startswith(p + ".") for p in prefixes)


def training_flops(model: Any, real_tokens: int, sum_sq_lengths: int, sequences: int | None = None) -> dict[str, Any]:
    """Estimated training FLOPs of the run (see the module docstring for the formula).

    `sequences` (the examples trained on) is needed when the last layer computes the head's token only."""
    from peftbench.perf.head_token import installed

    terms = linear_flop_terms(model)
    layers, hidden = attention_dims(model)
    head = installed(model)
    if head is not None and sequences is None:
        raise ValueError("training_flops: the model computes the head's token only; pass `sequences`")
    per_sequence = runs_per_sequence(model)
    per_token = sum(t for name, _, t in terms if not per_sequence(name))
    once = sum(t for name, _, t in terms if per_sequence(name))
    linear = per_token * real_tokens + once * (sequences or 0)
    attention = 12 * hidden * (layers * sum_sq_lengths if head is None
                               else (layers - 1) * sum_sq_lengths + real_tokens)
    formula = ("sum_linear(c*W)*real_tokens + 12*layers*d_model*sum(L^2); c=6 trainable, "
               "4 frozen with gradient through, 2 frozen below all trainable")
    if head is not None:
        formula += ("; last layer on the head's token only: its query, attention output and feed-forward "
                    "weights * sequences, its attention 12*d_model*sum(L)")
    return {"flops": float(linear + attention), "linear_flops": float(linear), "attention_flops": float(attention),
            "flops_per_token_linear": per_token, "formula": formula}


# ---- run-time settings --------------------------------------------------------------------------


def auto_threads(physical: int, load_1min: float) -> int:
    """Intra-op threads for a CPU run: the physical cores not already busy, at least one.

    OpenMP threads meet at a barrier after every operator; when the cores are oversubscribed, one
    descheduled thread stalls the others for a scheduler slice each time: on a 2-core machine under
    a load of about 16, one thread trains MiniLM about 7× faster than two (docs/performance.md)."""
    return max(1, min(physical, int(physical - load_1min + 0.5)))


def configure_threads(requested: int | None, device: str) -> int:
    """`train.num_threads` if given; on the CPU otherwise one per idle physical core (hyper-threads
    only contend); returns the count used."""
    import psutil
    import torch

    if requested:
        torch.set_num_threads(requested)
    elif device == "cpu":
        physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
        torch.set_num_threads(auto_threads(physical, os.getloadavg()[0]))
    return torch.get_num_threads()


def maybe_compile(model: Any, enabled: bool) -> Any:
    """`torch.compile` in place (the module keeps its type, so saving adapters still works).

    `dynamic=True`: batches of varying length must not recompile at every new width."""
    if enabled:
        model.compile(dynamic=True)
    return model


def perf_fields(model: Any, outcome: Any, *, device: str, compute_dtype: str, peak_tflops: float | None,
                threads: int, compiled: bool, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Record fields: FLOP estimate, achieved FLOP/s and MFU, with the peak's source, how it was
    checked, the load the training ran under (`outcome.load`) and the settings."""
    est = training_flops(model, outcome.real_tokens, outcome.real_sq_tokens, outcome.samples)
    t = outcome.train_time_s
    achieved = est["flops"] / t if t else None
    entry, refresh = refreshed_peak(peak_entry(device, compute_dtype, peak_tflops), achieved, compute_dtype)
    if refresh and say:
        say(f"[peftbench] {refresh['note']}")
    peak, source = entry["flops"], entry["source"]
    cfg = getattr(model, "config", None)
    return {
        "flops": est["flops"], "flops_linear": est["linear_flops"], "flops_attention": est["attention_flops"],
        "flops_formula": est["formula"],
        "achieved_tflops": achieved / 1e12 if achieved else None,
        "peak_tflops": peak / 1e12 if peak else None, "peak_source": source,
        "peak_probe": probe_circumstances(entry), "peak_refresh": refresh,
        **mfu_fields(achieved, peak, source),
        "load": getattr(outcome, "load", None) or None,
        "threads": threads, "compiled": compiled,
        "attn_implementation": getattr(cfg, "_attn_implementation", None),
    }
