"""Pre-flight checks: good configs pass with the implied parameter counts, broken ones stop the run."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import tiny_spec
from peftbench.errors import PeftbenchError
from peftbench.methods import METHODS, prepare_lora
from peftbench.preflight import PreflightError
from peftbench.runner import run
from peftbench.spec import RunSpec

TINY_BERT_LINEARS = 2 * 6 + 1  # 2 layers x (query, key, value, attention out, intermediate, output) + pooler


def _run(tiny_bert, files, tmp_path, method="lora", **params):
    d = tiny_spec(tiny_bert, files, method, max_steps=1)
    d["method"].update(params)
    return run(RunSpec.from_dict(d), tmp_path, progress=False, log=lambda s: None)


@pytest.mark.parametrize("method", ["lora", "full", "partial", "ia3", "dora"])
def test_good_configs_pass(method, tiny_bert, sentiment_files, tmp_path):
    rec = _run(tiny_bert, sentiment_files, tmp_path, method)
    pf = rec["preflight"]
    assert pf["passed"] is True
    tp = pf["checks"]["trainable_params"]
    assert tp["actual"] == tp["expected"] == rec["params"]["trainable"]
    assert pf["checks"]["adapter_active"]["changed"] > pf["checks"]["adapter_active"]["threshold"]


def test_lora_count_follows_the_formula(tiny_bert, sentiment_files, tmp_path):
    rec = _run(tiny_bert, sentiment_files, tmp_path, "lora", r=4, target_modules=["query", "value"])
    tp = rec["preflight"]["checks"]["trainable_params"]
    hidden, labels = 32, 2
    adapter = 2 * 2 * 4 * (hidden + hidden)  # 2 layers x {query, value} x r*(in+out)
    assert tp["detail"]["adapter"] == adapter
    assert tp["expected"] - tp["detail"]["head"] == adapter
    assert tp["detail"]["head"] == hidden * labels + labels  # peft's trainable copy of the classifier


def test_target_pattern_matching_nothing_stops_the_run(tiny_bert, sentiment_files, tmp_path):
    with pytest.raises(PreflightError, match="target_modules 'no_such_module'") as err:
        _run(tiny_bert, sentiment_files, tmp_path, "lora", target_modules=["query", "no_such_module"])
    assert "\n" not in str(err.value)
    (rec_path,) = list(tmp_path.glob("*/result.json"))
    rec = json.loads(rec_path.read_text())
    assert rec["status"] == "failed"
    assert rec["preflight"]["checks"]["targets_matched"]["unmatched"] == ["target_modules 'no_such_module'"]
    assert "train" not in rec  # stopped before any training step


def test_all_patterns_missing_is_refused_before_training(tiny_bert, sentiment_files, tmp_path):
    with pytest.raises(PeftbenchError, match="matched nothing"):
        _run(tiny_bert, sentiment_files, tmp_path, "lora", target_modules=["no_such_module"])


def test_zero_scaling_adapter_is_inactive(tiny_bert, sentiment_files, tmp_path):
    # r is set, but a pass-through lora_alpha=0 makes the adapter's contribution (and its gradient) zero.
    with pytest.raises(PreflightError, match="did not change the output"):
        _run(tiny_bert, sentiment_files, tmp_path, "lora", r=8, lora_alpha=0)
    rec = json.loads(next(tmp_path.glob("*/result.json")).read_text())
    assert rec["preflight"]["checks"]["adapter_active"]["changed"] == 0.0


def test_disabled_adapter_is_caught(tiny_bert, sentiment_files, tmp_path):
    def prepare_disabled(method, params, ctx):
        model = prepare_lora(method, params, ctx)
        for m in model.modules():  # adapter layers frozen and bypassed; the head still trains
            if hasattr(m, "lora_A"):
                m.enable_adapters(False)
        return model

    name = "lora-disabled-for-test"
    METHODS.add(name, dataclasses.replace(METHODS.get("lora"), name=name, prepare=prepare_disabled))
    try:
        with pytest.raises(PreflightError, match="trainable parameters but the lora-disabled-for-test config"):
            _run(tiny_bert, sentiment_files, tmp_path, name, r=8)
    finally:
        METHODS._entries.pop(name)


def test_probe_leaves_training_unchanged(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    import peftbench.preflight as pf

    first = _run(tiny_bert, sentiment_files, tmp_path / "a", "lora")
    monkeypatch.setattr(pf, "run_preflight", lambda *a, **k: None)
    second = _run(tiny_bert, sentiment_files, tmp_path / "b", "lora")
    assert first["metrics"]["eval_loss"] == second["metrics"]["eval_loss"]


def test_qlora_layers_are_4bit(tiny_bert, sentiment_files, tmp_path):
    pytest.importorskip("bitsandbytes")
    rec = _run(tiny_bert, sentiment_files, tmp_path, "qlora")
    q = rec["preflight"]["checks"]["quantized_4bit"]
    assert q["passed"] and q["linear_4bit"] == TINY_BERT_LINEARS and q["not_4bit"] == []


def test_probe_on_a_subset_of_a_large_model(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    import peftbench.preflight as pf

    monkeypatch.setattr(pf, "PROBE_MAX_ELEMENTS", 5000)
    active = _run(tiny_bert, sentiment_files, tmp_path, "full")["preflight"]["checks"]["adapter_active"]
    assert active["passed"] and active["probe_subset"] is True
