"""Forgetting: retention data evaluated before and after fine-tuning."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import tiny_spec
from peftbench.errors import DataError
from peftbench.runner import run
from peftbench.spec import RunSpec


def _run(tiny_bert, files, out, retention, method="full", **train):
    d = tiny_spec(tiny_bert, files, method, **train)
    d["retention"] = retention
    return run(RunSpec.from_dict(d), out, progress=False, log=lambda s: None)


def test_unchanged_model_forgets_nothing_and_a_trained_one_drifts(tiny_bert, sentiment_files, tmp_path):
    ret = {"file": str(sentiment_files[1]), "n": 60}
    still = _run(tiny_bert, sentiment_files, tmp_path / "a", ret, lr=1e-12)["retention"]
    assert still["forgetting_metric"] == "probe_accuracy_drop" and still["n"] == 60
    assert still["drift"] < 1e-6 and still["forgetting"] == 0.0
    assert 0.0 <= still["probe"]["before_accuracy"] <= 1.0
    moved = _run(tiny_bert, sentiment_files, tmp_path / "b", ret, lr=5e-3, epochs=2)["retention"]
    assert moved["drift"] > 1e-3
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
