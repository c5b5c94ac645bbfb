"""What a generative run must improve on: the untrained base model's scores on the run's own eval set.

A classifier is judged against the majority-class predictor (`tasks.learning`); a summarizer or an
instruction-tuned LM against the model it started from. The base model is evaluated once per
(model, task, data, generation settings, precision, device) and cached beside the runs
(`<out>/.cache/base/`), so a sweep of many methods on one model pays for it once. The evaluation runs
before training, with any adapter switched off and the random state restored afterwards, so it
changes nothing the run then does.

A run with lm-eval tasks (`evaluation.lm_eval`, `retention.lm_eval_tasks`) has its base model scored
by lm-eval the same way (`lm_eval_base_scores`): once per model, task set, lm-eval settings and
version, precision and device, cached in the same folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
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


def adapters_off(model: Any) -> contextlib.AbstractContextManager[Any]:
    """A peft model with its adapter disabled; any other model (full or partial fine-tuning before its
    first step) is its own base."""
    disable = getattr(model, "disable_adapter", None)
    return disable() if callable(disable) else contextlib.nullcontext()


def cached(path: Path, section: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`compute()`'s entry with `"cached": False`, written to `path`; the entry read back (`"cached": True`)
    when `path` holds one with a mapping under `section`."""
    with contextlib.suppress(OSError, ValueError):
        entry = json.loads(path.read_text())
        if isinstance(entry, dict) and isinstance(entry.get(section), dict):
            return {**entry, "cached": True}
    entry = compute()
    with contextlib.suppress(OSError):  # a read-only output folder only costs the evaluation next time
        atomic_write_json(path, entry)
    return {**entry, "cached": False}


def base_model_scores(spec: Any, task: Any, model: Any, eval_enc: Any, prepared: Any, *, cache_dir: Path,
                      compute_dtype: str, device: str, amp_dtype: Any, pad_id: int) -> dict[str, Any]:
    """`{"metrics": {...}, "predictions": ..., "cached": bool}`: the untrained base model's eval scores,
    from the cache when this exact evaluation was made before."""
    import torch

    def compute() -> dict[str, Any]:
        was_training = model.training
        batch_size = spec.train.eval_batch_size or spec.train.batch_size * 4
        with torch.random.fork_rng(devices=[]), adapters_off(model):
            metrics = task.evaluate(model, eval_enc, prepared, batch_size=batch_size, device=device,
                                    autocast_dtype=amp_dtype, pad_id=pad_id)
        model.train(was_training)
        predictions = metrics.pop("predictions", None)
        return {"metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
                "predictions": predictions}

    return cached(cache_dir / f"{cache_key(spec, compute_dtype, device)}.json", "metrics", compute)


def lm_eval_base_scores(spec: Any, plan: Any, model: Any, tokenizer: Any, *, cache_dir: Path, compute_dtype: str,
                        device: str, amp_dtype: Any, progress: bool = False) -> dict[str, Any]:
    """`{"tasks": {name: summary}, "cached": bool}`: the untrained base model's lm-eval scores
    (`evaluation.harness`), cached beside the generative base scores, per model, task set and settings."""
    from peftbench.evaluation import harness

    identity = {"version": CACHE_VERSION, "kind": "lm_eval", "model": spec.model.model_dump(mode="json"),
                "lm_eval": plan.identity(), "compute_dtype": compute_dtype, "device": device}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def compute() -> dict[str, Any]:
        with adapters_off(model):
            lm = harness.make_lm(model, tokenizer, batch_size=plan.batch_size, amp_dtype=amp_dtype)
            return {"tasks": harness.evaluate(lm, plan, progress=progress)}

    return cached(cache_dir / f"lm_eval-{key}.json", "tasks", compute)
