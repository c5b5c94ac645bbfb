"""Examples as token ids and their batches: the one `Encoded` container, batch order and padding.

`IGNORE_INDEX` marks label positions that carry no loss (the PyTorch and transformers convention).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100


@dataclass
class Encoded:
    """Token ids per example (no padding): padding happens per batch, to the batch's longest."""

    input_ids: list[list[int]]
    labels: list[int]
    extra: dict[str, list[list[int]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


def make_batches(lengths: list[int], batch_size: int, seed: int, shuffle: bool = True,
                 group_by_length: bool = False, group_batches: int = 50) -> list[list[int]]:
    """Index batches. Length grouping sorts inside shuffled mega-batches of `group_batches` batches,
    then shuffles the batches, so that order stays random while each batch holds similar lengths.
    Fewer batches per mega-batch keep batches more mixed (more padding, closer to unsorted)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = len(lengths)
    order = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
    if group_by_length:
        mega = batch_size * group_batches
        grouped = []
        for i in range(0, n, mega):
            chunk = sorted(order[i:i + mega], key=lambda j: -lengths[j])
            grouped.extend(chunk)
        batches = [grouped[i:i + batch_size] for i in range(0, n, batch_size)]
        perm = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in perm]
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def collate(enc: Encoded, idx: list[int], pad_id: int, multiple: int = 8) -> dict[str, Any]:
    """Pad to the longest sequence in the batch, rounded up to `multiple` (tensor-core friendly)."""
    import torch

    longest = max(len(enc.input_ids[i]) for i in idx)
    width = int(math.ceil(longest / multiple) * multiple)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    batch: dict[str, Any] = {}
    extras = {k: torch.zeros((len(idx), width), dtype=torch.long) for k in enc.extra}
    for row, i in enumerate(idx):
        seq = enc.input_ids[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        for k, t in extras.items():
            t[row, : len(seq)] = torch.tensor(enc.extra[k][i])
    batch["input_ids"] = ids
    batch["attention_mask"] = mask
    batch.update(extras)
    batch["labels"] = torch.tensor([enc.labels[i] for i in idx], dtype=torch.long)
    return batch


def collate_lm(enc: Encoded, idx: list[int], pad_id: int, multiple: int = 8) -> dict[str, Any]:
    """Right-pad inputs with `pad_id` and labels with IGNORE_INDEX, to a multiple of 8."""
    import torch

    def pad(rows: list[list[int]], value: int) -> Any:
        width = int(math.ceil(max(len(r) for r in rows) / multiple) * multiple)
        out = torch.full((len(rows), width), value, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out

    inputs = [enc.input_ids[i] for i in idx]
    ids = pad(inputs, pad_id)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(inputs):
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": pad([enc.extra["labels"][i] for i in idx],
                                                                  IGNORE_INDEX)}


def pad_multiple_kwargs(collate_fn: Callable[..., Any], device: str) -> dict[str, int]:
    """Pad to a multiple of 8 only for GPU tensor cores: on the CPU it buys nothing and, on short
    texts such as SST-2, costs a quarter of the computed tokens."""
    import inspect

    if device == "cuda" or "multiple" not in inspect.signature(collate_fn).parameters:
        return {}
    return {"multiple": 1}
