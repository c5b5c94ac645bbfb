"""The last encoder layer computes only the token the classification head reads.

BERT-style classifiers (BERT, RoBERTa, XLM-R, ELECTRA, MiniLM, DistilBERT…) read one position of the last hidden
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
the FLOP estimate (perf/flops.py) counts the work that remains.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from peftbench.models.loading import transformers_model


def _first_row(attention_mask: Any) -> Any:
    """The additive/boolean mask's row for the first query (a 4-D mask has one row per query)."""
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        return attention_mask[:, :, :1]
    return attention_mask


def _attend(sa: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
    """The model's configured attention function (SDPA, eager, peftbench's CPU one…), as its own layer calls it."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = sys.modules[type(sa).__module__].eager_attention_forward  # the model file's own, as it uses it
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, eager)
    context, _ = attend(sa, query, key, value, _first_row(attention_mask),
                        dropout=sa.dropout.p if sa.training else 0.0, scaling=sa.scaling, **kwargs)
    return context.reshape(query.shape[0], 1, -1).contiguous()


def _heads(x: Any, head_size: int) -> Any:
    return x.view(*x.shape[:2], -1, head_size).transpose(1, 2)


def _bert_first_token(self: Any, hidden_states: Any, attention_mask: Any = None,
                      encoder_hidden_states: Any = None, encoder_attention_mask: Any = None,
                      cache: Any = None, **kwargs: Any) -> Any:
    """BertLayer.forward for the first position only; the layer's own forward where that is not safe."""
    from transformers.pytorch_utils import apply_chunking_to_forward

    if (cache is not None or kwargs.get("past_key_values") is not None or encoder_hidden_states is not None
            or kwargs.get("output_attentions")):
        return type(self).forward(self, hidden_states, attention_mask, encoder_hidden_states,
                                  encoder_attention_mask, cache=cache, **kwargs)
    sa = self.attention.self
    first = hidden_states[:, :1]
    context = _attend(sa, _heads(sa.query(first), sa.attention_head_size),
                      _heads(sa.key(hidden_states), sa.attention_head_size),
                      _heads(sa.value(hidden_states), sa.attention_head_size), attention_mask, **kwargs)
    attention_output = self.attention.output(context, first)
    return apply_chunking_to_forward(self.feed_forward_chunk, self.chunk_size_feed_forward, 1, attention_output)


def _distilbert_first_token(self: Any, hidden_states: Any, attention_mask: Any = None, **kwargs: Any) -> Any:
    """DistilBERT's TransformerBlock.forward for the first position only."""
    if kwargs.get("output_attentions"):
        return type(self).forward(self, hidden_states, attention_mask, **kwargs)
    sa = self.attention
    first = hidden_states[:, :1]
    context = _attend(sa, _heads(sa.q_lin(first), sa.attention_head_size),
                      _heads(sa.k_lin(hidden_states), sa.attention_head_size),
                      _heads(sa.v_lin(hidden_states), sa.attention_head_size), attention_mask, **kwargs)
    attention_output = self.sa_layer_norm(sa.out_lin(context) + first)
    return self.output_layer_norm(self.ffn(attention_output) + attention_output)


@dataclass(frozen=True)
class Layout:
    """Where a family keeps its layers and which of the last layer's parts then run once per sequence."""

    stack: str  # the layer list, under the base model's prefix module
    attention: str  # the self-attention module, within a layer
    needs: tuple[str, ...]  # what the first-token forward uses, as paths within the layer
    per_sequence: tuple[str, ...]  # linear layers (within the layer) that then see one token per sequence
    forward: Callable[..., Any]


_BERT = Layout(
    stack="encoder.layer", attention="attention.self",
    needs=("attention.self.query", "attention.self.key", "attention.self.value", "attention.self.attention_head_size",
           "attention.self.scaling", "attention.self.dropout", "attention.output", "feed_forward_chunk",
           "chunk_size_feed_forward"),
    per_sequence=("attention.self.query", "attention.output.dense", "intermediate.dense", "output.dense"),
    forward=_bert_first_token)
_DISTILBERT = Layout(
    stack="transformer.layer", attention="attention",
    needs=("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
           "attention.attention_head_size", "attention.scaling", "attention.dropout", "sa_layer_norm", "ffn",
           "output_layer_norm"),
    per_sequence=("attention.q_lin", "attention.out_lin", "ffn.lin1", "ffn.lin2"),
    forward=_distilbert_first_token)

# Sequence-classification classes whose head reads position 0 of the last hidden state only; adding a
# family with the same layer structure is one entry.
FIRST_TOKEN_HEADS: dict[str, Layout] = {
    "BertForSequenceClassification": _BERT, "RobertaForSequenceClassification": _BERT,
    "XLMRobertaForSequenceClassification": _BERT, "ElectraForSequenceClassification": _BERT,
    "CamembertForSequenceClassification": _BERT, "DistilBertForSequenceClassification": _DISTILBERT,
}


def _last_layer(base: Any, layout: Layout) -> tuple[str, Any] | None:
    """(qualified name, module) of the encoder's last layer, if it has the layout's structure."""
    prefix = getattr(base, "base_model_prefix", "")
    try:
        layers = getattr(base, prefix).get_submodule(layout.stack)
    except AttributeError:  # also what get_submodule raises for a missing path
        return None
    if not layers:
        return None
    layer = layers[-1]
    if not all(_has_path(layer, need) for need in layout.needs):
        return None
    sa = layer.get_submodule(layout.attention)
    if getattr(layer, "add_cross_attention", False) or getattr(sa, "is_causal", False):
        return None
    if not hasattr(sys.modules[type(sa).__module__], "eager_attention_forward"):
        return None
    return f"{prefix}.{layout.stack}.{len(layers) - 1}", layer


def _has_path(obj: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def install(model: Any, *, enabled: bool = True, packing: bool = False) -> dict[str, Any]:
    """Swap in the first-token last layer where it is exact; the record's `head_token` section."""
    base = transformers_model(model)
    cls = type(base).__name__
    if not enabled:
        return {"first_token_only": False, "reason": "train.head_token_only is false"}
    if cls not in FIRST_TOKEN_HEADS:
        return {"first_token_only": False, "reason": f"{cls} is not among the classifiers known to read the first "
                                                     "token only (FIRST_TOKEN_HEADS)"}
    if packing:
        return {"first_token_only": False, "reason": "packed rows: each example has its own first token"}
    layout = FIRST_TOKEN_HEADS[cls]
    found = _last_layer(base, layout)
    if found is None:
        return {"first_token_only": False, "reason": f"{cls}: its last layer ({layout.stack}[-1]) does not "
                                                     "have the structure head_token.py expects"}
    name, layer = found
    layer.forward = types.MethodType(layout.forward, layer)
    prefix = "" if base is model else _prefix_of(model, base)
    model._peftbench_head_token = {"layer": f"{prefix}{name}",
                                   "per_sequence": [f"{prefix}{name}.{part}" for part in layout.per_sequence]}
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
