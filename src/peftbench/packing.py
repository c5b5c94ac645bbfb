"""Padding-free packing for causal language models.

Several examples are laid end to end in one row, with no padding at all. Each example restarts its
`position_ids` at 0; transformers derives a block-diagonal causal mask from those restarts (SDPA and
eager on any device, FlashAttention-2 varlen on GPUs), so no token attends across an example
boundary. The first label of every example is -100: the model shifts labels by one, and that
position would otherwise ask the previous example's last token to predict this example's first.
The mean token loss then equals the unpacked, padded batch's loss (tests/test_packing.py).

transformers reads the boundaries only when no attention mask and no KV cache are given: the model
must run with `use_cache=False` (see `prepare_for_packing`), or the rows silently attend across examples.

Not for bidirectional encoders: they do not read packed boundaries from position ids.
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


def prepare_for_packing(model: Any) -> Any:
    """Turn the KV cache off for training: with a cache transformers ignores packed boundaries."""
    cfg = getattr(model, "config", None)
    if cfg is not None:
        cfg.use_cache = False
    return model


def pack_batches(lengths: list[int], max_tokens: int, seed: int, shuffle: bool = True) -> list[list[int]]:
    """Index groups whose total length fits `max_tokens`, filled first-fit in (seeded) random order.

    An example longer than `max_tokens` gets a row of its own (it is never split)."""
    import torch

    n = len(lengths)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist() if shuffle else list(range(n))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        need = lengths[i]
        for r, free in enumerate(room):
            if need <= free:
                rows[r].append(i)
                room[r] -= need
                break
        else:
            rows.append([i])
            room.append(max(0, max_tokens - need))
    return rows


def pack(sequences: list[list[int]], labels: list[list[int]] | None = None) -> dict[str, Any]:
    """One packed row (batch of 1): `input_ids`, `position_ids`, `labels`; no attention mask.

    `labels` per token (-100 for prompt tokens not to be learned); default: the inputs themselves."""
    import torch

    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("pack() needs at least one sequence and no empty ones")
    ids: list[int] = []
    pos: list[int] = []
    lab: list[int] = []
    for k, seq in enumerate(sequences):
        target = list(labels[k]) if labels is not None else list(seq)
        if len(target) != len(seq):
            raise ValueError(f"sequence {k} has {len(seq)} tokens but {len(target)} labels")
        target[0] = IGNORE_INDEX
        ids.extend(seq)
        pos.extend(range(len(seq)))
        lab.extend(target)
    return {"input_ids": torch.tensor([ids]), "position_ids": torch.tensor([pos]), "labels": torch.tensor([lab])}


def collate_packed(enc: Any, idx: list[int], pad_id: int = 0, multiple: int = 1) -> dict[str, Any]:
    """`train.collate`-compatible: pack the examples `idx` of an encoded set into one row.

    Per-token labels are read from `enc.extra['labels']` when present, else the inputs are the targets.
    `pad_id`/`multiple` are accepted for signature compatibility; a packed row is never padded."""
    token_labels = getattr(enc, "extra", {}).get("labels")
    return pack([enc.input_ids[i] for i in idx], [token_labels[i] for i in idx] if token_labels else None)
