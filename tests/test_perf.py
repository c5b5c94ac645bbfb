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
    from peftbench.perf.peak import gpu_peak_tflops, peak_flops

    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.0
    assert gpu_peak_tflops("NVIDIA H100 PCIe", "bfloat16") == 756.0
    assert gpu_peak_tflops("NVIDIA A100-SXM4-40GB", "float32") == 19.5
    assert gpu_peak_tflops("Some Future GPU", "bfloat16") is None
    assert peak_flops("cuda", "bfloat16", override_tflops=123.0) == (123.0e12, "spec")


def test_cpu_probe_is_cached_per_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peftbench.perf import peak

    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(peak, "gemm_probe", lambda dtype: calls.append(dtype) or 5e10)
    monkeypatch.setattr(peak, "busy_reason", lambda load, threads: None)  # a stand-in probe uses no CPU
    assert peak.cpu_peak_flops("float32") == (5e10, "gemm_probe")
    assert peak.cpu_peak_flops("float32") == (5e10, "gemm_probe_cached")
    assert calls == ["float32"]
    peak.cpu_peak_flops("bfloat16")  # another dtype is another entry
    assert calls == ["float32", "bfloat16"]
    cached = json.loads((tmp_path / "gemm_peak.json").read_text())
    assert len(cached) == 2 and all(v["flops"] == 5e10 for v in cached.values())
    # Each entry says when, at how many threads and under what load it was probed.
    entry = next(iter(cached.values()))
    assert entry["threads"] == torch.get_num_threads() and entry["measured"] and entry["busy"] is None
    assert {"load_1min", "other_busy_cores", "steal_share", "cpu_share"} <= set(entry["load"])


def test_a_probe_on_a_busy_machine_is_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peftbench.perf import peak

    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(peak, "gemm_probe", lambda dtype: 6.5e9)
    monkeypatch.setattr(peak, "busy_reason", lambda load, threads: "2.0 of 2 cores busy with other work")
    entry = peak.cpu_peak("float32")
    assert entry["source"] == "gemm_probe_busy" and entry["cached"] is False
    assert entry["busy"] == "2.0 of 2 cores busy with other work"
    assert peak.read_cache() == {}  # the next run probes again
    # A stale entry proven too low is removed even when the busy re-probe cannot take its place.
    key = entry["key"]
    peak.write_cache({key: {"flops": 1e6, "measured": "then"}})
    used, refresh = peak.refreshed_peak(peak.cpu_peak("float32"), achieved=2e6, dtype="float32")
    assert refresh["cached"] is False and "stale entry removed" in refresh["note"]
    assert used["flops"] == 6.5e9 and used["source"] == "gemm_probe_busy"
    assert peak.read_cache() == {}


def test_mfu_above_one_is_invalid_with_its_reason() -> None:
    from peftbench.perf.peak import mfu_fields

    assert mfu_fields(1e9, 1e9, "spec") == {"mfu": 1.0, "mfu_valid": True, "mfu_invalid_reason": None}
    over = mfu_fields(13.6e9, 6.5e9, "gemm_probe_cached")
    assert over["mfu"] is None and over["mfu_valid"] is False
    assert "2.09× the peak" in over["mfu_invalid_reason"] and "gemm_probe_cached" in over["mfu_invalid_reason"]
    assert mfu_fields(1e9, None, "unknown GPU 'X'")["mfu_invalid_reason"] == "no peak: unknown GPU 'X'"
    assert mfu_fields(None, 1e9, "spec")["mfu_valid"] is False


def test_a_cached_peak_below_what_the_run_achieved_is_reprobed(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from peftbench.perf import peak

    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(peak, "busy_reason", lambda load, threads: None)  # judged quiet: the refresh is cached
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        key = peak.machine_key("float32", 1)
        peak.write_cache({key: {"flops": 1e6, "measured": "then"}})  # an old entry, without load fields
        stale = peak.cpu_peak("float32")
        assert stale["source"] == "gemm_probe_cached"
        used, refresh = peak.refreshed_peak(stale, achieved=2e6, dtype="float32")
    finally:
        torch.set_num_threads(before)
    assert "above the cached peak" in refresh["reason"]
    assert refresh["before_tflops"] == 1e-6 and refresh["after_tflops"] > 1e-3  # a real GEMM: far above 1 MFLOP/s
    assert used["flops"] == pytest.approx(refresh["after_tflops"] * 1e12) and used["source"] == "gemm_probe"
    entry = peak.read_cache()[key]
    assert entry["flops"] == used["flops"] and entry["replaces"]["flops"] == 1e6
    assert "1e-06 TFLOP/s" in refresh["note"] and "cache replaced" in refresh["note"]


def test_gemm_probe_counts_2mkn_flops_and_keeps_the_best_rep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scripted clock instead of a real one: reps of 4, 2 and 3 ms, then past the deadline. The probe
    reports 2·m·k·n FLOPs over the fastest rep, for a non-square shape (m, k, n all different)."""
    from types import SimpleNamespace

    from peftbench.perf import peak

    # deadline base, then per rep: loop check, start, end; then the check that ends the loop
    ticks = iter([0.0, 0.0, 0.0, 0.004, 0.004, 0.004, 0.006, 0.006, 0.006, 0.009, 1.0])
    monkeypatch.setattr(peak, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    flops = peak.gemm_probe("float32", seconds=0.5, shape=(96, 64, 32))
    assert flops == pytest.approx(2 * 96 * 64 * 32 / 0.002)
    assert next(ticks, None) is None  # the loop stopped at the deadline, not before
    assert peak.machine_key("float32", 1) != peak.machine_key("float32", 2) != peak.machine_key("bfloat16", 2)


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
    monkeypatch.setattr(perf, "peak_entry", lambda *args: {"flops": 1e11, "source": "gemm_probe", "threads": 2})
    f = perf.perf_fields(model, outcome, device="cpu", compute_dtype="float32", peak_tflops=None,
                         threads=2, compiled=False)
    assert f["achieved_tflops"] == pytest.approx(f["flops"] / 2.0 / 1e12)
    assert f["mfu"] == pytest.approx(f["flops"] / 2.0 / 1e11) and f["mfu_valid"] is True
    assert f["peak_source"] == "gemm_probe" and f["attn_implementation"] == "sdpa"
    assert f["peak_probe"]["threads"] == 2 and f["peak_refresh"] is None
    assert f["load"] is None  # an outcome without a load (older callers)


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
    assert t["mfu_valid"] is True and t["mfu_invalid_reason"] is None
    assert t["peak_probe"] is None and t["peak_refresh"] is None  # a spec peak is neither probed nor refreshed
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


def test_poisoned_peak_cache_is_replaced_by_a_real_run(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached peak a tenth of the real one (probed under load): the run notices, re-probes, replaces
    the entry and records a valid MFU with the before and after figures."""
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run
    from peftbench.perf import peak

    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(peak, "busy_reason", lambda load, threads: None)  # shared machine: judge it quiet
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        real = peak.cpu_peak("float32")  # the run's key: float32 at one thread
    finally:
        torch.set_num_threads(before)
    poisoned = real["flops"] / 10
    cache = peak.read_cache()
    cache[real["key"]] = {**cache[real["key"]], "flops": poisoned}
    peak.write_cache(cache)
    said: list[str] = []
    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora", max_steps=4, num_threads=1))
    t = run(spec, tmp_path / "runs", progress=False, log=said.append)["train"]
    refresh = t["peak_refresh"]
    assert refresh["before_tflops"] == pytest.approx(poisoned / 1e12)
    assert refresh["after_tflops"] > 5 * refresh["before_tflops"] and refresh["cached"] is True
    assert "check GEMM" in refresh["reason"]  # the tiny run achieves far less than even the poisoned peak
    assert t["peak_tflops"] == refresh["after_tflops"] and t["peak_source"] == "gemm_probe"
    assert t["mfu_valid"] is True and 0 < t["mfu"] <= 1
    assert peak.read_cache()[real["key"]]["flops"] == pytest.approx(refresh["after_tflops"] * 1e12)
    assert any("peak refreshed" in line for line in said)


def test_run_with_a_peak_below_its_throughput_records_no_mfu(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run

    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora", max_steps=2, peak_tflops=1e-9))
    t = run(spec, tmp_path, progress=False, log=lambda m: None)["train"]
    assert t["achieved_tflops"] > 1e-9
    assert t["mfu"] is None and t["mfu_valid"] is False
    assert "× the peak" in t["mfu_invalid_reason"] and "(spec)" in t["mfu_invalid_reason"]
