"""What a task is (the `Task` protocol), the task registry and the data a task prepares.

A task loads data and a model, encodes, batches and evaluates; it never trains (`core.train`
does that for every task). Each task module adds its entry to `TASKS`; importing the
`peftbench.tasks` package registers them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from peftbench.data.batching import Encoded
from peftbench.models.loading import LoadedModel
from peftbench.registry import Registry


@dataclass
class Prepared:
    """A task's data after loading: what the runner needs to train and evaluate."""

    data: Any
    info: dict[str, Any]


class Task(Protocol):
    """A task's declaration and its steps.

    Optional steps, looked up with getattr: `encode_validation(loaded, prepared, spec)` (the
    selection split; tasks without one evaluate per epoch on the test split) and
    `preflight_checks(loaded, prepared, enc, spec)` (checks of the encoded training data) and
    `judge_learning(predictions, prepared)` (the record's `baselines` and `learning` verdict).
    """

    name: str
    peft_task_type: str  # the peft `TaskType` adapter methods configure
    main_metric: str
    metrics: dict[str, bool]  # the scalar metrics `evaluate` reports -> higher is better
    model_kinds: tuple[str, ...]  # family kinds the task runs on (encoder, seq2seq, decoder, unknown)
    model_description: str  # those models in words, for messages ("encoder-decoder")
    generative: bool  # the model generates text (`peftbench generate` applies)
    supports_packing: bool  # train.packing
    supports_retention: bool  # the retention section (forgetting)
    tiny_family: str  # the tiny random family that stands in for the task's models (`--model tiny`)
    embedded_model: str  # the bundled-weights stand-in for the task's models ('embedded', ...)

    def load_data(self, spec: Any) -> Prepared: ...

    def load_model(self, spec: Any, prepared: Prepared, load_kwargs: dict[str, Any]) -> LoadedModel: ...

    def encode(self, loaded: LoadedModel, prepared: Prepared, spec: Any) -> tuple[Encoded, Encoded]: ...

    def collate(self, enc: Encoded, idx: list[int], pad_id: int, multiple: int = 8) -> dict[str, Any]: ...

    def evaluate(self, model: Any, enc: Encoded, prepared: Prepared, *, batch_size: int, device: str,
                 autocast_dtype: Any, pad_id: int) -> dict[str, Any]: ...


TASKS: Registry[Task] = Registry("task")


def describe_data(info: dict[str, Any]) -> str:
    """A task's data in words, from `Prepared.info`: examples per split, and classes where there are some."""
    sizes = ", ".join(f"{info[f'n_{role}']:,} {name}" for role, name in
                      (("train", "train"), ("validation", "validation"), ("eval", "test")) if info.get(f"n_{role}"))
    labels = info.get("label_names")
    return f"{sizes} examples" + (f", {len(labels)} classes" if labels else "")


def placeholder_data(label_names: tuple[str, ...] = ("0", "1")) -> Prepared:
    """What `load_model` reads of the data (classification: the label names; generative tasks read
    nothing), for measurements on synthetic tokens (`peftbench probe`, `peftbench profile`)."""
    from types import SimpleNamespace

    return Prepared(SimpleNamespace(label_names=list(label_names)), {})


def evaluate_untrained(spec: Any, batch_size: int = 32) -> dict[str, Any]:
    """The task's metrics for the spec's model before any training: the start a run improves on.
    (A fresh LoRA adapter is the identity, so this is also where a LoRA run begins.)"""
    from peftbench.runtime.device import pick_device

    task = TASKS.get(spec.task)
    prepared = task.load_data(spec)
    loaded = task.load_model(spec, prepared, {})
    device = pick_device(spec.train.device)
    loaded.model.to(device)
    _, eval_enc = task.encode(loaded, prepared, spec)
    return task.evaluate(loaded.model, eval_enc, prepared, batch_size=batch_size, device=device,
                         autocast_dtype=None, pad_id=loaded.tokenizer.pad_token_id or 0)
