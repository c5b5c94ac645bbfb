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

Causal language models (the instruction task) are read out through their own LM head instead:
the mean token negative log-likelihood of the retention texts (each text as BOS + text + EOS, cut
at `data.max_length`, every text token scored) before and after, so `forgetting` is the loss
increase (`lm_loss_increase`, positive = forgot), with both perplexities. A label column is
ignored there. For encoder-decoder models (summarization) `retention:` is refused when the spec
is validated: a plain text has no source/target split to score, and the feature path would need
decoder inputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from peftbench.errors import DataError
from peftbench.tasks.base import TASKS


@dataclass
class RetentionData:
    path: str
    texts: list[str]
    labels: list[int] | None
    lm: bool = False  # score by language-modelling loss (causal LMs) instead of features
    features_before: Any = None
    loss_before: float | None = None
    enc: Any = None


def load(spec: Any) -> RetentionData | None:
    """Read and check the retention file before any model is loaded (None when not asked for)."""
    r = spec.retention
    if r is None or r.file is None:  # lm-eval tasks alone (retention.lm_eval_tasks): evaluation.harness's part
        return None
    from peftbench.data.classification import label_values, require_column, text_values
    from peftbench.data.readers import read_table
    from peftbench.data.splits import stratified_subsample

    df = read_table(r.file)
    require_column(df, r.text_column, r.file, "text")
    labels = None
    lm = TASKS.get(spec.task).peft_task_type == "CAUSAL_LM"  # a causal LM: retention is scored by its loss
    if r.label_column and r.label_column in df.columns and not lm:
        values = label_values(df, r.label_column, r.file)
        names = sorted(set(values), key=str)
        if len(names) < 2:
            raise DataError(f"retention file '{r.file}' has a single class in '{r.label_column}'",
                            hint="give several classes, or set retention.label_column: null for drift only")
        labels = [names.index(v) for v in values]
    keep = stratified_subsample(labels or [0] * len(df), r.n, spec.data.seed + 3)
    texts = text_values(df.iloc[keep], r.text_column, r.file)
    return RetentionData(r.file, texts, [labels[i] for i in keep] if labels else None, lm=lm)


def _features(model: Any, enc: Any, pad_id: int, device: str, autocast_dtype: Any, batch_size: int) -> Any:
    import torch

    from peftbench.data.batching import collate
    from peftbench.perf.head_token import every_position
    from peftbench.runtime.device import autocast

    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode(), autocast(device, autocast_dtype), every_position(model):  # mean-pooled: every position is read
        for start in range(0, len(enc), batch_size):
            idx = list(range(start, min(start + batch_size, len(enc))))
            batch = {k: v.to(device) for k, v in collate(enc, idx, pad_id).items() if k != "labels"}
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1].float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu())
    model.train(was_training)
    return torch.cat(out)


def _lm_loss(model: Any, enc: Any, pad_id: int, device: str, autocast_dtype: Any,
             batch_size: int) -> tuple[float, int]:
    """Mean token NLL over every scored token of `enc`, and the number of tokens scored."""
    import torch

    from peftbench.runtime.device import autocast
    from peftbench.tasks.generative import loss_sum

    was_training = model.training
    model.eval()
    order = sorted(range(len(enc)), key=lambda i: len(enc.input_ids[i]))  # a function of enc: same both times
    with torch.inference_mode(), autocast(device, autocast_dtype):
        total, tokens = loss_sum(model, enc, order, batch_size, device, pad_id, shift=True)
    model.train(was_training)
    return total / max(1, tokens), tokens


def before(data: RetentionData | None, model: Any, tokenizer: Any, spec: Any, pad_id: int, device: str,
           autocast_dtype: Any) -> None:
    """Features (or, for causal LMs, the LM loss) of the retention texts before the first training step."""
    if data is None:
        return
    bs = spec.train.eval_batch_size or spec.train.batch_size * 4
    if data.lm:
        from peftbench.data.text_pairs import encode_causal

        # An empty prompt: BOS (when the tokenizer has one) + text + EOS, cut at max_length; every
        # text token and the EOS carry loss, as response tokens do in training.
        data.enc = encode_causal(tokenizer, [""] * len(data.texts), data.texts, spec.data.max_length,
                                 spec.data.max_length)
        data.loss_before, _ = _lm_loss(model, data.enc, pad_id, device, autocast_dtype, bs)
        return
    from peftbench.data.classification import encode_classification

    data.enc = encode_classification(tokenizer, data.texts, None, data.labels or [0] * len(data.texts),
                                     spec.data.max_length)
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
    if data.lm:
        return _after_lm(data, model, spec, pad_id, device, autocast_dtype, bs, t0)
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


def _after_lm(data: RetentionData, model: Any, spec: Any, pad_id: int, device: str, autocast_dtype: Any,
              batch_size: int, t0: float) -> dict[str, Any]:
    """The `retention` section of a causal LM: the loss increase on the retention texts."""
    import math

    loss_before = data.loss_before
    assert loss_before is not None, "forgetting.before runs before the first training step"
    loss_after, tokens = _lm_loss(model, data.enc, pad_id, device, autocast_dtype, batch_size)
    lm = {"before_loss": loss_before, "after_loss": loss_after,
          "before_perplexity": math.exp(min(loss_before, 700.0)),
          "after_perplexity": math.exp(min(loss_after, 700.0)),
          "tokens": tokens, "max_length": spec.data.max_length}
    return {"file": data.path, "n": len(data.texts), "split": "retention", "lm": lm,
            "forgetting": loss_after - loss_before, "forgetting_metric": "lm_loss_increase",
            "time_s": time.perf_counter() - t0}
