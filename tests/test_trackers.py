"""report_to: TensorBoard event files, an MLflow file-store run and a W&B offline folder, all
holding the same numbers as the record."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import tiny_spec
from peftbench.config.spec import RunSpec
from peftbench.errors import SpecError


def _spec(model: Path, files: tuple[Path, Path], report_to: list[str]) -> RunSpec:
    spec = tiny_spec(model, files, "lora", device="cpu", batch_size=8)
    spec["data"]["n_train"] = 64
    spec["report_to"] = report_to
    return RunSpec.from_dict(spec)


@pytest.fixture
def _no_tracker_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))


@pytest.mark.usefixtures("_no_tracker_env")
def test_tensorboard_and_mlflow_hold_the_record_numbers(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from peftbench.core.runner import run

    out = tmp_path / "runs"
    record = run(_spec(tiny_bert, sentiment_files, ["tensorboard", "mlflow"]), out, progress=False,
                 log=lambda _m: None)
    assert record["status"] == "success"
    curve = record["train"]["loss_curve"]
    assert len(curve) >= 3

    # TensorBoard: event files readable, per-step loss and eval and final metrics as recorded.
    events = EventAccumulator(str(out / record["run_id"] / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [p["step"] for p in curve]
    assert [e.value for e in loss] == pytest.approx([p["loss"] for p in curve], rel=1e-5)
    # eval/ holds the per-epoch evaluations (on the validation split), final/ the test metrics.
    assert events.Scalars("eval/accuracy")[-1].value == pytest.approx(record["eval"]["per_epoch"][-1]["accuracy"])
    assert events.Scalars("final/eval_loss")[-1].value == pytest.approx(record["metrics"]["eval_loss"], rel=1e-5)
    assert "params/text_summary" in events.Tags()["tensors"]

    # MLflow: one run in the local file store, named by the run id, metrics equal to the record's.
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("peftbench")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    mlrun = runs[0]
    assert mlrun.info.run_name == record["run_id"] and mlrun.info.status == "FINISHED"
    metrics = mlrun.data.metrics
    assert metrics["final/accuracy"] == pytest.approx(record["metrics"]["accuracy"])
    assert metrics["final/f1_macro"] == pytest.approx(record["metrics"]["f1_macro"])
    assert metrics["final/trainable_params"] == record["params"]["trainable"]
    history = client.get_metric_history(mlrun.info.run_id, "train/loss")
    assert sorted((m.step, round(m.value, 5)) for m in history) == [(p["step"], round(p["loss"], 5)) for p in curve]
    assert mlrun.data.params["train.batch_size"] == "8"
    assert mlrun.data.params["method.name"] == "lora"
    # The record is attached under a name record loaders do not pick up as a second result.
    from peftbench.records.io import load_records

    assert [r["run_id"] for r in load_records(out)] == [record["run_id"]]


@pytest.mark.usefixtures("_no_tracker_env")
def test_wandb_offline_writes_its_run_folder(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb is not installed (pip install 'peftbench[trackers]')")
    from peftbench.core.runner import run

    out = tmp_path / "runs"
    record = run(_spec(tiny_bert, sentiment_files, ["wandb"]), out, progress=False, log=lambda _m: None)
    assert record["status"] == "success"
    folders = list((out / record["run_id"] / "wandb").glob("offline-run-*"))
    assert len(folders) == 1
    logs = list(folders[0].glob("*.wandb"))
    assert len(logs) == 1, "no W&B run log in the offline folder"
    blob = logs[0].read_bytes()  # what `wandb sync` would upload
    assert _wandb_values(blob, "final/accuracy")[-1] == pytest.approx(record["metrics"]["accuracy"])
    assert _wandb_values(blob, "status")[-1] == "success"
    losses = {round(v, 5) for v in _wandb_values(blob, "train/loss")}
    assert losses == {round(p["loss"], 5) for p in record["train"]["loss_curve"]}


def _wandb_values(blob: bytes, key: str) -> list:
    """Values logged under `key` in a W&B offline run log: each item is a protobuf message whose
    `key` string is followed by field 16 (`value_json`, tag bytes 0x82 0x01) holding JSON text."""
    import re

    values = []
    for match in re.finditer(re.escape(key.encode()) + rb"\x82\x01", blob):
        pos, size, shift = match.end(), 0, 0
        while True:  # varint length
            byte = blob[pos]
            size |= (byte & 0x7F) << shift
            pos += 1
            shift += 7
            if byte < 0x80:
                break
        values.append(json.loads(blob[pos:pos + size]))
    return values


def test_report_to_is_checked_and_does_not_change_the_run_id(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peftbench.core import trackers
    from peftbench.core.runner import run

    plain = _spec(tiny_bert, sentiment_files, [])
    assert _spec(tiny_bert, sentiment_files, ["tensorboard"]).run_id() == plain.run_id()
    with pytest.raises(SpecError, match="report_to"):
        RunSpec.from_dict({**plain.to_dict(), "report_to": ["neptune"]})
    monkeypatch.setitem(trackers.PACKAGES, "mlflow", "surely_not_an_installed_package")
    with pytest.raises(SpecError, match="mlflow but the package is not installed"):
        run(_spec(tiny_bert, sentiment_files, ["mlflow"]), tmp_path, progress=False, log=lambda _m: None)
