"""Did each run, and each configuration, learn? Read from the record's `learning` verdict, or
computed from its `predictions` {pred, gold} for records made before the verdict existed (the
statistics are `tasks.learning`'s, the same the run uses).

A configuration learned when every seed whose verdict is known learned; its verdict is unknown
(None) when no run has one (generative records made before the base-model comparison, records without
predictions). Reports give stars, Pareto membership and cost praise only to configurations that are not
known to have failed to learn.
"""

from __future__ import annotations

from typing import Any

from peftbench.records.fields import value_at
from peftbench.tasks.learning import classification_learning


def _label_names(record: dict[str, Any]) -> list[str]:
    names = value_at(record, "metrics", "labels") or value_at(record, "data", "label_names") or []
    return [str(x) for x in names] if isinstance(names, list) else []


def run_learning(record: dict[str, Any]) -> dict[str, Any] | None:
    """`{"baselines", "learning", "source"}` of one successful run, or None when it cannot be told
    (no verdict and no class predictions). `source` is 'record' or 'predictions'."""
    learning, baselines = record.get("learning"), record.get("baselines")
    if isinstance(learning, dict) and isinstance(learning.get("learned"), bool):
        return {"baselines": baselines if isinstance(baselines, dict) else {}, "learning": learning,
                "source": "record"}
    preds = record.get("predictions")
    if (record.get("task") or "classification") != "classification" or not isinstance(preds, dict):
        return None
    pred, gold = preds.get("pred"), preds.get("gold")
    if not (isinstance(pred, list) and isinstance(gold, list) and pred and len(pred) == len(gold)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in pred + gold)):
        return None
    return {**classification_learning(pred, gold, _label_names(record)), "source": "predictions"}


def config_learning(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The verdict of one configuration over its successful runs: `learned` (True, False or None when
    unknown), how many seeds were judged and learned, the reasons of those that did not, the
    eval set's baselines (from the first judged run), each run's verdict and a short phrase for tables."""
    judged = [(r, j) for r in runs if (j := run_learning(r)) is not None]
    n_learned = sum(bool(j["learning"]["learned"]) for _, j in judged)
    failed = [j["learning"] for _, j in judged if not j["learning"]["learned"]]
    learned = None if not judged else n_learned == len(judged)
    return {
        "learned": learned, "n_judged": len(judged), "n_learned": n_learned,
        "reasons": failed[0].get("reasons", []) if failed else [],
        "collapsed": any(f.get("collapsed") for f in failed),
        "dominant_class": next((f.get("dominant_class") for f in failed if f.get("collapsed")), None),
        "baselines": judged[0][1]["baselines"] if judged else {},
        "source": sorted({j["source"] for _, j in judged}),
        "runs": {str(r.get("run_id")): j["learning"]["learned"] for r, j in judged},
        "summary": _summary(learned, n_learned, len(judged), failed),
    }


def _summary(learned: bool | None, n_learned: int, n_judged: int, failed: list[dict[str, Any]]) -> str:
    if learned is None:
        return "unknown"
    if learned:
        return "yes"
    why = (f"collapsed to '{c['dominant_class']}'" if (c := next((f for f in failed if f.get("collapsed")), None))
           else "not better than the untrained base model" if any("base_metric" in f for f in failed)
           else "not above the majority class")
    return f"no ({why})" if n_learned == 0 else f"in {n_learned} of {n_judged} seeds ({why} in the others)"
