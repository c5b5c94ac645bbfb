"""Sweeps that run: NaN and timeout failures become records, the sweep goes on, reruns resume."""

from __future__ import annotations

import json
import re

import pytest

from peftbench.config.sweep import SweepSpec
from peftbench.sweeps.engine import SUMMARY_FILE, run_sweep, summary_text
from sweep_helpers import check_complete, record_files, tiny_sweep


@pytest.fixture()
def base(tiny_bert, sentiment_files) -> dict:
    return tiny_sweep(tiny_bert, sentiment_files)


@pytest.mark.reliability
def test_nan_run_fails_early_and_the_sweep_goes_on(base, tmp_path) -> None:
    spec = {**base, "methods": ["full"], "grid": {"train.lr": [1e6, 5e-5]}, "seeds": [0]}
    spec["defaults"]["train"].update(max_steps=20, epochs=20, warmup_ratio=0.0)
    sweep = SweepSpec.from_dict(spec)
    out = tmp_path / "runs"
    result = run_sweep(sweep, out, progress=False)
    runs = sweep.expand()
    recs = check_complete(out)
    bad, good = recs[runs[0].run_id], recs[runs[1].run_id]
    assert bad["status"] == "failed" and bad["error"]["type"] == "nan_loss"
    step = int(re.search(r"step (\d+)", bad["error"]["message"]).group(1))
    assert step <= 5, bad["error"]["message"]  # stopped at once, not after the 20-step budget
    assert good["status"] == "success"
    assert result.statuses == {runs[0].run_id: "failed:nan_loss", runs[1].run_id: "success"}
    assert "failed:nan_loss" in summary_text(result)
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["counts"] == {"failed": 1, "success": 1}

    # A rerun keeps both records; --retry-failed reruns only the failure (it fails the same way).
    before = record_files(out)
    again = run_sweep(sweep, out, progress=False)
    assert again.statuses == {runs[0].run_id: "skipped-failed:nan_loss", runs[1].run_id: "skipped-success"}
    assert record_files(out) == before
    retried = run_sweep(sweep, out, progress=False, retry_failed=True)
    assert retried.statuses[runs[0].run_id] == "failed:nan_loss"
    assert retried.statuses[runs[1].run_id] == "skipped-success"
    assert record_files(out)[runs[1].run_id] == before[runs[1].run_id]


@pytest.mark.reliability
def test_timeout_is_recorded_by_the_sweep(base, tmp_path) -> None:
    spec = {**base, "methods": ["lora"], "grid": {}, "seeds": [0, 1], "timeout_s": 0.3}
    sweep = SweepSpec.from_dict(spec)
    out = tmp_path / "runs"
    result = run_sweep(sweep, out, progress=False)
    recs = check_complete(out)
    assert len(recs) == 2  # the first timed out, and the sweep went on to the second
    for rec in recs.values():
        assert rec["status"] == "failed" and rec["error"]["type"] == "timeout"
        assert "timeout of 0.3s" in rec["error"]["message"]
        assert rec["process"]["recorded_by"] == "sweep"
    assert set(result.statuses.values()) == {"failed:timeout"}

    # A longer timeout with --retry-failed turns them into successes; a new rank is a new run.
    spec["timeout_s"] = 600
    spec["grid"] = {"method.r": [8, 2]}  # r=8 is the default: the same runs as before
    sweep2 = SweepSpec.from_dict(spec)
    result2 = run_sweep(sweep2, out, progress=False, retry_failed=True)
    assert sorted(result2.statuses.values()) == ["success"] * 4
    assert set(recs) < set(record_files(out)) and len(record_files(out)) == 4


@pytest.mark.reliability
def test_run_failing_before_training_is_recorded(base, tmp_path) -> None:
    spec = {**base, "methods": ["lora"], "grid": {}, "seeds": [0]}
    spec["defaults"]["data"]["train"] = str(tmp_path / "missing.csv")
    sweep = SweepSpec.from_dict(spec)
    out = tmp_path / "runs"
    result = run_sweep(sweep, out, progress=False)
    (rec,) = check_complete(out).values()
    assert rec["status"] == "failed" and rec["error"]["type"] == "error"
    assert "missing.csv' does not exist" in rec["error"]["message"]
    assert list(result.statuses.values()) == ["failed:error"]


def _mark(out, run_id: str, status: str, error_type: str) -> None:
    """Turn a run's record into a final record of another status, as an earlier sweep would leave it."""
    path = out / run_id / "result.json"
    rec = json.loads(path.read_text())
    rec.update(status=status, error={"type": error_type, "message": f"marked {status} by the test"})
    path.write_text(json.dumps(rec))


def test_resume_reruns_canceled_runs_and_keeps_success_and_failed(base, tmp_path) -> None:
    sweep = SweepSpec.from_dict({**base, "methods": ["lora"], "grid": {"method.r": [2, 4, 8]}, "seeds": [0]})
    out = tmp_path / "runs"
    run_sweep(sweep, out, progress=False, echo=lambda _: None)
    kept, canceled, failed = (run.run_id for run in sweep.expand())
    _mark(out, canceled, "canceled", "canceled")
    _mark(out, failed, "failed", "nan_loss")
    before = record_files(out)
    result = run_sweep(sweep, out, progress=False, echo=lambda _: None)
    assert result.statuses == {kept: "skipped-success", canceled: "success", failed: "skipped-failed:nan_loss"}
    after = record_files(out)
    assert after[kept] == before[kept] and after[failed] == before[failed]
    assert json.loads(after[canceled])["status"] == "success"
