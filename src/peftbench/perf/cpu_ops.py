"""Faster dropout and attention-with-dropout for training on the CPU, with the same semantics.

On the CPU, torch's dropout draws each mask element from the Mersenne Twister through `bernoulli_`
(about a quarter of a MiniLM training step at 16 × 256 tokens in bf16), and scaled-dot-product
attention with `dropout_p > 0` has no fused kernel: it falls back to the math path, which also
upcasts bf16 to fp32 and adds a "safe softmax" pass.

This module keeps every dropout probability and the computation itself; it changes where the
masks come from and in which dtype attention with dropout runs:
- `Dropout` keeps each element with probability 1 − p and scales kept ones by 1/(1 − p), as
  `nn.Dropout` does. The mask comes from numpy's PCG64-DXSM (about 5× faster than `bernoulli_`),
  seeded from torch's generator on every call, so `torch.manual_seed` still makes runs
  repeatable. Mask elements are 16-bit draws, so p is applied in steps of 1/65536 (p=0.1 is
  applied as 0.100006). numpy writes the mask as ones and zeros in the tensor's dtype, and dropout
  multiplies by it: on the CPU a multiply costs well under half of a `masked_fill` with a bool
  mask, forward and backward, at 2 bytes per element of saved mask in bf16 instead of 1.
- The attention function computes softmax(QKᵀ·scale + mask) (the padding or causal mask added, not
  filled in), drops out with the mask above and multiplies by V in the compute dtype, as
  transformers' "eager" implementation does (softmax accumulates in fp32 on the CPU; the logits
  are rounded to bf16 as in eager bf16 attention), one block of about `BLOCK_BYTES` of scores at a
  time, so that the passes over the scores run in cache. It is used only while training with attention
  dropout on the CPU; everything else (evaluation, dropout 0, GPUs, position biases, soft-capping)
  goes to transformers' SDPA path unchanged.

On GPUs torch's fused kernels are already fast, so `install` does nothing there.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

ATTENTION_NAME = "peftbench_cpu"
_MASK_LEVELS = 65536


def _uniform16(shape: Any) -> Any:
    """numpy uint16 draws, one per element of `shape`, from a PCG64-DXSM seeded by torch's generator.

    Its raw 64-bit outputs, read as four 16-bit draws each, come at about twice the rate of
    `Generator.integers`."""
    import numpy as np
    import torch

    seed = int(torch.randint(0, 2**62, (1,)).item())  # from torch's generator: seeded runs repeat
    n = math.prod(int(s) for s in shape)
    return np.random.PCG64DXSM(seed).random_raw((n + 3) // 4).view(np.uint16)[:n]


def drop_mask(shape: Any, p: float) -> Any:
    """A bool tensor of `shape`, True where an element is dropped (probability p)."""
    import torch

    return torch.from_numpy(_uniform16(shape) < round(p * _MASK_LEVELS)).view(shape)


@cache
def _one_bits() -> dict[Any, tuple[Any, int]]:
    """dtype -> (numpy unsigned type of its width, bit pattern of 1.0)."""
    import numpy as np
    import torch

    return {torch.bfloat16: (np.uint16, 0x3F80), torch.float16: (np.uint16, 0x3C00),
            torch.float32: (np.uint32, 0x3F800000)}


def keep_mask(shape: Any, p: float, dtype: Any) -> Any:
    """A `dtype` tensor of `shape`: 1 where an element is kept (probability 1 − p), 0 where dropped.

    For the same torch seed it is the complement of `drop_mask`. numpy writes the bit pattern of 1.0
    directly, so no conversion pass is needed."""
    import torch

    keep = _uniform16(shape) >= round(p * _MASK_LEVELS)
    one = _one_bits().get(dtype)
    if one is None:
        return torch.from_numpy(keep).to(dtype).view(shape)
    np_type, pattern = one
    return torch.from_numpy(keep.view("uint8") * np_type(pattern)).view(dtype).view(shape)


def dropout(x: Any, p: float, training: bool) -> Any:
    """`nn.functional.dropout` with the faster mask on the CPU; torch's own elsewhere."""
    import torch

    if not training or p == 0.0 or p >= 1.0 or x.device.type != "cpu":
        return torch.nn.functional.dropout(x, p, training)
    return (x * keep_mask(x.shape, p, x.dtype)).mul_(1.0 / (1.0 - p))


@cache
def _dropout_class() -> Any:
    """The `nn.Dropout` subclass, defined once on first use (torch is imported lazily)."""
    import torch

    class Dropout(torch.nn.Dropout):
        """`nn.Dropout` with the same p (`inplace` is ignored), drawing its mask with `drop_mask`."""

        def forward(self, x: Any) -> Any:
            return dropout(x, self.p, self.training)

    return Dropout


def attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
              scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers attention-interface function; see the module docstring for when it differs from SDPA."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    q_len = query.shape[2]
    causal = (is_causal if is_causal is not None else getattr(module, "is_causal", True)) and q_len > 1
    if (dropout == 0.0 or not module.training or query.device.type != "cpu"
            or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    if attention_mask is None and causal:  # as transformers' SDPA path: keys cut to the queries, then is_causal
        key, value = key[:, :, :q_len], value[:, :, :q_len]
        attention_mask = torch.ones(q_len, q_len, dtype=torch.bool, device=query.device).tril()
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    bias = None
    if attention_mask is not None:
        # An additive mask: a bool masked_fill costs several times an add on the CPU.
        if attention_mask.dtype == torch.bool:
            bias = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device)
            bias.masked_fill_(~attention_mask, torch.finfo(query.dtype).min)
        else:
            bias = attention_mask[..., : key.shape[2]].to(query.dtype)
        bias = bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))
    out = _blocked_attention()(query, key, value, bias, dropout, scale)
    return out.transpose(1, 2).contiguous(), None


BLOCK_BYTES = 1 << 20  # scores per block: within a core's L2 (plus the L3 share) on current x86 CPUs


def blocks(batch: int, heads: int, q_len: int, k_len: int, itemsize: int) -> list[tuple[slice, slice]]:
    """(batch, head) slices that cover the scores in blocks of about `BLOCK_BYTES`, in drawing order.

    Whole batch elements when one fits, else the largest divisor of the heads that fits (at least one)."""
    per_head = q_len * k_len * itemsize
    if heads * per_head <= BLOCK_BYTES:
        step = max(1, BLOCK_BYTES // (heads * per_head))
        return [(slice(b, min(batch, b + step)), slice(0, heads)) for b in range(0, batch, step)]
    hc = max([d for d in range(1, heads + 1) if heads % d == 0 and d * per_head <= BLOCK_BYTES], default=1)
    return [(slice(b, b + 1), slice(h, h + hc)) for b in range(batch) for h in range(0, heads, hc)]


def _rows(t: Any, bs: slice, hs: slice) -> Any:
    """A broadcastable (batch, head, …) tensor's part for one block."""
    return t[bs if t.shape[0] > 1 else slice(None), hs if t.shape[1] > 1 else slice(None)]


@cache
def _blocked_attention() -> Any:
    """softmax(QKᵀ·scale + bias) with dropout, ×V, one block of scores at a time (torch imported lazily).

    Every pass over the scores — softmax, mask, dropout, and their gradients — then runs on a block that
    stays in cache, instead of streaming 16×12×256×256-element tensors through memory ten times per layer.
    Kept for the backward pass: the probabilities P and the dropped probabilities P⊙keep, as autograd
    would keep them. The 1/(1 − p) of dropout is applied to the (small) output and input gradients."""
    import torch

    class BlockedAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, q: Any, k: Any, v: Any, bias: Any, p: float, scale: float) -> Any:
            b, h, lq, _ = q.shape
            lk = k.shape[2]
            # (batch, head, token, dim) views of (batch, token, head·dim) projections: made contiguous
            # once (they are small) so that every block's matmuls read them without a copy.
            q, k, v = q * scale, k.contiguous(), v.contiguous()
            probs = torch.empty(b, h, lq, lk, dtype=q.dtype)
            kept = torch.empty_like(probs)
            out = torch.empty(b, h, lq, v.shape[-1], dtype=q.dtype)
            for bs, hs in blocks(b, h, lq, lk, q.element_size()):
                scores = torch.matmul(q[bs, hs], k[bs, hs].transpose(2, 3))
                if bias is not None:
                    scores.add_(_rows(bias, bs, hs))
                torch.softmax(scores, dim=-1, out=probs[bs, hs])
                torch.mul(probs[bs, hs], keep_mask(scores.shape, p, q.dtype), out=kept[bs, hs])
                torch.matmul(kept[bs, hs], v[bs, hs], out=out[bs, hs])
            out.mul_(1.0 / (1.0 - p))
            ctx.save_for_backward(q, k, v, probs, kept, out)
            ctx.p, ctx.scale = p, scale
            return out

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx: Any, grad: Any) -> Any:
            q, k, v, probs, kept, out = ctx.saved_tensors
            want_q, want_k, want_v = ctx.needs_input_grad[:3]
            inv_keep = 1.0 / (1.0 - ctx.p)
            grad = grad.contiguous()
            # Softmax backward: dS = P ⊙ (dP − D) with D = rowsum(dP ⊙ P) = rowsum(dO ⊙ O), and
            # dP = keep ⊙ (dO Vᵀ) / (1 − p); so dS·(1 − p) = kept ⊙ (dO Vᵀ) − P ⊙ D·(1 − p).
            d = (grad.float() * out.float()).sum(-1, keepdim=True).mul_(1.0 - ctx.p).to(q.dtype)
            dq = torch.empty_like(q) if want_q else None
            dk = torch.empty_like(k) if want_k else None
            dv = torch.empty_like(v) if want_v else None
            for bs, hs in blocks(*probs.shape, q.element_size()):
                g = grad[bs, hs]
                if want_v:
                    torch.matmul(kept[bs, hs].transpose(2, 3), g, out=dv[bs, hs])
                if want_q or want_k:
                    ds = torch.matmul(g, v[bs, hs].transpose(2, 3)).mul_(kept[bs, hs])
                    ds.addcmul_(probs[bs, hs], d[bs, hs], value=-1.0)
                    if want_q:
                        torch.matmul(ds, k[bs, hs], out=dq[bs, hs])
                    if want_k:
                        torch.matmul(ds.transpose(2, 3), q[bs, hs], out=dk[bs, hs])
            for t, factor in ((dq, inv_keep * ctx.scale), (dk, inv_keep), (dv, inv_keep)):
                if t is not None:
                    t.mul_(factor)
            return dq, dk, dv, None, None, None

    return BlockedAttention.apply


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, sdpa_mask)


def _configs(model: Any) -> list[Any]:
    """The model's config and its sub-configs (encoder/decoder), each of which names an attention."""
    seen: dict[int, Any] = {}
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


def install(model: Any, device: str) -> dict[str, Any]:
    """Swap in the faster dropout and attention for a CPU training run; the record's `cpu_ops` section."""
    import torch

    if device != "cpu":
        return {"enabled": False, "reason": f"not used on {device}"}
    cls = _dropout_class()
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout and child.p > 0:
                setattr(parent, name, cls(child.p))
                swapped += 1
    _register()
    switched = 0
    for cfg in _configs(model):
        if cfg._attn_implementation == "sdpa":
            cfg._attn_implementation = ATTENTION_NAME
            switched += 1
    return {"enabled": True, "dropout_modules": swapped, "attention_configs": switched,
            "attention": ATTENTION_NAME if switched else None, "mask_levels": _MASK_LEVELS}
