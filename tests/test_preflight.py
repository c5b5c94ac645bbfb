"""Pre-flight checks: good configs pass with the implied parameter counts, broken ones stop the run."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import tiny_spec
from peftbench.config.spec import RunSpec
from peftbench.core.runner import run
from peftbench.errors import PeftbenchError
from peftbench.methods.base import METHODS
from peftbench.methods.seed import prepare_lora
from peftbench.trust.preflight import PreflightError

TINY_BERT_LINEARS = 2 * 6 + 1  # 2 layers x (query, key, value, attention out, intermediate, output) + pooler


def _run(tiny_bert, files, tmp_path, method="lora", **params):
    d = tiny_spec(tiny_bert, files, method, max_steps=1)
    d["method"].update(params)
    return run(RunSpec.from_dict(d), tmp_path, progress=False, log=lambda s: None)


@pytest.mark.parametrize("method", ["lora", "full", "partial", "ia3", "dora"])
def test_good_configs_pass(method, tiny_bert, sentiment_files, tmp_path):
    rec = _run(tiny_bert, sentiment_files, tmp_path, method)
    pf = rec["preflight"]
    assert pf["passed"] is True
    tp = pf["checks"]["trainable_params"]
    assert tp["actual"] == tp["expected"] == rec["params"]["trainable"]
    assert pf["checks"]["adapter_active"]["changed"] > pf["checks"]["adapter_active"]["threshold"]


def test_lora_count_follows_the_formula(tiny_bert, sentiment_files, tmp_path):
    rec = _run(tiny_bert, sentiment_files, tmp_path, "lora", r=4, target_modules=["query", "value"])
    tp = rec["preflight"]["checks"]["trainable_params"]
    hidden, labels = 32, 2
    adapter = 2 * 2 * 4 * (hidden + hidden)  # 2 layers x {query, value} x r*(in+out)
    assert tp["detail"]["adapter"] == adapter
    assert tp["expected"] - tp["detail"]["head"] == adapter
    assert tp["detail"]["head"] == hidden * labels + labels  # peft's trainable copy of the classifier


def test_target_pattern_matching_nothing_stops_the_run(tiny_bert, sentiment_files, tmp_path):
    with pytest.raises(PreflightError, match="target_modules 'no_such_module'") as err:
        _run(tiny_bert, sentiment_files, tmp_path, "lora", target_modules=["query", "no_such_module"])
    assert "\n" not in str(err.value)
    (rec_path,) = list(tmp_path.glob("*/result.json"))
    rec = json.loads(rec_path.read_text())
    assert rec["status"] == "failed"
    assert rec["preflight"]["checks"]["targets_matched"]["unmatched"] == ["target_modules 'no_such_module'"]
    assert "train" not in rec  # stopped before any training step


def test_all_patterns_missing_is_refused_before_training(tiny_bert, sentiment_files, tmp_path):
    with pytest.raises(PeftbenchError, match="matched nothing"):
        _run(tiny_bert, sentiment_files, tmp_path, "lora", target_modules=["no_such_module"])


def test_zero_scaling_adapter_is_inactive(tiny_bert, sentiment_files, tmp_path):
    # r is set, but a pass-through lora_alpha=0 makes the adapter's contribution (and its gradient) zero.
    with pytest.raises(PreflightError, match="did not change the output"):
        _run(tiny_bert, sentiment_files, tmp_path, "lora", r=8, lora_alpha=0)
    rec = json.loads(next(tmp_path.glob("*/result.json")).read_text())
    assert rec["preflight"]["checks"]["adapter_active"]["changed"] == 0.0


def test_disabled_adapter_is_caught(tiny_bert, sentiment_files, tmp_path):
    def prepare_disabled(method, params, ctx):
        model = prepare_lora(method, params, ctx)
        for m in model.modules():  # adapter layers frozen and bypassed; the head still trains
            if hasattr(m, "lora_A"):
                m.enable_adapters(False)
        return model

    name = "lora-disabled-for-test"
    METHODS.add(name, dataclasses.replace(METHODS.get("lora"), name=name, prepare=prepare_disabled))
    try:
        with pytest.raises(PreflightError, match="trainable parameters but the lora-disabled-for-test config"):
            _run(tiny_bert, sentiment_files, tmp_path, name, r=8)
    finally:
        METHODS._entries.pop(name)


def test_probe_leaves_training_unchanged(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    import peftbench.trust.preflight as pf

    first = _run(tiny_bert, sentiment_files, tmp_path / "a", "lora")
    monkeypatch.setattr(pf, "run_preflight", lambda *a, **k: None)
    second = _run(tiny_bert, sentiment_files, tmp_path / "b", "lora")
    assert first["metrics"]["eval_loss"] == second["metrics"]["eval_loss"]


def test_qlora_layers_are_4bit(tiny_bert, sentiment_files, tmp_path):
    pytest.importorskip("bitsandbytes")
    rec = _run(tiny_bert, sentiment_files, tmp_path, "qlora")
    q = rec["preflight"]["checks"]["quantized_4bit"]
    assert q["passed"] and q["linear_4bit"] == TINY_BERT_LINEARS and q["not_4bit"] == []


def test_probe_on_a_subset_of_a_large_model(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    import peftbench.trust.preflight as pf

    monkeypatch.setattr(pf, "PROBE_MAX_ELEMENTS", 5000)
    active = _run(tiny_bert, sentiment_files, tmp_path, "full")["preflight"]["checks"]["adapter_active"]
    assert active["passed"] and active["probe_subset"] is True


# ---- prompt masking (instruction task) -----------------------------------------------------------


@pytest.fixture(scope="module")
def instruction_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("instructions")
    rows = [{"instruction": f"Add {i} and 2.", "context": "" if i % 2 else "Numbers.", "response": f"It is {i + 2}."}
            for i in range(12)]
    (root / "train.json").write_text(json.dumps(rows[:8]))
    (root / "eval.json").write_text(json.dumps(rows[8:]))
    return root / "train.json", root / "eval.json"


def _run_instruction(files, tmp_path, max_length=32, log=None):
    from peftbench.models.tiny import tiny_model_path

    spec = RunSpec.from_dict({
        "task": "instruction", "model": {"name_or_path": str(tiny_model_path("gpt2")), "dtype": "float32"},
        "data": {"train": str(files[0]), "eval": str(files[1]), "max_length": max_length, "max_target_length": 16},
        "method": {"name": "lora"}, "train": {"batch_size": 4, "max_steps": 1, "num_threads": 1}, "save": "none"})
    return run(spec, tmp_path, progress=False, log=log or (lambda s: None))


def _failed_record(tmp_path):
    (path,) = list(tmp_path.glob("*/result.json"))
    return json.loads(path.read_text())


def test_instruction_run_records_a_passed_masking_check(instruction_files, tmp_path):
    from test_run import validate

    rec = _run_instruction(instruction_files, tmp_path)
    pm = rec["preflight"]["checks"]["prompt_masking"]
    assert pm["passed"] and pm["message"] is None and pm["warning"] is None
    assert (pm["examples_total"], pm["examples_checked"], pm["examples_wrong"]) == (8, 8, 0)
    assert pm["examples_without_response"] == 0 and pm["responses_truncated"] == 0
    validate(rec)


def test_prompt_left_unmasked_stops_the_run(instruction_files, tmp_path, monkeypatch):
    import peftbench.tasks.instruction as gen

    real = gen.encode_causal

    def unmasked(*args, **kwargs):  # every token carries loss, the prompt included
        enc = real(*args, **kwargs)
        enc.extra["labels"] = [list(ids) for ids in enc.input_ids]
        return enc

    monkeypatch.setattr(gen, "encode_causal", unmasked)
    with pytest.raises(PreflightError, match="prompt tokens carry loss") as err:
        _run_instruction(instruction_files, tmp_path)
    assert "\n" not in str(err.value) and "'it is 2.'" in str(err.value)  # names the response it expected
    rec = _failed_record(tmp_path)
    assert rec["status"] == "failed" and rec["error"]["type"] == "preflight" and "train" not in rec
    pm = rec["preflight"]["checks"]["prompt_masking"]
    assert pm["examples_wrong"] == 8 and pm["first_wrong"]["problem"] == "prompt tokens carry loss"


def test_response_truncated_away_stops_the_run(instruction_files, tmp_path):
    # max_length 2 leaves room for BOS and one prompt token only: no response token carries loss.
    with pytest.raises(PreflightError, match="8 of 8 training examples have no response token carrying loss"):
        _run_instruction(instruction_files, tmp_path, max_length=2)
    pm = _failed_record(tmp_path)["preflight"]["checks"]["prompt_masking"]
    assert pm["examples_without_response"] == 8 and pm["share_without_response"] == 1.0


def test_a_few_truncated_examples_pass_with_a_warning(instruction_files, tmp_path, monkeypatch):
    import peftbench.tasks.instruction as gen
    from peftbench.data.batching import IGNORE_INDEX

    real = gen.encode_causal

    def first_truncated(tok, prompts, responses, max_length, max_target_length):
        enc = real(tok, prompts, responses, max_length, max_target_length)
        filler = tok("word " * max_length, add_special_tokens=False)["input_ids"][:max_length]
        enc.input_ids[0] = filler  # example 0: all prompt, at max_length, no response left
        enc.extra["labels"][0] = [IGNORE_INDEX] * len(filler)
        return enc

    monkeypatch.setattr(gen, "encode_causal", first_truncated)
    said = []
    rec = _run_instruction(instruction_files, tmp_path, log=said.append)
    pm = rec["preflight"]["checks"]["prompt_masking"]
    assert pm["passed"] and pm["examples_without_response"] == 1 and pm["share_without_response"] == 1 / 8
    assert pm["warning"].startswith("1 of 8 training examples have no response token")
    assert any("warning: prompt_masking: 1 of 8" in s for s in said)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from peftbench.models.tiny import tiny_model_path

    return AutoTokenizer.from_pretrained(str(tiny_model_path("gpt2")))


def test_masking_check_tells_off_by_one_and_shifted_labels(tokenizer):
    from peftbench.data.batching import IGNORE_INDEX
    from peftbench.data.text_pairs import dolly_prompt, encode_causal
    from peftbench.tasks.instruction import check_prompt_masking

    responses = ["It is 5.", "Blue, like the sky."]
    enc = encode_causal(tokenizer, [dolly_prompt("Add 2 and 3."), dolly_prompt("Name a colour.")], responses,
                        max_length=64, max_target_length=16)
    assert check_prompt_masking(tokenizer, responses, enc, max_length=64, max_target_length=16)["passed"]
    good = [list(lab) for lab in enc.extra["labels"]]
    first = next(j for j, t in enumerate(good[1]) if t != IGNORE_INDEX)

    enc.extra["labels"][1] = [IGNORE_INDEX] * (first + 1) + good[1][first + 1:]
    out = check_prompt_masking(tokenizer, responses, enc, max_length=64, max_target_length=16)
    assert not out["passed"] and out["examples_wrong"] == 1  # first response token masked: loss on "like the sky."
    assert out["first_wrong"]["problem"] == "the tokens carrying loss are not the response"

    enc.extra["labels"][1] = [*good[1][1:], IGNORE_INDEX]  # labels shifted by hand (the model shifts again)
    out = check_prompt_masking(tokenizer, responses, enc, max_length=64, max_target_length=16)
    assert out["first_wrong"]["problem"] == "labels differ from the input tokens at loss positions"

    enc.extra["labels"][1] = [IGNORE_INDEX] * len(good[1])  # nothing carries loss, yet nothing was truncated
    out = check_prompt_masking(tokenizer, responses, enc, max_length=64, max_target_length=16)
    assert not out["passed"] and "not truncated" in out["first_wrong"]["problem"]


def test_masking_check_accepts_a_cut_response_only_at_a_length_limit(tokenizer):
    from peftbench.data.text_pairs import dolly_prompt, encode_causal
    from peftbench.tasks.instruction import check_prompt_masking

    response = ["one two three four five six seven eight nine ten"]
    enc = encode_causal(tokenizer, [dolly_prompt("Count.")], response, max_length=64, max_target_length=4)
    out = check_prompt_masking(tokenizer, response, enc, max_length=64, max_target_length=4)
    assert out["passed"] and out["responses_truncated"] == 1  # "one two three" + EOS
    # The same cut with a limit that was not reached is a wrong mask, not truncation.
    out = check_prompt_masking(tokenizer, response, enc, max_length=64, max_target_length=32)
    assert not out["passed"] and out["first_wrong"]["problem"] == "the tokens carrying loss are not the response"


def test_masking_check_accepts_a_cut_inside_a_character(tokenizer):
    """Byte-level BPE (GPT-2, Llama 3) can cut a response inside a multi-byte character, which then
    decodes to U+FFFD: still a truncated response, not a wrong mask."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from peftbench.data.text_pairs import encode_causal
    from peftbench.tasks.instruction import check_prompt_masking

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer, raw.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    raw.train_from_iterator(["Add 2 and 3."], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    byte_tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", pad_token="<eos>")
    response = ["日本語です"]  # 3 bytes a character, no merges: 2 tokens are a partial character
    enc = encode_causal(byte_tok, ["Add 2 and 3."], response, max_length=64, max_target_length=3)
    assert "\ufffd" in byte_tok.decode([t for t in enc.extra["labels"][0] if t >= 0], skip_special_tokens=True)
    out = check_prompt_masking(byte_tok, response, enc, max_length=64, max_target_length=3)
    assert out["passed"] and out["responses_truncated"] == 1
