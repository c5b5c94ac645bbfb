"""Forgetting: what fine-tuning cost the model on data it was not tuned for.

`retention:` in a spec names a file (any format `data.read_table` reads). Its texts go through the
model before the first training step and again after training (same examples, same order):

- Representation drift (always): features are the attention-masked mean of the last hidden
  state; `drift = 1 − mean cosine(before, after)` over the examples (0: unchanged).
- Probe accuracy (when the file has the label column): a logistic-regression probe is fit on
  the frozen features of a seeded, stratified half of the examples and scored on the other
  half, once on the features before and once after fine-tuning. An encoder's head is for the
  new task, so a linear probe is how "what the representation still knows" is read out.

`forgetting` in the record is the probe accuracy drop (before − after, positive = forgot) when
labels exist, otherwise the drift; `forgetting_metric` says which.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .errors import DataError


@dataclass
class RetentionData:
    path: str
    texts: list[str]
    labels: list[int] | None
    features_before: Any = None
    enc: Any = None


def load(spec: Any) -> RetentionData | None:
    """Read and check the retention file before any model is loaded (None when not asked for)."""
    r = spec.retention
    if r is None:
        return None
    from .data import _label_values, _require, _texts, read_table, stratified_subsample

    df = read_table(r.file)
    _require(df, r.text_column, r.file, "text")
    labels = None
    if r.label_column and r.label_column in df.columns:
        values = _label_values(df, r.label_column, r.file)
        names = sorted(set(values), key=str)
        if len(names) < 2:
            raise DataError(f"retention file '{r.file}' has a single class in '{r.label_column}'",
                            hint="give several classes, or set retention.label_column: null for drift only")
        labels = [names.index(v) for v in values]
    keep = stratified_subsample(labels or [0] * len(df), r.n, spec.data.seed + 3)
    texts = _texts(df.iloc[keep], r.text_column, r.file)
    return RetentionData(r.file, texts, [labels[i] for i in keep] if labels else None)


def _features(model: Any, enc: Any, pad_id: int, device: str, autocast_dtype: Any, batch_size: int) -> Any:
    from contextlib import nullcontext

    import torch

    from .train import collate

    was_training = model.training
    model.eval()
    amp = torch.autocast(device_type=device, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    out = []
    with torch.inference_mode(), amp:
        for start in range(0, len(enc), batch_size):
            idx = list(range(start, min(start + batch_size, len(enc))))
            batch = {k: v.to(device) for k, v in collate(enc, idx, pad_id).items() if k != "labels"}
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1].float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu())
    model.train(was_training)
    return torch.cat(out)


def before(data: RetentionData | None, model: Any, tokenizer: Any, spec: Any, pad_id: int, device: str,
           autocast_dtype: Any) -> None:
    """Features of the retention texts before the first training step."""
    if data is None:
        return
    from .data import encode_classification

    data.enc = encode_classification(tokenizer, data.texts, None, data.labels or [0] * len(data.texts),
                                     spec.data.max_length)
    bs = spec.train.eval_batch_size or spec.train.batch_size * 4
    data.features_before = _features(model, data.enc, pad_id, device, autocast_dtype, bs)


def _probe(features: Any, labels: list[int], fraction: float, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = [labels.count(c) for c in set(labels)]
    x_tr, x_te, y_tr, y_te = train_test_split(features.numpy(), labels, train_size=fraction, random_state=seed,
                                              stratify=labels if min(counts) >= 2 else None)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(probe.fit(x_tr, y_tr).score(x_te, y_te))


def after(data: RetentionData | None, model: Any, spec: Any, pad_id: int, device: str,
          autocast_dtype: Any) -> dict[str, Any] | None:
    """The record's `retention` section."""
    if data is None:
        return None
    import torch

    t0 = time.perf_counter()
    bs = spec.train.eval_batch_size or spec.train.batch_size * 4
    feats = _features(model, data.enc, pad_id, device, autocast_dtype, bs)
    cos = torch.nn.functional.cosine_similarity(data.features_before, feats, dim=1)
    drift = float(1 - cos.mean().item())
    out: dict[str, Any] = {"file": data.path, "n": len(data.texts), "split": "retention",
                           "drift": drift, "mean_cosine": float(cos.mean().item())}
    if data.labels is not None:
        seed = spec.data.seed + 3
        frac = spec.retention.probe_fraction
        acc_before = _probe(data.features_before, data.labels, frac, seed)
        acc_after = _probe(feats, data.labels, frac, seed)
        out["probe"] = {"before_accuracy": acc_before, "after_accuracy": acc_after, "train_fraction": frac,
                        "seed": seed, "classifier": "standardized logistic regression"}
        out.update(forgetting=acc_before - acc_after, forgetting_metric="probe_accuracy_drop")
    else:
        out.update(probe=None, forgetting=drift, forgetting_metric="representation_drift")
    out["time_s"] = time.perf_counter() - t0
    data.features_before = None
    return out
