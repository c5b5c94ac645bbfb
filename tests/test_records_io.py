"""The record writer's helpers on their own: run folders that stay inside the output folder, a folder
swapped in whole, JSON for the values a record holds, sizes on disk, and the environment block."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import pytest

from peftbench.errors import SpecError
from peftbench.records.io import (
    atomic_write_json,
    cpu_model,
    dir_size,
    environment,
    git_commit,
    replace_dir,
    run_dir_for,
)


def test_run_folders_stay_inside_the_output_folder(tmp_path: Path) -> None:
    assert run_dir_for(tmp_path, "lora-abc") == (tmp_path / "lora-abc").resolve()
    for bad in ("../elsewhere", "/etc", "a/../../b", "."):
        with pytest.raises(SpecError) as info:
            run_dir_for(tmp_path, bad)
        assert str(info.value) == f"run id '{bad}' would escape the output folder (fix: use a plain run name)"


def test_replace_dir_swaps_a_whole_folder_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "run"
    for version in ("old", "new"):
        staging = tmp_path / f".staging-{version}"
        (staging / "sub").mkdir(parents=True)
        (staging / "sub" / "f.txt").write_text(version)
        replace_dir(staging, target)
    assert (target / "sub" / "f.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_record_json_holds_paths_numbers_sets_and_tuples(tmp_path: Path) -> None:
    import numpy as np
    import torch

    class Odd:
        def __str__(self) -> str:
            return "odd"

    atomic_write_json(tmp_path / "r.json", {"p": Path("/a/b"), "n": np.float32(0.5), "t": torch.tensor(3),
                                           "s": {7}, "u": (1, 2), "o": Odd()})
    assert json.loads((tmp_path / "r.json").read_text()) == {"p": "/a/b", "n": 0.5, "t": 3, "s": [7], "u": [1, 2],
                                                             "o": "odd"}


def test_dir_size_counts_every_file_below(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"12345")
    (tmp_path / "y").write_bytes(b"123")
    assert dir_size(tmp_path) == 8 and dir_size(tmp_path / "y") == 3


def test_environment_names_versions_and_hardware_and_nothing_else() -> None:
    import importlib.metadata

    import torch

    env = environment()
    assert set(env) == {"python", "platform", "packages", "cpu", "cpu_count", "cpu_native_bf16", "torch_threads",
                        "cuda", "gpu", "gpu_count"}
    assert env["python"] == platform.python_version() and env["platform"] == platform.platform()
    for pkg, version in env["packages"].items():
        try:
            assert version == importlib.metadata.version(pkg), pkg
        except importlib.metadata.PackageNotFoundError:
            assert version is None, pkg
    assert set(env["packages"]) == {"peftbench", "torch", "transformers", "peft", "accelerate", "bitsandbytes",
                                    "datasets", "scikit-learn", "numpy"}
    assert env["cpu"] == cpu_model() and env["cpu_count"] == os.cpu_count()
    assert env["torch_threads"] == torch.get_num_threads() and env["cuda"] is torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert (env["gpu"], env["gpu_count"]) == (None, 0)


def test_cpu_model_is_the_proc_cpuinfo_name() -> None:
    info = Path("/proc/cpuinfo")
    names = [ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines() if ln.startswith("model name")] \
        if info.exists() else []
    if names:
        assert cpu_model() == names[0]


def test_git_commit_is_the_checkout_head() -> None:
    here = Path(__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True)
    assert git_commit() == (head.stdout.strip() if head.returncode == 0 else None)
