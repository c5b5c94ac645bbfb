"""Real weights on real data: all-MiniLM-L6-v2 with LoRA on an SST-2 slice must learn (dev accuracy > 0.75)."""

from pathlib import Path

import pytest

from conftest import require_data
from peftbench.config.spec import RunSpec
from peftbench.core.runner import run


@pytest.mark.realdata
def test_minilm_lora_learns_sst2(shared_data, tmp_path):
    spec = RunSpec.from_dict({
        "model": {"name_or_path": "embedded"},
        "data": {"preset": "sst2", "train": str(shared_data / "sst2" / "train.tsv"),
                 "eval": str(shared_data / "sst2" / "dev.tsv"), "n_train": 1500, "n_eval": 400, "max_length": 64},
        "method": {"name": "lora"},
        "train": {"epochs": 2, "batch_size": 32, "lr": 2e-3},
    })
    rec = run(spec, tmp_path, progress=False)
    assert rec["status"] == "success"
    assert rec["metrics"]["accuracy"] > 0.75, rec["metrics"]["accuracy"]
    assert rec["params"]["trainable_pct"] < 2
    assert rec["metrics"]["labels"] == ["negative", "positive"]


@pytest.mark.parametrize("ci", ["true", "1"])
def test_absent_data_fails_on_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    """On CI a missing data folder is a failure with its reason, never a silent skip."""
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"absent .*PEFTBENCH_SHARED_DATA.*CI=true"):
        require_data(tmp_path / "missing")


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_absent_data_skips_with_the_reason_off_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   ci: str | None) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=r"missing is absent \(set PEFTBENCH_SHARED_DATA"):
        require_data(tmp_path / "missing")
    assert require_data(tmp_path) == tmp_path  # present: the folder itself, on CI or not
