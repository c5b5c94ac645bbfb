"""Saved adapters: reload + evaluate reproduces the recorded metrics; merging keeps the logits."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from conftest import tiny_spec
from peftbench.cli.app import cli
from peftbench.config.spec import RunSpec
from peftbench.core.artifacts import evaluate_run, load_trained, merge_run
from peftbench.core.runner import run

METHODS = ["lora", "dora", "ia3", "qlora"]


@pytest.fixture(scope="module")
def trained_runs(tiny_bert, sentiment_files, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("artifact-runs")
    runs = {}
    for method in METHODS:
        if method == "qlora":
            pytest.importorskip("bitsandbytes")
        spec = tiny_spec(tiny_bert, sentiment_files, method, max_steps=3, lr=1e-2)
        spec["data"].update(n_train=32, n_eval=24)
        record = run(RunSpec.from_dict(spec), out, progress=False, log=lambda _m: None)
        assert record["status"] == "success" and record["artifact"]["kind"] == "adapter"
        runs[method] = str(out / record["run_id"])
    return runs


@pytest.mark.parametrize("method", METHODS)
def test_eval_round_trip_matches_the_record(trained_runs, method) -> None:
    from peftbench.records.io import read_record

    run_dir = trained_runs[method]
    recorded = read_record(run_dir)
    metrics = evaluate_run(run_dir)
    assert metrics["n_eval"] == recorded["data"]["n_eval"] == 24
    for key in ("accuracy", "f1_macro", "eval_loss"):
        assert metrics[key] == pytest.approx(recorded["metrics"][key], abs=1e-5), key
    assert metrics["predictions"] == recorded["predictions"]


@pytest.mark.parametrize("method", METHODS)
def test_merged_model_gives_the_same_logits(trained_runs, method, tmp_path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    run_dir = trained_runs[method]
    out = merge_run(run_dir, tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    merged = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert getattr(merged.config, "quantization_config", None) is None  # standalone, plain weights
    trained = load_trained(run_dir)  # unmerged: base (4-bit for qlora) + adapter
    batch = trained.tokenizer(["a wonderful, moving film", "dull and far too long", "it was fine"],
                              padding=True, return_tensors="pt")
    with torch.inference_mode():
        unmerged_logits = trained.model(**batch).logits
        merged_logits = merged(**batch).logits
    tol = 1e-4 if method == "qlora" else 1e-5
    torch.testing.assert_close(merged_logits, unmerged_logits, atol=tol, rtol=0)
    # The merge really changed the adapted weights (the adapter is not a no-op).
    base = load_trained(run_dir, dequantize=True).model.get_base_model()
    name = "bert.encoder.layer.0.attention.self.value.weight"
    base_w = dict(base.named_parameters()).get(name)
    if base_w is None:  # peft wraps the adapted layer: its original weight sits under base_layer
        base_w = dict(base.named_parameters())[name.replace(".weight", ".base_layer.weight")]
    delta = (dict(merged.named_parameters())[name] - base_w.float()).abs().max().item()
    assert delta > 1e-4


def test_merge_refuses_runs_without_adapter(trained_runs, tiny_bert, sentiment_files, tmp_path) -> None:
    spec = tiny_spec(tiny_bert, sentiment_files, "full", max_steps=1)
    spec["data"].update(n_train=16, n_eval=16)
    record = run(RunSpec.from_dict(spec), tmp_path / "runs", progress=False, log=lambda _m: None)
    result = CliRunner().invoke(cli, ["merge", str(tmp_path / "runs" / record["run_id"]),
                                      "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "no adapter to merge" in result.output
    # The saved full model reloads and reproduces its metrics as well.
    metrics = evaluate_run(tmp_path / "runs" / record["run_id"])
    assert metrics["eval_loss"] == pytest.approx(record["metrics"]["eval_loss"], abs=1e-5)


def test_cli_eval_and_merge(trained_runs, sentiment_files, tmp_path) -> None:
    run_dir = trained_runs["lora"]
    result = CliRunner().invoke(cli, ["eval", run_dir, "--data-eval", str(sentiment_files[1])])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "n_eval" in result.output
    result = CliRunner().invoke(cli, ["merge", run_dir, "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "config.json").is_file()
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "holds no readable result.json" in result.output


@pytest.mark.parametrize("save", ["merged", "none"])
def test_save_modes(tiny_bert, sentiment_files, tmp_path, save) -> None:
    spec = tiny_spec(tiny_bert, sentiment_files, "lora", max_steps=2, lr=1e-2)
    spec["data"].update(n_train=16, n_eval=16)
    spec["save"] = save
    record = run(RunSpec.from_dict(spec), tmp_path, progress=False, log=lambda _m: None)
    run_dir = tmp_path / record["run_id"]
    if save == "merged":
        assert record["artifact"]["kind"] == "merged" and (run_dir / "merged" / "model.safetensors").is_file()
        metrics = evaluate_run(run_dir)
        assert metrics["eval_loss"] == pytest.approx(record["metrics"]["eval_loss"], abs=1e-5)
    else:
        assert record["artifact"]["saved"] is False and record["artifact"]["size_bytes"] > 0
        assert sorted(p.name for p in run_dir.iterdir()) == ["result.json"]
        result = CliRunner().invoke(cli, ["eval", str(run_dir)])
        assert result.exit_code == 2 and "save: none" in result.output
