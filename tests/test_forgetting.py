"""Forgetting: retention data evaluated before and after fine-tuning."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from conftest import tiny_spec
from peftbench.config.spec import RunSpec
from peftbench.core.runner import run
from peftbench.errors import DataError, SpecError


def _run(tiny_bert, files, out, retention, method="full", **train):
    d = tiny_spec(tiny_bert, files, method, **train)
    d["retention"] = retention
    return run(RunSpec.from_dict(d), out, progress=False, log=lambda s: None)


def test_unchanged_model_forgets_nothing_and_a_trained_one_drifts(tiny_bert, sentiment_files, tmp_path):
    ret = {"file": str(sentiment_files[1]), "n": 60}
    still = _run(tiny_bert, sentiment_files, tmp_path / "a", ret, lr=1e-12)["retention"]
    assert still["forgetting_metric"] == "probe_accuracy_drop" and still["n"] == 60
    assert still["drift"] < 1e-6 and still["forgetting"] == 0.0
    assert still["probe"]["after_accuracy"] == still["probe"]["before_accuracy"]
    moved = _run(tiny_bert, sentiment_files, tmp_path / "b", ret, lr=5e-3, epochs=2)["retention"]
    assert moved["drift"] > 1e-3
    # "Before" is the untrained model on the same rows and probe split, whatever the training does after.
    assert moved["probe"]["before_accuracy"] == still["probe"]["before_accuracy"]
    assert moved["forgetting"] == pytest.approx(moved["probe"]["before_accuracy"] - moved["probe"]["after_accuracy"])


def test_text_only_file_reports_drift(tiny_bert, sentiment_files, tmp_path):
    texts = tmp_path / "general.jsonl"
    pd.DataFrame({"text": [f"some general sentence number {i}" for i in range(20)]}).to_json(
        texts, orient="records", lines=True)
    rec = _run(tiny_bert, sentiment_files, tmp_path / "runs", {"file": str(texts)}, method="lora", max_steps=2)
    r = rec["retention"]
    assert r["forgetting_metric"] == "representation_drift" and r["probe"] is None
    assert r["forgetting"] == r["drift"] and r["n"] == 20


def test_bad_retention_file_fails_before_loading_a_model(tiny_bert, sentiment_files, tmp_path):
    with pytest.raises(DataError, match="no text column 'body'"):
        _run(tiny_bert, sentiment_files, tmp_path, {"file": str(sentiment_files[1]), "text_column": "body"})
    assert not list(tmp_path.glob("*/result.json"))


@pytest.mark.realdata
@pytest.mark.slow
def test_minilm_lora_with_retention_has_forgetting_and_diagnostics(shared_data, tmp_path):
    """MiniLM LoRA on SST-2 with AG News topics as retention data (about a minute on 2 CPU cores)."""
    sst = pd.read_csv(shared_data / "sst2" / "train.tsv", sep="\t", quoting=3, keep_default_na=False)
    sst.sample(400, random_state=0).to_csv(tmp_path / "train.csv", index=False)
    dev = pd.read_csv(shared_data / "sst2" / "dev.tsv", sep="\t", quoting=3, keep_default_na=False)
    dev.sample(200, random_state=0).to_csv(tmp_path / "test.csv", index=False)
    ag = pd.read_csv(shared_data / "ag_news" / "test.csv", header=None, names=["label", "title", "text"])
    ag.sample(200, random_state=0).to_csv(tmp_path / "ag.csv", index=False)
    spec = RunSpec.from_dict({
        "model": {"name_or_path": "embedded", "dtype": "float32"},
        "data": {"preset": "sst2", "train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv"),
                 "max_length": 64},
        "method": {"name": "lora"},
        "train": {"epochs": 1, "batch_size": 16},
        "retention": {"file": str(tmp_path / "ag.csv"), "n": 200},
    })
    rec = run(spec, tmp_path / "runs", progress=False, log=lambda s: None)
    assert rec["retention"]["probe"]["before_accuracy"] > 0.5  # MiniLM features separate 4 topics well
    assert rec["diagnostics"]["summary"]["layers"] > 0 and rec["preflight"]["passed"]


# ---- causal LMs: loss on general text ------------------------------------------------------------

GENERAL = [f"the river {i} runs north past the old mill and the market square where people meet " * (1 + i % 3)
           for i in range(10)]  # some longer than max_length, so truncation is exercised


@pytest.fixture(scope="module")
def causal_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("causal")
    rows = [{"instruction": f"Add {i} and 2.", "context": "", "response": f"It is {i + 2}."} for i in range(12)]
    (root / "train.json").write_text(json.dumps(rows[:8]))
    (root / "eval.json").write_text(json.dumps(rows[8:]))
    # A label column with one class: the encoder path would refuse it, the LM path ignores labels.
    pd.DataFrame({"text": GENERAL, "label": 0}).to_csv(root / "general.csv", index=False)
    return root


def _manual_lm_loss(model, tok, texts, max_length):
    """Mean token NLL, one text at a time: BOS + text + EOS cut at max_length, every position after the first scored."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = ([tok.cls_token_id] + tok(text, add_special_tokens=False)["input_ids"] + [tok.sep_token_id])
            ids = torch.tensor([ids[:max_length]])
            logits = model(input_ids=ids).logits[0, :-1]
            total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            count += ids.shape[1] - 1
    return total / count, count


@pytest.mark.parametrize("method", ["full", "lora"])
def test_causal_lm_retention_is_the_loss_increase(method, causal_files, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftbench.models.tiny import tiny_model_path
    from test_run import validate

    base = tiny_model_path("llama")
    spec = RunSpec.from_dict({
        "task": "instruction", "model": {"name_or_path": str(base), "dtype": "float32"},
        "data": {"train": str(causal_files / "train.json"), "eval": str(causal_files / "eval.json"),
                 "max_length": 24, "max_target_length": 8},
        "method": {"name": method}, "train": {"batch_size": 4, "max_steps": 3, "lr": 5e-2, "num_threads": 1},
        "retention": {"file": str(causal_files / "general.csv")}})
    rec = run(spec, tmp_path, progress=False, log=lambda s: None)
    validate(rec)
    r = rec["retention"]
    assert r["forgetting_metric"] == "lm_loss_increase" and r["n"] == len(GENERAL)
    lm = r["lm"]
    assert r["forgetting"] == pytest.approx(lm["after_loss"] - lm["before_loss"])
    assert lm["before_perplexity"] == pytest.approx(math.exp(lm["before_loss"]))
    assert lm["after_perplexity"] == pytest.approx(math.exp(lm["after_loss"]))

    tok = AutoTokenizer.from_pretrained(str(base))
    untrained = AutoModelForCausalLM.from_pretrained(str(base)).eval()
    before, tokens = _manual_lm_loss(untrained, tok, GENERAL, 24)
    assert lm["before_loss"] == pytest.approx(before, rel=1e-5)  # the model before any training step
    assert lm["tokens"] == tokens and lm["max_length"] == 24
    # The after pass is the trained model: for LoRA only the adapters changed, so they were active.
    saved = tmp_path / rec["run_id"] / rec["artifact"]["path"]
    if method == "lora":
        from peft import PeftModel

        trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(saved))
    else:
        trained = AutoModelForCausalLM.from_pretrained(str(saved))
    after, _ = _manual_lm_loss(trained.eval(), tok, GENERAL, 24)
    assert lm["after_loss"] == pytest.approx(after, rel=1e-5)
    assert abs(r["forgetting"]) > 1e-3


def test_seq2seq_retention_is_refused_when_the_spec_is_validated(tmp_path):
    with pytest.raises(SpecError, match="retention: is not supported for task 'summarization'"):
        RunSpec.from_dict({"task": "summarization", "retention": {"file": str(tmp_path / "general.csv")}})
