"""Resume decisions of a sweep (sweeps/engine.py), fast: records left by an earlier sweep are written
by hand, and the runs that must run again fail at once on a missing data file, so no run trains.
Which runs are kept and which rerun, the progress lines, the summary file and text, and the
multi-run spec file's runs one after the other."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from peftbench.config.sweep import SweepSpec
from peftbench.records.failure import failure_record
from peftbench.records.io import atomic_write_json
from peftbench.sweeps import executors
from peftbench.sweeps.engine import (
    LOCK_FILE,
    SUMMARY_FILE,
    SweepResult,
    _fmt_duration,
    acquire_lock,
    planned_records,
    run_spec_file,
    run_sweep,
    summary_text,
    sweep,
)
from sweep_helpers import tiny_sweep


@pytest.fixture()
def plan_dict(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> dict[str, Any]:
    """Five lora ranks, one seed; the training file is missing, so any run that starts fails at once."""
    spec = tiny_sweep(tiny_bert, sentiment_files, methods=["lora"], grid={"method.r": [2, 4, 8, 16, 32]}, seeds=[0])
    spec["defaults"]["data"]["train"] = str(tmp_path / "missing.csv")
    return spec


@pytest.fixture()
def plan(plan_dict: dict[str, Any]) -> SweepSpec:
    return SweepSpec.from_dict(plan_dict)


def leave(out: Path, run: Any, status: str, error_type: str | None = None) -> dict[str, Any]:
    """The final record an earlier sweep left for a run."""
    rec = failure_record(run.run_id, status, error_type or "x", "left by an earlier sweep", spec=run.spec)
    if status == "success":
        rec.pop("error")
        rec.update(main_metric="accuracy", metrics={"accuracy": 0.75})
    elif error_type is None:
        rec["error"].pop("type")
    atomic_write_json(out / run.run_id / "result.json", rec)
    return rec


def test_a_fully_recorded_sweep_runs_nothing_and_says_why(plan: SweepSpec, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    runs = plan.expand()
    for run, (status, kind) in zip(runs, [("success", None), ("failed", "nan_loss"), ("failed", None),
                                          ("success", None), ("failed", "oom")], strict=True):
        leave(out, run, status, kind)
    said: list[str] = []
    result = run_sweep(plan, out, echo=said.append, timeout_s=7.5, progress=False)
    assert said == ["[sweep] 5 runs: 5 already recorded, 0 to run, timeout 7.5s per run"]
    assert result.total == 5 and result.interrupted is False
    assert result.statuses == {runs[0].run_id: "skipped-success", runs[1].run_id: "skipped-failed:nan_loss",
                               runs[2].run_id: "skipped-failed:error", runs[3].run_id: "skipped-success",
                               runs[4].run_id: "skipped-failed:oom"}
    assert result.counts() == {"skipped-success": 2, "skipped-failed": 3}
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["total"] == 5 and summary["interrupted"] is False and summary["written"]
    assert summary["counts"] == {"skipped-success": 2, "skipped-failed": 3}
    assert summary["runs"] == [{"run_id": r.run_id, "axes": r.axes, "status": result.statuses[r.run_id]}
                               for r in runs]
    assert summary["runs"][0]["axes"]["method.r"] == 2
    lock = acquire_lock(out)  # the sweep let go of its lock
    lock.release()
    assert [r["run_id"] for r in planned_records(plan, out)] == [r.run_id for r in runs]


def test_canceled_and_missing_runs_rerun_finished_ones_are_kept(plan: SweepSpec, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    runs = plan.expand()
    kept = leave(out, runs[0], "success")
    failed = leave(out, runs[1], "failed", "nan_loss")
    leave(out, runs[2], "canceled", "canceled")
    leave(out, runs[4], "success")
    said: list[str] = []
    result = run_sweep(plan, out, echo=said.append, progress=False)
    assert result.statuses == {runs[0].run_id: "skipped-success", runs[1].run_id: "skipped-failed:nan_loss",
                               runs[2].run_id: "failed:error", runs[3].run_id: "failed:error",
                               runs[4].run_id: "skipped-success"}
    assert list(result.statuses) == [runs[i].run_id for i in (0, 1, 4, 2, 3)]  # skipped first, then run in order
    assert json.loads((out / runs[0].run_id / "result.json").read_text()) == kept
    assert json.loads((out / runs[1].run_id / "result.json").read_text()) == failed
    assert json.loads((out / runs[2].run_id / "result.json").read_text())["status"] == "failed"
    assert said[0] == "[sweep] 5 runs: 3 already recorded, 2 to run"
    assert said[1] == f"[sweep] run 1/2 {runs[2].run_id} (method=lora, method.r=8, seed=0)"
    assert said[3] == f"[sweep] run 2/2 {runs[3].run_id} (method=lora, method.r=16, seed=0)"
    first = re.fullmatch(rf"\[sweep\] {re.escape(runs[2].run_id)}: failed:error \((.+)\) in \d+\.\ds \| done 1/2 "
                         r"\(success 0, failed 1\) \| ETA (\d+):(\d\d):(\d\d)", said[2])
    assert first and "missing.csv" in first.group(1), said[2]
    last = re.fullmatch(rf"\[sweep\] {re.escape(runs[3].run_id)}: failed:error \(.+\) in \d+\.\ds \| done 2/2 "
                        r"\(success 0, failed 2\) \| ETA 0:00:00", said[4])
    assert last, said[4]
    assert len(said) == 5
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["counts"] == {"skipped-success": 2, "skipped-failed": 1, "failed": 2}


def test_retry_failed_reruns_failures_only(plan_dict: dict[str, Any], tmp_path: Path) -> None:
    small = SweepSpec.from_dict({**plan_dict, "grid": {"method.r": [2, 4]}})
    out = tmp_path / "runs"
    runs = small.expand()
    kept = leave(out, runs[0], "success")
    leave(out, runs[1], "failed", "oom")
    result = run_sweep(small, out, retry_failed=True, echo=lambda _: None, progress=False)
    # The failure runs again (and fails on the missing file now); the success is kept as it was.
    assert result.statuses == {runs[0].run_id: "skipped-success", runs[1].run_id: "failed:error"}
    assert json.loads((out / runs[0].run_id / "result.json").read_text()) == kept


def test_the_python_api_returns_every_planned_record_in_plan_order(plan_dict: dict[str, Any], plan: SweepSpec,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "runs"
    runs = plan.expand()
    for run in reversed(runs):
        leave(out, run, "success")
    records = sweep(plan, out)
    assert [r["run_id"] for r in records] == [r.run_id for r in runs]
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(plan_dict))
    assert sweep(plan_dict, out) == records and sweep(path, out) == records and sweep(str(path), out) == records
    said: list[str] = []
    sweep(plan, out, echo=said.append)  # options reach the sweep
    assert said == ["[sweep] 5 runs: 5 already recorded, 0 to run"]


def test_the_python_api_writes_under_runs_by_default(plan: SweepSpec, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for run in plan.expand():
        leave(tmp_path / "runs", run, "success")
    assert len(sweep(plan, echo=lambda _: None)) == 5 and (tmp_path / "runs" / SUMMARY_FILE).is_file()


def test_a_second_sweep_on_a_locked_folder_is_refused_with_the_folder_and_a_fix(plan: SweepSpec,
                                                                                tmp_path: Path) -> None:
    from peftbench.errors import SpecError

    out = tmp_path / "runs"
    out.mkdir()
    lock = acquire_lock(out)
    try:
        with pytest.raises(SpecError) as err:
            run_sweep(plan, out, echo=lambda _: None, progress=False)
    finally:
        lock.release()
    assert str(out) in str(err.value) and LOCK_FILE in str(err.value)
    assert "another --out folder" in err.value.hint
    assert not (out / SUMMARY_FILE).exists()  # nothing was scanned: no summary


def test_summary_text_counts_by_kind_and_lists_failures_by_run_id() -> None:
    result = SweepResult(total=6, statuses={"b": "failed:nan_loss", "a": "success", "c": "skipped-failed:oom",
                                            "d": "skipped-success", "e": "canceled", "f": "failed:timeout"},
                         interrupted=True)
    assert summary_text(result) == (
        "sweep: 6 runs: canceled 1, failed 2, skipped-failed 1, skipped-success 1, success 1 (interrupted)\n"
        f"  {'failed:nan_loss':<24} b\n  {'skipped-failed:oom':<24} c\n  {'failed:timeout':<24} f")
    assert summary_text(SweepResult(total=0, statuses={})) == "sweep: 0 runs: none run"


@pytest.mark.parametrize("seconds,text", [(0, "0:00:00"), (59.4, "0:00:59"), (61, "0:01:01"), (3599, "0:59:59"),
                                          (3725.4, "1:02:05"), (36000, "10:00:00")])
def test_eta_format(seconds: float, text: str) -> None:
    assert _fmt_duration(seconds) == text


def test_a_multi_run_spec_file_runs_each_and_records_a_failure(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    doc = {
        "defaults": {"model": {"name_or_path": str(tmp_path / "no-such-model"), "dtype": "float32"},
                     "data": {"train": str(sentiment_files[0]), "eval": str(sentiment_files[1]), "max_length": 32,
                              "n_train": 16, "n_eval": 16},
                     "train": {"epochs": 1, "batch_size": 8, "max_steps": 1, "num_threads": 1}},
        "methods": [{"method": {"name": "lora"}, "data": {"train": str(tmp_path / "missing.csv")}},
                    {"method": {"name": "ia3"}}],
    }
    config = tmp_path / "runs.yaml"
    config.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    said: list[str] = []
    # The model override and the --set overrides reach every run: without them, no run could load a model.
    records = run_spec_file(str(config), str(out), model_override=str(tiny_bert), overrides=["train.seed=5"],
                            progress=False, say=said.append)
    assert [r["status"] for r in records] == ["failed", "success"] and [r["seed"] for r in records] == [5, 5]
    bad, good = records
    assert bad["method"] == "lora" and "missing.csv" in bad["error"]["message"] and bad["run_id"]
    assert bad["error"]["type"] == "data" and bad["spec"]["train"]["seed"] == 5
    written = json.loads((out / good["run_id"] / "result.json").read_text())
    assert written["run_id"] == good["run_id"] and written["timestamps"] == good["timestamps"]
    assert said[0] == f"[peftbench] {config}: 2 run(s)"
    assert said[1] == "[peftbench] run 1/2: lora" and said[3] == "[peftbench] run 2/2: ia3"
    assert said[2].startswith("[peftbench] run 1/2 failed: ") and "missing.csv" in said[2]
    assert re.fullmatch(r"\[peftbench\] run 2/2 success: accuracy=\d\.\d{4} eval_loss=\d+\.\d{4}", said[4]), said[4]
    assert len(said) == 5
    # Run again: the success is kept as recorded (no --force), the failure runs again.
    again = run_spec_file(str(config), str(out), model_override=str(tiny_bert), overrides=["train.seed=5"],
                          progress=False, say=lambda _: None)
    assert again[1] == written and again[0]["status"] == "failed"
    forced = run_spec_file(str(config), str(out), model_override=str(tiny_bert), overrides=["train.seed=5"],
                           progress=False, force=True, say=lambda _: None)
    assert forced[1]["status"] == "success" and forced[1]["timestamps"] != good["timestamps"]  # --force reruns it


def test_a_single_run_spec_file_without_a_name_is_shown_by_its_method(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {"name_or_path": str(tmp_path / "m")}, "method": {"name": "ia3"},
                                      "data": {"train": str(tmp_path / "missing.csv")}}))
    said: list[str] = []
    (record,) = run_spec_file(str(config), str(tmp_path / "out"), progress=False, say=said.append)
    assert record["status"] == "failed" and said[1] == "[peftbench] run 1/1: ia3"


# ---- another executor -----------------------------------------------------------------------------


class InProcess:
    """An executor that runs each job here with the executors' own worker function (`run_job`), in
    the order given; `script[i]`, when set, is the record the i-th job comes back with instead, and
    `interrupt_after` stops the map with Ctrl-C after that many jobs."""

    made: ClassVar[list[dict[str, Any]]] = []
    jobs: ClassVar[list[executors.Job]] = []
    script: ClassVar[list[dict[str, Any] | None]] = []
    interrupt_after: ClassVar[int | None] = None

    def __init__(self, **options: Any) -> None:
        InProcess.made.append(options)

    def map(self, jobs: list[executors.Job]) -> Any:
        for i, job in enumerate(jobs):
            if i == InProcess.interrupt_after:
                raise KeyboardInterrupt
            InProcess.jobs.append(job)
            given = InProcess.script[i] if i < len(InProcess.script) else None
            yield job, (given if given is not None else executors.run_job(job))


@pytest.fixture()
def in_process(monkeypatch: pytest.MonkeyPatch) -> type[InProcess]:
    """Ray's place in the executor table taken by `InProcess` (Ray is an optional install)."""
    monkeypatch.setattr(InProcess, "made", [])
    monkeypatch.setattr(InProcess, "jobs", [])
    monkeypatch.setattr(InProcess, "script", [])
    monkeypatch.setattr(InProcess, "interrupt_after", None)
    monkeypatch.setitem(executors.EXECUTORS, "ray", InProcess)
    monkeypatch.setitem(executors.EXECUTORS, "here", InProcess)
    return InProcess


def test_an_executor_gets_the_runs_still_to_do_and_the_ray_resources(plan_dict: dict[str, Any],
                                                                      in_process: type[InProcess],
                                                                      tmp_path: Path) -> None:
    plan = SweepSpec.from_dict({**plan_dict, "cpus_per_run": 2, "gpus_per_run": 0.5})
    out = tmp_path / "runs"
    runs = plan.expand()
    leave(out, runs[0], "success")
    in_process.script = [None, {"run_id": runs[2].run_id, "status": "success", "main_metric": "accuracy",
                                "metrics": {"accuracy": 0.625}},
                         {"status": "canceled", "error": {"type": "canceled"}, "main_metric": "accuracy",
                          "metrics": {"accuracy": 0.5}}, {}]
    said: list[str] = []
    result = run_sweep(plan, out, executor="ray", address="ray://head:10001", echo=said.append, progress=False)
    assert in_process.made == [{"address": "ray://head:10001", "cpus_per_run": 2, "gpus_per_run": 0.5}]
    assert [(j.spec, j.out_dir, j.force) for j in in_process.jobs] == [(r.spec.to_dict(), str(out), False)
                                                                       for r in runs[1:]]
    assert result.statuses == {runs[0].run_id: "skipped-success", runs[1].run_id: "failed:data",
                               runs[2].run_id: "success", "job-3": "canceled", "job-4": "failed:error"}
    assert result.interrupted is False
    assert said[1:] == [f"[sweep:ray] {runs[1].run_id}: failed:data | done 1/4",
                        f"[sweep:ray] {runs[2].run_id}: success, accuracy=0.6250 | done 2/4",
                        "[sweep:ray] None: canceled | done 3/4", "[sweep:ray] None: failed:error | done 4/4"]


def test_an_executor_stopped_by_ctrl_c_leaves_an_interrupted_summary(plan_dict: dict[str, Any],
                                                                     in_process: type[InProcess],
                                                                     tmp_path: Path) -> None:
    plan = SweepSpec.from_dict(plan_dict)
    out = tmp_path / "runs"
    runs = plan.expand()
    in_process.interrupt_after = 1
    in_process.script = [{"run_id": runs[0].run_id, "status": "success"}]
    result = run_sweep(plan, out, executor="here", echo=lambda _: None, progress=False)
    assert in_process.made == [{}]  # resources are Ray's options only
    assert result.interrupted is True and result.statuses == {runs[0].run_id: "success"}
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["interrupted"] is True
    assert [r["status"] for r in summary["runs"]] == ["success"] + ["not-run"] * 4
