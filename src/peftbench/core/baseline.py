"""What a generative run must improve on: the untrained base model's scores on the run's own eval set.

A classifier is judged against the majority-class predictor (`tasks.learning`); a summarizer or an
instruction-tuned LM against the model it started from. The base model is evaluated once per
(model, task, data, generation settings, precision, device) and cached beside the runs
(`<out>/.cache/base/`), so a sweep of many methods on one model pays for it once. The evaluation runs
before training, with any adapter switched off and the random state restored afterwards, so it
changes nothing the run then does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from peftbench.records.io import atomic_write_json

CACHE_VERSION = 1


def cache_key(spec: Any, compute_dtype: str, device: str) -> str:
    """Everything the base model's eval scores depend on, hashed: the model, the task, the data
    (settings and file contents), the generation settings, the precision and the device."""
    from peftbench.config.spec import data_file_digests

    data = spec.data.model_dump(mode="json")
    identity = {
        "version": CACHE_VERSION, "task": spec.task, "model": spec.model.model_dump(mode="json"), "data": data,
        "data_sha256": data_file_digests(data),
        "generation": spec.generation.model_dump(mode="json"), "compute_dtype": compute_dtype, "device": device,
        "eval_batch_size": spec.train.eval_batch_size or spec.train.batch_size * 4,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _adapters_off(model: Any) -> contextlib.AbstractContextManager[Any]:
    """A peft model with its adapter disabled; any other model (full or partial fine-tuning before its
    first step) is its own base."""
    disable = getattr(model, "disable_adapter", None)
    return disable() if callable(disable) else contextlib.nullcontext()


def base_model_scores(spec: Any, task: Any, model: Any, eval_enc: Any, prepared: Any, *, cache_dir: Path,
                      compute_dtype: str, device: str, amp_dtype: Any, pad_id: int) -> dict[str, Any]:
    """`{"metrics": {...}, "predictions": ..., "cached": bool}`: the untrained base model's eval scores,
    from the cache when this exact evaluation was made before."""
    import torch

    path = cache_dir / f"{cache_key(spec, compute_dtype, device)}.json"
    with contextlib.suppress(OSError, ValueError):
        entry = json.loads(path.read_text())
        if isinstance(entry, dict) and isinstance(entry.get("metrics"), dict):
            return {**entry, "cached": True}
    was_training = model.training
    batch_size = spec.train.eval_batch_size or spec.train.batch_size * 4
    with torch.random.fork_rng(devices=[]), _adapters_off(model):
        metrics = task.evaluate(model, eval_enc, prepared, batch_size=batch_size, device=device,
                                autocast_dtype=amp_dtype, pad_id=pad_id)
    model.train(was_training)
    predictions = metrics.pop("predictions", None)
    entry = {"metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
             "predictions": predictions}
    with contextlib.suppress(OSError):  # a read-only output folder only costs the evaluation next time
        atomic_write_json(path, entry)
    return {**entry, "cached": False}
