"""Every method `peftbench methods` lists trains one step on the tiny model of each family kind it claims.

For each method and target (`family/task`): the loss is finite, the adapter changed the body's output
(the last hidden states, which no output head touches), and the record's loss is the task loss — the
cross-entropy of the model's logits against the batch's labels, computed here — with any regularizer the
method adds recorded apart (`train.regularizer_loss`). Pairs peft refuses are skipped with peft's reason;
the outcome of every pair must match the verification table `peftbench methods` shows
(`src/peftbench/methods/verified.json`). `PEFTBENCH_WRITE_VERIFIED=1` rewrites the table from this run.
"""

from __future__ import annotations

import json
import math
import os
import traceback
from pathlib import Path
from typing import Any

import pytest

from peftbench.config.spec import RunSpec
from peftbench.errors import ModelError, SpecError
from peftbench.methods.base import METHODS
from peftbench.methods.verified import TABLE, VERIFIED, outcomes, table
from peftbench.trust.preflight import PreflightError

TARGETS = {"bert/classification": "encoder", "t5/summarization": "seq2seq", "gpt2/classification": "decoder",
           "llama/instruction": "decoder"}
# The tiny models are 32 wide; these methods' defaults are sized for real models (a vector length, a block
# or group size, a rank or a frequency count above 32) and peft refuses them on 32 units.
TINY_SETTINGS: dict[str, dict[str, Any]] = {
    "vblora": {"vector_length": 16}, "miss": {"r": 8}, "road": {"group_size": 8}, "shira": {"r": 4},
    "c3a": {"block_size": 16}, "waveft": {"n_frequency": 64},
    "trainable_tokens": {"token_indices": [101, 102]},  # no default: which tokens to train is the user's choice
}
WRITE = os.environ.get("PEFTBENCH_WRITE_VERIFIED") == "1"
SEEN: dict[str, dict[str, str]] = {}
CASES = [(name, target) for name in METHODS.names() for target, kind in TARGETS.items()
         if kind in METHODS.get(name).families]


@pytest.fixture(scope="module", autouse=True)
def _write_table() -> Any:
    yield
    if WRITE:  # this run's outcomes over the table's, for the pairs still tested
        methods = {m: {**outcomes(m), **SEEN.get(m, {})} for m in {*SEEN, *table()["methods"]}}
        methods = {m: {t: o for t, o in sorted(seen.items()) if (m, t) in CASES} for m, seen in sorted(methods.items())}
        TABLE.write_text(json.dumps({"targets": list(TARGETS), "settings": TINY_SETTINGS,
                                     "methods": {m: seen for m, seen in methods.items() if seen}},
                                    indent=1) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    from peftbench.data.synthetic import generate, write_csv

    root = tmp_path_factory.mktemp("all-methods")
    train, eval_ = generate(8, 4, seed=3)
    csv = (str(write_csv(train, root / "train.csv")), str(write_csv(eval_, root / "eval.csv")))
    rows = [{"dialogue": f"A: {i} apples\nB: ok", "summary": f"A has {i} apples.", "prompt": f"Count {i}.",
             "completion": f"{i} apples"} for i in range(8)]
    (root / "d.json").write_text(json.dumps(rows))
    text = (str(root / "d.json"),) * 2
    return {"classification": csv, "summarization": text, "instruction": text}


def spec_for(method: str, target: str, files: dict[str, tuple[str, str]], **params: Any) -> RunSpec:
    from peftbench.models.tiny import tiny_model_path

    family, task = target.split("/")
    train, eval_ = files[task]
    return RunSpec.from_dict({
        "task": task, "model": {"name_or_path": str(tiny_model_path(family)), "dtype": "float32"},
        "data": {"train": train, "eval": eval_, "n_train": 4, "n_eval": 4, "max_length": 16,
                 **({"preset": "samsum"} if task == "summarization" else {})},
        "method": {"name": method, **TINY_SETTINGS.get(method, {}), **params},
        "train": {"max_steps": 1, "batch_size": 4, "peak_tflops": 1.0},
        "generation": {"max_new_tokens": 2}, "save": "none"})


# ---- what the run did, seen from outside ------------------------------------------------------


def reference_loss(task: str, logits: Any, labels: Any) -> float:
    """The task loss from the logits and the labels: mean cross-entropy over the labelled positions."""
    import torch.nn.functional as F

    logits = logits.detach().float()
    if task == "classification":
        return F.cross_entropy(logits, labels).item()
    logits = logits[:, -labels.shape[1]:]  # prompt-learning methods prepend virtual positions
    if task == "instruction":  # causal LM: position t predicts token t+1
        logits, labels = logits[:, :-1], labels[:, 1:]
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100).item()


def body_output(model: Any, batch: dict[str, Any]) -> Any:
    """The last hidden states (the decoder's for seq2seq): the output before any head."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(**batch, output_hidden_states=True)
    finally:
        model.train(was_training)
    states = getattr(out, "decoder_hidden_states", None) or out.hidden_states
    assert states is not None, "the model returned no hidden states"
    return states[-1].float().clone()


def observe_training(monkeypatch: pytest.MonkeyPatch, task: str) -> dict[str, Any]:
    """Wrap the training loop: the body's output on a fixed batch before and after, and for each training
    forward the reference task loss and the loss the model returned."""
    import torch

    import peftbench.core.train as core_train

    real_train = core_train.train
    seen: dict[str, Any] = {"steps": []}

    def on_forward(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        if module.training and torch.is_grad_enabled() and kwargs.get("labels") is not None:
            seen["steps"].append((reference_loss(task, output.logits, kwargs["labels"]), output.loss.item()))

    def train(model: Any, train_enc: Any, evaluate: Any, tspec: Any, **kw: Any) -> Any:
        batch = kw["collate_fn"](train_enc, list(range(len(train_enc))), kw["pad_id"])
        seen["before"] = body_output(model, batch)
        handle = model.register_forward_hook(on_forward, with_kwargs=True)
        try:
            outcome = real_train(model, train_enc, evaluate, tspec, **kw)
        finally:
            handle.remove()
        seen["after"] = body_output(model, batch)
        return outcome

    monkeypatch.setattr(core_train, "train", train)
    return seen


def refusal(err: BaseException) -> str | None:
    """peft's reason when the error is peft refusing the method here (or the method lacking a setting),
    None when it is anything else (a failed pre-flight check, a bug of ours)."""
    text = str(err).split(" (fix:")[0].splitlines()[0][:200]
    if isinstance(err, PreflightError):  # peft adapting no layer at all is its refusal; any other failure is not
        return f"peft adapted nothing ({text})" if "no trainable weights outside the output head" in text else None
    if isinstance(err, ModelError) and any(s in text for s in ("cannot apply", "cannot run on", "matched nothing")):
        return text
    if isinstance(err, SpecError) and ("Config settings" in text or "needs method." in text):
        return text
    cause = err.__cause__
    if cause is not None and cause.__traceback__ is not None:  # raised by peft's (or transformers') own code
        frames = [f.filename for f in traceback.extract_tb(cause.__traceback__) if "/torch/" not in f.filename]
        if frames and ("/peft/" in frames[-1] or "/transformers/" in frames[-1]):
            return f"{type(cause).__name__}: {str(cause).splitlines()[0][:160]}"
    return None


# ---- the test ---------------------------------------------------------------------------------


def check_record(record: dict[str, Any], seen: dict[str, Any], method: str) -> None:
    train = record["train"]
    loss, regularizer = train["final_loss"], train["regularizer_loss"]
    assert math.isfinite(loss), loss
    changed = (seen["after"] - seen["before"]).abs().max().item()
    assert changed > 0, f"{method}: one training step left the body's output unchanged"
    assert len(seen["steps"]) == 1, seen["steps"]
    (reference, returned), = seen["steps"]
    assert loss == pytest.approx(reference, rel=1e-4, abs=1e-5), "the recorded loss is not the task loss"
    assert regularizer == pytest.approx(returned - reference, abs=1e-4)
    if method == "adalora":
        assert regularizer > 1e-3  # its orthogonality term, apart from the loss


@pytest.mark.parametrize(("method", "target"), CASES, ids=[f"{m}-{t}" for m, t in CASES])
def test_method_trains_on_family(method: str, target: str, data_files: dict[str, tuple[str, str]],
                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peftbench.core.runner import run

    if METHODS.get(method).quantized:
        pytest.importorskip("bitsandbytes", reason=f"{method} needs bitsandbytes, which is not installed")
    seen = observe_training(monkeypatch, target.split("/")[1])
    try:
        record = run(spec_for(method, target, data_files), tmp_path, progress=False, log=lambda _: None)
        outcome = VERIFIED
    except Exception as err:
        reason = refusal(err)
        if reason is None:
            raise
        outcome = f"refused: {reason}"
    SEEN.setdefault(method, {})[target] = outcome
    expected = outcomes(method).get(target)
    if not WRITE:
        assert (expected == VERIFIED) == (outcome == VERIFIED), (
            f"{method} on {target}: table says {expected!r}, this run {outcome!r}; "
            "rerun with PEFTBENCH_WRITE_VERIFIED=1 to update src/peftbench/methods/verified.json")
    if outcome != VERIFIED:
        pytest.skip(f"{method} on {target}: {outcome}")
    check_record(record, seen, method)


def test_table_covers_exactly_what_each_method_claims() -> None:
    claimed = {(m, t) for m, t in CASES}
    tabled = {(m, t) for m in METHODS.names() for t in outcomes(m)}
    assert tabled == claimed, {"untested": sorted(claimed - tabled), "stale": sorted(tabled - claimed)}
    assert outcomes("lora") == dict.fromkeys(TARGETS, VERIFIED)


# ---- the defects of issue 22 (items 2 and 3), each on its own ---------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_prefix_tuning_classifies_on_decoders(family: str, data_files: dict[str, tuple[str, str]],
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """peft looks for a `past_key_values` argument that transformers 5 calls `cache`: it used to refuse."""
    from peftbench.core.runner import run

    seen = observe_training(monkeypatch, "classification")
    record = run(spec_for("prefix_tuning", f"{family}/classification", data_files), tmp_path, progress=False,
                 log=lambda _: None)
    assert record["peft_config"]["peft_type"] == "PREFIX_TUNING"
    check_record(record, seen, "prefix_tuning")


def adalora_on_bert(tmp_path: Path, files: dict[str, tuple[str, str]], **params: Any) -> Any:
    from peftbench.core.runner import run

    return run(spec_for(params.pop("name", "adalora"), "bert/classification", files, **params), tmp_path,
               progress=False, log=lambda _: None)


def test_adalora_near_identity_start_passes_preflight(data_files: dict[str, tuple[str, str]], tmp_path: Path) -> None:
    # E=0 and small P, Q: a sign step on the gradient alone moved the logits by ~2e-7, under the 1e-6 floor.
    record = adalora_on_bert(tmp_path, data_files)
    active = record["preflight"]["checks"]["adapter_active"]
    assert active["passed"] and active["gradient_reached"] > 0 and active["changed"] > active["threshold"]


def test_dead_adalora_adapter_is_still_caught(data_files: dict[str, tuple[str, str]], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Adapters bypassed in the forward pass but still trainable: the regularizer's gradient reaches their
    weights, the task loss's does not, and perturbing them leaves the output as it was."""
    import dataclasses

    from peftbench.methods.peft_methods import prepare_peft

    def prepare_dead(method: Any, params: dict[str, Any], ctx: Any) -> Any:
        model = prepare_peft(method, params, ctx)
        for m in model.modules():
            if hasattr(m, "lora_E"):
                m.enable_adapters(False)
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.requires_grad_(True)
        return model

    name = "adalora-dead-for-test"
    monkeypatch.setitem(METHODS._entries, name, dataclasses.replace(METHODS.get("adalora"), name=name,
                                                                     prepare=prepare_dead))
    with pytest.raises(PreflightError, match="did not change the output"):
        adalora_on_bert(tmp_path, data_files, name=name)
    record = json.loads(next(tmp_path.glob("*/result.json")).read_text())
    active = record["preflight"]["checks"]["adapter_active"]
    assert active["changed"] == 0.0 and active["gradient_reached"] == 0


def test_method_names_are_case_insensitive_and_cover_every_peft_type() -> None:
    from peft import PeftType

    assert {t.value.lower() for t in PeftType} <= set(METHODS.names())
    assert METHODS.get("VeRA").name == "vera" and "FourierFT" in METHODS
    assert RunSpec.from_dict({"method": {"name": "BOFT"}}).resolved().method.name == "boft"


def test_a_method_without_its_required_setting_is_refused(data_files: dict[str, tuple[str, str]],
                                                          tmp_path: Path) -> None:
    from peftbench.core.runner import run

    spec = spec_for("trainable_tokens", "bert/classification", data_files)
    spec = RunSpec.from_dict({**spec.to_dict(), "method": {"name": "trainable_tokens"}})
    with pytest.raises(SpecError, match=r"needs method\.token_indices") as err:
        run(spec, tmp_path, progress=False, log=lambda _: None)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)


def test_task_loss_is_taken_before_the_regularizer_and_the_forward_restored() -> None:
    import torch
    from peft import AdaLoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from peftbench.models.heads import TaskLoss
    from peftbench.models.tiny import tiny_model_path

    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_path("bert")), num_labels=2)
    model = get_peft_model(base, AdaLoraConfig(task_type="SEQ_CLS", target_modules=["query"], total_step=10))
    batch = {"input_ids": torch.tensor([[101, 2000, 2001, 102]]), "labels": torch.tensor([1])}
    with TaskLoss(model) as task_loss:
        out = model(**batch)
        task = task_loss.take()
        assert task_loss.take() is None  # handed over once
    assert task.item() == pytest.approx(reference_loss("classification", out.logits, batch["labels"]), rel=1e-6)
    assert out.loss.item() > task.item() + 1e-3  # peft added its orthogonality term to the returned loss
    assert "forward" not in vars(base)  # the model's own forward again
