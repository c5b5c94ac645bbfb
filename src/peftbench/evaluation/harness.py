"""Scoring an in-memory model with lm-evaluation-harness: its scores, standard errors and per-item results.

The trained model is wrapped as it is (lm-eval's `HFLM(pretrained=model, tokenizer=...)`), with no
save and reload between training and evaluation, so the weights lm-eval scores are the ones that
were trained: an adapter stays attached and active. Text is encoded the way peftbench's training
encodes it (`data.text_pairs.encode_causal`): the tokenizer's BOS where it has one distinct from EOS
(`[CLS]` for a WordPiece vocabulary), no special token after the text, and generation ends at the
token a trained response ends with (EOS, else `[SEP]`). lm-eval's own default would append a
WordPiece tokenizer's `[SEP]` to every context and misplace each continuation.

Per task, the record keeps lm-eval's first metric (e.g. `acc`) with its standard error, and the
per-item scores of `log_samples` (by document id, with a hash of the documents) so a report can run
paired tests on the same items. The random state (Python, NumPy, torch) is restored after each
evaluation: lm-eval seeds all three.

`adapter_check` is the pre-flight check for lm-eval: the log-likelihoods lm-eval's wrapper gives on
a fixed probe after training must differ (by more than `PROBE_RTOL` of their scale) from those it
gave for the untrained model; `raise_if_failed` stops the run otherwise. A dead adapter
(disabled, not in the forward pass, or a base model evaluated by mistake) gives the base model's
numbers; a run whose training changed nothing fails the same way, which the message says too.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator
from typing import Any

from peftbench.evaluation.plan import Plan, quiet_lm_eval
from peftbench.trust.preflight import PreflightError

STDERR_BOOTSTRAP_ITERS = 1000  # lm-eval's bootstrap for metrics without a closed-form standard error
# Context/continuation pairs whose log-likelihoods the adapter check compares: varied, short, plain text.
PROBE = (("Review: the plot was dull and the acting wooden.\nSentiment:", " negative"),
         ("Review: a warm, funny and moving film.\nSentiment:", " positive"),
         ("The capital of France is", " Paris."),
         ("Summarize: A: are we still on for lunch? B: yes, at noon.", " They meet for lunch at noon."))
PROBE_RTOL = 1e-5  # smallest change, relative to the largest |log-likelihood|, counted as "changed"


def _eos(tokenizer: Any) -> int | None:
    """The token peftbench's causal encoding ends a response with (as `encode_causal`): EOS, else SEP."""
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id


def _bos(tokenizer: Any) -> int | None:
    """The token peftbench's causal encoding starts with (as `encode_causal`): BOS, else CLS, unless
    it is the EOS (GPT-2's one token for both)."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    return None if bos is None or bos == _eos(tokenizer) else bos


def make_lm(model: Any, tokenizer: Any, *, batch_size: int, amp_dtype: Any = None) -> Any:
    """lm-eval's HFLM over the in-memory model (its training mode restored)."""
    import torch
    from lm_eval.models.huggingface import HFLM

    head = [b] if (b := _bos(tokenizer)) is not None else []
    end = _eos(tokenizer)

    class PeftbenchLM(HFLM):
        """HFLM encoding text as peftbench trains on it: BOS (if any), the text, no closing token; a
        generation ends at the token a trained response ends with."""

        @property
        def eot_token_id(self) -> int | None:
            return end

        def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                       left_truncate_len: int | None = None, **kwargs: Any) -> list[int]:
            ids = head + self.tokenizer.encode(string, add_special_tokens=False)
            return ids[-left_truncate_len:] if left_truncate_len else ids

        def tok_batch_encode(self, strings: list[str], padding_side: str = "left",
                             left_truncate_len: int | None = None, truncation: bool = False) -> tuple[Any, Any]:
            rows = [self.tok_encode(s, left_truncate_len=left_truncate_len) for s in strings]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, r in enumerate(rows):
                cols = slice(width - len(r), width) if padding_side == "left" else slice(0, len(r))
                ids[i, cols], mask[i, cols] = torch.tensor(r, dtype=torch.long), 1
            return ids, mask

    was_training = model.training
    with quiet_lm_eval():
        lm = PeftbenchLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size,
                         mixed_precision_dtype=amp_dtype, add_bos_token=False,
                         prefix_token_id=head[0] if head else None)
    model.train(was_training)
    return lm


@contextlib.contextmanager
def kept_random_state() -> Iterator[None]:
    """Python's, NumPy's and torch's random state as they were before the block."""
    import random

    import numpy as np
    import torch

    py, npy = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


def evaluate(lm: Any, plan: Plan, *, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Every task of the plan through lm-eval's `simple_evaluate`: a summary per task name."""
    from lm_eval.evaluator import simple_evaluate

    was_training = lm.model.training
    with kept_random_state(), quiet_lm_eval(progress):
        out = simple_evaluate(lm, tasks=[r.spec for r in plan.refs], task_manager=plan.manager,
                              num_fewshot=plan.num_fewshot, limit=plan.limit, log_samples=True,
                              bootstrap_iters=STDERR_BOOTSTRAP_ITERS)
    lm.model.train(was_training)
    return {name: task_summary(out, name) for r in plan.refs for name in r.names}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def task_summary(out: dict[str, Any], name: str) -> dict[str, Any]:
    """One task's result: its first metric (and filter) with the standard error, every metric, and the
    per-item scores of that metric in document order (None where they are not numbers)."""
    res = out["results"][name]
    keys = [k for k in res if "," in k and not k.split(",")[0].endswith("_stderr")]
    metric, filt = keys[0].split(",", 1)
    samples = sorted((s for s in out["samples"].get(name, []) if s.get("filter", filt) == filt),
                     key=lambda s: int(s["doc_id"]))
    scores = [_number(s.get(metric)) for s in samples]
    items = {"doc_id": [int(s["doc_id"]) for s in samples], "score": scores} \
        if samples and all(v is not None for v in scores) else None
    return {
        "metric": metric, "filter": filt, "value": _number(res[keys[0]]),
        "stderr": _number(res.get(f"{metric}_stderr,{filt}")),
        "higher_is_better": bool(out.get("higher_is_better", {}).get(name, {}).get(metric, True)),
        "n": len(samples) or None, "num_fewshot": out.get("n-shot", {}).get(name),
        "task_version": out.get("versions", {}).get(name),
        "metrics": {k.split(",")[0]: {"value": _number(res[k]),
                                      "stderr": _number(res.get(f"{k.split(',')[0]}_stderr,{k.split(',')[1]}"))}
                    for k in keys},
        "items": items,
        "items_sha256": hashlib.sha256("".join(str(s.get("doc_hash")) for s in samples).encode()).hexdigest()[:16]
        if samples else None,
    }


def probe(lm: Any) -> list[float]:
    """The wrapper's log-likelihoods of the fixed probe pairs (the path lm-eval's scoring takes)."""
    from lm_eval.api.instance import Instance

    was_training = lm.model.training
    lm.model.eval()
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(PROBE)]
    with quiet_lm_eval():
        out = [float(ll) for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
    lm.model.train(was_training)
    return out


def adapter_check(base: list[float], tuned: list[float]) -> dict[str, Any]:
    """The pre-flight check `lm_eval_adapter_active`: lm-eval's view of the tuned model differs from its
    view of the base model on the probe (`raise_if_failed` stops the run when it does not)."""
    diff = max(abs(a - b) for a, b in zip(base, tuned, strict=True))
    threshold = PROBE_RTOL * max(1.0, *(abs(b) for b in base))
    passed = diff > threshold
    return {"passed": passed, "probe_pairs": len(PROBE), "max_abs_change": diff, "threshold": threshold,
            "base_loglikelihoods": base, "tuned_loglikelihoods": tuned,
            "message": None if passed else (
                f"lm-eval would score the base model: its log-likelihoods on {len(PROBE)} probe texts changed by "
                f"at most {diff:.3g} after training (threshold {threshold:.3g}), so the adapter is not active in "
                "the evaluated model, or training changed nothing")}


def raise_if_failed(check: dict[str, Any]) -> None:
    if not check["passed"]:
        raise PreflightError(f"pre-flight check failed: {check['message']}",
                             hint="evaluate the trained model with its adapter enabled; if training itself "
                                  "changed nothing, raise train.lr or train.max_steps")
