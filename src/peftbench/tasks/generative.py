"""Generative tasks: seq2seq summarization (ROUGE) and causal-LM instruction tuning (perplexity).

Both tasks train with the shared loop in `train.py`; they differ from classification in what an
example is (a source and a target text), how labels are built (teacher forcing for seq2seq; the
prompt masked out for causal LMs so only response tokens carry loss) and how they are evaluated.
The two warm-started MiniLM models (`embedded-seq2seq`, `embedded-causal`) give real weights for
both tasks without any download.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from peftbench.data.batching import IGNORE_INDEX, Encoded
from peftbench.data.classification import PRESETS, Preset, read_table
from peftbench.errors import DataError, ModelError, SpecError
from peftbench.models.loading import (
    FAMILIES,
    Family,
    LoadedModel,
    check_weights,
    embedded_model_path,
    family_for,
    from_pretrained,
    load_config,
    load_tokenizer,
    resolve_model_path,
)
from peftbench.runtime.device import autocast

EMBEDDED_SEQ2SEQ = "embedded-seq2seq"
EMBEDDED_CAUSAL = "embedded-causal"

PRESETS.add("samsum", Preset("samsum", "dialogue", "summary"))

# Databricks' Dolly template; the Input block is left out when an example has no context.
DOLLY_TEMPLATE = ("Below is an instruction that describes a task. Write a response that appropriately "
                  "completes the request.\n\n### Instruction:\n{instruction}\n\n{context_block}### Response:\n")


# ---- data --------------------------------------------------------------------------------------


@dataclass
class TextPairs:
    """Source (dialogue or prompt) and target (summary or response) texts for train and eval."""

    train_sources: list[str]
    train_targets: list[str]
    eval_sources: list[str]
    eval_targets: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    tokenizer: Any = None  # set by `encode`; evaluation decodes generated ids with it
    generation: Any = None  # the spec's generation section, set by `encode`


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def _fill(template: str, row: dict[str, Any], path: str) -> str:
    try:
        return template.format(**{k: _cell(v) for k, v in row.items()})
    except KeyError as err:
        raise DataError(f"data.prompt_template names column {err} that '{path}' does not have "
                        f"(columns: {', '.join(map(str, row))})",
                        hint="use {column} placeholders naming existing columns") from None
    except (IndexError, ValueError) as err:
        raise DataError(f"data.prompt_template is not a valid format string: {err}",
                        hint="write placeholders as {column}; double literal braces as {{ }}") from None


def dolly_prompt(instruction: str, context: str = "") -> str:
    block = f"### Input:\n{context}\n\n" if context.strip() else ""
    return DOLLY_TEMPLATE.format(instruction=instruction, context_block=block)


def _pairs_from_frame(df: Any, spec_data: Any, task: str, path: str) -> tuple[list[str], list[str], str]:
    """(sources, targets, layout name) from one table, following the spec's columns or the data's layout."""
    cols = [str(c) for c in df.columns]
    preset = PRESETS.get(spec_data.preset) if spec_data.preset else None
    template = spec_data.prompt_template
    target = spec_data.target_column or (preset.label_column if preset else None)
    source = spec_data.text_column or (preset.text_column if preset else None)
    if task == "summarization":
        source, target = source or "dialogue", target or "summary"
        layout = "source/target"
    elif template or source:
        target = target or next((c for c in ("response", "completion", "output", "summary") if c in cols), None)
        layout = "template" if template else "prompt/completion"
    elif {"instruction", "response"} <= set(cols):
        target, layout = target or "response", "dolly"
    elif {"prompt", "completion"} <= set(cols):
        source, target, layout = "prompt", target or "completion", "prompt/completion"
    else:
        raise DataError(f"'{path}' has neither instruction/response nor prompt/completion columns "
                        f"(columns: {', '.join(cols)})",
                        hint="set data.text_column and data.target_column, or data.prompt_template")
    needed = [c for c in (source, target) if c] + (["instruction"] if layout == "dolly" else [])
    for c in needed:
        if c not in cols:
            raise DataError(f"data file '{path}' has no column '{c}' (columns: {', '.join(cols)})",
                            hint="set data.text_column / data.target_column to existing columns")
    if target is None:
        raise DataError(f"no target column found in '{path}' (columns: {', '.join(cols)})",
                        hint="set data.target_column")
    rows = df.to_dict("records")
    sources = []
    for row in rows:
        if template:
            sources.append(_fill(template, row, path))
        elif layout == "dolly":
            sources.append(dolly_prompt(_cell(row["instruction"]), _cell(row.get("context"))))
        else:
            sources.append(_cell(row[source]))
    targets = [_cell(row[target]) for row in rows]
    for i, (s, t) in enumerate(zip(sources, targets, strict=True)):
        if not s.strip() or not t.strip():
            which = "source" if not s.strip() else f"target ('{target}')"
            raise DataError(f"data file '{path}' has an empty {which} text in row {i + 1}",
                            hint="remove or fill rows with empty texts")
    return sources, targets, layout


def _subsample(n_rows: int, n: int | None, seed: int) -> list[int]:
    import numpy as np

    if n is None or n >= n_rows:
        return list(range(n_rows))
    return sorted(np.random.default_rng(seed).choice(n_rows, size=n, replace=False).tolist())


def load_text_pairs(spec_data: Any, task: str) -> TextPairs:
    if not spec_data.train or not spec_data.eval:
        raise DataError(f"{task} needs data.train and data.eval files",
                        hint="pass --data-train FILE --data-eval FILE (or set data.train / data.eval)")
    out: dict[str, tuple[list[str], list[str], int]] = {}
    layout = ""
    for role, path, n, seed_off in (("train", spec_data.train, spec_data.n_train, 0),
                                    ("eval", spec_data.eval, spec_data.n_eval, 1)):
        df = read_table(path)
        keep = _subsample(len(df), n, spec_data.seed + seed_off)
        sources, targets, layout = _pairs_from_frame(df.iloc[keep], spec_data, task, path)
        out[role] = (sources, targets, len(df))
    return TextPairs(out["train"][0], out["train"][1], out["eval"][0], out["eval"][1], info={
        "layout": layout, "train_rows_in_file": out["train"][2], "eval_rows_in_file": out["eval"][2],
        "n_train": len(out["train"][0]), "n_eval": len(out["eval"][0])})


# ---- tokenizing and batching ----------------------------------------------------------------------


def _eos_id(tok: Any) -> int | None:
    return tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id


def _bos_id(tok: Any) -> int | None:
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.cls_token_id
    return None if bos is None or bos == _eos_id(tok) else bos


def encode_seq2seq(tok: Any, sources: list[str], targets: list[str], max_length: int,
                   max_target_length: int) -> Encoded:
    """Encoder inputs with the tokenizer's own special tokens; targets end with EOS (teacher forcing)."""
    src = tok(sources, truncation=True, max_length=max_length, padding=False)["input_ids"]
    tgt = tok(targets, add_special_tokens=False, truncation=True, max_length=max_target_length - 1)["input_ids"]
    eos = _eos_id(tok)
    labels = [t + ([eos] if eos is not None else []) for t in tgt]
    return Encoded(input_ids=src, labels=[], extra={"labels": labels})


def encode_causal(tok: Any, prompts: list[str], responses: list[str], max_length: int,
                  max_target_length: int) -> Encoded:
    """prompt + response + EOS in one sequence; labels are IGNORE_INDEX over the prompt.

    Too-long examples keep the response (up to `max_target_length`) and the end of the prompt,
    where the template's response marker sits.
    """
    p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
    r_ids = tok(responses, add_special_tokens=False)["input_ids"]
    bos, eos = _bos_id(tok), _eos_id(tok)
    head = [bos] if bos is not None else []
    ids, labels = [], []
    for p, r in zip(p_ids, r_ids, strict=True):
        r = r[: max_target_length - 1] + ([eos] if eos is not None else [])
        budget = max(1, max_length - len(r) - len(head))
        p = head + p[-budget:]
        r = r[: max_length - len(p)]
        ids.append(p + r)
        labels.append([IGNORE_INDEX] * len(p) + r)
    return Encoded(input_ids=ids, labels=[], extra={"labels": labels})


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


# ---- metrics -----------------------------------------------------------------------------------

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def sentence_lines(text: str) -> str:
    # rougeLsum scores sentence by sentence, split at newlines (as in the `evaluate` recipe, which
    # uses nltk's sentence splitter; its data files are not shipped, so split at end punctuation).
    return "\n".join(s for s in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if s)


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE F1 (0-1) per type from `rouge_score`, with stemming, as `evaluate`'s rouge reports."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    sums = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(sentence_lines(ref), sentence_lines(pred))
        for k in ROUGE_TYPES:
            sums[k] += scores[k].fmeasure
    n = max(1, len(predictions))
    return {k: v / n for k, v in sums.items()}


# ---- models --------------------------------------------------------------------------------------


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
                            revision=spec.model.revision, use_safetensors=not spec.model.allow_pickle, **load_kwargs)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    return LoadedModel(model, tok, family, path, config.model_type)


# ---- the tasks -------------------------------------------------------------------------------------


def loss_sum(model: Any, enc: Encoded, order: list[int], batch_size: int, device: str, pad_id: int,
              shift: bool) -> tuple[float, int]:
    """Token-weighted loss: the model's mean loss times its number of target tokens, per batch."""
    total, tokens = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = {k: v.to(device) for k, v in collate_lm(enc, order[start:start + batch_size], pad_id).items()}
        labels = batch["labels"][:, 1:] if shift else batch["labels"]
        n = int((labels != IGNORE_INDEX).sum())
        if n:
            total += model(**batch).loss.float().item() * n
            tokens += n
    return total, tokens


class _GenerativeTask:
    name = ""
    kind = ""
    main_metric = ""
    shift = False

    @property
    def families(self) -> tuple[str, ...]:
        return (self.kind,)

    def load_data(self, spec: Any) -> Any:
        from peftbench.tasks.base import Prepared

        data = load_text_pairs(spec.data, self.name)
        return Prepared(data, dict(data.info))

    def load_model(self, spec: Any, prepared: Any, load_kwargs: dict[str, Any]) -> LoadedModel:
        return load_generative(spec, load_kwargs, self.kind, self.name)

    collate = staticmethod(collate_lm)

    def _encode(self, tok: Any, sources: list[str], targets: list[str], spec: Any) -> Encoded:
        raise NotImplementedError

    def encode(self, loaded: LoadedModel, prepared: Any, spec: Any) -> tuple[Encoded, Encoded]:
        d = prepared.data
        d.tokenizer = loaded.tokenizer
        d.generation = spec.generation
        return (self._encode(loaded.tokenizer, d.train_sources, d.train_targets, spec),
                self._encode(loaded.tokenizer, d.eval_sources, d.eval_targets, spec))


class SummarizationTask(_GenerativeTask):
    """Encoder-decoder summarization: teacher-forced training, eval loss + ROUGE of generated text."""

    name = "summarization"
    kind = "seq2seq"
    main_metric = "rougeL"

    def _encode(self, tok: Any, sources: list[str], targets: list[str], spec: Any) -> Encoded:
        return encode_seq2seq(tok, sources, targets, spec.data.max_length, spec.data.max_target_length)

    def evaluate(self, model: Any, enc: Encoded, prepared: Any, *, batch_size: int, device: str,
                 autocast_dtype: Any, pad_id: int) -> dict[str, Any]:
        import torch

        gen = prepared.data.generation
        num_beams, max_new = (gen.num_beams, gen.max_new_tokens) if gen else (1, 64)
        extra = {"no_repeat_ngram_size": gen.no_repeat_ngram_size} if gen and gen.no_repeat_ngram_size else {}
        n_gen = min(len(enc), gen.n_examples or len(enc)) if gen else len(enc)
        tok = prepared.data.tokenizer
        model.eval()
        order = sorted(range(len(enc)), key=lambda i: len(enc.input_ids[i]))
        with torch.inference_mode(), autocast(device, autocast_dtype):
            loss, tokens = loss_sum(model, enc, order, batch_size, device, pad_id, shift=False)
            gen_order = sorted(range(n_gen), key=lambda i: len(enc.input_ids[i]))
            texts = [""] * n_gen
            new_tokens = 0
            for start in range(0, n_gen, batch_size):
                idx = gen_order[start:start + batch_size]
                batch = collate_lm(enc, idx, pad_id)
                out = model.generate(input_ids=batch["input_ids"].to(device),
                                     attention_mask=batch["attention_mask"].to(device),
                                     num_beams=num_beams, max_new_tokens=max_new, do_sample=False, **extra)
                for i, text in zip(idx, tok.batch_decode(out, skip_special_tokens=True), strict=True):
                    texts[i] = text.strip()
                new_tokens += int((out[:, 1:] != pad_id).sum())  # after the decoder start token
        model.train()
        refs = prepared.data.eval_targets[:n_gen]
        eval_loss = loss / max(1, tokens)
        return {"eval_loss": eval_loss, **rouge_scores(texts, refs), "eval_tokens": tokens,
                "n_generated": n_gen, "gen_len": new_tokens / max(1, n_gen),
                "num_beams": num_beams, "max_new_tokens": max_new,
                "predictions": {"pred": texts, "gold": refs}}


class InstructionTask(_GenerativeTask):
    """Causal-LM instruction tuning: loss on response tokens only; eval loss and perplexity."""

    name = "instruction"
    kind = "decoder"
    main_metric = "perplexity"
    shift = True

    def _encode(self, tok: Any, sources: list[str], targets: list[str], spec: Any) -> Encoded:
        return encode_causal(tok, sources, targets, spec.data.max_length, spec.data.max_target_length)

    def preflight_checks(self, loaded: LoadedModel, prepared: Any, enc: Encoded,
                         spec: Any) -> list[dict[str, Any]]:
        """Pre-flight checks of the encoded training data: only response tokens carry loss."""
        from peftbench.trust.preflight import check_prompt_masking

        return [check_prompt_masking(loaded.tokenizer, prepared.data.train_targets, enc,
                                     max_length=spec.data.max_length,
                                     max_target_length=spec.data.max_target_length)]

    def evaluate(self, model: Any, enc: Encoded, prepared: Any, *, batch_size: int, device: str,
                 autocast_dtype: Any, pad_id: int) -> dict[str, Any]:
        import torch

        model.eval()
        order = sorted(range(len(enc)), key=lambda i: len(enc.input_ids[i]))
        with torch.inference_mode(), autocast(device, autocast_dtype):
            loss, tokens = loss_sum(model, enc, order, batch_size, device, pad_id, shift=True)
        model.train()
        eval_loss = loss / max(1, tokens)
        return {"eval_loss": eval_loss, "perplexity": math.exp(min(eval_loss, 700.0)), "eval_tokens": tokens}


def evaluate_untrained(spec: Any, batch_size: int = 32) -> dict[str, Any]:
    """The task's metrics for the spec's model before any training: the start a run improves on.
    (A fresh LoRA adapter is the identity, so this is also where a LoRA run begins.)"""
    from peftbench.runtime.device import pick_device
    from peftbench.tasks.base import TASKS

    task = TASKS.get(spec.task)
    prepared = task.load_data(spec)
    loaded = task.load_model(spec, prepared, {})
    device = pick_device(spec.train.device)
    loaded.model.to(device)
    _, eval_enc = task.encode(loaded, prepared, spec)
    return task.evaluate(loaded.model, eval_enc, prepared, batch_size=batch_size, device=device,
                         autocast_dtype=None, pad_id=loaded.tokenizer.pad_token_id or 0)
