"""Packing several examples into one row, so that the tokens computed are (nearly) all real.

Causal language models (`pack`, `collate_packed`): several examples are laid end to end in one row,
with no padding at all. Each example restarts its `position_ids` at 0; transformers derives a
block-diagonal causal mask from those restarts (SDPA and eager on any device, FlashAttention-2 varlen
on GPUs), so no token attends across an example boundary. The first label of every example is -100: the model shifts labels by one, and that
position would otherwise ask the previous example's last token to predict this example's first.
The mean token loss then equals the unpacked, padded batch's loss (tests/test_packing.py).

transformers reads the boundaries only when no attention mask and no KV cache are given: the model
must run with `use_cache=False` (see `prepare_for_packing`), or the rows silently attend across examples.

Classifiers (`collate_packed_classification`, `packed_classification_loss`; `train.packing`): a
batch's examples are laid first-fit into rows about as wide as its longest example, each with its own
positions, under a block-diagonal attention mask (causal within each example for decoders), and each
example is classified from its own first token (encoders: `[CLS]`, `<s>`) or last token (decoders).
The batch (which examples, how many) is the unpacked one, so training sees the same batches in the
same order; only padding goes. Loss and gradients equal the padded batch's
(tests/test_packing_classification.py). The mask is built here, for the model's attention
implementation, and handed to the model ready-made: encoders do not read packed boundaries from
position ids, and rows that end in padding would hide them from decoders.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peftbench.data.batching import IGNORE_INDEX


def prepare_for_packing(model: Any) -> Any:
    """Turn the KV cache off for training: with a cache transformers ignores packed boundaries."""
    cfg = getattr(model, "config", None)
    if cfg is not None:
        cfg.use_cache = False
    return model


def first_fit(lengths: list[int], order: list[int], width: int) -> list[list[int]]:
    """The indices in `order`, each put in the first row with room for it (rows of `width` tokens);
    one longer than `width` gets a row of its own."""
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
            room.append(max(0, width - need))
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


# ---- classification --------------------------------------------------------------------


def fill_rows(lengths: list[int], width: int) -> list[list[int]]:
    """Positions into `lengths`, grouped into rows of at most `width` tokens (first-fit decreasing)."""
    return first_fit(lengths, sorted(range(len(lengths)), key=lambda j: -lengths[j]), width)


def packed_rows(lengths: list[int], multiple: int = 1, slack: float = 0.25) -> tuple[int, list[list[int]]]:
    """(width, rows) with the fewest tokens computed, for widths from the longest example up to
    `slack` wider (in steps of `multiple`). Rows a little wider than the longest example fill far
    better: on SST-2 batches of 16, 0.90 of computed tokens are real at the longest, 0.97 at up to
    1.25 times it, while attention work (rows × width²) grows by a few per cent."""
    longest = max(lengths)
    first = int(math.ceil(longest / multiple) * multiple)
    best: tuple[int, int, list[list[int]]] | None = None
    for width in range(first, max(first, int(longest * (1 + slack))) + 1, multiple):
        rows = fill_rows(lengths, width)
        if best is None or len(rows) * width < best[0]:
            best = (len(rows) * width, width, rows)
    assert best is not None
    return best[1], best[2]


def collate_packed_classification(enc: Any, idx: list[int], pad_id: int, multiple: int = 1) -> dict[str, Any]:
    """`train.collate`-compatible: the examples `idx` packed into rows about as wide as the longest
    of them (`packed_rows`).

    Besides the model inputs, `segment_ids` (which example each token belongs to, per row; padding is
    a segment of its own, so no query is left without keys), `first_token` and `last_token` (each
    example's first and last token as flat indices into the rows, in the order of `idx`) tell
    `packed_classification_loss` where examples start and end. `position_ids` restart at 0 for each
    example."""
    import torch

    lengths = [len(enc.input_ids[i]) for i in idx]
    width, rows = packed_rows(lengths, multiple)
    shape = (len(rows), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    segments = torch.full(shape, -1, dtype=torch.long)
    extras = {k: torch.zeros(shape, dtype=torch.long) for k in enc.extra}
    first = torch.zeros(len(idx), dtype=torch.long)
    last = torch.zeros(len(idx), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for s, k in enumerate(row):
            i, n = idx[k], lengths[k]
            span = slice(start, start + n)
            ids[r, span] = torch.tensor(enc.input_ids[i])
            positions[r, span] = torch.arange(n)
            segments[r, span] = s
            for key, t in extras.items():
                t[r, span] = torch.tensor(enc.extra[key][i])
            first[k] = r * width + start
            last[k] = r * width + start + n - 1
            start += n
    labels = torch.tensor([enc.labels[i] for i in idx], dtype=torch.long)
    return {"input_ids": ids, "position_ids": positions, "segment_ids": segments, **extras,
            "first_token": first, "last_token": last, "labels": labels}


@dataclass(frozen=True)
class PackedHead:
    """How one family's classifier reads its pooled states, and where its positions start."""

    logits: Callable[[Any, Any], Any]  # (the transformers classifier, pooled states (n, hidden)) -> logits
    position_offset: Callable[[Any], int] = lambda config: 0
    causal: bool = False  # decoders: causal attention within each example, pooled at its last token


def _bert_logits(hf: Any, first: Any) -> Any:
    return hf.classifier(hf.dropout(hf.bert.pooler(first[:, None])))


def _roberta_logits(hf: Any, first: Any) -> Any:
    return hf.classifier(first[:, None])


def _distilbert_logits(hf: Any, first: Any) -> Any:
    import torch

    return hf.classifier(hf.dropout(torch.relu(hf.pre_classifier(first))))


def _score_logits(hf: Any, last: Any) -> Any:
    return hf.score(last)  # decoder heads score every position, then keep the last real token's


def _roberta_positions(config: Any) -> int:
    return config.pad_token_id + 1  # RoBERTa numbers positions from padding_idx + 1


# model_type -> head; each mirrors the family's `...ForSequenceClassification.forward` after the backbone.
PACKED_HEADS: dict[str, PackedHead] = {
    "bert": PackedHead(_bert_logits),
    "roberta": PackedHead(_roberta_logits, _roberta_positions),
    "xlm-roberta": PackedHead(_roberta_logits, _roberta_positions),
    "distilbert": PackedHead(_distilbert_logits),
    "gpt2": PackedHead(_score_logits, causal=True),
    "gpt_neox": PackedHead(_score_logits, causal=True),
    "llama": PackedHead(_score_logits, causal=True),
}


def packing_problem(model: Any) -> str | None:
    """Why `model` cannot train on packed classification batches, or None when it can."""
    from peftbench.models.loading import transformers_model

    peft_config = getattr(model, "peft_config", {}).get("default")
    if peft_config is not None and peft_config.is_prompt_learning:
        return f"{peft_config.peft_type.value.lower()} adds virtual tokens, which packed rows cannot hold"
    hf = transformers_model(model)
    model_type = hf.config.model_type
    if model_type not in PACKED_HEADS:
        return f"packing is built for {', '.join(sorted(PACKED_HEADS))} classifiers, not {model_type}"
    attn = getattr(hf.config, "_attn_implementation", None)
    if attn and "flash" in attn:
        return f"attention '{attn}' takes no ready-made block-diagonal mask"
    return None


def packed_classification_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Cross-entropy of a packed batch (`collate_packed_classification`), as the classifier's own
    forward computes it for the padded batch."""
    import torch
    from transformers.masking_utils import (
        create_bidirectional_mask,
        create_causal_mask,
        packed_sequence_mask_function,
    )

    from peftbench.models.loading import transformers_model

    hf = transformers_model(model)
    head = PACKED_HEADS[hf.config.model_type]
    backbone = getattr(hf, hf.base_model_prefix)
    ids = batch["input_ids"]
    # Only shape, dtype and device of the embeddings are read: the mask is built in their dtype.
    like = torch.empty((*ids.shape, 1), dtype=backbone.get_input_embeddings().weight.dtype, device=ids.device)
    same_example = packed_sequence_mask_function(batch["segment_ids"])
    if head.causal:
        mask = create_causal_mask(backbone.config, like, None, None, and_mask_function=same_example,
                                  allow_is_causal_skip=False)
    else:
        mask = create_bidirectional_mask(backbone.config, like, None, and_mask_function=same_example,
                                         allow_is_bidirectional_skip=False)
    extra = ("segment_ids", "first_token", "last_token", "labels", "position_ids")
    inputs = {k: v for k, v in batch.items() if k not in extra}
    position_ids = batch["position_ids"] + head.position_offset(hf.config)
    if head.causal:
        inputs["use_cache"] = False  # training: no key/value cache to fill
    hidden = backbone(**inputs, attention_mask=mask, position_ids=position_ids).last_hidden_state
    pooled = hidden.flatten(0, 1)[batch["last_token" if head.causal else "first_token"]]
    logits = head.logits(hf, pooled)
    return torch.nn.functional.cross_entropy(logits.view(-1, hf.config.num_labels), batch["labels"].view(-1))
