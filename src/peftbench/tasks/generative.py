"""What the generative tasks share: text-pair data, LM loading and batching, token-weighted loss."""

from __future__ import annotations

from typing import Any, ClassVar

from peftbench.data.batching import IGNORE_INDEX, Encoded, collate_lm
from peftbench.data.text_pairs import load_text_pairs
from peftbench.models.generative import load_generative
from peftbench.models.loading import LoadedModel
from peftbench.runtime.progress import batch_starts
from peftbench.tasks.base import Prepared


def loss_sum(model: Any, enc: Encoded, order: list[int], batch_size: int, device: str, pad_id: int,
              shift: bool) -> tuple[float, int]:
    """Token-weighted loss: the model's mean loss times its number of target tokens, per batch."""
    total, tokens = 0.0, 0
    for start in batch_starts(len(order), batch_size):
        batch = {k: v.to(device) for k, v in collate_lm(enc, order[start:start + batch_size], pad_id).items()}
        labels = batch["labels"][:, 1:] if shift else batch["labels"]
        n = int((labels != IGNORE_INDEX).sum())
        if n:
            total += model(**batch).loss.float().item() * n
            tokens += n
    return total, tokens


class GenerativeTask:
    """What summarization and instruction tuning share: text-pair data, an LM of one kind
    (`kind`), batches padded with IGNORE_INDEX labels. Subclasses encode and evaluate."""

    name = ""
    kind = ""  # the family kind of the model: seq2seq or decoder
    peft_task_type = ""
    main_metric = ""
    metrics: ClassVar[dict[str, bool]] = {}
    model_description = ""
    generative = True
    supports_packing = False
    supports_retention = False
    tiny_family = ""
    embedded_model = ""

    @property
    def model_kinds(self) -> tuple[str, ...]:
        return (self.kind,)

    def load_data(self, spec: Any) -> Prepared:
        data = load_text_pairs(spec.data, self.name)
        return Prepared(data, dict(data.info))

    def load_model(self, spec: Any, prepared: Prepared, load_kwargs: dict[str, Any]) -> LoadedModel:
        return load_generative(spec, load_kwargs, self.kind, self.name)

    collate = staticmethod(collate_lm)

    def per_example_scores(self, predictions: Any, base_predictions: Any) -> tuple[list[float], list[float]] | None:
        """Per-example scores of the tuned and the base model on the main metric, or None where the
        task keeps none (then the verdict compares the means alone)."""
        return None

    def judge_learning(self, predictions: Any, prepared: Prepared, metrics: dict[str, Any],
                       base: dict[str, Any] | None) -> dict[str, Any]:
        """The record's `baselines` (the untrained base model's scores) and `learning` verdict: is the
        main metric better than the base model's (see `tasks.learning.generative_learning`)?"""
        from peftbench.tasks.learning import generative_learning

        if base is None:
            return {}
        judged = generative_learning(self.main_metric, self.metrics[self.main_metric], metrics, base["metrics"],
                                     self.per_example_scores(predictions, base.get("predictions")),
                                     base_cached=bool(base.get("cached")))
        return {k: v for k, v in judged.items() if v is not None}

    def encode_texts(self, tok: Any, sources: list[str], targets: list[str], spec: Any) -> Encoded:
        raise NotImplementedError

    def encode(self, loaded: LoadedModel, prepared: Prepared, spec: Any) -> tuple[Encoded, Encoded]:
        d = prepared.data
        d.tokenizer = loaded.tokenizer
        d.generation = spec.generation
        return (self.encode_texts(loaded.tokenizer, d.train_sources, d.train_targets, spec),
                self.encode_texts(loaded.tokenizer, d.eval_sources, d.eval_targets, spec))
