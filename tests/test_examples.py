"""Every example spec in examples/ runs offline with `--model-override tiny` and writes records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from peftbench.cli.app import cli
from peftbench.config.multirun import load_runs

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("seed*.yaml"))
EXPECTED_RUNS = {"seed000_lora_vs_ia3": 18, "seed001_partial_vs_lora": 2, "seed002_003_roberta_imdb": 4,
                 "seed004_gpt2_sst2": 4}


def test_examples_name_real_models() -> None:
    assert {p.stem for p in EXAMPLES} == set(EXPECTED_RUNS)
    for path in EXAMPLES:
        specs = load_runs(str(path))
        assert len(specs) == EXPECTED_RUNS[path.stem]
        assert all("/" in s.model.name_or_path for s in specs)  # hub ids, not tiny stand-ins


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_with_tiny_override(path: Path, tmp_path: Path, shared_data: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFTBENCH_SHARED_DATA", str(shared_data))
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["run", "--config", str(path), "--model-override", "tiny", "--out", str(out),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    records = [json.loads(p.read_text()) for p in out.glob("*/result.json")]
    assert len(records) == EXPECTED_RUNS[path.stem]
    assert all(r["status"] == "success" for r in records)
    by_task = {r["task"] for r in records}
    for r in records:
        m = r["metrics"]
        assert m["eval_loss"] > 0
        if r["task"] == "summarization":
            assert {"rouge1", "rouge2", "rougeL", "rougeLsum"} <= set(m)
        elif r["task"] == "instruction":
            assert m["perplexity"] > 1
        else:
            assert "accuracy" in m
    if path.stem == "seed000_lora_vs_ia3":
        assert by_task == {"classification", "summarization", "instruction"}
        families = {r["model"]["family"] for r in records}
        assert families == {"distilbert", "t5", "gpt_neox"}
        ranks = sorted(r["spec"]["method"]["r"] for r in records if r["method"] == "lora" and r["task"] == "summarization")
        assert ranks == [8, 16, 32, 64, 128]
