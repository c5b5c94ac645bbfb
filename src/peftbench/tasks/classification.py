"""The classification task: labelled texts, a sequence-classification model, accuracy and F1."""

from __future__ import annotations

from typing import Any, ClassVar

from peftbench.data.batching import Encoded, collate
from peftbench.data.classification import encode_classification, load_classification
from peftbench.models.loading import LoadedModel, load_classifier
from peftbench.runtime.device import autocast
from peftbench.runtime.progress import batch_starts
from peftbench.tasks.base import Prepared
from peftbench.tasks.metrics import classification_metrics


class ClassificationTask:
    """Sequence classification with a fresh head: accuracy, macro F1 and the confusion matrix."""

    name = "classification"
    peft_task_type = "SEQ_CLS"
    main_metric = "accuracy"
    metrics: ClassVar[dict[str, bool]] = {"accuracy": True, "f1_macro": True, "precision_macro": True, "recall_macro": True,
               "eval_loss": False}
    model_kinds = ("encoder", "decoder", "unknown")
    model_description = "encoder or decoder"
    generative = False
    supports_packing = True
    supports_retention = True
    tiny_family = "bert"
    embedded_model = "embedded"

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
        with torch.inference_mode(), autocast(device, autocast_dtype):
            for start in batch_starts(len(order), batch_size):
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

    def judge_learning(self, predictions: dict[str, Any] | None, prepared: Prepared, metrics: dict[str, Any],
                       base: dict[str, Any] | None) -> dict[str, Any]:
        """The record's `baselines` (majority and chance) and `learning` verdict, from the final
        eval predictions (see `tasks.learning`); a classifier needs no base-model evaluation."""
        from peftbench.tasks.learning import classification_learning

        if not predictions:
            return {}
        return classification_learning(predictions["pred"], predictions["gold"], prepared.data.label_names)
