"""Executors: four runs (one of them failing) give the same records on Ray and in this process (the
worker function is the same)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import tiny_spec
from peftbench.errors import SpecError
from peftbench.sweeps.executors import Job, get_executor, run_job


def _jobs(model: Path, files: tuple[Path, Path], out: Path) -> list[Job]:
    jobs = []
    for method, seed in (("lora", 1), ("lora", 2), ("ia3", 1)):
        spec = tiny_spec(model, files, method, device="cpu", batch_size=8, seed=seed)
        spec["data"].update(n_train=32, n_eval=32)
        jobs.append(Job(spec, str(out)))
    broken = tiny_spec(model, (files[0].with_name("absent.csv"), files[1]), "lora", device="cpu")
    jobs.append(Job(broken, str(out)))
    return jobs


def _by_id(pairs: list) -> dict:
    return {(rec["run_id"] or "?"): rec for _job, rec in pairs}


def _same(records: dict, expected: dict) -> None:
    assert set(records) == set(expected)
    for run_id, rec in expected.items():
        other = records[run_id]
        assert other["status"] == rec["status"]
        if rec["status"] != "success":
            assert other["error"]["type"] == rec["error"]["type"] == "data"
            continue
        assert other["metrics"]["accuracy"] == pytest.approx(rec["metrics"]["accuracy"])
        assert other["metrics"]["eval_loss"] == pytest.approx(rec["metrics"]["eval_loss"], abs=1e-5)
        assert [p["loss"] for p in other["train"]["loss_curve"]] == pytest.approx(
            [p["loss"] for p in rec["train"]["loss_curve"]], abs=1e-5)


@pytest.fixture(scope="module")
def reference(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The four records made in this process: what every executor must reproduce."""
    out = tmp_path_factory.mktemp("in-process")
    records = {}
    for job in _jobs(tiny_bert, sentiment_files, out):
        rec = run_job(job)
        records[rec["run_id"] or "?"] = rec
    assert sorted(r["status"] for r in records.values()) == ["failed", "success", "success", "success"]
    return records


def test_ray_four_runs_equal_local_records(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path,
                                           reference: dict) -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install 'peftbench[ray]')")
    import ray

    from peftbench.config.spec import RunSpec
    from peftbench.config.sweep import SweepSpec
    from peftbench.records.io import load_records
    from peftbench.sweeps.engine import run_sweep

    plan = SweepSpec(explicit=[RunSpec.from_dict(job.spec) for job in _jobs(tiny_bert, sentiment_files, tmp_path)],
                     cpus_per_run=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_sweep(plan, tmp_path, executor="ray", progress=False, echo=lambda _: None)
        # Resume works the same on Ray: a rerun finds every success recorded and runs nothing.
        again = run_sweep(plan, tmp_path, executor="ray", progress=False, echo=lambda _: None)
    finally:
        ray.shutdown()
    assert sorted(s.split(":")[0] for s in result.statuses.values()) == ["failed", "success", "success", "success"]
    assert sorted(again.statuses.values()).count("skipped-success") == 3
    # Every record, the failure included, is in the output folder (written by the driver too).
    remote = {r["run_id"]: r for r in load_records(tmp_path)}
    _same(remote, reference)


def test_unknown_executor_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="unknown executor 'slurm'"):
        get_executor("slurm")
