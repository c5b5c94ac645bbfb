"""Shared fixtures: tiny random models, small data files, paths to the real data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PEFTBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("PEFTBENCH_CACHE", str(tmp_path_factory.mktemp("peftbench-cache")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Terminal tables fit $COLUMNS; tests that want a width set it. GNU readline (imported with pdb)
    # exports COLUMNS behind os.environ's back, so it is unset at the C level too.
    os.environ.pop("COLUMNS", None)
    os.unsetenv("COLUMNS")


@pytest.fixture(scope="session")
def tiny_bert() -> Path:
    from peftbench.models.tiny import tiny_model_path

    return tiny_model_path("bert")


@pytest.fixture(scope="session")
def sentiment_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small generated sentiment train/eval pair (CSV, text/label)."""
    from peftbench.data.synthetic import generate, write_csv

    root = tmp_path_factory.mktemp("sentiment")
    train, eval_ = generate(160, 64, seed=3)
    return write_csv(train, root / "train.csv"), write_csv(eval_, root / "eval.csv")


def tiny_spec(model: Path, files: tuple[Path, Path], method: str = "lora", **train: object) -> dict:
    """A spec dict for a seconds-long run on a tiny model."""
    return {
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "data": {"train": str(files[0]), "eval": str(files[1]), "max_length": 32},
        "method": {"name": method},
        "train": {"epochs": 1, "batch_size": 16, "log_every": 2, **train},
    }


def on_ci() -> bool:
    """True on CI (`CI=true`, as CI services and .ci/run's environment set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_data(path: Path) -> Path:
    """`path` when it is a folder. Absent: the test fails on CI (where the data must be present, so a
    missing mount cannot pass silently) and is skipped with the reason on a user's machine."""
    if path.is_dir():
        return path
    reason = f"real data folder {path} is absent (set PEFTBENCH_SHARED_DATA to the folder holding sst2/, samsum/)"
    if on_ci():
        pytest.fail(f"{reason}; CI=true, so the real-data tests must run", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (`../shared/data` or `$PEFTBENCH_SHARED_DATA`), through `require_data`."""
    return require_data(SHARED_DATA)


def load_schema(name: str) -> dict:
    """A JSON Schema of src/peftbench/records/schema/, its `task` enum filled from the task registry
    (the files say "a registered task name": adding a task touches no schema)."""
    import json

    from peftbench.tasks.base import TASKS

    schema = json.loads((REPO / "src" / "peftbench" / "records" / "schema" / f"{name}.schema.json").read_text())
    schema["properties"]["task"]["enum"] = TASKS.names()
    return schema
