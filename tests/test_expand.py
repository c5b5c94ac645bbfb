"""Multi-run spec files: deep merge, the axes' product, per-method axes, run names, tiny override."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from peftbench.config.multirun import expand, is_multi_run, load_runs
from peftbench.errors import SpecError

DOC = {
    "defaults": {"train": {"epochs": 3, "batch_size": 16}, "data": {"max_length": 128}},
    "models": [
        {"name": "a", "task": "classification", "model": {"name_or_path": "org/a"}, "train": {"batch_size": 8},
         "tiny": {"family": "distilbert", "data": {"n_train": 4}}},
        {"name": "b", "task": "instruction", "model": {"name_or_path": "org/b"}, "tiny": {"family": "gpt2"}},
    ],
    "methods": [{"method": {"name": "lora"}, "axes": {"method.r": [8, 16]}}, {"method": {"name": "ia3"}}],
    "axes": {"train.seed": [1, 2]},
    "tiny": {"train": {"max_steps": 2}},
}


def test_product_of_models_methods_and_axes() -> None:
    runs = expand(DOC)
    assert len(runs) == 2 * (2 + 1) * 2
    names = [r["name"] for r in runs]
    assert len(set(names)) == len(names)
    # Global axes first (slowest), then the model's, then the method's own.
    assert names[:3] == ["a-lora-seed1-r8", "a-lora-seed1-r16", "a-lora-seed2-r8"]
    first = runs[0]
    # Deep merge: the model's batch size wins, the default epochs and max length stay.
    assert first["train"] == {"epochs": 3, "batch_size": 8, "seed": 1}
    assert first["data"] == {"max_length": 128}
    assert first["method"] == {"name": "lora", "r": 8}
    ia3 = [r for r in runs if r["method"]["name"] == "ia3"]
    assert all("r" not in r["method"] for r in ia3) and len(ia3) == 4
    assert "tiny" not in first and "axes" not in first


def test_method_name_axis_and_plain_spec() -> None:
    runs = expand({"defaults": {"task": "classification"}, "axes": {"method.name": ["full", "lora"]}})
    assert [r["method"]["name"] for r in runs] == ["full", "lora"]
    assert [r["name"] for r in runs] == ["full", "lora"]
    plain = {"name": "mine", "method": {"name": "lora", "r": 4}}
    assert not is_multi_run(plain)
    assert expand(plain) == [plain]


def test_env_substitution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFTBENCH_SHARED_DATA", "/data/here")
    run = expand({"defaults": {"data": {"train": "${PEFTBENCH_SHARED_DATA}/x.csv", "eval": "${UNSET_XYZ}/y"}}})[0]
    assert run["data"] == {"train": "/data/here/x.csv", "eval": "${UNSET_XYZ}/y"}
    monkeypatch.delenv("PEFTBENCH_SHARED_DATA")
    assert expand({"defaults": {"data": {"train": "${PEFTBENCH_SHARED_DATA}/x"}}})[0]["data"]["train"] == \
        "../shared/data/x"


def test_model_override() -> None:
    runs = expand(DOC, model_override="some/other")
    assert {r["model"]["name_or_path"] for r in runs} == {"some/other"}
    tiny = expand(DOC, model_override="tiny")
    a, b = tiny[0], tiny[-1]
    assert Path(a["model"]["name_or_path"]).name.startswith("distilbert")
    assert Path(b["model"]["name_or_path"]).name.startswith("gpt2")
    assert a["data"]["n_train"] == 4 and "n_train" not in b["data"]
    assert a["train"]["max_steps"] == 2 and a["train"]["epochs"] == 3
    assert "family" not in a and a["model"]["family"] == "auto"


def test_errors() -> None:
    with pytest.raises(SpecError, match="no tiny family"):
        expand({"defaults": {"model": {"name_or_path": "x"}}}, model_override="tiny")
    with pytest.raises(SpecError, match="tiny model family"):
        expand({"defaults": {}, "tiny": {"family": "gtp2"}}, model_override="tiny")
    with pytest.raises(SpecError, match="non-empty list"):
        expand({"axes": {"method.r": 8}})
    with pytest.raises(SpecError, match="list of mappings"):
        expand({"models": {"name": "a"}})


def test_load_runs_validates_every_run_and_applies_sets(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(DOC))
    specs = load_runs(str(path), overrides=["train.lr=0.01"])
    assert len(specs) == 12 and {s.train.lr for s in specs} == {0.01}
    bad = dict(DOC, methods=[{"method": {"name": "ia3"}, "axes": {"method.r": [8]}}])
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(SpecError, match=r"method\.r"):
        load_runs(str(path))
