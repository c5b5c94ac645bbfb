"""Model families and module discovery (transformer blocks, adapter targets).

A family is one small registry entry: which config `model_type`s it covers, where its stack of
transformer blocks lives, and which modules LoRA/IA3 target by default. Unknown architectures
fall back to the generic entry (the longest block list; all linear layers except the head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from peftbench.models.heads import is_head
from peftbench.registry import Registry

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # encoder | seq2seq | decoder
    model_types: tuple[str, ...]
    layer_paths: tuple[str, ...]  # suffixes of the ModuleLists that hold the blocks
    lora_targets: tuple[str, ...] | None = None  # None: all linear layers except the head
    ia3_targets: tuple[str, ...] | None = None
    ia3_feedforward: tuple[str, ...] | None = None


FAMILIES: Registry[Family] = Registry("model family")
for _fam in (
    Family("bert", "encoder", ("bert",), ("encoder.layer",), ("query", "value"),
           ("key", "value", "output.dense"), ("output.dense",)),
    Family("roberta", "encoder", ("roberta", "xlm-roberta"), ("encoder.layer",), ("query", "value"),
           ("key", "value", "output.dense"), ("output.dense",)),
    Family("distilbert", "encoder", ("distilbert",), ("transformer.layer",), ("q_lin", "v_lin"),
           ("k_lin", "v_lin", "lin2"), ("lin2",)),
    Family("t5", "seq2seq", ("t5", "mt5"), ("encoder.block", "decoder.block"), ("q", "v"),
           ("k", "v", "wo"), ("wo",)),
    Family("bart", "seq2seq", ("bart",), ("encoder.layers", "decoder.layers"), ("q_proj", "v_proj"),
           ("k_proj", "v_proj", "fc2"), ("fc2",)),
    Family("encoder-decoder", "seq2seq", ("encoder-decoder",), ("encoder.layer",), ("query", "value"),
           ("key", "value", "output.dense"), ("output.dense",)),
    Family("gpt2", "decoder", ("gpt2",), ("h",), ("c_attn",), ("c_attn", "mlp.c_proj"), ("mlp.c_proj",)),
    Family("gpt_neox", "decoder", ("gpt_neox",), ("layers",), ("query_key_value",),
           ("query_key_value", "dense_4h_to_h"), ("dense_4h_to_h",)),
    Family("llama", "decoder", ("llama", "mistral", "qwen2", "qwen3"), ("layers",), ("q_proj", "v_proj"),
           ("k_proj", "v_proj", "down_proj"), ("down_proj",)),
    Family("generic", "unknown", (), ()),
):
    FAMILIES.add(_fam.name, _fam)


def family_for(model_type: str, override: str = "auto") -> Family:
    if override != "auto":
        return FAMILIES.get(override)
    for _, fam in FAMILIES.items():
        if model_type in fam.model_types:
            return fam
    return FAMILIES.get("generic")


def find_layer_lists(model: torch.nn.Module, family: Family) -> list[tuple[str, torch.nn.ModuleList]]:
    """The ModuleLists holding the transformer blocks, in forward order."""
    import torch

    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    if family.layer_paths:
        found = [(n, m) for suffix in family.layer_paths for n, m in lists
                 if n == suffix or n.endswith("." + suffix)]
        if found:
            return found
    if not lists:
        return []
    longest = max(len(m) for _, m in lists)
    return [(n, m) for n, m in lists if len(m) == longest][:1]


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Leaf names of all linear layers except output heads: the generic adapter target list."""
    import torch

    return sorted({n.split(".")[-1] for n, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and not is_head(n)})
