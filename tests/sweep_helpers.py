"""Helpers shared by the sweep tests: a seconds-long sweep file on the tiny model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def tiny_sweep(model: Path, files: tuple[Path, Path], **extra: Any) -> dict[str, Any]:
    """2 methods x 3 ranks x 2 seeds, one optimizer step each, on the tiny BERT."""
    spec: dict[str, Any] = {
        "defaults": {
            "model": {"name_or_path": str(model), "dtype": "float32"},
            "data": {"train": str(files[0]), "eval": str(files[1]), "max_length": 32, "n_train": 16, "n_eval": 16},
            "train": {"epochs": 1, "batch_size": 8, "max_steps": 1, "log_every": 1, "num_threads": 1},
        },
        "methods": ["lora", "dora"],
        "grid": {"method.r": [2, 4, 8]},
        "seeds": [0, 1],
    }
    spec.update(extra)
    return spec


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "peftbench", *args]


def record_files(out: Path) -> dict[str, bytes]:
    """run id -> bytes of its result.json."""
    return {p.parent.name: p.read_bytes() for p in sorted(out.glob("*/result.json"))}


def check_complete(out: Path) -> dict[str, dict[str, Any]]:
    """Every record present parses and is complete; returns them by run id."""
    recs = {}
    for rid, blob in record_files(out).items():
        rec = json.loads(blob)
        assert rec["run_id"] == rid
        assert rec["status"] in ("success", "failed", "canceled"), rec["status"]
        assert rec["spec"]["method"]["name"] == rec["method"]
        if rec["status"] == "success":
            assert isinstance(rec["metrics"]["accuracy"], float) and rec["artifact"]["size_bytes"] > 0
        else:
            assert rec["error"]["type"] and rec["error"]["message"]
        recs[rid] = rec
    return recs
