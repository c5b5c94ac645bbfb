"""End-to-end runs on a tiny random BERT: every seed method, records, determinism, failures."""

import json
from pathlib import Path

import pytest

from conftest import load_schema, tiny_spec
from peftbench.config.spec import RunSpec
from peftbench.core.runner import run
from peftbench.errors import NanLossError
from peftbench.records.io import load_records


def validate(record: dict) -> None:
    import jsonschema

    jsonschema.validate(record, load_schema("record"))


@pytest.mark.parametrize("method", ["full", "partial", "lora", "qlora", "ia3", "dora"])
def test_each_seed_method_trains_and_writes_a_valid_record(method, tiny_bert, sentiment_files, tmp_path):
    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, method))
    rec = run(spec, tmp_path, progress=False)
    validate(rec)
    on_disk = json.loads((tmp_path / rec["run_id"] / "result.json").read_text())
    assert on_disk["status"] == "success" and on_disk["run_id"] == rec["run_id"]
    p = rec["params"]
    assert 0 < p["trainable"] <= p["total"]
    if method == "full":
        assert p["trainable"] == p["total"]
    else:
        assert p["trainable"] < p["total"]
    assert rec["train"]["steps"] == 9  # 160 examples less the 16-row validation carve, batch 16, one epoch
    assert len(rec["predictions"]["pred"]) == 64
    cm = rec["metrics"]["confusion_matrix"]
    assert sum(map(sum, cm)) == 64
    assert abs(rec["metrics"]["accuracy"] - sum(cm[i][i] for i in range(len(cm))) / 64) < 1e-12
    assert rec["train"]["time_s"] > 0 and rec["eval"]["time_s"] > 0
    assert rec["train"]["optimizer"] == {"name": "AdamW", "fused": True}  # every trainable tensor is fp32 on the CPU
    assert rec["artifact"]["size_bytes"] == sum(
        f.stat().st_size for f in (tmp_path / rec["run_id"] / rec["artifact"]["path"]).rglob("*") if f.is_file())
    if method == "qlora":
        q = rec["quantization"]
        assert q["bits"] == 4 and q["quant_type"] == "nf4" and q["layers_4bit"] > 0
        assert q["head_quantized"] is False


def test_adapter_methods_save_far_less_than_full(tiny_bert, sentiment_files, tmp_path):
    sizes = {}
    for m in ("full", "lora"):
        rec = run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, m)), tmp_path, progress=False)
        sizes[m] = rec["artifact"]["size_bytes"]
    assert sizes["lora"] * 5 < sizes["full"]


def test_same_seed_same_metrics_and_different_seed_differs(tiny_bert, sentiment_files, tmp_path):
    a = run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora")), tmp_path / "a", progress=False)
    b = run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora")), tmp_path / "b", progress=False)
    assert a["metrics"]["eval_loss"] == b["metrics"]["eval_loss"]
    assert a["predictions"] == b["predictions"]
    assert [x["loss"] for x in a["train"]["loss_curve"]] == [x["loss"] for x in b["train"]["loss_curve"]]
    c = run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora", seed=7)), tmp_path / "c",
            progress=False)
    assert c["metrics"]["eval_loss"] != a["metrics"]["eval_loss"]


def test_existing_success_is_reused_not_rerun(tiny_bert, sentiment_files, tmp_path):
    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "ia3"))
    first = run(spec, tmp_path, progress=False)
    path = tmp_path / first["run_id"] / "result.json"
    before = path.read_bytes()
    again = run(spec, tmp_path, progress=False)
    assert again["timestamps"] == first["timestamps"] and path.read_bytes() == before


def test_nan_loss_stops_early_with_a_failed_record(tiny_bert, sentiment_files, tmp_path):
    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "full", lr=1e6, epochs=3))
    with pytest.raises(NanLossError):
        run(spec, tmp_path, progress=False)
    (rec,) = load_records(tmp_path)
    validate(rec)
    assert rec["status"] == "failed" and rec["error"]["type"] == "nan_loss"
    assert "step" in rec["error"]["message"]


def test_failed_rerun_never_replaces_a_success(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora"))
    ok = run(spec, tmp_path, progress=False)
    path = tmp_path / ok["run_id"] / "result.json"
    before = path.read_bytes()

    import peftbench.core.runner as runner_mod

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner_mod, "save_artifact", boom)
    with pytest.raises(Exception, match="No space left"):
        run(spec, tmp_path, progress=False, force=True)
    assert path.read_bytes() == before
    failed = list((tmp_path / ok["run_id"]).glob("failed-*.json"))
    assert len(failed) == 1 and json.loads(failed[0].read_text())["status"] == "failed"


def test_record_environment_has_versions_not_environment_variables(tiny_bert, sentiment_files, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_marker_123")
    rec = run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora")), tmp_path, progress=False)
    assert rec["environment"]["packages"]["torch"]
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert b"hf_secret_marker_123" not in f.read_bytes(), f


def test_every_top_level_record_key_is_documented(tiny_bert, sentiment_files, tmp_path):
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "records.md").read_text()
    first_cells = re.findall(r"^\| (.+?) \|", doc, flags=re.M)
    documented = {name for cell in first_cells for name in re.findall(r"`([a-z_]+)`", cell)}
    rec = run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "qlora")), tmp_path, progress=False)
    missing = set(rec) - documented
    assert not missing, f"undocumented record keys: {sorted(missing)}"
    assert not set(rec["train"]) - documented, sorted(set(rec["train"]) - documented)
