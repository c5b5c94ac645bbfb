"""Per-example scores of one run, for the paired tests between configurations: saved per-example
metric values, ROUGE recomputed from saved texts, or predicted and gold class ids."""

from __future__ import annotations

from typing import Any

from peftbench.records.fields import number
from peftbench.tasks.metrics import rouge_per_example

# Per-example stand-ins for corpus-level metrics that have no per-example form (same direction).
PER_EXAMPLE_ALIASES = {"perplexity": ("perplexity", "loss", "eval_loss", "nll")}


def per_example_scores(record: dict[str, Any], metric: str) -> list[float] | None:
    """Per-example scores of a metric, for the paired bootstrap of generation tasks: saved ones
    (`predictions.scores[metric]`, `predictions.per_example[metric]` or `predictions[metric]`; for
    perplexity, per-example losses), else ROUGE recomputed from saved generated and reference texts."""
    preds = record.get("predictions")
    if not isinstance(preds, dict):
        return None
    for name in PER_EXAMPLE_ALIASES.get(metric, (metric,)):
        for holder in (preds.get("scores"), preds.get("per_example"), preds):
            if isinstance(holder, dict):
                values = holder.get(name)
                if isinstance(values, list) and values and all(number(v) is not None for v in values):
                    return [float(v) for v in values]
    texts, refs = preds.get("pred"), preds.get("gold")
    if metric.startswith("rouge") and _all_str(texts) and _all_str(refs) and len(texts) == len(refs):
        return rouge_per_example(texts, refs, metric)
    return None


def _all_str(values: Any) -> bool:
    return isinstance(values, list) and bool(values) and all(isinstance(v, str) for v in values)


def class_predictions(record: dict[str, Any]) -> tuple[list[int], list[int]] | None:
    """Predicted and gold class ids (generated texts are not classes: no McNemar on them)."""
    preds = record.get("predictions")
    if not isinstance(preds, dict):
        return None
    pred, gold = preds.get("pred"), preds.get("gold")
    if isinstance(pred, list) and isinstance(gold, list) and all(isinstance(x, int) for x in pred + gold):
        return pred, gold
    return None
