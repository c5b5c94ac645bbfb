"""How generative examples become token ids: truncation of long sources, prompts and targets, the EOS
that ends every target, the BOS a causal sequence starts with, and the prompt templates' errors."""

from __future__ import annotations

import copy

import pytest

from peftbench.data.batching import IGNORE_INDEX
from peftbench.data.text_pairs import dolly_prompt, encode_causal, encode_seq2seq, format_source
from peftbench.errors import DataError

LONG = " ".join(f"word{i}" for i in range(80))


@pytest.fixture(scope="module")
def tok():  # the tiny models' WordPiece tokenizer: no BOS/EOS of its own, so [CLS]/[SEP] stand in
    from transformers import AutoTokenizer

    from peftbench.models.tiny import tiny_model_path

    return AutoTokenizer.from_pretrained(str(tiny_model_path("gpt2")))


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_seq2seq_truncates_sources_and_targets_and_ends_targets_with_eos(tok) -> None:
    enc = encode_seq2seq(tok, [LONG, "short one"], [LONG, "a summary"], max_length=16, max_target_length=8)
    long_src, short_src = enc.input_ids
    assert len(long_src) == 16 and long_src[0] == tok.cls_token_id and long_src[-1] == tok.sep_token_id
    assert short_src == tok("short one")["input_ids"]  # not padded
    long_tgt, short_tgt = enc.extra["labels"]
    assert long_tgt == [*_ids(tok, LONG)[:7], tok.sep_token_id]
    assert short_tgt == [*_ids(tok, "a summary"), tok.sep_token_id]


def test_causal_keeps_the_response_whole_up_to_its_limit(tok) -> None:
    prompt = dolly_prompt("Say it.")
    enc = encode_causal(tok, [prompt, prompt], ["the answer", LONG], max_length=64, max_target_length=8)
    (short_ids, _), (short_lab, long_lab) = enc.input_ids, enc.extra["labels"]
    head = [tok.cls_token_id, *_ids(tok, prompt)]
    assert short_ids == [*head, *_ids(tok, "the answer"), tok.sep_token_id]
    assert short_lab == [IGNORE_INDEX] * len(head) + short_ids[len(head):]
    assert long_lab[len(head):] == [*_ids(tok, LONG)[:7], tok.sep_token_id]


def test_causal_within_a_tight_budget_keeps_bos_and_the_last_prompt_token(tok) -> None:
    enc = encode_causal(tok, [LONG], [LONG], max_length=10, max_target_length=9)
    ids, labels = enc.input_ids[0], enc.extra["labels"][0]
    assert len(ids) == 10
    assert ids[:2] == [tok.cls_token_id, _ids(tok, LONG)[-1]] and labels[:2] == [IGNORE_INDEX] * 2
    assert labels[2:] == _ids(tok, LONG)[:8]
    with pytest.raises(ValueError):
        encode_causal(tok, [LONG, LONG], [LONG], max_length=10, max_target_length=9)


def test_a_tokenizer_with_its_own_bos_and_eos_uses_them(tok) -> None:
    own = copy.deepcopy(tok)
    own.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>"})
    enc = encode_causal(own, ["hi"], ["yo"], max_length=16, max_target_length=8)
    assert enc.input_ids[0] == [own.bos_token_id, *_ids(own, "hi"), *_ids(own, "yo"), own.eos_token_id]
    same = copy.deepcopy(tok)  # GPT-2 style: one token is both BOS and EOS, so no BOS is prepended
    same.add_special_tokens({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"})
    enc = encode_causal(same, ["hi"], ["yo"], max_length=16, max_target_length=8)
    assert enc.input_ids[0] == [*_ids(same, "hi"), *_ids(same, "yo"), same.eos_token_id]


def _bare(tok):
    """The tokenizer without any BOS/EOS stand-in: no EOS, SEP, BOS or CLS token."""
    bare = copy.deepcopy(tok)
    bare.sep_token, bare.cls_token = None, None
    assert None is bare.eos_token_id is bare.sep_token_id is bare.bos_token_id is bare.cls_token_id
    return bare


def test_a_tokenizer_without_eos_or_bos_adds_neither(tok) -> None:
    bare = _bare(tok)
    enc = encode_causal(bare, ["hi"], ["yo"], max_length=16, max_target_length=8)
    assert enc.input_ids[0] == [*_ids(bare, "hi"), *_ids(bare, "yo")]
    assert enc.extra["labels"][0] == [IGNORE_INDEX] * len(_ids(bare, "hi")) + _ids(bare, "yo")
    enc = encode_seq2seq(bare, ["hi"], ["yo"], max_length=16, max_target_length=8)
    assert enc.extra["labels"][0] == _ids(bare, "yo")


def test_the_dolly_prompt_shows_the_input_block_only_when_there_is_one() -> None:
    assert dolly_prompt("Add 2 and 3.").endswith("### Instruction:\nAdd 2 and 3.\n\n### Response:\n")
    assert "### Input:\nTwo numbers.\n\n### Response:" in dolly_prompt("Add them.", "Two numbers.")


def test_prompt_template_errors_name_the_column_or_the_syntax() -> None:
    row = {"question": "why?", "answer": "because"}
    assert format_source(row, "template", "Q: {question}", None, "d.json") == "Q: why?"
    with pytest.raises(DataError) as info:
        format_source(row, "template", "Q: {query}", None, "d.json")
    assert str(info.value) == ("data.prompt_template names column 'query' that 'd.json' does not have "
                               "(columns: question, answer) (fix: use {column} placeholders naming existing columns)")
    with pytest.raises(DataError) as info:
        format_source(row, "template", "Q: {question", None, "d.json")
    assert info.value.message.startswith("data.prompt_template is not a valid format string: ")
    assert info.value.hint == "write placeholders as {column}; double literal braces as {{ }}"


@pytest.mark.parametrize("family,shift", [("gpt2", True), ("t5", False)])
def test_loss_sum_is_the_token_weighted_loss_over_every_batch(tok, family: str, shift: bool) -> None:
    """Eval loss and perplexity come from `loss_sum`: summed over batches of different sizes, each batch's
    mean loss weighted by its target tokens, it equals the sum of the per-example token losses."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from peftbench.data.batching import collate_lm
    from peftbench.models.tiny import tiny_model_path
    from peftbench.tasks.generative import loss_sum

    cls = AutoModelForCausalLM if shift else AutoModelForSeq2SeqLM
    model = cls.from_pretrained(str(tiny_model_path(family))).eval()
    sources, targets = ["add two and three", "name a colour", "say hi"], ["five", "a deep shade of blue", "hi there"]
    encode = encode_causal if shift else encode_seq2seq
    enc = encode(tok, sources, targets, max_length=32, max_target_length=8)
    expected_total, expected_tokens = 0.0, 0
    with torch.no_grad():
        for i in range(3):
            labels = enc.extra["labels"][i][1:] if shift else enc.extra["labels"][i]
            n = sum(t != IGNORE_INDEX for t in labels)
            expected_total += model(**collate_lm(enc, [i], tok.pad_token_id)).loss.item() * n
            expected_tokens += n
        total, tokens = loss_sum(model, enc, [0, 1, 2], 2, "cpu", tok.pad_token_id, shift=shift)
    assert tokens == expected_tokens
    assert total == pytest.approx(expected_total, rel=1e-4)


def _pairs(tmp_path, rows: list[dict], task: str = "instruction", **data):
    import json

    from peftbench.config.spec import DataSpec
    from peftbench.data.text_pairs import load_text_pairs

    (tmp_path / "d.json").write_text(json.dumps(rows))
    path = str(tmp_path / "d.json")
    return load_text_pairs(DataSpec(train=path, eval=path, **data), task)


@pytest.mark.parametrize("rows,data,task,layout,sources,targets", [
    ([{"prompt": "p", "completion": "c"}], {}, "instruction", "prompt/completion", ["p"], ["c"]),
    ([{"instruction": "i", "context": "x", "response": "r"}], {}, "instruction", "dolly", [dolly_prompt("i", "x")], ["r"]),
    ([{"question": "q", "output": "o"}], {"text_column": "question"}, "instruction", "prompt/completion", ["q"], ["o"]),
    ([{"question": "q", "response": "r", "summary": "s"}], {"text_column": "question"}, "instruction",
     "prompt/completion", ["q"], ["r"]),
    ([{"question": "q", "completion": "c"}], {"prompt_template": "Q: {question}"}, "instruction", "template",
     ["Q: q"], ["c"]),
    ([{"question": "q", "summary": "s", "answer": "a"}], {"prompt_template": "Q: {question}", "target_column": "answer"},
     "instruction", "template", ["Q: q"], ["a"]),
    ([{"dialogue": "d", "summary": "s"}], {}, "summarization", "source/target", ["d"], ["s"]),
    ([{"dialogue": "d", "summary": "s", "text": "t"}], {"preset": "samsum"}, "summarization", "source/target", ["d"], ["s"]),
])
def test_each_data_layout_gives_its_sources_and_targets(tmp_path, rows, data, task, layout, sources, targets) -> None:
    got = _pairs(tmp_path, rows, task, **data)
    assert (got.info["layout"], got.train_sources, got.train_targets) == (layout, sources, targets)
    assert (got.eval_sources, got.eval_targets) == (sources, targets)
    assert {k: got.info[k] for k in ("train_rows_in_file", "eval_rows_in_file", "n_train", "n_eval")} == \
        dict.fromkeys(("train_rows_in_file", "eval_rows_in_file", "n_train", "n_eval"), 1)


@pytest.mark.parametrize("rows,data,message", [
    ([{"a": "x", "b": "y"}], {}, "'{path}' has neither instruction/response nor prompt/completion columns (columns: a, b)"),
    ([{"question": "q", "answer": "a"}], {"text_column": "query", "target_column": "answer"},
     "data file '{path}' has no column 'query' (columns: question, answer)"),
    ([{"question": "q", "answer": "a"}], {"text_column": "question"}, "no target column found in '{path}' (columns: question, answer)"),
    ([{"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": " "}], {},
     "data file '{path}' has an empty target ('completion') text in row 2"),
    ([{"prompt": " ", "completion": "c"}], {}, "data file '{path}' has an empty source text in row 1"),
])
def test_data_layout_errors_name_the_file_and_the_columns(tmp_path, rows, data, message) -> None:
    with pytest.raises(DataError) as info:
        _pairs(tmp_path, rows, **data)
    assert info.value.message == message.format(path=tmp_path / "d.json")
    assert "data." in (info.value.hint or "") or "remove" in (info.value.hint or "")


def test_loss_sum_never_counts_the_first_position_of_a_causal_sequence(tok) -> None:
    """The causal LM predicts token t from the tokens before it, so a label at position 0 (no BOS, empty
    prompt) or at position 1 (no BOS, one prompt token) is not a loss token: `loss_sum` weights each batch by
    the tokens the model's loss averages over, which excludes position 0."""
    import torch
    from transformers import AutoModelForCausalLM

    from peftbench.data.batching import collate_lm
    from peftbench.models.tiny import tiny_model_path
    from peftbench.tasks.generative import loss_sum

    bare = _bare(tok)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_path("gpt2"))).eval()
    enc = encode_causal(bare, ["", "say"], ["a deep shade of blue", "hi there"], max_length=32, max_target_length=8)
    first, second = enc.extra["labels"]
    assert IGNORE_INDEX not in first and second[0] == IGNORE_INDEX and IGNORE_INDEX not in second[1:]
    counts = [len(first) - 1, len(second) - 1]
    with torch.no_grad():
        expected = sum(model(**collate_lm(enc, [i], bare.pad_token_id)).loss.item() * counts[i] for i in (0, 1))
        total, tokens = loss_sum(model, enc, [0, 1], 2, "cpu", bare.pad_token_id, shift=True)
    assert tokens == sum(counts)
    assert total == pytest.approx(expected, rel=1e-4)
