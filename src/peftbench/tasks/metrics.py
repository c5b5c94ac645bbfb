"""Task metrics, computed with scikit-learn so that definitions match what users already know."""

from __future__ import annotations

from typing import Any


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


# Direction of every scalar metric peftbench records: reports need it for "best" and Pareto fronts.
HIGHER_IS_BETTER = {
    "accuracy": True, "f1_macro": True, "precision_macro": True, "recall_macro": True,
    "eval_loss": False, "perplexity": False, "rouge1": True, "rouge2": True, "rougeL": True, "rougeLsum": True,
    "trainable_params": False, "train_time_s": False, "peak_memory_bytes": False, "artifact_bytes": False,
}


def higher_is_better(metric: str) -> bool:
    """Direction of a metric: the table above, else losses and perplexities go down."""
    if metric in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[metric]
    low = metric.lower()
    return not any(word in low for word in ("loss", "perplexity", "error", "time", "memory", "bytes"))
