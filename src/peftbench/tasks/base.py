"""Task registry: how each task loads data and a model, encodes, batches and evaluates.

Adding a task is one entry. A task never trains: `train.train` does that for every task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftbench.data.batching import Encoded, collate
from peftbench.data.classification import encode_classification, load_classification
from peftbench.models.loading import LoadedModel, load_classifier
from peftbench.registry import Registry
from peftbench.tasks.metrics import classification_metrics


@dataclass
class Prepared:
    """A task's data after loading: what the runner needs to train and evaluate."""

    data: Any
    info: dict[str, Any]


def placeholder_data(label_names: tuple[str, ...] = ("0", "1")) -> Prepared:
    """What `load_model` reads of the data (classification: the label names; generative tasks read
    nothing), for measurements on synthetic tokens (`peftbench probe`, `peftbench profile`)."""
    from types import SimpleNamespace

    return Prepared(SimpleNamespace(label_names=list(label_names)), {})


class ClassificationTask:
    name = "classification"
    main_metric = "accuracy"
    families = ("encoder", "decoder", "unknown")

    def load_data(self, spec: Any) -> Prepared:
        data = load_classification(spec.data)
        return Prepared(data, {**data.info, "label_names": data.label_names})

    def load_model(self, spec: Any, prepared: Prepared, load_kwargs: dict[str, Any]) -> LoadedModel:
        names = prepared.data.label_names
        return load_classifier(spec.model, len(names), names, load_kwargs)

    def encode(self, loaded: LoadedModel, prepared: Prepared, spec: Any) -> tuple[Encoded, Encoded]:
        from peftbench.data.token_cache import cached

        d = prepared.data
        tok = loaded.tokenizer
        ml = spec.data.max_length
        return (cached(encode_classification, tok, d.train_texts, d.train_pairs, d.train_labels, ml),
                cached(encode_classification, tok, d.eval_texts, d.eval_pairs, d.eval_labels, ml))

    def encode_validation(self, loaded: LoadedModel, prepared: Prepared, spec: Any) -> Encoded | None:
        """The selection split (None when the spec asked for none); see `protocol`."""
        d = prepared.data
        if d.validation_texts is None:
            return None
        return encode_classification(loaded.tokenizer, d.validation_texts, d.validation_pairs,
                                     d.validation_labels, spec.data.max_length)

    collate = staticmethod(collate)

    def evaluate(self, model: Any, enc: Encoded, prepared: Prepared, *, batch_size: int, device: str,
                 autocast_dtype: Any, pad_id: int) -> dict[str, Any]:
        import torch

        model.eval()
        # Sorted by length: eval order does not matter and sorting removes most padding.
        order = sorted(range(len(enc)), key=lambda i: len(enc.input_ids[i]))
        preds = [0] * len(enc)
        loss_sum = 0.0
        from peftbench.runtime.device import autocast

        with torch.inference_mode(), autocast(device, autocast_dtype):
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = {k: v.to(device) for k, v in self.collate(enc, idx, pad_id).items()}
                labels = batch.pop("labels")
                logits = model(**batch).logits.float()
                loss_sum += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
                for i, p in zip(idx, logits.argmax(-1).tolist(), strict=True):
                    preds[i] = p
        model.train()
        metrics = classification_metrics(enc.labels, preds, prepared.data.label_names)
        metrics["eval_loss"] = loss_sum / max(1, len(enc))
        metrics["predictions"] = {"pred": preds, "gold": list(enc.labels)}
        return metrics


TASKS: Registry[Any] = Registry("task")
TASKS.add("classification", ClassificationTask())


def _add_generative_tasks() -> None:
    from peftbench.tasks.generative import InstructionTask, SummarizationTask

    TASKS.add("summarization", SummarizationTask())
    TASKS.add("instruction", InstructionTask())


_add_generative_tasks()
