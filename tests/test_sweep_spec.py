"""Sweep files: expansion to runs, deep per-method/per-model overrides, guards and errors."""

from __future__ import annotations

import math

import pytest
import yaml
from click.testing import CliRunner

from peftbench.cli.app import cli
from peftbench.config.spec import RunSpec
from peftbench.config.sweep import SweepSpec
from peftbench.errors import SpecError

BASE = {
    "defaults": {
        "model": {"name_or_path": "embedded", "dtype": "float32"},
        "data": {"train": "t.csv", "eval": "e.csv", "max_length": 64},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3},
    },
}


def sweep(**axes: object) -> SweepSpec:
    return SweepSpec.from_dict({**BASE, **axes})


def test_size_is_product_of_axes_and_ids_are_stable() -> None:
    s = sweep(methods=["lora", "dora"], grid={"method.r": [4, 8, 16], "train.lr": [1e-3, 1e-4]}, seeds=[0, 1])
    runs = s.expand()
    assert s.size() == 2 * 3 * 2 * 2 == len(runs)
    assert len({r.run_id for r in runs}) == len(runs)
    assert [r.run_id for r in runs] == [r.run_id for r in s.expand()]  # deterministic
    first = runs[0]
    assert first.axes == {"method": "lora", "method.r": 4, "train.lr": 1e-3, "seed": 0}
    assert first.spec.method.params["r"] == 4 and first.spec.train.seed == 0
    # The id is the run spec's own id: `peftbench run` with the same spec lands in the same folder.
    data = yaml.safe_load(yaml.safe_dump(BASE["defaults"]))
    data["method"] = {"name": "lora", "r": 4}
    data["train"]["seed"] = 0
    assert RunSpec.from_dict(data).run_id() == first.run_id


def test_changed_hyperparameter_is_a_new_run_id() -> None:
    a = {r.run_id for r in sweep(methods=["lora"], grid={"method.r": [8, 16]}).expand()}
    b = {r.run_id for r in sweep(methods=["lora"], grid={"method.r": [8, 32]}).expand()}
    assert len(a & b) == 1 and len(a | b) == 3


def test_per_method_and_per_model_overrides_merge_deeply() -> None:
    s = sweep(methods=["lora", "full"], models=["embedded"],
              per_method={"full": {"train": {"lr": 5e-5}}, "lora": {"method": {"alpha": 32}}},
              per_model={"embedded": {"data": {"max_length": 32}}})
    by_method = {r.spec.method.name: r.spec for r in s.expand()}
    assert by_method["full"].train.lr == 5e-5
    assert by_method["full"].train.batch_size == 8  # sibling key kept: a deep merge, not a replace
    assert by_method["lora"].train.lr == 1e-3
    assert by_method["lora"].method.params["alpha"] == 32 and by_method["lora"].method.params["r"] == 8
    assert all(sp.data.max_length == 32 and sp.data.train == "t.csv" for sp in by_method.values())


def test_method_key_grid_skips_methods_without_that_key() -> None:
    s = sweep(methods=["lora", "ia3"], grid={"method.r": [4, 8]})
    runs = s.expand()
    assert s.size() == 4
    assert [r.spec.method.name for r in runs] == ["lora", "lora", "ia3"]  # ia3 has no rank: one run
    assert "method.r" not in runs[2].axes


def test_tasks_axis_accepts_fragments() -> None:
    s = sweep(tasks=[{"task": "classification", "data": {"train": "other.csv"}}], methods=["lora"])
    (run,) = s.expand()
    assert run.spec.data.train == "other.csv" and run.spec.data.eval == "e.csv"


@pytest.mark.reliability
@pytest.mark.parametrize(("axes", "needle"), [
    ({"methods": []}, "zero runs: axis 'methods'"),
    ({"grid": {"method.r": []}}, "zero runs: axis 'grid.method.r'"),
    ({"seeds": [], "methods": ["lora"]}, "zero runs: axis 'seeds'"),
    ({"methods": ["lora"], "grid": {"method.r": list(range(1, 40))}, "seeds": [0, 1], "max_runs": 50},
     "78 runs, more than max_runs=50"),
    ({"metods": ["lora"]}, "Did you mean: methods"),
    ({"methods": "lora"}, "'methods'"),
    ({"grid": {"method.r": 8}}, "must be a list"),
    ({"methods": ["lorra"]}, "lorra"),
    ({"methods": ["lora"], "grid": {"train.lr": [-1.0]}}, "train.lr"),
    ({"max_runs": 0}, "max_runs must be a positive integer"),
    ({"per_method": {"lora": 3}}, "per_method.lora"),
])
def test_bad_sweeps_raise_spec_errors(axes: dict, needle: str) -> None:
    with pytest.raises(SpecError) as info:
        sweep(**axes).expand()
    assert needle in str(info.value)


def test_cli_dry_run_prints_every_run_id(tmp_path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**BASE, "methods": ["lora", "dora"], "grid": {"method.r": [4, 8, 16]},
                                    "seeds": [0, 1]}))
    result = CliRunner().invoke(cli, ["sweep", "--config", str(path), "--dry-run", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    ids = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    expected = [r.run_id for r in SweepSpec.from_yaml(path).expand()]
    assert ids == expected and len(ids) == math.prod([2, 3, 2])
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


@pytest.mark.reliability
def test_cli_zero_runs_is_a_usage_error(tmp_path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**BASE, "methods": []}))
    result = CliRunner().invoke(cli, ["sweep", "--config", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert "zero runs" in result.output and "Traceback" not in result.output
