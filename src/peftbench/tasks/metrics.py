"""Task metrics, computed with scikit-learn and rouge_score so that definitions match what users
already know, and the direction of every metric."""

from __future__ import annotations

import re
from typing import Any

from peftbench.tasks.base import TASKS


def classification_metrics(gold: list[int], pred: list[int], label_names: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(label_names)))
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(gold, pred, labels=labels, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "f1_macro": float(mf),
        "precision_macro": float(mp),
        "recall_macro": float(mr),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion_matrix(gold, pred, labels=labels).tolist(),
        "labels": list(label_names),
    }


# ---- ROUGE (summarization) ------------------------------------------------------------------

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def sentence_lines(text: str) -> str:
    # rougeLsum scores sentence by sentence, split at newlines (as in the `evaluate` recipe, which
    # uses nltk's sentence splitter; its data files are not shipped, so split at end punctuation).
    return "\n".join(s for s in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if s)


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE F1 (0-1) per type from `rouge_score`, with stemming, as `evaluate`'s rouge reports."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    sums = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(sentence_lines(ref), sentence_lines(pred))
        for k in ROUGE_TYPES:
            sums[k] += scores[k].fmeasure
    n = max(1, len(predictions))
    return {k: v / n for k, v in sums.items()}


def rouge_per_example(predictions: list[str], references: list[str], rouge_type: str) -> list[float]:
    """Per-example ROUGE F1 with the same settings as `rouge_scores` (stemming, sentence split), so that
    their mean is the corpus score a record holds."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=True)
    return [scorer.score(sentence_lines(r), sentence_lines(p))[rouge_type].fmeasure
            for p, r in zip(predictions, references, strict=True)]


# ---- direction -------------------------------------------------------------------------------

# Direction of the run-level numbers a record holds next to the task's metrics (`Task.metrics`).
RUN_METRICS = {"trainable_params": False, "train_time_s": False, "peak_memory_bytes": False, "artifact_bytes": False,
               "model_footprint_bytes": False}


def higher_is_better(metric: str) -> bool:
    """Direction of a metric: as the tasks and `RUN_METRICS` declare it, else losses, perplexities,
    errors, times and sizes go down."""
    for _, task in TASKS.items():
        if metric in task.metrics:
            return task.metrics[metric]
    if metric in RUN_METRICS:
        return RUN_METRICS[metric]
    low = metric.lower()
    return not any(word in low for word in ("loss", "perplexity", "error", "time", "memory", "bytes"))
