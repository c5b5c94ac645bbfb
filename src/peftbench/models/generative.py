"""Seq2seq and causal LMs for the generative tasks, the two warm-started MiniLM models included.

`embedded-seq2seq` and `embedded-causal` give real weights for both generative tasks without
any download: MiniLM as an encoder-decoder, and MiniLM as a causal decoder.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from peftbench.errors import ModelError, SpecError
from peftbench.models.embedded import EMBEDDED_CAUSAL, EMBEDDED_SEQ2SEQ, embedded_model_path
from peftbench.models.families import FAMILIES, Family, family_for
from peftbench.models.loading import (
    LoadedModel,
    check_weights,
    from_pretrained,
    load_config,
    load_tokenizer,
    resolve_model_path,
)


def _prefixed(kwargs: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in kwargs.items()}


def warm_start_decoder(decoder: Any, cross_attention: bool) -> None:
    """Give the parts MiniLM has no weights for a start from its real ones, instead of noise that
    adapter methods (which freeze the base) could never repair: each cross-attention copies its
    layer's self-attention, and the LM-head transform starts as the identity, so tokens are read
    out through the tied word embeddings."""
    import torch

    with torch.no_grad():
        if cross_attention:
            for layer in decoder.bert.encoder.layer:
                layer.crossattention.load_state_dict(layer.attention.state_dict())
        transform = decoder.cls.predictions.transform
        transform.dense.weight.copy_(torch.eye(transform.dense.weight.shape[0]))
        transform.dense.bias.zero_()
        transform.LayerNorm.weight.fill_(1.0)
        transform.LayerNorm.bias.zero_()
        decoder.cls.predictions.bias.zero_()


def build_embedded_seq2seq(spec_model: Any, load_kwargs: dict[str, Any]) -> LoadedModel:
    """An EncoderDecoderModel warm-started from two MiniLM encoders (cross-attention starts random)."""
    from transformers import EncoderDecoderModel

    path = str(embedded_model_path())
    tok = load_tokenizer(path, spec_model)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(
        path, path, **_prefixed(load_kwargs, "encoder_"), **_prefixed(load_kwargs, "decoder_"))
    warm_start_decoder(model.decoder, cross_attention=True)
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id = tok.cls_token_id
        cfg.bos_token_id = tok.cls_token_id
        cfg.eos_token_id = tok.sep_token_id
        cfg.pad_token_id = tok.pad_token_id
    return LoadedModel(model, tok, FAMILIES.get("encoder-decoder"), path, "encoder-decoder")


def build_embedded_causal(spec_model: Any, load_kwargs: dict[str, Any]) -> LoadedModel:
    """MiniLM as a causal decoder (`is_decoder=True`): real weights, a fresh LM-head transform."""
    from transformers import AutoModelForCausalLM

    path = str(embedded_model_path())
    tok = load_tokenizer(path, spec_model)
    model = AutoModelForCausalLM.from_pretrained(path, is_decoder=True, **load_kwargs)
    warm_start_decoder(model, cross_attention=False)
    family = dataclasses.replace(FAMILIES.get("bert"), kind="decoder")
    return LoadedModel(model, tok, family, path, model.config.model_type)


EMBEDDED_BUILDERS = {EMBEDDED_SEQ2SEQ: build_embedded_seq2seq, EMBEDDED_CAUSAL: build_embedded_causal}


def load_generative(spec: Any, load_kwargs: dict[str, Any], kind: str, task: str) -> LoadedModel:
    """A seq2seq or causal LM, refused early (before loading weights) when the family cannot do `task`."""
    import transformers

    name = spec.model.name_or_path
    if name in EMBEDDED_BUILDERS:
        builder = EMBEDDED_BUILDERS[name]
        want = EMBEDDED_SEQ2SEQ if kind == "seq2seq" else EMBEDDED_CAUSAL
        if name != want:
            raise SpecError(f"task '{task}' cannot run on '{name}'", hint=f"use model '{want}' for {task}")
        try:
            return builder(spec.model, load_kwargs)
        except (ValueError, TypeError, RuntimeError) as err:
            raise ModelError(f"cannot build '{name}': {str(err).splitlines()[0][:200]}",
                             hint="try another method (4-bit loading may not apply here)") from None
    path = resolve_model_path(name)
    check_weights(path, spec.model.allow_pickle)
    config = load_config(path, spec.model)
    family: Family = family_for(config.model_type, spec.model.family)
    is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    if family.kind == "unknown":
        family = dataclasses.replace(family, kind="seq2seq" if is_seq2seq else "decoder")
    if family.kind != kind or is_seq2seq != (kind == "seq2seq"):
        examples = "T5, BART" if kind == "seq2seq" else "GPT-2, Pythia (GPT-NeoX), Llama"
        raise SpecError(f"task '{task}' needs a {kind} model, but '{name}' is a {family.kind} model "
                        f"({config.model_type})", hint=f"pick a {kind} model such as {examples}, or another task")
    auto = transformers.AutoModelForSeq2SeqLM if kind == "seq2seq" else transformers.AutoModelForCausalLM
    tok = load_tokenizer(path, spec.model)
    model = from_pretrained(auto, path, trust_remote_code=spec.model.trust_remote_code,
                            revision=spec.model.revision, use_safetensors=not spec.model.allow_pickle,
                            allow_missing_weights=spec.model.allow_missing_weights, **load_kwargs)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    return LoadedModel(model, tok, family, path, config.model_type)
