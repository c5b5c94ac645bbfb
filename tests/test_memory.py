"""Training memory by kind (perf/memory.py) and the model footprint: what the records state and what
reports compare. The runs train a small GPT-2 (hidden 128) built here, wide enough that each 4-bit
layer's fixed quantization state is small next to its packed weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import tiny_spec
from peftbench.config.spec import RunSpec
from peftbench.core.runner import run

FP32 = 4  # bytes per fp32 value


@pytest.fixture(scope="module")
def small_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised GPT-2 with hidden size 128 and two layers, with the tiny models' tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from peftbench.models.tiny import tiny_model_path

    tiny = tiny_model_path("gpt2")
    tok = AutoTokenizer.from_pretrained(str(tiny))
    config = GPT2Config(vocab_size=len(tok), n_embd=128, n_layer=2, n_head=4, n_inner=512, n_positions=128,
                        bos_token_id=101, eos_token_id=102, pad_token_id=0)
    torch.manual_seed(0)
    target = tmp_path_factory.mktemp("gpt2-128")
    GPT2LMHeadModel(config).save_pretrained(str(target), safe_serialization=True)
    tok.save_pretrained(str(target))
    return target


def train_run(model: Path, files: tuple[Path, Path], method: str, out: Path) -> dict[str, Any]:
    spec = tiny_spec(model, files, method, max_steps=3)
    spec["save"] = "none"
    return run(RunSpec.from_dict(spec), out, progress=False, force=True)


@pytest.fixture(scope="module")
def runs(small_gpt2: Path, sentiment_files: tuple[Path, Path],
         tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("memory-runs")
    return {m: train_run(small_gpt2, sentiment_files, m, out) for m in ("full", "lora", "qlora")}


def by_kind(record: dict[str, Any]) -> dict[str, Any]:
    return record["train"]["memory_by_kind"]


def test_full_fine_tuning_exceeds_lora_by_gradients_and_adamw_state(runs: dict[str, dict[str, Any]]) -> None:
    full, lora = by_kind(runs["full"]), by_kind(runs["lora"])
    weights = FP32 * runs["full"]["params"]["trainable"]  # every weight trains, in fp32
    assert full["gradients_peak_bytes"] == weights
    assert 2 * weights <= full["optimizer_state_bytes"] <= 2.01 * weights  # two moments (+ step counts)
    # LoRA holds about the same weights and keeps the same kind of activations; full FT adds a gradient and
    # AdamW's two moments for every weight: three fp32 copies of the model.
    margin = full["peak_bytes"] - lora["peak_bytes"]
    assert 0.8 * 3 * weights <= margin <= 1.05 * 3 * weights, (margin, weights)
    assert lora["gradients_peak_bytes"] < 0.05 * weights
    assert lora["activations_peak_bytes"] > 0


def test_qlora_holds_its_quantized_layers_in_about_an_eighth_of_fp32(runs: dict[str, dict[str, Any]]) -> None:
    lora, qlora = runs["lora"]["model"]["footprint"], runs["qlora"]["model"]["footprint"]
    four_bit = qlora["parameters_by_dtype"]["4bit"]
    # The fp32 bytes of the layers QLoRA quantized: what LoRA holds in fp32 that QLoRA does not.
    as_fp32 = lora["parameters_by_dtype"]["float32"] - qlora["parameters_by_dtype"]["float32"]
    assert as_fp32 > 0 and four_bit == qlora["four_bit_bytes"]
    # 4 bits a weight plus block scales: 1/8 of fp32 and a little more (a quarter to a third of a 16-bit base).
    assert 1 / 8 < four_bit / as_fp32 < 1 / 6, four_bit / as_fp32
    assert qlora["bytes"] == lora["bytes"] - as_fp32 + four_bit
    assert by_kind(runs["qlora"])["parameters_bytes"] == qlora["bytes"] - qlora["buffers_bytes"]
    assert by_kind(runs["qlora"])["peak_bytes"] < by_kind(runs["lora"])["peak_bytes"]


def test_model_footprint_is_the_weights_in_memory_not_the_saved_artifact(runs: dict[str, dict[str, Any]]) -> None:
    full, lora = runs["full"], runs["lora"]
    assert full["model"]["footprint"]["bytes"] >= FP32 * full["params"]["total"]
    assert lora["model"]["footprint"]["bytes"] >= FP32 * full["params"]["total"]  # the frozen base is in memory
    assert lora["artifact"]["size_bytes"] < lora["model"]["footprint"]["bytes"] / 10  # the adapter is saved
    assert lora["model"]["footprint"]["trainable_bytes"] == FP32 * lora["params"]["trainable"]


def test_the_count_by_kind_repeats_between_identical_runs(small_gpt2: Path, sentiment_files: tuple[Path, Path],
                                                         runs: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    again = train_run(small_gpt2, sentiment_files, "lora", tmp_path)
    first, second = by_kind(runs["lora"]), by_kind(again)
    assert second["peak_bytes"] == pytest.approx(first["peak_bytes"], rel=0.02)
    assert second["at_peak"] == first["at_peak"]


def test_under_gradient_accumulation_the_peak_holds_gradients_state_and_activations_at_once(
        tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    spec = tiny_spec(tiny_bert, sentiment_files, "full", grad_accum=2, max_steps=3)
    spec["save"] = "none"
    record = run(RunSpec.from_dict(spec), tmp_path, progress=False)
    at_peak, weights = by_kind(record)["at_peak"], FP32 * record["params"]["trainable"]
    # a later micro-step runs forward while the earlier one's gradients and AdamW's moments are held
    assert at_peak["gradients"] == weights and at_peak["optimizer_state"] >= 2 * weights
    assert at_peak["activations"] > 0


def test_saved_activations_count_inputs_never_parameters_and_are_released() -> None:
    import torch

    from peftbench.perf.memory import MemoryByKind

    layer = torch.nn.Linear(8, 3)
    tracker = MemoryByKind(layer, every_step=True)
    x = torch.randn(5, 8)
    with tracker.measured(tuple(x.shape)):
        out = layer(x).sum()
        assert tracker.activations == x.numel() * FP32  # the input, saved for the weight's gradient
        out.backward()
    assert tracker.activations == 0 and not tracker.saved  # backward released it
    assert tracker.result()["activations_peak_bytes"] == x.numel() * FP32
    assert tracker.result()["gradients_peak_bytes"] == sum(p.numel() * FP32 for p in layer.parameters())
    with tracker.measured(tuple(x.shape)):
        out = layer(x).sum()
    del out  # a graph dropped without backward releases what it saved too
    assert tracker.activations == 0


def test_only_micro_steps_with_a_new_batch_shape_are_counted() -> None:
    import torch

    from peftbench.perf.memory import MemoryByKind

    layer = torch.nn.Linear(8, 3)
    optimizer = torch.optim.AdamW(layer.parameters())
    tracker = MemoryByKind(layer)
    tracker.attach(optimizer)

    def micro_step(rows: int, step: bool = True) -> None:
        x = torch.randn(rows, 8)
        with tracker.measured(tuple(x.shape)):
            layer(x).sum().backward()
            if step:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

    for rows in (4, 4, 2, 6):
        micro_step(rows)
    # the first 4-row batch, the second (the optimizer state exists from then on) and the 6-row one
    assert tracker.result()["micro_steps_counted"] == 3
    assert tracker.result()["activations_peak_bytes"] == 6 * 8 * FP32
    micro_step(6, step=False)  # gradients held after it: the next 6-row micro-step is larger
    micro_step(6)
    result = tracker.result()
    assert (result["micro_steps"], result["micro_steps_counted"]) == (6, 4)
    grads = sum(p.numel() * FP32 for p in layer.parameters())
    assert result["at_peak"]["gradients"] == grads and result["at_peak"]["activations"] == 6 * 8 * FP32
    assert result["optimizer_state_bytes"] >= 2 * grads
    tracker.detach()


def test_records_validate_and_old_records_fall_back_to_the_device_figure(runs: dict[str, dict[str, Any]]) -> None:
    import copy

    import jsonschema

    from conftest import load_schema
    from peftbench.reports.analysis import analyze
    from peftbench.reports.configs import record_costs

    for record in runs.values():
        jsonschema.validate(record, load_schema("record"))
    new = record_costs(runs["lora"])
    assert new["peak_memory_bytes"] == by_kind(runs["lora"])["peak_bytes"] != runs["lora"]["train"]["peak_memory_bytes"]
    assert new["model_footprint_bytes"] == runs["lora"]["model"]["footprint"]["bytes"]
    old = {m: copy.deepcopy(r) for m, r in runs.items()}
    for record in old.values():  # as records were written before memory was counted by kind
        del record["train"]["memory_by_kind"], record["model"]["footprint"]
        jsonschema.validate(record, load_schema("record"))
    costs = record_costs(old["lora"])
    assert costs["peak_memory_bytes"] == old["lora"]["train"]["peak_memory_bytes"]
    assert costs["model_footprint_bytes"] is None
    cmp = {c["label"]: c for c in analyze(list(old.values())).comparisons["classification"]}
    assert cmp["qlora"]["footprint_saving"] is None
    assert cmp["qlora"]["memory_saving"] == pytest.approx(
        old["full"]["train"]["peak_memory_bytes"] / old["qlora"]["train"]["peak_memory_bytes"])


def test_gpt2_study_report_states_the_model_footprint_of_full_against_qlora(tmp_path: Path, shared_data: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPT-2 study's headline, full-precision base against 4-bit base, as the report states it."""
    from click.testing import CliRunner

    from peftbench.cli.app import cli
    from peftbench.records.fields import fmt_bytes
    from peftbench.records.io import load_records
    from peftbench.reports.analysis import analyze

    monkeypatch.setenv("PEFTBENCH_SHARED_DATA", str(shared_data))
    example = Path(__file__).resolve().parents[1] / "examples" / "studies" / "gpt2_sst2.yaml"
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["run", "--config", str(example), "--model-override", "tiny", "--out", str(out),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    records = {r["method"]: r for r in load_records(out)}
    full, qlora = (records[m]["model"]["footprint"] for m in ("full", "qlora"))
    assert full["four_bit_bytes"] == 0 < qlora["four_bit_bytes"] and qlora["bytes"] < full["bytes"]
    ratio = full["bytes"] / qlora["bytes"]
    cmp = {c["label"]: c for c in analyze(list(records.values())).comparisons["classification"]}
    assert cmp["qlora"]["footprint_saving"] == pytest.approx(ratio)
    result = CliRunner().invoke(cli, ["report", str(out), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report" / "report.md").read_text()
    assert "model mem" in text and "model mem saving" in text
    rows = {line.split(" | ")[2]: line for line in text.splitlines() if line.startswith("| ") and " | gpt2" in line}
    assert fmt_bytes(full["bytes"]) in rows["full (baseline)"] and fmt_bytes(qlora["bytes"]) in rows["qlora"]
    qlora_cmp = next(line for line in text.split("### Against the baseline")[1].splitlines() if line.startswith("| qlora |"))
    assert f"{ratio:.2f}×" in qlora_cmp
