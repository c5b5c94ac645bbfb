"""Spec problems all at once, both sweep layouts with --set and --model-override, run folders that
work from any folder, hub data sets with a configuration and revision, and inputs refused up front
(seeds out of range, booleans as numbers, a models entry without a model)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from conftest import tiny_spec
from peftbench.cli.app import cli
from peftbench.config.multirun import load_runs
from peftbench.config.spec import RunSpec
from peftbench.config.sweep import SweepSpec
from peftbench.errors import SpecError


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def one_line_error(result: Any) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("peftbench: error:"), result.output
    return lines[0]


# ---- every spec problem in one message (issue 22.6) ---------------------------------------------


def test_every_spec_problem_is_reported_at_once(tmp_path: Path) -> None:
    config = write(tmp_path / "x.yaml", {"method": {"name": "lora"}})
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--set", "train.lrr=1", "--set", "method.rr=3",
                                      "--set", "data.max_lenght=64", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "3 problems" in line
    for key in ("'train.lrr'", "'method.rr'", "'data.max_lenght'"):
        assert key in line
    assert "Did you mean: lr?" in line and "Did you mean: r?" in line and not (tmp_path / "runs").exists()


def test_cross_section_checks_join_the_list() -> None:
    with pytest.raises(SpecError) as info:
        RunSpec.from_dict({"select": {"split": "test"}, "train": {"packing": True, "compile": True},
                           "method": {"name": "lora", "rr": 3}})
    message = str(info.value)
    assert message.startswith("3 problems in the spec")
    assert "selects on the test split" in message and "packing and train.compile" in message and "method.rr" in message


def test_every_malformed_set_item_is_reported_at_once(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "--method", "lora", "--set", "train.lr", "--set", ".x=1",
                                      "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "2 malformed --set items" in line and "'train.lr': expected KEY=VALUE" in line and "'.x=1': empty key" in line


def test_a_single_problem_keeps_its_own_fix() -> None:
    with pytest.raises(SpecError) as info:
        RunSpec.from_dict({"method": {"name": "lora", "rr": 3}})
    assert info.value.message.startswith("unknown key 'method.rr'") and "valid keys" in info.value.hint


# ---- values refused at validation (issue 28) ----------------------------------------------------


@pytest.mark.parametrize("item, needle", [
    ("train.seed=-1", "a seed is an integer from 0 to 4294967295"),
    (f"train.seed={2**32}", "a seed is an integer from 0 to 4294967295"),
    ("data.seed=-5", "a seed is an integer"),
    ("train.batch_size=true", "true is a boolean, not a number"),
    ("train.lr=false", "false is a boolean, not a number"),
    ("data.n_train=yes", "true is a boolean, not a number"),
])
def test_out_of_range_seeds_and_booleans_are_refused_before_anything_runs(tmp_path: Path, item: str,
                                                                          needle: str) -> None:
    result = CliRunner().invoke(cli, ["run", "--method", "lora", "--set", item, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert needle in one_line_error(result) and not (tmp_path / "runs").exists()


def test_the_largest_seed_and_real_numbers_pass() -> None:
    spec = RunSpec.from_dict({"train": {"seed": 2**32 - 1, "batch_size": 4, "lr": 1}, "tune": {"seeds": [0, 3]}})
    assert spec.train.seed == 2**32 - 1 and spec.train.lr == 1.0 and spec.tune is not None
    with pytest.raises(SpecError, match=r"tune\.seeds\.1"):
        RunSpec.from_dict({"tune": {"seeds": [0, -3]}})
    with pytest.raises(SpecError, match="boolean"):
        RunSpec.from_dict({"tune": {"ranks": [4, True]}})


# ---- both sweep layouts take --set and --model-override (issue 22.7) ----------------------------

GRID = {  # the layout docs/sweeps.md shows
    "defaults": {"model": {"name_or_path": "embedded", "family": "bert", "dtype": "float32"},
                 "data": {"train": "t.csv", "eval": "e.csv", "max_length": 64},
                 "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3}},
    "methods": ["lora", {"name": "ia3"}],
    "grid": {"method.r": [4, 8]},
    "seeds": [0],
    "tiny": {"train": {"max_steps": 1}},
}
RUN_LIST = {  # the layout of examples/
    "defaults": {"data": {"train": "t.csv", "eval": "e.csv", "max_length": 64},
                 "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3}},
    "models": [{"name": "mini", "model": {"name_or_path": "embedded", "dtype": "float32"}, "tiny": {"family": "bert"}}],
    "methods": [{"method": {"name": "lora"}, "axes": {"method.r": [4, 8]}}, {"method": {"name": "ia3"}}],
    "tiny": {"train": {"max_steps": 1}},
}


def dry_run(path: Path, *args: str) -> list[str]:
    result = CliRunner().invoke(cli, ["sweep", "--config", str(path), "--dry-run", *args])
    assert result.exit_code == 0, result.output
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("layout", ["grid", "run-list"])
def test_set_applies_to_every_run_of_either_layout(tmp_path: Path, layout: str) -> None:
    path = write(tmp_path / "sweep.yaml", GRID if layout == "grid" else RUN_LIST)
    plain = SweepSpec.from_yaml(path).expand()
    ids = dry_run(path, "--set", "data.max_length=128", "--set", "train.lr=0.01")
    changed = SweepSpec.from_yaml(path, overrides=["data.max_length=128", "train.lr=0.01"]).expand()
    assert len(ids) == len(plain) == 3 and ids == [p.run_id for p in changed]
    assert {p.spec.data.max_length for p in changed} == {128} and {p.spec.train.lr for p in changed} == {0.01}
    assert not set(ids) & {p.run_id for p in plain}  # a changed setting is a new run
    assert sorted((p.spec.method.name, p.spec.method.params.get("r")) for p in changed) == \
        [("ia3", None), ("lora", 4), ("lora", 8)]


@pytest.mark.parametrize("layout", ["grid", "run-list"])
def test_model_override_applies_to_every_run_of_either_layout(tmp_path: Path, layout: str, tiny_bert: Path) -> None:
    path = write(tmp_path / "sweep.yaml", GRID if layout == "grid" else RUN_LIST)
    ids = dry_run(path, "--model-override", "some/other-model", "--set", "train.epochs=2")
    other = SweepSpec.from_yaml(path, "some/other-model", ["train.epochs=2"]).expand()
    assert ids == [p.run_id for p in other] and len(ids) == 3
    assert {(p.spec.model.name_or_path, p.spec.train.epochs) for p in other} == {("some/other-model", 2)}
    tiny = SweepSpec.from_yaml(path, "tiny").expand()
    assert dry_run(path, "--model-override", "tiny") == [p.run_id for p in tiny]
    assert {p.spec.model.name_or_path for p in tiny} == {str(tiny_bert)}
    assert {p.spec.train.max_steps for p in tiny} == {1}  # the file's tiny profile
    assert {p.spec.model.family for p in tiny} == {"auto"}


def test_tiny_override_of_a_grid_needs_a_family(tmp_path: Path) -> None:
    doc = {**GRID, "defaults": {**GRID["defaults"], "model": {"name_or_path": "org/model"}}}
    result = CliRunner().invoke(cli, ["sweep", "--config", str(write(tmp_path / "s.yaml", doc)), "--dry-run",
                                      "--model-override", "tiny"])
    assert result.exit_code == 2 and "no tiny family given for 'org/model'" in one_line_error(result)


def test_a_file_mixing_both_layouts_is_refused(tmp_path: Path) -> None:
    doc = {**RUN_LIST, "seeds": [0, 1]}
    result = CliRunner().invoke(cli, ["sweep", "--config", str(write(tmp_path / "s.yaml", doc)), "--dry-run"])
    assert result.exit_code == 2 and "mixes the grid layout (seeds)" in one_line_error(result)


def test_run_config_takes_a_grid_file_with_overrides(tmp_path: Path) -> None:
    specs = load_runs(str(write(tmp_path / "s.yaml", GRID)), "other/model", ["data.max_length=96"])
    assert len(specs) == 3 and {(s.model.name_or_path, s.data.max_length) for s in specs} == {("other/model", 96)}


def test_a_real_tiny_sweep_with_set_and_model_override(tmp_path: Path, sentiment_files: tuple[Path, Path]) -> None:
    doc = {"defaults": {"model": {"name_or_path": "embedded", "family": "bert", "dtype": "float32"},
                        "data": {"train": str(sentiment_files[0]), "eval": str(sentiment_files[1]), "n_train": 16,
                                 "n_eval": 16},
                        "train": {"epochs": 1, "batch_size": 8, "max_steps": 1, "num_threads": 1}},
           "methods": ["lora"], "grid": {"method.r": [2]}}
    path, out = write(tmp_path / "sweep.yaml", doc), tmp_path / "runs"
    result = CliRunner().invoke(cli, ["sweep", "--config", str(path), "--out", str(out), "--quiet", "--model-override", "tiny",
                                      "--set", "data.max_length=24"])
    assert result.exit_code == 0, result.output
    (record_file,) = out.glob("*/result.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "success" and record["spec"]["data"]["max_length"] == 24
    assert Path(record["model_name"]).name == "bert-s0" and record["spec"]["method"]["r"] == 2


# ---- a models entry that names no model (issue 28) ----------------------------------------------


def test_models_entry_without_a_model_is_refused(tmp_path: Path) -> None:
    doc = {"models": [{"name": "t5", "task": "classification", "tiny": {"family": "t5"}}],
           "methods": [{"method": {"name": "lora"}}]}
    path = write(tmp_path / "s.yaml", doc)
    for command in (["sweep", "--config", str(path), "--dry-run"], ["run", "--config", str(path), "--out", str(tmp_path / "r")]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2, result.output
        line = one_line_error(result)
        assert "models entry 't5' names no model" in line and "--model-override tiny" in line
    assert {s.model.name_or_path for s in load_runs(str(path), overrides=["model.name_or_path=org/t5"])} == {"org/t5"}
    (tiny,) = load_runs(str(path), "tiny")
    assert Path(tiny.model.name_or_path).name == "t5-s0"


def test_grid_models_entry_without_a_model_is_refused(tmp_path: Path) -> None:
    doc = {"defaults": {"data": {"train": "t.csv", "eval": "e.csv"}}, "models": [{"family": "t5"}], "methods": ["lora"]}
    with pytest.raises(SpecError, match="names no model"):
        SweepSpec.from_yaml(write(tmp_path / "s.yaml", doc)).expand()
    (tiny,) = SweepSpec.from_yaml(tmp_path / "s.yaml", "tiny").expand()
    assert Path(tiny.spec.model.name_or_path).name == "t5-s0"


# ---- run folders work from any folder (issue 22.8) ----------------------------------------------


@pytest.fixture(scope="module")
def relative_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path,
                 sentiment_files: tuple[Path, Path]) -> tuple[Path, dict[str, Any]]:
    """A run made in its own folder with data paths typed relative to it."""
    from peftbench.core.runner import run

    home = tmp_path_factory.mktemp("made-here")
    (home / "data").mkdir()
    for src in sentiment_files:
        shutil.copy(src, home / "data" / src.name)
    spec = tiny_spec(tiny_bert, (Path("data/train.csv"), Path("data/eval.csv")), "lora", max_steps=2, lr=1e-2)
    spec["data"].update(n_train=32, n_eval=24)
    before = os.getcwd()
    os.chdir(home)
    try:
        record = run(RunSpec.from_dict(spec), "runs", progress=False, log=lambda _m: None)
    finally:
        os.chdir(before)
    assert record["status"] == "success"
    return home / "runs" / record["run_id"], record


def test_record_spec_holds_absolute_paths_and_the_id_is_the_same(relative_run, tiny_bert, monkeypatch) -> None:
    run_dir, record = relative_run
    data = record["spec"]["data"]
    assert data["train"] == str(run_dir.parents[1] / "data" / "train.csv")
    assert data["eval"] == str(run_dir.parents[1] / "data" / "eval.csv")
    typed = tiny_spec(tiny_bert, (Path("data/train.csv"), Path("data/eval.csv")), "lora", max_steps=2, lr=1e-2)
    typed["data"].update(n_train=32, n_eval=24)
    monkeypatch.chdir(run_dir.parents[1])
    assert RunSpec.from_dict(typed).resolved().run_id() == record["run_id"]  # resume finds the run
    assert RunSpec.from_dict(record["spec"]).run_id() == record["run_id"]  # the record's own spec too


def test_run_id_follows_data_content_not_the_path_it_is_typed_by(tmp_path, monkeypatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "train.csv").write_text("text,label\ngood,1\nbad,0\n")
    monkeypatch.chdir(tmp_path / "a")

    def run_id(train: str) -> str:
        return RunSpec.from_dict({"data": {"train": train}, "method": {"name": "lora"}}).run_id()

    typed = run_id("train.csv")
    assert typed == run_id(str(tmp_path / "a" / "train.csv")) == run_id("../b/train.csv")  # moved copy
    (tmp_path / "b" / "train.csv").write_text("text,label\ngood,1\nbad,1\n")
    assert run_id("../b/train.csv") != typed  # new content, new run
    assert run_id("imdb:train") != run_id("imdb:test")  # hub data sets count by name


def test_eval_from_another_folder_without_the_training_file(relative_run, tmp_path, monkeypatch) -> None:
    run_dir, record = relative_run
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    train = run_dir.parents[1] / "data" / "train.csv"
    shutil.move(train, tmp_path / "train.csv")  # eval only evaluates: no training file needed
    try:
        result = CliRunner().invoke(cli, ["eval", str(run_dir), "--json"])
    finally:
        shutil.move(tmp_path / "train.csv", train)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["n_eval"] == 24 and metrics["accuracy"] == pytest.approx(record["metrics"]["accuracy"], abs=1e-6)
    assert metrics["eval_loss"] == pytest.approx(record["metrics"]["eval_loss"], abs=1e-5)


def test_old_record_with_relative_paths_is_found_from_the_run_folders_parents(relative_run, tmp_path,
                                                                              monkeypatch) -> None:
    run_dir, _record = relative_run
    old = tmp_path / "project" / "runs" / run_dir.name
    shutil.copytree(run_dir, old)
    shutil.copytree(run_dir.parents[1] / "data", tmp_path / "project" / "data")
    rec = json.loads((old / "result.json").read_text())
    rec["spec"]["data"].update(train="data/train.csv", eval="data/eval.csv")  # as older versions stored them
    (old / "result.json").write_text(json.dumps(rec))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["eval", str(old), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data_eval"] == str(tmp_path / "project" / "data" / "eval.csv")
    (tmp_path / "project" / "data" / "eval.csv").unlink()
    result = CliRunner().invoke(cli, ["eval", str(old)])
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "eval file 'data/eval.csv' is not found" in line and "--data-eval FILE" in line


# ---- hub data sets: path, configuration, split, revision (issue 22.9) ---------------------------


@pytest.fixture()
def fake_hub(monkeypatch: pytest.MonkeyPatch, sentiment_files: tuple[Path, Path]) -> list[dict[str, Any]]:
    """`datasets.load_dataset` replaced (the hub is unreachable here): it records its arguments and
    returns the small sentiment table of the requested split."""
    import datasets
    import pandas as pd

    calls: list[dict[str, Any]] = []

    def load_dataset(path: str, name: str | None = None, *, split: str, revision: str | None = None) -> Any:
        calls.append({"path": path, "name": name, "split": split, "revision": revision})
        return datasets.Dataset.from_pandas(pd.read_csv(sentiment_files[0 if split == "train" else 1]))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


@pytest.mark.parametrize("written, expected", [
    ({"hub": "nyu-mll/glue", "config": "sst2", "split": "validation", "revision": "bcdc"},
     {"path": "nyu-mll/glue", "name": "sst2", "split": "validation", "revision": "bcdc"}),
    ("nyu-mll/glue:sst2:validation@bcdc", {"path": "nyu-mll/glue", "name": "sst2", "split": "validation",
                                           "revision": "bcdc"}),
    ("glue:sst2:validation", {"path": "glue", "name": "sst2", "split": "validation", "revision": None}),
    ("stanfordnlp/imdb:test", {"path": "stanfordnlp/imdb", "name": None, "split": "test", "revision": None}),
    ({"hub": "stanfordnlp/imdb"}, {"path": "stanfordnlp/imdb", "name": None, "split": "train", "revision": None}),
])
def test_hub_ids_reach_load_dataset_with_config_split_and_revision(fake_hub, written, expected) -> None:
    from peftbench.data.readers import read_table

    spec = RunSpec.from_dict({"data": {"eval": written}})
    df = read_table(str(spec.data.eval))
    assert fake_hub == [expected] and len(df) > 0 and "text" in df.columns


def test_a_tiny_run_on_a_hub_data_set_with_a_configuration(fake_hub, tiny_bert, sentiment_files, tmp_path) -> None:
    from peftbench.core.runner import run

    spec = tiny_spec(tiny_bert, sentiment_files, "lora", max_steps=1)
    spec["data"].update(train={"hub": "nyu-mll/glue", "config": "sst2", "split": "train", "revision": "v1"},
                        eval="nyu-mll/glue:sst2:validation@v1", n_train=16, n_eval=16)
    record = run(RunSpec.from_dict(spec), tmp_path, progress=False, log=lambda _m: None)
    assert record["status"] == "success", record.get("error")
    assert record["spec"]["data"]["train"] == "nyu-mll/glue:sst2:train@v1"
    assert {(c["name"], c["split"], c["revision"]) for c in fake_hub} == {("sst2", "train", "v1"),
                                                                          ("sst2", "validation", "v1")}


@pytest.mark.parametrize("written, needle", [
    ({"hub": "nyu-mll/glue", "confg": "sst2"}, "unknown key 'confg'"),
    ({"config": "sst2"}, "no 'hub' key"),
    ({"hub": "nyu-mll/glue", "split": "a:b"}, "split 'a:b' is not a plain name"),
    ("nyu-mll/glue:sst2:train:x", "is not of the form ID[:CONFIG]:SPLIT[@REVISION]"),
    ("nyu-mll/glue:sst2@", "is not of the form"),
])
def test_malformed_hub_ids_are_refused_at_validation(tmp_path: Path, written: Any, needle: str) -> None:
    config = write(tmp_path / "x.yaml", {"data": {"train": written}})
    result = CliRunner().invoke(cli, ["run", "--config", str(config), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and needle in one_line_error(result)
