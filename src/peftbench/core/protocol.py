"""The validation/test protocol: three data roles, selection on validation only.

- train: what the optimizer sees.
- validation: per-epoch evaluation, checkpoint choice (`select.strategy: best`), early stopping
  (`select.patience`) and hyper-parameter search (`tune:`). From `data.validation`, or carved from
  the train file with a fixed seed (`data.validation_fraction`, seed `data.seed + 2`) when absent.
- test: `data.test` (or `data.eval`, its older name): evaluated once, after training, with the
  chosen weights; the record's `metrics` come from it.

Selecting on the test split is refused by the spec unless `allow_test_selection: true`; such a
record carries `protocol.test_selection: true`. Tasks without a validation split keep their
per-epoch evaluation on the test split (monitoring only; `best` selection is then refused).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peftbench.data.splits import VALIDATION_SEED_OFFSET, test_file
from peftbench.errors import SpecError
from peftbench.tasks.metrics import higher_is_better


def describe_splits(spec: Any, info: dict[str, Any], has_validation: bool) -> dict[str, Any]:
    """Where each split came from, for the record."""
    d = spec.data
    if d.validation:
        val: dict[str, Any] = {"source": d.validation}
    elif has_validation:
        val = {"source": "carved from train", "file": d.train, "fraction": d.validation_fraction,
               "seed": d.seed + VALIDATION_SEED_OFFSET}
    else:
        val = {"source": None}
    val["n"] = info.get("n_validation", 0) if has_validation else 0
    return {"train": {"source": d.train, "n": info.get("n_train")},
            "validation": val,
            "test": {"source": test_file(d), "n": info.get("n_eval")}}


def _better(metric: str) -> Callable[[float, float], bool]:
    if higher_is_better(metric):
        return lambda new, old: new > old
    return lambda new, old: new < old


class Selection:
    """The per-epoch evaluator handed to `train.train`: evaluates the selection split, keeps the best
    weights when asked, and raises `should_stop` for early stopping. `finish` restores the chosen
    weights and evaluates the test split once."""

    def __init__(self, spec: Any, main_metric: str, evaluate: Callable[..., dict[str, Any]],
                 validation: Any | None) -> None:
        self.sel = spec.select
        self.metric = self.sel.metric or main_metric
        self.evaluate = evaluate  # evaluate(model) -> test metrics; evaluate(model, enc) -> metrics on enc
        self.validation = validation
        self.on_test = self.sel.split == "test" or validation is None
        if self.on_test and (self.sel.strategy == "best" or self.sel.patience) and not spec.allow_test_selection:
            raise SpecError("select.strategy 'best' / select.patience need a validation split, and this run has none",
                            hint="give data.validation, keep data.validation_fraction > 0, or use select.strategy: last")
        self.per_epoch_split = "eval" if self.on_test else "validation"  # 'eval': the test role's older name
        self.test_selection = self.on_test and (self.sel.strategy == "best" or bool(self.sel.patience))
        self.best: tuple[float, int, dict[str, Any], list[Any]] | None = None
        self.epoch = 0
        self.since_best = 0
        self.should_stop = False
        self.last: dict[str, Any] = {}

    def __call__(self, model: Any) -> dict[str, Any]:
        metrics = self.evaluate(model) if self.on_test else self.evaluate(model, self.validation)
        self.epoch += 1
        self.last = metrics
        value = metrics.get(self.metric)
        if value is None:
            raise SpecError(f"selection metric '{self.metric}' is not among the task's metrics "
                            f"({', '.join(k for k, v in metrics.items() if isinstance(v, int | float))})",
                            hint="set select.metric to one of them")
        if self.best is None or _better(self.metric)(value, self.best[0]):
            weights = ([p.detach().clone() for p in model.parameters() if p.requires_grad]
                       if self.sel.strategy == "best" else [])
            self.best = (value, self.epoch, metrics, weights)
            self.since_best = 0
        else:
            self.since_best += 1
        self.should_stop = bool(self.sel.patience) and self.since_best >= self.sel.patience
        return metrics

    def finish(self, model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """(test metrics of the chosen weights, selection summary for the record)."""
        import torch

        chosen = self.epoch
        chosen_metrics = self.last
        if self.sel.strategy == "best" and self.best is not None:
            _, chosen, chosen_metrics, weights = self.best
            with torch.no_grad():
                for p, w in zip([p for p in model.parameters() if p.requires_grad], weights, strict=True):
                    p.copy_(w)
            self.best = None  # free the copy
        # With 'last' on a run without validation, the last per-epoch evaluation already was the test split.
        final = dict(chosen_metrics) if self.on_test and self.sel.strategy == "last" else self.evaluate(model)
        summary = {
            "strategy": self.sel.strategy, "metric": self.metric,
            "split": "test" if self.on_test else "validation",
            "chosen_epoch": chosen, "epochs_run": self.epoch, "patience": self.sel.patience,
            "stopped_early": self.should_stop,
            "validation_metrics": None if self.on_test else
            {k: v for k, v in chosen_metrics.items() if isinstance(v, int | float)},
        }
        return final, summary


def record_protocol(spec: Any, prepared_info: dict[str, Any], selection: Selection,
                    summary: dict[str, Any]) -> dict[str, Any]:
    """The record's `protocol` section: splits, which split each number came from, the selection."""
    per_epoch = "test" if selection.on_test else "validation"
    return {
        "splits": describe_splits(spec, prepared_info, selection.validation is not None),
        "numbers_from": {"metrics": "test", "eval.per_epoch": per_epoch, "overfit_gap": "test",
                         "protocol.selection.validation_metrics": "validation"},
        "selection": summary,
        "test_selection": selection.test_selection,
        "allow_test_selection": spec.allow_test_selection,
    }
