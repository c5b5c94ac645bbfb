"""The last encoder layer computes only the token the classification head reads.

BERT-style classifiers (BERT, RoBERTa, XLM-R, ELECTRA, MiniLM…) read one position of the last hidden
state: the first token (`[CLS]`/`<s>`) through the pooler or the classification head. Every other
position of the last layer — its queries, attention rows, attention-output projection, feed-forward
block — feeds nothing, yet costs 1/n_layers of the forward and backward passes. The last layer's keys
and values still come from every token, since the first token attends to all of them.

`install` swaps the last layer's `forward` (on the instance: weights, names and saved files are
unchanged) for one that computes the first token's row only. The loss, the logits and every gradient
are the same function of the weights as before; only dropout draws fewer mask elements. It stands
aside (the layer's own forward runs) whenever anything else may read the other positions: a KV cache
(prefix tuning), cross-attention, attention weights asked for, or packed rows (several examples per
row, each with its own first token). The record's `train.head_token` section says what was done, and
the FLOP estimate (perf.py) counts the work that remains.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from typing import Any

# Sequence-classification classes whose head reads position 0 of the last hidden state only.
FIRST_TOKEN_HEADS = ("BertForSequenceClassification", "RobertaForSequenceClassification",
                     "XLMRobertaForSequenceClassification", "ElectraForSequenceClassification",
                     "CamembertForSequenceClassification")
# Within the last layer, the modules that then run on one token per sequence (the rest: every token).
PER_SEQUENCE_PARTS = ("attention.self.query", "attention.output.dense", "intermediate.dense", "output.dense")


def _base(model: Any) -> Any:
    """The transformers model under a peft wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def _last_layer(base: Any) -> tuple[str, Any] | None:
    """(qualified name, module) of the encoder's last layer, if it has the BERT layer structure."""
    encoder = getattr(getattr(base, getattr(base, "base_model_prefix", ""), None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not layers:
        return None
    layer = layers[-1]
    sa = getattr(getattr(layer, "attention", None), "self", None)
    if not all(hasattr(sa, a) for a in ("query", "key", "value", "attention_head_size", "scaling")) or not all(
            hasattr(layer, a) for a in ("feed_forward_chunk", "chunk_size_feed_forward")):
        return None
    if getattr(layer, "add_cross_attention", False) or getattr(sa, "is_causal", False):
        return None
    return f"{base.base_model_prefix}.encoder.layer.{len(layers) - 1}", layer


def _first_token_forward(self: Any, hidden_states: Any, attention_mask: Any = None,
                         encoder_hidden_states: Any = None, encoder_attention_mask: Any = None,
                         cache: Any = None, **kwargs: Any) -> Any:
    """BertLayer.forward for the first position only; the layer's own forward where that is not safe."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.pytorch_utils import apply_chunking_to_forward

    if (cache is not None or kwargs.get("past_key_values") is not None or encoder_hidden_states is not None
            or kwargs.get("output_attentions")):
        return type(self).forward(self, hidden_states, attention_mask, encoder_hidden_states,
                                  encoder_attention_mask, cache=cache, **kwargs)
    sa = self.attention.self
    batch = hidden_states.shape[0]
    first = hidden_states[:, :1]
    per_head = (-1, sa.attention_head_size)
    query = sa.query(first).view(batch, 1, *per_head).transpose(1, 2)
    key = sa.key(hidden_states).view(*hidden_states.shape[:2], *per_head).transpose(1, 2)
    value = sa.value(hidden_states).view(*hidden_states.shape[:2], *per_head).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[:, :, :1]
    eager = sys.modules[type(sa).__module__].eager_attention_forward  # the model file's own, as it uses it
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, eager)
    context, _ = attend(sa, query, key, value, attention_mask, dropout=sa.dropout.p if sa.training else 0.0,
                        scaling=sa.scaling, **kwargs)
    attention_output = self.attention.output(context.reshape(batch, 1, -1).contiguous(), first)
    return apply_chunking_to_forward(self.feed_forward_chunk, self.chunk_size_feed_forward, 1, attention_output)


def install(model: Any, *, enabled: bool = True, packing: bool = False) -> dict[str, Any]:
    """Swap in the first-token last layer where it is exact; the record's `head_token` section."""
    base = _base(model)
    cls = type(base).__name__
    if not enabled:
        return {"first_token_only": False, "reason": "train.head_token_only is false"}
    if cls not in FIRST_TOKEN_HEADS:
        return {"first_token_only": False, "reason": f"{cls} is not among the classifiers known to read the first "
                                                     "token only (FIRST_TOKEN_HEADS)"}
    if packing:
        return {"first_token_only": False, "reason": "packed rows: each example has its own first token"}
    found = _last_layer(base)
    if found is None or not hasattr(sys.modules[type(found[1].attention.self).__module__], "eager_attention_forward"):
        return {"first_token_only": False, "reason": f"{cls}: its last layer does not have BERT's structure"}
    name, layer = found
    layer.forward = types.MethodType(_first_token_forward, layer)
    prefix = "" if base is model else _prefix_of(model, base)
    model._peftbench_head_token = {"layer": f"{prefix}{name}",
                                   "per_sequence": [f"{prefix}{name}.{part}" for part in PER_SEQUENCE_PARTS]}
    return {"first_token_only": True, "layer": name, "model_class": cls}


def installed(model: Any) -> dict[str, Any] | None:
    """{"layer", "per_sequence"} (qualified module names) while the swap is in place, else None."""
    return getattr(model, "_peftbench_head_token", None)


def _prefix_of(model: Any, base: Any) -> str:
    """The qualified name of `base` within `model`, with a trailing dot."""
    for name, mod in model.named_modules():
        if mod is base:
            return f"{name}." if name else ""
    return ""


def remove(model: Any) -> None:
    """Give the last layer its own forward back."""
    info = installed(model)
    if info is None:
        return
    layer = model.get_submodule(info["layer"])
    if "forward" in vars(layer):
        del layer.forward
    del model._peftbench_head_token


@contextlib.contextmanager
def every_position(model: Any) -> Iterator[None]:
    """The layer's own forward inside the block: for uses that read every position of the last layer."""
    info = installed(model)
    layer = model.get_submodule(info["layer"]) if info else None
    swapped = vars(layer).pop("forward", None) if layer is not None else None
    try:
        yield
    finally:
        if swapped is not None:
            layer.forward = swapped
