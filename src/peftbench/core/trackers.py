"""Experiment trackers (`report_to: [tensorboard, mlflow, wandb]`): params, loss, eval, final record.

Each tracker is a small class behind the `Tracker` protocol; the runner talks to a `Trackers`
fan-out, which is empty (a no-op) by default and on every rank but 0. Where each tool writes:

- tensorboard: `<run folder>/tensorboard/` (event files; `tensorboard --logdir <out>` shows all runs),
- mlflow: `$MLFLOW_TRACKING_URI` when set, else the local file store `<out>/mlruns`; experiment
  `$MLFLOW_EXPERIMENT_NAME` or "peftbench"; the run is named by the run id,
- wandb: project `$WANDB_PROJECT` or "peftbench", files under `<run folder>/wandb/`; `WANDB_MODE=offline`
  keeps everything local.

A tracker that fails mid-run is dropped with a warning: a logging hiccup never costs a finished run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from peftbench.errors import SpecError

# report_to name -> the package it needs (checked before training starts).
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


class Tracker(Protocol):
    """What the runner needs from a tracker."""

    name: str

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def finish(self, record: dict[str, Any]) -> None: ...


# ---- helpers -------------------------------------------------------------------------------


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1e-4}} -> {'train.lr': 1e-4}; lists become JSON text."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def final_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The scalars of a finished record that trackers show as the run's summary."""
    out = {k: float(v) for k, v in (record.get("metrics") or {}).items()
           if isinstance(v, int | float) and not isinstance(v, bool)}
    train = record.get("train") or {}
    for key in ("time_s", "samples_per_s", "tokens_per_s", "peak_memory_bytes", "final_loss"):
        if isinstance(train.get(key), int | float):
            out[f"train_{key}" if not key.startswith("train") else key] = float(train[key])
    params = record.get("params") or {}
    if isinstance(params.get("trainable"), int):
        out["trainable_params"] = float(params["trainable"])
    if isinstance((record.get("artifact") or {}).get("size_bytes"), int):
        out["artifact_bytes"] = float(record["artifact"]["size_bytes"])
    return out


def point_metrics(kind: str, point: dict[str, Any]) -> tuple[dict[str, float], int]:
    """A loss-curve point or an epoch's eval (from `train.train`) as namespaced tracker metrics."""
    step = int(point.get("step", 0))
    values = {f"{kind}/{k}": float(v) for k, v in point.items()
              if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)}
    return values, step


# ---- the trackers --------------------------------------------------------------------------


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, run_dir: Path, run_id: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.step = 0

    def log_params(self, params: dict[str, Any]) -> None:
        table = "\n".join(f"| {k} | {v} |" for k, v in params.items())
        self.writer.add_text("params", "| key | value |\n|---|---|\n" + table, 0)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.step = max(self.step, step)

    def finish(self, record: dict[str, Any]) -> None:
        for key, value in final_metrics(record).items():
            self.writer.add_scalar(f"final/{key}", value, self.step)
        self.writer.add_text("record", "```\n" + json.dumps(record, indent=1, default=str)[:60000] + "\n```", self.step)
        self.writer.add_text("status", str(record.get("status")), self.step)
        self.writer.close()


class MlflowTracker:
    """Through `MlflowClient` (no global active run). Step metrics are buffered and sent in
    batches at each eval and at the end, so a remote server's latency stays off the training clock."""

    name = "mlflow"
    MAX_PARAMS = 100  # per log_batch call
    MAX_PARAM_CHARS = 6000

    def __init__(self, out_dir: Path, run_id: str):
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # The local folder store is what works without a server or a database install.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (out_dir / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        self.tracking_uri = uri
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "peftbench")
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(name)
        self.run = self.client.create_run(exp_id, run_name=run_id, tags={"peftbench.run_id": run_id})
        self.mlflow_run_id = self.run.info.run_id
        self.pending: list[Any] = []
        self.step = 0

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[: self.MAX_PARAM_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), self.MAX_PARAMS):
            self.client.log_batch(self.mlflow_run_id, params=items[i:i + self.MAX_PARAMS])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending.extend(Metric(k, v, now, step) for k, v in metrics.items())
        self.step = max(self.step, step)
        if any(k.startswith("eval/") for k in metrics):
            self.flush()

    def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:1000], self.pending[1000:]
            self.client.log_batch(self.mlflow_run_id, metrics=batch)

    def finish(self, record: dict[str, Any]) -> None:
        self.log_metrics({f"final/{k}": v for k, v in final_metrics(record).items()}, self.step)
        self.flush()
        self.client.set_tag(self.mlflow_run_id, "peftbench.status", str(record.get("status")))
        # Not "result.json": record loaders scan folders for that name.
        self.client.log_dict(self.mlflow_run_id, json.loads(json.dumps(record, default=str)),
                             "peftbench_record.json")
        self.client.set_terminated(self.mlflow_run_id, "FINISHED" if record.get("status") == "success" else "FAILED")


class WandbTracker:
    name = "wandb"

    def __init__(self, run_dir: Path, run_id: str):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "peftbench"), name=run_id,
                              dir=str(run_dir), reinit="create_new")

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, record: dict[str, Any]) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in final_metrics(record).items()})
        self.run.summary["status"] = record.get("status")
        self.run.finish(exit_code=0 if record.get("status") == "success" else 1)


# ---- the fan-out ---------------------------------------------------------------------------


class Trackers:
    """All trackers of a run; a failing one is dropped with a warning, the run goes on."""

    def __init__(self, trackers: list[Tracker] | None = None):
        self.trackers: list[Tracker] = list(trackers or [])

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def _each(self, action: str, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, action)(*args)
            except Exception as err:
                print(f"[peftbench] warning: {tracker.name} tracker failed ({type(err).__name__}: "
                      f"{str(err).splitlines()[0][:200] if str(err) else ''}); it is dropped for this run",
                      file=sys.stderr)
                self.trackers.remove(tracker)

    def log_params(self, params: dict[str, Any]) -> None:
        self._each("log_params", params)

    def log_point(self, kind: str, point: dict[str, Any]) -> None:
        """The `on_log` hook of `train.train`."""
        metrics, step = point_metrics(kind, point)
        self._each("log_metrics", metrics, step)

    def finish(self, record: dict[str, Any]) -> None:
        self._each("finish", record)
        self.trackers.clear()


def check_available(names: list[str]) -> None:
    missing = [n for n in names if importlib.util.find_spec(PACKAGES[n]) is None]
    if missing:
        raise SpecError(f"report_to lists {', '.join(missing)} but the package is not installed",
                        hint="pip install 'peftbench[trackers]' (or the package itself), or drop it from report_to")


def open_trackers(spec: Any, run_dir: Path, out_dir: Path, run_id: str) -> Trackers:
    """Start the trackers a spec asks for and log its parameters (rank 0 only)."""
    from peftbench.core.distributed import is_main_process

    names = list(dict.fromkeys(spec.report_to or []))
    if not names or not is_main_process():
        return Trackers()
    check_available(names)
    built: list[Tracker] = []
    for name in names:
        try:
            if name == "tensorboard":
                built.append(TensorBoardTracker(run_dir, run_id))
            elif name == "mlflow":
                built.append(MlflowTracker(out_dir, run_id))
            elif name == "wandb":
                built.append(WandbTracker(run_dir, run_id))
        except Exception as err:  # before training: better to stop now than to lose the logs
            Trackers(built).finish({"status": "failed"})
            first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise SpecError(f"could not start the {name} tracker: {first}",
                            hint=f"check the {name} settings (docs/trackers.md) or drop it from report_to") from None
    trackers = Trackers(built)
    trackers.log_params({"run_id": run_id, **flatten(spec.to_dict())})
    return trackers
