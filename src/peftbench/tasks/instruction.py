"""Causal-LM instruction tuning: loss on response tokens only; eval loss and perplexity.

Its pre-flight check `prompt_masking` runs on the first `MASK_CHECK_EXAMPLES` encoded training
examples: the tokens carrying loss (labels != IGNORE_INDEX) are the input tokens at those
positions and decode to the example's response text (whitespace aside; a prefix of it when the
example hit a length limit), so no prompt token carries loss and no response token is left out;
an example with no response token carrying loss that is not at `data.max_length` is a wrong mask.
Over all training examples, those where truncation left no response token carrying loss are
counted: above `MASK_MAX_EMPTY_SHARE` of them the run stops, otherwise the check passes with a
warning. A wrong mask crashes nothing: the model just learns to reproduce prompts.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from peftbench.data.batching import IGNORE_INDEX, Encoded
from peftbench.data.text_pairs import encode_causal
from peftbench.models.embedded import EMBEDDED_CAUSAL
from peftbench.models.loading import LoadedModel
from peftbench.runtime.device import autocast
from peftbench.tasks.base import Prepared
from peftbench.tasks.generative import GenerativeTask, loss_sum

MASK_CHECK_EXAMPLES = 16  # training examples whose loss-carrying tokens are decoded and compared
MASK_MAX_EMPTY_SHARE = 0.5  # above this share of examples without response tokens, the run stops


class InstructionTask(GenerativeTask):
    """Causal-LM instruction tuning: loss on response tokens only; eval loss and perplexity."""

    name = "instruction"
    kind = "decoder"
    peft_task_type = "CAUSAL_LM"
    main_metric = "perplexity"
    metrics: ClassVar[dict[str, bool]] = {"eval_loss": False, "perplexity": False}
    model_description = "causal LM"
    tiny_family = "gpt2"
    embedded_model = EMBEDDED_CAUSAL
    supports_retention = True

    def encode_texts(self, tok: Any, sources: list[str], targets: list[str], spec: Any) -> Encoded:
        return encode_causal(tok, sources, targets, spec.data.max_length, spec.data.max_target_length)

    def preflight_checks(self, loaded: LoadedModel, prepared: Prepared, enc: Encoded,
                         spec: Any) -> list[dict[str, Any]]:
        """Pre-flight checks of the encoded training data: only response tokens carry loss."""
        return [check_prompt_masking(loaded.tokenizer, prepared.data.train_targets, enc,
                                     max_length=spec.data.max_length,
                                     max_target_length=spec.data.max_target_length)]

    def evaluate(self, model: Any, enc: Encoded, prepared: Prepared, *, batch_size: int, device: str,
                 autocast_dtype: Any, pad_id: int) -> dict[str, Any]:
        import torch

        model.eval()
        order = sorted(range(len(enc)), key=lambda i: len(enc.input_ids[i]))
        with torch.inference_mode(), autocast(device, autocast_dtype):
            loss, tokens = loss_sum(model, enc, order, batch_size, device, pad_id, shift=True)
        model.train()
        eval_loss = loss / max(1, tokens)
        return {"eval_loss": eval_loss, "perplexity": math.exp(min(eval_loss, 700.0)), "eval_tokens": tokens}


# ---- pre-flight check of the prompt mask -------------------------------------------------------


def _squash(text: str) -> str:
    """Text without whitespace: tokenizers differ in the spaces they decode, not in the words."""
    return "".join(text.split())


def _snippet(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def check_prompt_masking(tokenizer: Any, responses: list[str], enc: Any, *, max_length: int,
                         max_target_length: int) -> dict[str, Any]:
    """The tokens carrying loss are each example's response: no prompt token, no missing response."""
    labels = enc.extra["labels"]
    special = set(tokenizer.all_special_ids)
    # Position 0 never carries loss (the model shifts labels by one); EOS alone is no response.
    empty = {i for i, lab in enumerate(labels)
             if not any(t != IGNORE_INDEX and t not in special for t in lab[1:])}
    checked = range(min(MASK_CHECK_EXAMPLES, len(labels)))
    wrong: list[dict[str, Any]] = []
    truncated = 0
    for i in checked:
        ids, lab = enc.input_ids[i], labels[i]
        loss_ids = [t for t in lab if t != IGNORE_INDEX]
        got = tokenizer.decode(loss_ids, skip_special_tokens=True)
        want = tokenizer.decode(tokenizer(responses[i], add_special_tokens=False)["input_ids"],
                                skip_special_tokens=True)
        g, w = _squash(got), _squash(want)
        at_limit = len(ids) >= max_length or len(loss_ids) >= max_target_length - 1
        if len(lab) != len(ids) or any(t != IGNORE_INDEX and t != x for t, x in zip(lab, ids, strict=False)):
            problem = "labels differ from the input tokens at loss positions"
        elif i in empty:
            if len(ids) >= max_length:
                continue  # truncated away: counted below over all examples
            problem = "no response token carries loss, though the example is not truncated"
        elif g == w:
            continue
        elif at_limit and w.startswith(g.rstrip("\ufffd")):  # a byte-level cut can split a character
            truncated += 1
            continue
        elif g.endswith(w):
            problem = "prompt tokens carry loss"
        else:
            problem = "the tokens carrying loss are not the response"
        wrong.append({"index": i, "problem": problem, "loss_text": _snippet(got), "response": _snippet(want)})
    n = len(labels)
    share = len(empty) / n if n else 0.0
    out: dict[str, Any] = {
        "name": "prompt_masking", "examples_total": n, "examples_checked": len(checked),
        "examples_wrong": len(wrong), "responses_truncated": truncated,
        "examples_without_response": len(empty), "share_without_response": share,
        "max_share_without_response": MASK_MAX_EMPTY_SHARE, "first_wrong": wrong[0] if wrong else None,
        "warning": None, "message": None}
    if wrong:
        w0 = wrong[0]
        out["message"] = (f"prompt masking is wrong in {len(wrong)} of {len(checked)} checked training "
                          f"examples: {w0['problem']} (example {w0['index']}: loss on '{w0['loss_text']}', "
                          f"response '{w0['response']}')")
    elif empty:
        lost = (f"{len(empty)} of {n} training examples have no response token carrying loss "
                f"(truncated away at data.max_length={max_length})")
        if share > MASK_MAX_EMPTY_SHARE:
            out["message"] = lost
        else:
            out["warning"] = lost + "; they train nothing"
    out["passed"] = out["message"] is None
    return out
