"""Did a run learn? The baselines a classifier must beat and the verdict, from predictions alone.

A classifier that always answers the eval set's most frequent class (the majority predictor) gets
the majority share right without learning anything; guessing uniformly gets 1/K. A run counts as
learned only when its accuracy and its macro F1 are both significantly above the majority
predictor's and it has not collapsed onto one class. The run writes the verdict into its record
(`record["baselines"]`, `record["learning"]`); reports compute the same from `predictions`
{pred, gold} for records made before those fields existed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

ALPHA = 0.05
# A run predicting one class for at least this share of the eval examples has collapsed onto it
# (unless the gold labels themselves are that lopsided).
COLLAPSE_SHARE = 0.95
# Bootstrap resamples of the macro-F1 test, and the fixed seed that makes the verdict reproducible.
F1_RESAMPLES = 2000
F1_SEED = 0
FIXES = "more epochs or data, a higher learning rate, or `peftbench tune`"


def majority_baselines(gold: Sequence[int], label_names: Sequence[str]) -> dict[str, Any]:
    """What answering without learning scores on this eval set: the majority predictor's accuracy
    and macro F1, and chance accuracy (1/K)."""
    k = max(len(label_names), 1 + max(gold, default=0))
    majority = majority_class(gold)
    share = Counter(gold)[majority] / len(gold) if gold else 0.0
    return {
        "majority_class": _name(majority, label_names), "majority_accuracy": share,
        "majority_f1_macro": (2 * share / (1 + share)) / k if share else 0.0,
        "chance_accuracy": 1.0 / k, "n_eval": len(gold), "n_classes": k,
    }


def majority_class(gold: Sequence[int]) -> int:
    """The most frequent gold class id (the lowest id on ties; 0 for no examples)."""
    counts = Counter(gold)
    return min(counts, key=lambda c: (-counts[c], c)) if counts else 0


def accuracy_pvalue(correct: int, n: int, majority_rate: float) -> float:
    """One-sided exact binomial test: is accuracy above the majority predictor's rate?"""
    from scipy.stats import binomtest

    if n == 0:
        return 1.0
    return float(binomtest(correct, n, min(max(majority_rate, 0.0), 1.0), alternative="greater").pvalue)


def _confusions(gold: Any, pred: Any, k: int) -> Any:
    """Confusion matrices (rows x gold x predicted) of 2-D arrays of gold and predicted ids, by one bincount."""
    import numpy as np

    rows = gold.shape[0]
    codes = (np.arange(rows)[:, None] * k * k + gold * k + pred).ravel()
    return np.bincount(codes, minlength=rows * k * k).reshape(rows, k, k)


def f1_pvalue(pred: Sequence[int], gold: Sequence[int], k: int, majority: int) -> float:
    """One-sided paired bootstrap over examples: the share of resamples where the run's macro F1 is
    not above the majority predictor's on the same resample (its p-value)."""
    import numpy as np

    g, p = np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    n = len(g)
    if n == 0:
        return 1.0
    rng = np.random.default_rng(F1_SEED)
    not_above = 0
    chunk = max(1, min(F1_RESAMPLES, 4_000_000 // n))  # bounded memory on large eval sets
    for start in range(0, F1_RESAMPLES, chunk):
        idx = rng.integers(0, n, (min(chunk, F1_RESAMPLES - start), n))
        cm = _confusions(g[idx], p[idx], k)
        tp = np.diagonal(cm, axis1=1, axis2=2)
        denom = cm.sum(2) + cm.sum(1)  # gold count + predicted count per class
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0).mean(1)
        n_major = cm[:, majority, :].sum(1)
        f1_const = 2 * n_major / (n_major + n) / k  # the majority class's F1; the others score 0
        not_above += int((f1 <= f1_const).sum())
    return not_above / F1_RESAMPLES


def classification_learning(pred: Sequence[int], gold: Sequence[int], label_names: Sequence[str]) -> dict[str, Any]:
    """`{"baselines": ..., "learning": ...}` for one run's eval predictions: the majority and chance
    baselines, the two tests against the majority predictor, the collapse check and the verdict
    with its reasons in words."""
    pred, gold = list(pred), list(gold)
    base = majority_baselines(gold, label_names)
    k = base["n_classes"]
    n = len(gold)
    majority = majority_class(gold)
    correct = sum(p == g for p, g in zip(pred, gold, strict=True))
    acc = correct / n if n else 0.0
    p_acc = accuracy_pvalue(correct, n, base["majority_accuracy"])
    p_f1 = f1_pvalue(pred, gold, k, majority)
    dominant, count = Counter(pred).most_common(1)[0] if pred else (0, 0)
    share = count / n if n else 0.0
    collapsed = share >= COLLAPSE_SHARE and (Counter(gold)[dominant] / n if n else 0.0) < COLLAPSE_SHARE
    reasons = []
    if collapsed:
        reasons.append(f"collapsed to one class: predicts '{_name(dominant, label_names)}' for "
                       f"{share:.0%} of {n} eval examples")
    if p_acc >= ALPHA:
        reasons.append(f"accuracy {acc:.4f} is not significantly above always answering "
                       f"'{base['majority_class']}' ({base['majority_accuracy']:.4f}; exact binomial p={p_acc:.3g})")
    if p_f1 >= ALPHA:
        reasons.append(f"macro F1 is not significantly above the majority predictor's "
                       f"{base['majority_f1_macro']:.4f} (bootstrap p={p_f1:.3g})")
    learning = {
        "learned": not reasons, "reasons": reasons, "collapsed": collapsed,
        "dominant_class": _name(dominant, label_names), "dominant_share": share,
        "accuracy_pvalue": p_acc, "f1_macro_pvalue": p_f1, "alpha": ALPHA,
        "test": "one-sided exact binomial (accuracy) and paired bootstrap (macro F1) against the majority predictor",
    }
    return {"baselines": base, "learning": learning}


def _name(cls: int, label_names: Sequence[str]) -> str:
    return str(label_names[cls]) if 0 <= cls < len(label_names) else str(cls)


# ---- generative tasks: better than the untrained base model? ----------------------------------------

BOOTSTRAP_RESAMPLES = 2000


def improvement_pvalue(tuned: Sequence[float], base: Sequence[float], higher_is_better: bool) -> float:
    """One-sided paired bootstrap over examples: the share of resamples in which the tuned model's mean
    per-example score is not better than the base model's on the same examples (its p-value)."""
    import numpy as np

    diff = np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float)
    if not higher_is_better:
        diff = -diff
    if diff.size == 0:
        return 1.0
    rng = np.random.default_rng(F1_SEED)
    means = diff[rng.integers(0, diff.size, (BOOTSTRAP_RESAMPLES, diff.size))].mean(1)
    return float((means <= 0).mean())


def generative_learning(metric: str, higher_is_better: bool, tuned: dict[str, Any], base: dict[str, Any],
                        per_example: tuple[Sequence[float], Sequence[float]] | None = None, *,
                        base_cached: bool = False) -> dict[str, Any]:
    """`{"baselines": ..., "learning": ...}` of a generative run against the untrained base model on the
    same eval set: learned when the main metric is better than the base model's, significantly so
    (paired bootstrap) when per-example scores of both exist; `per_example` is (tuned, base)."""
    t, b = tuned.get(metric), base.get(metric)
    baselines = {"base_model": {k: v for k, v in base.items() if isinstance(v, int | float) and not isinstance(v, bool)},
                 "base_model_cached": base_cached}
    if not isinstance(t, int | float) or not isinstance(b, int | float):
        return {"baselines": baselines, "learning": None}
    better = t > b if higher_is_better else t < b
    pvalue = improvement_pvalue(*per_example, higher_is_better) if per_example else None
    word = "above" if higher_is_better else "below"
    reasons = []
    if not better:
        reasons.append(f"{metric} {t:.4g} is not {word} the untrained base model's {b:.4g}")
    elif pvalue is not None and pvalue >= ALPHA:
        reasons.append(f"{metric} {t:.4g} is not significantly {word} the untrained base model's {b:.4g} "
                       f"(paired bootstrap p={pvalue:.3g})")
    learning = {
        "learned": not reasons, "reasons": reasons, "collapsed": False, "base_metric": b, "metric": metric,
        "improvement_pvalue": pvalue, "alpha": ALPHA,
        "test": ("one-sided paired bootstrap of per-example scores against the untrained base model"
                 if per_example else "the main metric against the untrained base model's (no per-example scores)"),
    }
    return {"baselines": baselines, "learning": learning}
