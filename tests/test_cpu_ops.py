"""The CPU dropout and attention-with-dropout compute what torch's dropout and SDPA compute."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import tiny_spec

torch = pytest.importorskip("torch")


def test_drop_mask_rate_and_seeding() -> None:
    from peftbench.perf.cpu_ops import drop_mask

    torch.manual_seed(0)
    a = drop_mask((500, 400), 0.1)
    torch.manual_seed(0)
    b = drop_mask((500, 400), 0.1)
    c = drop_mask((500, 400), 0.1)
    assert a.dtype == torch.bool and a.shape == (500, 400)
    assert torch.equal(a, b) and not torch.equal(b, c)
    # 200k draws: the binomial standard deviation of the rate is 0.0007.
    assert abs(a.float().mean().item() - 0.1) < 0.004
    assert abs(drop_mask((200_000,), 0.5).float().mean().item() - 0.5) < 0.005


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "float64"])
def test_keep_mask_is_the_complement_of_the_drop_mask_in_the_dtype(dtype: str) -> None:
    from peftbench.perf.cpu_ops import drop_mask, keep_mask

    torch.manual_seed(3)
    keep = keep_mask((40, 7, 9), 0.3, getattr(torch, dtype))
    torch.manual_seed(3)
    dropped = drop_mask((40, 7, 9), 0.3)
    assert keep.dtype == getattr(torch, dtype) and keep.shape == (40, 7, 9)
    assert set(keep.unique().tolist()) == {0.0, 1.0}  # exact ones and zeros: the bit patterns are right
    assert torch.equal(keep == 0, dropped)


def test_dropout_scales_kept_elements_and_is_identity_in_eval() -> None:
    from peftbench.perf.cpu_ops import _dropout_class

    layer = _dropout_class()(0.25)
    x = torch.rand(300, 200) + 0.5
    layer.train()
    y = layer(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.75)
    assert abs(1 - kept.float().mean().item() - 0.25) < 0.01
    layer.eval()
    assert torch.equal(layer(x), x)
    assert isinstance(layer, torch.nn.Dropout)


def _qkv(b: int = 2, h: int = 3, q: int = 7, d: int = 8, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(b, h, q, d, generator=g, dtype=dtype, requires_grad=True) for _ in range(3)]


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, dropped: torch.Tensor,
               p: float) -> torch.Tensor:
    scores = (q.double() @ k.double().transpose(2, 3)) / q.shape[-1] ** 0.5
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    probs = probs.masked_fill(dropped, 0) / (1 - p)
    return (probs @ v.double()).transpose(1, 2)


@pytest.mark.parametrize("case", ["padding", "causal"])
def test_training_attention_matches_math_with_the_same_mask(case: str) -> None:
    from peftbench.perf.cpu_ops import attention, drop_mask

    q, k, v = _qkv()
    module = SimpleNamespace(training=True, is_causal=case == "causal")
    if case == "padding":
        keys = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
        mask = keys[:, None, None, :].expand(2, 1, 7, 7)
    else:
        mask = None
    torch.manual_seed(5)
    out, _ = attention(module, q, k, v, mask, dropout=0.2)
    torch.manual_seed(5)
    dropped = drop_mask((2, 3, 7, 7), 0.2)
    allowed = mask if mask is not None else torch.ones(7, 7, dtype=torch.bool).tril()
    ref = _reference(q, k, v, allowed, dropped, 0.2)
    assert out.shape == (2, 7, 3, 8)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.sum(), (q, k, v))
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g.double(), r.double(), atol=1e-5)


def test_blocks_cover_every_batch_and_head_once_within_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from peftbench.perf import cpu_ops

    monkeypatch.setattr(cpu_ops, "BLOCK_BYTES", 3 * 16 * 16 * 4)  # three heads of 16×16 fp32 scores
    for batch, heads in ((5, 1), (2, 6), (3, 4), (2, 5)):
        seen = torch.zeros(batch, heads, dtype=torch.int64)
        for bs, hs in cpu_ops.blocks(batch, heads, 16, 16, 4):
            seen[bs, hs] += 1
            n = (bs.stop - bs.start) * (hs.stop - hs.start)
            assert n * 16 * 16 * 4 <= cpu_ops.BLOCK_BYTES
        assert torch.equal(seen, torch.ones_like(seen)), (batch, heads)
    # 6 heads: blocks of three heads; 4 heads: two (the largest divisor that fits); 5 heads: one.
    assert len(cpu_ops.blocks(2, 6, 16, 16, 4)) == 4 and len(cpu_ops.blocks(3, 4, 16, 16, 4)) == 6
    assert len(cpu_ops.blocks(2, 5, 16, 16, 4)) == 10 and len(cpu_ops.blocks(5, 1, 16, 16, 4)) == 2


@pytest.mark.parametrize("block_heads", [1, 2, 9])
def test_blocked_attention_matches_math_across_blocks(monkeypatch: pytest.MonkeyPatch, block_heads: int) -> None:
    """Blocks of one or two heads, or two whole batch elements: each block draws its own mask, in order."""
    from peftbench.perf import cpu_ops

    monkeypatch.setattr(cpu_ops, "BLOCK_BYTES", block_heads * 7 * 7 * 4)
    # (batch, token, head, dim) projections viewed as (batch, head, token, dim), as models pass them
    q, k, v = (t.detach().view(4, 7, 4, 8).transpose(1, 2).requires_grad_() for t in _qkv(b=4, h=4))
    keys = torch.ones(4, 7, dtype=torch.bool)
    keys[1, 5:] = keys[3, 2:] = False
    mask = keys[:, None, None, :]
    module = SimpleNamespace(training=True, is_causal=False)
    torch.manual_seed(7)
    out, _ = cpu_ops.attention(module, q, k, v, mask, dropout=0.3)
    torch.manual_seed(7)
    dropped = torch.zeros(4, 4, 7, 7, dtype=torch.bool)
    for bs, hs in cpu_ops.blocks(4, 4, 7, 7, 4):
        dropped[bs, hs] = cpu_ops.drop_mask(dropped[bs, hs].shape, 0.3)
    assert len(cpu_ops.blocks(4, 4, 7, 7, 4)) == {1: 16, 2: 8, 9: 2}[block_heads]
    ref = _reference(q, k, v, mask, dropped, 0.3)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    weights = torch.randn(out.shape, dtype=torch.float64)  # not all-ones: the softmax gradient is then non-trivial
    grads = torch.autograd.grad((out.double() * weights).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref * weights).sum(), (q, k, v))
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g.double(), r.double(), atol=1e-5)


def test_attention_computes_only_the_gradients_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frozen key (LoRA on query and value) costs no key-gradient matmul in the backward pass."""
    from peftbench.perf.cpu_ops import attention, blocks

    module = SimpleNamespace(training=True, is_causal=False)

    def backward_matmuls(frozen_key: bool) -> tuple[int, list[torch.Tensor]]:
        q, k, v = _qkv()
        if frozen_key:
            k = k.detach()  # a frozen key projection under LoRA on query and value
        torch.manual_seed(5)
        out, _ = attention(module, q, k, v, None, dropout=0.1)
        calls = []
        real = torch.matmul
        with monkeypatch.context() as m:
            m.setattr(torch, "matmul", lambda *a, **kw: calls.append(1) or real(*a, **kw))
            grads = torch.autograd.grad(out.sum(), (q, v) if frozen_key else (q, k, v))
        return len(calls), list(grads)

    all_calls, (dq_all, _, dv_all) = backward_matmuls(False)
    frozen_calls, (dq, dv) = backward_matmuls(True)
    n_blocks = len(blocks(2, 3, 7, 7, 4))
    # Per block: dV, dS and dQ always; dK only when the key wants a gradient.
    assert (all_calls, frozen_calls) == (4 * n_blocks, 3 * n_blocks)
    assert torch.equal(dq, dq_all) and torch.equal(dv, dv_all)  # same seed, same mask: same gradients
    assert dq.abs().sum() > 0 and dv.abs().sum() > 0


def test_evaluation_and_zero_dropout_go_to_sdpa_unchanged() -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from peftbench.perf.cpu_ops import attention

    q, k, v = _qkv()
    for training, p in ((False, 0.1), (True, 0.0)):
        module = SimpleNamespace(training=training, is_causal=False)
        out, _ = attention(module, q, k, v, None, dropout=p if training else 0.0)
        ref, _ = sdpa_attention_forward(module, q, k, v, None, dropout=0.0)
        assert torch.equal(out, ref)


def test_bf16_attention_stays_close_to_fp32() -> None:
    """Logits rounded to bf16 (as eager bf16 attention): small error, far below a wrong mask's."""
    from peftbench.perf.cpu_ops import attention, drop_mask

    q, k, v = _qkv(q=64, d=32)
    module = SimpleNamespace(training=True, is_causal=False)
    torch.manual_seed(2)
    out, _ = attention(module, *(t.detach().bfloat16() for t in (q, k, v)), None, dropout=0.1)
    torch.manual_seed(2)
    ref = _reference(q, k, v, torch.ones(64, 64, dtype=torch.bool), drop_mask((2, 3, 64, 64), 0.1), 0.1)
    err = (out.double() - ref).abs().mean().item()
    assert err < 0.02 * ref.abs().mean().item()


def _has_glibc() -> bool:
    from peftbench.perf.cpu_heap import _glibc

    return _glibc() is not None


def test_runs_record_what_was_swapped(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run

    rec = run(RunSpec.from_dict({**tiny_spec(tiny_bert, sentiment_files, "full"), "save": "merged"}),
              out_dir=tmp_path / "on")
    ops = rec["train"]["cpu_ops"]
    # tiny BERT: embeddings + 3 per layer (attention probs, attention output, FFN output) × 2 layers
    # + classifier = 8 dropout modules; one config.
    assert ops == {"enabled": True, "dropout_modules": 8, "attention_configs": 1, "attention": "peftbench_cpu",
                   "mask_levels": 65536}
    assert rec["train"]["attn_implementation"] == "peftbench_cpu"
    if _has_glibc():
        assert rec["train"]["cpu_heap"] == {"retained": True, "mmap_threshold_bytes": 1 << 30,
                                            "trim_threshold_bytes": 2**31 - 1, "restored": True}
    else:
        assert rec["train"]["cpu_heap"]["retained"] is False and "glibc" in rec["train"]["cpu_heap"]["reason"]
    saved = [p for p in (tmp_path / "on").rglob("config.json")]
    assert saved and all("peftbench_cpu" not in p.read_text() for p in saved)
    off = run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora", cpu_ops=False)), out_dir=tmp_path / "off")
    assert off["train"]["cpu_ops"]["enabled"] is False
    assert off["train"]["attn_implementation"] == "sdpa"
    assert off["train"]["cpu_heap"] == {"retained": False, "reason": "train.cpu_ops is false"}
    assert off["train"]["cpu_ops"] == {"enabled": False, "reason": "train.cpu_ops is false"}
    # The sections reach the record file as returned (what reports read): both runs, on disk.
    for out, rec in (("on", ops), ("off", off["train"]["cpu_ops"])):
        (saved_record,) = (tmp_path / out).glob("*/result.json")
        assert json.loads(saved_record.read_text())["train"]["cpu_ops"] == rec


def test_causal_lm_with_attention_dropout_trains(tmp_path: Path) -> None:
    from peftbench.models.tiny import tiny_model_path

    gpt2 = tiny_model_path("gpt2")
    config = json.loads((gpt2 / "config.json").read_text())
    assert config.get("attn_pdrop", 0) > 0  # the swapped path is exercised
    rows = [{"instruction": f"say {w}", "response": f"{w} {w}"} for w in ("red", "blue", "green", "gold") * 8]
    data = tmp_path / "inst.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run

    rec = run(RunSpec.from_dict({
        "task": "instruction", "model": {"name_or_path": str(gpt2), "dtype": "float32"},
        "data": {"train": str(data), "eval": str(data), "max_length": 32},
        "method": {"name": "lora"}, "train": {"epochs": 2, "batch_size": 8, "lr": 5e-3, "log_every": 1}}),
        out_dir=tmp_path / "runs")
    assert rec["status"] == "success" and rec["train"]["cpu_ops"]["attention"] == "peftbench_cpu"
    curve = [p["loss"] for p in rec["train"]["loss_curve"]]
    assert curve[-1] < curve[0]
