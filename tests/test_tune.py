"""Equal tuning budgets: N trials per method on validation, then default vs tuned on test."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import tiny_spec
from peftbench.config.spec import RunSpec
from peftbench.records.io import load_records
from peftbench.sweeps.tune import search_space, tune_methods


def test_search_space_is_per_method():
    lora = search_space(RunSpec.from_dict({"method": {"name": "lora"}, "tune": {"trials": 2, "lr_range": 10}}))
    assert lora["lr"]["low"] == pytest.approx(1e-4) and lora["lr"]["high"] == pytest.approx(1e-2)
    assert lora["r"]["choices"] == [4, 8, 16, 32]
    full = search_space(RunSpec.from_dict({"method": {"name": "full"}, "tune": {"trials": 2}}))
    assert set(full) == {"lr"} and full["lr"]["high"] == pytest.approx(5e-4)


def test_lora_and_full_get_four_trials_each_then_test_runs(tiny_bert, sentiment_files, tmp_path):
    d = tiny_spec(tiny_bert, sentiment_files, "lora", max_steps=1)
    d["data"].update(n_train=64, n_eval=32)
    d["tune"] = {"trials": 4}
    summaries = tune_methods(RunSpec.from_dict(d), ["lora", "full"], tmp_path, log=lambda s: None)
    assert [s["method"] for s in summaries] == ["lora", "full"]
    records = load_records(tmp_path)
    trials = [r for r in records if r["tuning"]["role"] == "trial"]
    assert len(trials) == 8 and {r["method"] for r in trials} == {"lora", "full"}
    for s in summaries:
        assert s["budget"]["trials_run"] == 4 and s["split"] == "validation"
        assert len({json.dumps(t["params"], sort_keys=True) for t in s["trials"]}) == 4
        assert s["best"]["value"] == max(t["value"] for t in s["trials"])
        for role in ("default", "tuned"):
            (final,) = s[role]["runs"]
            rec = next(r for r in records if r["run_id"] == final["run_id"])
            assert rec["tuning"]["role"] == role and final["test"] == rec["metrics"]["accuracy"]
        assert s["tuned"]["params"] == s["best"]["params"]
        assert (tmp_path / f"{s['tune_id']}.json").is_file()
    lora_best = summaries[0]["best"]["params"]
    assert set(lora_best) == {"lr", "r", "alpha"} and lora_best["r"] in (4, 8, 16, 32)
    # every trial was scored on validation: the score equals its record's validation metric
    for s in summaries:
        for t in s["trials"]:
            rec = next(r for r in records if r["run_id"] == t["run_id"])
            assert t["value"] == rec["protocol"]["selection"]["validation_metrics"]["accuracy"]


def test_cli_tune_reports_default_and_tuned(tiny_bert, sentiment_files, tmp_path):
    import yaml

    from peftbench.cli.app import cli

    d = tiny_spec(tiny_bert, sentiment_files, "ia3", max_steps=1)
    d["data"].update(n_train=48, n_eval=16)
    cfg = tmp_path / "spec.yaml"
    cfg.write_text(yaml.safe_dump(d))
    res = CliRunner().invoke(cli, ["tune", "--config", str(cfg), "--trials", "2", "--out", str(tmp_path / "o"),
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    assert "ia3: 2/2 trials on validation" in res.output and "default" in res.output and "tuned" in res.output
