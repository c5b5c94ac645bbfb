"""Text-pair data for the generative tasks: source (dialogue or prompt) and target (summary or
response) texts, read from a table, and their token ids.

Labels follow teacher forcing for seq2seq models; for causal LMs the prompt is masked out
(`IGNORE_INDEX`), so only response tokens carry loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peftbench.data.batching import IGNORE_INDEX, Encoded
from peftbench.data.readers import PRESETS, read_table
from peftbench.data.splits import random_subsample
from peftbench.errors import DataError

# Databricks' Dolly template; the Input block is left out when an example has no context.
DOLLY_TEMPLATE = ("Below is an instruction that describes a task. Write a response that appropriately "
                  "completes the request.\n\n### Instruction:\n{instruction}\n\n{context_block}### Response:\n")


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


def format_source(row: dict[str, Any], layout: str, template: str | None, source: str | None, path: str) -> str:
    """One example's source text as the model sees it: the prompt template filled from the row's
    columns, the Dolly prompt, or the source column as it is (`peftbench generate` formats its
    prompts with it too)."""
    if template:
        return _fill(template, row, path)
    if layout == "dolly":
        return dolly_prompt(_cell(row["instruction"]), _cell(row.get("context")))
    return _cell(row[source])


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
    sources = [format_source(row, layout, template, source, path) for row in rows]
    targets = [_cell(row[target]) for row in rows]
    for i, (s, t) in enumerate(zip(sources, targets, strict=True)):
        if not s.strip() or not t.strip():
            which = "source" if not s.strip() else f"target ('{target}')"
            raise DataError(f"data file '{path}' has an empty {which} text in row {i + 1}",
                            hint="remove or fill rows with empty texts")
    return sources, targets, layout


def load_text_pairs(spec_data: Any, task: str) -> TextPairs:
    if not spec_data.train or not spec_data.eval:
        raise DataError(f"{task} needs data.train and data.eval files",
                        hint="pass --data-train FILE --data-eval FILE (or set data.train / data.eval)")
    out: dict[str, tuple[list[str], list[str], int]] = {}
    layout = ""
    for role, path, n, seed_off in (("train", spec_data.train, spec_data.n_train, 0),
                                    ("eval", spec_data.eval, spec_data.n_eval, 1)):
        df = read_table(path)
        keep = random_subsample(len(df), n, spec_data.seed + seed_off)
        sources, targets, layout = _pairs_from_frame(df.iloc[keep], spec_data, task, path)
        out[role] = (sources, targets, len(df))
    return TextPairs(out["train"][0], out["train"][1], out["eval"][0], out["eval"][1], info={
        "layout": layout, "train_rows_in_file": out["train"][2], "eval_rows_in_file": out["eval"][2],
        "n_train": len(out["train"][0]), "n_eval": len(out["eval"][0])})


# ---- tokenizing ----------------------------------------------------------------------------------


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
