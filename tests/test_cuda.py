"""The CUDA paths, on small random models: the device choice, the bf16 policy, training memory counted by
kind against the allocator's peak, packed batches and SDPA's fused kernels.

Marked `cuda` and skipped without a CUDA GPU; `bench/gpu_suite.sh` runs them on one (`pytest -m cuda`,
docs/gpu.md). The memory test records its figures as JUnit properties (`record_property`), so that the
suite's results file states them whatever the outcome.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from conftest import tiny_spec  # noqa: E402
from peftbench.config.spec import RunSpec  # noqa: E402
from peftbench.core.runner import run  # noqa: E402

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU (torch.cuda.is_available() is False); docs/gpu.md runs these on one"),
]

MEMORY_TOLERANCE = 0.10  # the count by kind is within 10 % of torch.cuda.max_memory_allocated


def cuda_run(model: Path, files: tuple[Path, Path], method: str, out: Path, **train: Any) -> dict[str, Any]:
    spec = tiny_spec(model, files, method, device="cuda", **{"max_steps": 3, **train})
    spec["model"]["dtype"] = "auto"
    spec["save"] = "none"
    return run(RunSpec.from_dict(spec), out, progress=False, force=True)


def test_auto_picks_cuda_and_bf16_where_the_gpu_has_it() -> None:
    from peftbench.runtime.device import pick_device, resolve_dtype

    assert pick_device("auto") == "cuda"
    assert resolve_dtype("auto", "cuda") == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    assert resolve_dtype("float32", "cuda") == "float32"


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_run_on_cuda_follows_the_bf16_policy(method: str, tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bf16")
    record = cuda_run(tiny_bert, sentiment_files, method, tmp_path)
    assert record["environment"]["cuda"] is True
    assert record["environment"]["gpu"] == torch.cuda.get_device_name(0)
    assert record["precision"]["compute_dtype"] == "bfloat16" and record["precision"]["autocast"] is True
    by_dtype = record["model"]["footprint"]["parameters_by_dtype"]
    if method == "full":  # fp32 master weights under autocast
        assert set(by_dtype) == {"float32"}
        assert record["precision"]["frozen_base_dtype"] == "float32"
    else:  # the frozen base held in bf16 once, the adapters and head trained in fp32
        assert by_dtype["bfloat16"] > by_dtype["float32"] > 0
        assert record["precision"]["frozen_base_dtype"] == "bfloat16"
    train = record["train"]
    assert train["memory"]["kind"] == "cuda_allocated"
    assert 0 < train["memory"]["peak_bytes"] <= train["memory"]["peak_reserved_bytes"]
    assert train["attn_implementation"] == "sdpa"
    assert train["peak_source"].startswith(("table:", "unknown GPU"))
    assert math.isfinite(record["train"]["loss_curve"][-1]["loss"])


def test_a_packed_run_on_cuda_computes_fewer_tokens(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    padded = cuda_run(tiny_bert, sentiment_files, "lora", tmp_path / "padded")
    packed = cuda_run(tiny_bert, sentiment_files, "lora", tmp_path / "packed", packing=True)
    assert packed["spec"]["train"]["packing"] is True
    assert packed["train"]["padding_efficiency"] > padded["train"]["padding_efficiency"]
    assert math.isfinite(packed["train"]["loss_curve"][-1]["loss"])


# ---- memory by kind against the allocator ---------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_base_shaped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised BERT of BERT-base's width (768, 6 layers) with the tiny models' tokenizer:
    large enough that the allocator's fixed costs (cuBLAS workspace, the CUDA context's first blocks) are
    small next to the tensors counted."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from peftbench.models.tiny import tiny_model_path

    tok = AutoTokenizer.from_pretrained(str(tiny_model_path("bert")))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=768, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512)
    target = tmp_path_factory.mktemp("bert-768")
    BertForSequenceClassification(config).save_pretrained(str(target), safe_serialization=True)
    tok.save_pretrained(str(target))
    return target


@pytest.fixture(scope="module")
def long_texts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Sentiment examples of about 250 tokens each (a dozen generated sentences joined), so that batches
    hold real activations, not mostly weights."""
    from peftbench.data.synthetic import generate, write_csv

    train, eval_ = generate(12 * 96, 12 * 32, seed=5)

    def joined(rows: list[tuple[str, int]]) -> list[tuple[str, int]]:
        return [(" ".join(t for t, _ in rows[i:i + 12]), rows[i][1]) for i in range(0, len(rows), 12)]

    root = tmp_path_factory.mktemp("long-texts")
    return write_csv(joined(train), root / "train.csv"), write_csv(joined(eval_), root / "eval.csv")


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_memory_by_kind_is_within_ten_percent_of_the_allocator_peak(
        method: str, bert_base_shaped: Path, long_texts: tuple[Path, Path], tmp_path: Path,
        record_property: Any) -> None:
    if method == "qlora":
        pytest.importorskip("bitsandbytes", reason="qlora needs bitsandbytes")
    spec = tiny_spec(bert_base_shaped, long_texts, method, device="cuda", max_steps=4, batch_size=32)
    spec["model"]["dtype"] = "auto"
    spec["data"]["max_length"] = 256
    spec["save"] = "none"
    record = run(RunSpec.from_dict(spec), tmp_path, progress=False, force=True)
    counted = record["train"]["memory_by_kind"]["peak_bytes"]
    allocated = record["train"]["memory"]["peak_bytes"]
    ratio = counted / allocated
    for key, value in (("method", method), ("by_kind_peak_bytes", counted), ("max_memory_allocated_bytes", allocated),
                       ("max_memory_reserved_bytes", record["train"]["memory"]["peak_reserved_bytes"]),
                       ("by_kind_over_allocated", round(ratio, 4)), ("gpu", record["environment"]["gpu"])):
        record_property(key, value)
    assert abs(ratio - 1) <= MEMORY_TOLERANCE, (
        f"{method}: counted by kind {counted / 2**20:.1f} MiB, allocator peak {allocated / 2**20:.1f} MiB "
        f"(ratio {ratio:.3f}); at peak: {record['train']['memory_by_kind']['at_peak']}")


# ---- packed batches and SDPA on the GPU -----------------------------------------------------------------


def classifier(family: str) -> Any:
    from transformers import AutoModelForSequenceClassification, BertConfig, LlamaConfig

    common = {"vocab_size": 120, "num_labels": 3, "attn_implementation": "sdpa", "initializer_range": 0.3}
    config = (BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, **common)
              if family == "bert" else
              LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=128, max_position_embeddings=64, pad_token_id=0, **common))
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config).cuda().eval()


def examples() -> Any:
    from peftbench.data.batching import Encoded

    g = torch.Generator().manual_seed(3)
    lengths = [9, 3, 17, 5, 12, 4, 2, 16]
    ids = [[5, *torch.randint(5, 120, (n - 1,), generator=g).tolist()] for n in lengths]
    return Encoded(input_ids=ids, labels=[i % 3 for i in range(len(lengths))], extra={})


def on_cuda(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v.cuda() if hasattr(v, "cuda") else v for k, v in batch.items()}


def loss_and_grads(model: Any, packed: bool) -> tuple[Any, list[Any]]:
    from peftbench.data.batching import collate
    from peftbench.perf.packing import collate_packed_classification, packed_classification_loss

    idx = [6, 0, 2, 5, 1, 3, 7]
    model.zero_grad()
    if packed:
        loss = packed_classification_loss(model, on_cuda(collate_packed_classification(examples(), idx, 0)))
    else:
        loss = model(**on_cuda(collate(examples(), idx, 0))).loss
    loss.backward()
    return loss.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_packed_batches_give_the_padded_loss_and_gradients_on_cuda(family: str) -> None:
    model = classifier(family)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 GEMMs, so both sides agree to fp32 rounding
    try:
        ref, ref_grads = loss_and_grads(model, packed=False)
        got, grads = loss_and_grads(model, packed=True)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_bf16_attention_runs_on_a_fused_sdpa_kernel(family: str, packed: bool) -> None:
    """With the math fallback ruled out, forward and backward still run: the padded batch's mask and the
    packed batch's block-diagonal mask reach a fused kernel (flash, memory-efficient or cuDNN)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bf16")
    model = classifier(family)
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    with sdpa_kernel(fused), torch.autocast("cuda", dtype=torch.bfloat16):
        loss, grads = loss_and_grads(model, packed=packed)
    assert math.isfinite(loss.item())
    assert all(torch.isfinite(g).all() for g in grads)
