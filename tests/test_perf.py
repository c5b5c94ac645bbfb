"""FLOP estimates, peak FLOP/s sources, thread settings and the measurement fields of a run record."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import tiny_spec

torch = pytest.importorskip("torch")


def _tiny_bert_classifier(path: Path) -> object:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=2)


def _block_linear_params(model: object) -> int:
    # Per-token linear weights in the transformer blocks (2 layers × q,k,v,o + ffn in/out).
    return sum(m.weight.numel() for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".layer." in n)


def test_full_finetuning_is_six_n_per_token_plus_attention(tiny_bert: Path) -> None:
    from peftbench.perf.flops import training_flops

    model = _tiny_bert_classifier(tiny_bert)
    n = _block_linear_params(model)
    est = training_flops(model, real_tokens=1000, sum_sq_lengths=5000)
    assert est["linear_flops"] == 6 * n * 1000
    assert est["attention_flops"] == 12 * 2 * 32 * 5000  # layers × hidden from the tiny config


def test_lora_counts_frozen_base_at_four_and_adapters_at_six(tiny_bert: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from peftbench.perf.flops import linear_flop_terms

    model = get_peft_model(_tiny_bert_classifier(tiny_bert),
                           LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS"))
    terms = {name: (w, f) for name, w, f in linear_flop_terms(model)}
    lora = {k: v for k, v in terms.items() if ".lora_" in k}
    assert lora and all(f == 6 * w for w, f in lora.values())
    # Layer 0's query sees only embeddings (no gradient below it): forward only.
    q0 = next(v for k, v in terms.items() if "layer.0.attention.self.query.base_layer" in k)
    assert q0[1] == 2 * q0[0]
    # Higher frozen weights pass gradients down to the adapters below them.
    q1 = next(v for k, v in terms.items() if "layer.1.attention.self.query.base_layer" in k)
    assert q1[1] == 4 * q1[0]
    assert not any("classifier" in k or "pooler" in k for k in terms)  # per-sequence heads left out


def test_gpu_table_and_override() -> None:
    from peftbench.perf.flops import gpu_peak_tflops, peak_flops

    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.0
    assert gpu_peak_tflops("NVIDIA H100 PCIe", "bfloat16") == 756.0
    assert gpu_peak_tflops("NVIDIA A100-SXM4-40GB", "float32") == 19.5
    assert gpu_peak_tflops("Some Future GPU", "bfloat16") is None
    assert peak_flops("cuda", "bfloat16", override_tflops=123.0) == (123.0e12, "spec")


def test_cpu_probe_is_cached_per_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peftbench.perf import flops as perf

    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(perf, "gemm_probe", lambda dtype: calls.append(dtype) or 5e10)
    assert perf.cpu_peak_flops("float32") == (5e10, "gemm_probe")
    assert perf.cpu_peak_flops("float32") == (5e10, "gemm_probe_cached")
    assert calls == ["float32"]
    perf.cpu_peak_flops("bfloat16")  # another dtype is another entry
    assert calls == ["float32", "bfloat16"]
    cached = json.loads((tmp_path / "gemm_peak.json").read_text())
    assert len(cached) == 2 and all(v["flops"] == 5e10 for v in cached.values())


def test_gemm_probe_measures_something() -> None:
    from peftbench.perf.flops import gemm_probe

    assert gemm_probe("float32", seconds=0.05, shape=(128, 128, 128)) > 1e6


def test_configure_threads_honours_request() -> None:
    from peftbench.perf.flops import configure_threads

    before = torch.get_num_threads()
    try:
        assert configure_threads(1, "cpu") == 1
        assert configure_threads(None, "cuda") == 1  # no request and not CPU: left alone
    finally:
        torch.set_num_threads(before)


def test_perf_fields_mfu_consistent(tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peftbench.perf import flops as perf

    model = _tiny_bert_classifier(tiny_bert)
    outcome = SimpleNamespace(real_tokens=2000, real_sq_tokens=40000, samples=100, train_time_s=2.0)
    monkeypatch.setattr(perf, "cpu_peak_flops", lambda dtype: (1e11, "gemm_probe"))
    f = perf.perf_fields(model, outcome, device="cpu", compute_dtype="float32", peak_tflops=None,
                         threads=2, compiled=False)
    assert f["achieved_tflops"] == pytest.approx(f["flops"] / 2.0 / 1e12)
    assert f["mfu"] == pytest.approx(f["flops"] / 2.0 / 1e11)
    assert f["peak_source"] == "gemm_probe" and f["attn_implementation"] == "sdpa"


def test_run_record_has_measurement_fields(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                           tmp_path: Path) -> None:
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run

    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora", peak_tflops=0.5, group_by_length=True))
    rec = run(spec, tmp_path, progress=False, log=lambda m: None)
    t = rec["train"]
    for key in ("samples_per_s", "tokens_per_s", "padding_efficiency", "overhead_share", "flops", "mfu"):
        assert isinstance(t[key], float) and t[key] > 0, key
    assert 0 < t["padding_efficiency"] <= 1 and 0 <= t["overhead_share"] < 1
    assert t["peak_tflops"] == 0.5 and t["peak_source"] == "spec"
    assert t["mfu"] == pytest.approx(t["flops"] / t["time_s"] / 0.5e12)
    assert t["threads"] >= 1 and t["compiled"] is False
    saved = json.loads((tmp_path / rec["run_id"] / "result.json").read_text())
    assert saved["train"]["flops"] == t["flops"]


@pytest.mark.slow
def test_compiled_run_trains(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    """torch.compile needs a C++ toolchain on the CPU and tens of seconds: slow."""
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run

    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora", compile=True, max_steps=3))
    rec = run(spec, tmp_path, progress=False, log=lambda m: None)
    assert rec["status"] == "success" and rec["train"]["compiled"] is True


def test_auto_threads_leave_busy_cores_alone() -> None:
    from peftbench.perf.flops import auto_threads

    assert auto_threads(8, 0.1) == 8
    assert auto_threads(8, 3.0) == 5
    assert auto_threads(2, 16.0) == 1
    assert auto_threads(2, 1.4) == 1 and auto_threads(2, 0.4) == 2


def test_pad_multiple_only_on_gpu() -> None:
    from peftbench.data.batching import collate, pad_multiple_kwargs

    assert pad_multiple_kwargs(collate, "cpu") == {"multiple": 1}
    assert pad_multiple_kwargs(collate, "cuda") == {}
    assert pad_multiple_kwargs(lambda enc, idx, pad_id: {}, "cpu") == {}  # collates without the knob still work
