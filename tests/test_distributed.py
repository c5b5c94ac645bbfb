"""Data-parallel runs: a 2-process gloo run must follow the same path as one process.

The tiny model and LoRA run without dropout here, so both runs are deterministic and their
records can be compared closely (dropout draws differ between one process and two).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, tiny_spec
from peftbench.core.distributed import split_batch


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 5, 7, 16])
def test_split_batch_covers_the_batch_and_weights_average_to_the_global_mean(n: int, world: int) -> None:
    idx = list(range(100, 100 + n))
    shards = [split_batch(idx, r, world) for r in range(world)]
    real = [s for s in shards if s.weight > 0]
    assert [i for s in real for i in s.idx] == idx  # contiguous, in order, nothing lost or repeated
    assert all(s.idx for s in shards)  # every rank computes something, so it joins the all-reduce
    # DDP averages the ranks' weighted mean losses: that must equal the mean loss over `idx`.
    loss = {i: (i * 37 % 11) / 3 for i in idx}
    ddp = sum(s.weight * sum(loss[i] for i in s.idx) / len(s.idx) for s in shards) / world
    assert ddp == pytest.approx(sum(loss.values()) / n)


@pytest.fixture(scope="module")
def no_dropout_bert(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("bert-nodrop") / "model"
    shutil.copytree(tiny_bert, target)
    config = json.loads((target / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (target / "config.json").write_text(json.dumps(config))
    return target


def _spec(model: Path, files: tuple[Path, Path]) -> dict:
    # Uneven splits (5 = 3 + 2), a 1-example tail batch (81 = 16*5 + 1) and gradient accumulation.
    spec = tiny_spec(model, files, "full", batch_size=5, grad_accum=2, lr=1e-3, device="cpu")
    spec["data"]["n_train"] = 81
    spec["save"] = "none"
    return spec


def test_two_process_gloo_run_matches_one_process(no_dropout_bert: Path, sentiment_files: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run

    spec = _spec(no_dropout_bert, sentiment_files)
    one = run(RunSpec.from_dict(spec), tmp_path / "one", progress=False, log=lambda _m: None)

    config = tmp_path / "spec.yaml"
    config.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "peftbench", "run", "--config", str(config), "--out", str(tmp_path / "two"), "--quiet"],
        env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = list((tmp_path / "two").rglob("result.json"))
    assert len(records) == 1
    two = json.loads(records[0].read_text())

    assert two["status"] == "success" and two["run_id"] == one["run_id"]
    assert two["distributed"]["world_size"] == 2 and two["distributed"]["backend"] == "gloo"
    assert one["distributed"]["world_size"] == 1
    assert two["distributed"]["global_batch_size"] == 5 and two["distributed"]["per_device_batch_size"] == 3
    # Same global batches, same schedule: same steps, samples and losses.
    assert two["train"]["steps"] == one["train"]["steps"] == 9
    assert two["train"]["samples"] == one["train"]["samples"] == 81
    assert two["train"]["real_tokens"] == one["train"]["real_tokens"]
    curve_one = [p["loss"] for p in one["train"]["loss_curve"]]
    curve_two = [p["loss"] for p in two["train"]["loss_curve"]]
    assert curve_two == pytest.approx(curve_one, abs=1e-4)
    assert two["metrics"]["eval_loss"] == pytest.approx(one["metrics"]["eval_loss"], abs=1e-4)
    assert two["metrics"]["accuracy"] == pytest.approx(one["metrics"]["accuracy"], abs=1 / 64)
    # Memory per rank and their max; throughput counts every rank's samples.
    memory = two["train"]["memory"]
    assert len(memory["per_rank_peak_bytes"]) == 2
    assert two["train"]["peak_memory_bytes"] == max(memory["per_rank_peak_bytes"])
    assert two["train"]["samples_per_s"] == pytest.approx(81 / two["train"]["time_s"])
    # Each rank pads its own slice: padded tokens add up over ranks (and include the tail's filler row).
    assert two["train"]["computed_tokens"] >= two["train"]["real_tokens"]


def test_only_rank_zero_writes(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run

    monkeypatch.setenv("RANK", "1")
    spec = tiny_spec(tiny_bert, sentiment_files, "lora", device="cpu")
    spec["data"]["n_train"] = 32
    record = run(RunSpec.from_dict(spec), tmp_path, progress=False)
    assert record["status"] == "success"
    assert not list(tmp_path.rglob("result.json"))
    assert not list(tmp_path.rglob("*.safetensors"))
    assert record["artifact"]["saved"] is False
