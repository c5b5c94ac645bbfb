"""Generative tasks: prompt masking, ROUGE against rouge_score, data layouts, family checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftbench.config.spec import DataSpec, RunSpec
from peftbench.data.batching import IGNORE_INDEX, collate_lm
from peftbench.data.text_pairs import dolly_prompt, encode_causal, encode_seq2seq, load_text_pairs
from peftbench.errors import DataError, ModelError, SpecError
from peftbench.tasks.metrics import rouge_scores


@pytest.fixture(scope="module")
def tokenizer():  # the tiny models' tokenizer (MiniLM WordPiece)
    from transformers import AutoTokenizer

    from peftbench.models.tiny import tiny_model_path

    return AutoTokenizer.from_pretrained(str(tiny_model_path("gpt2")))


def test_prompt_tokens_carry_no_loss(tokenizer) -> None:
    """Labels are ignored over the prompt, the model's loss is the mean over response tokens only,
    and no gradient reaches the logits at prompt positions."""
    import torch
    from transformers import AutoModelForCausalLM

    from peftbench.models.tiny import tiny_model_path

    prompts = [dolly_prompt("Add 2 and 3."), dolly_prompt("Name a colour.", "Pick one.")]
    responses = ["It is 5.", "Blue."]
    enc = encode_causal(tokenizer, prompts, responses, max_length=64, max_target_length=16)
    for ids, labels, prompt in zip(enc.input_ids, enc.extra["labels"], prompts, strict=True):
        n_prompt = 1 + len(tokenizer(prompt, add_special_tokens=False)["input_ids"])  # + [CLS] as BOS
        assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert labels[n_prompt:] == ids[n_prompt:] and labels[-1] == tokenizer.sep_token_id

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_path("gpt2")))
    batch = collate_lm(enc, [0, 1], tokenizer.pad_token_id)
    out = model(**batch)
    logits = out.logits
    logits.retain_grad()
    shift_logits, shift_labels = logits[:, :-1], batch["labels"][:, 1:]
    keep = shift_labels != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(shift_logits[keep], shift_labels[keep])
    assert out.loss.item() == pytest.approx(manual.item(), rel=1e-5)
    out.loss.backward()
    grad_norm = logits.grad[:, :-1].abs().sum(-1)
    assert (grad_norm[~keep] == 0).all() and (grad_norm[keep] > 0).all()
    # Unmasking the prompt changes the loss: the mask is what keeps prompt tokens out.
    unmasked = dict(batch, labels=torch.where(batch["attention_mask"].bool(), batch["input_ids"], IGNORE_INDEX))
    assert model(**unmasked).loss.item() != pytest.approx(out.loss.item(), rel=1e-3)


def test_long_examples_keep_response_and_prompt_end(tokenizer) -> None:
    prompt = "word " * 100 + "### Response:\n"
    enc = encode_causal(tokenizer, [prompt], ["the answer"], max_length=32, max_target_length=8)
    ids, labels = enc.input_ids[0], enc.extra["labels"][0]
    assert len(ids) == 32
    prompt_part = [t for t, lab in zip(ids, labels, strict=True) if lab == IGNORE_INDEX]
    assert prompt_part[0] == tokenizer.cls_token_id  # BOS kept
    assert tokenizer.decode(prompt_part[1:]).replace(" ", "").endswith("###response:")
    assert tokenizer.decode([t for t in labels if t != IGNORE_INDEX], skip_special_tokens=True) == "the answer"


def test_seq2seq_targets_end_with_eos(tokenizer) -> None:
    enc = encode_seq2seq(tokenizer, ["a dialogue here"], ["a summary"], max_length=16, max_target_length=8)
    assert enc.extra["labels"][0] == [*tokenizer("a summary", add_special_tokens=False)["input_ids"],
                                      tokenizer.sep_token_id]
    batch = collate_lm(enc, [0], tokenizer.pad_token_id)
    assert batch["labels"].shape[1] == 8 and (batch["labels"][0, 3:] == IGNORE_INDEX).all()


def test_rouge_matches_rouge_score() -> None:
    from rouge_score import rouge_scorer

    # Known value: 3 of 3 predicted unigrams match, 3 of 6 reference ones: F1 = 2/3.
    assert rouge_scores(["the cat sat"], ["the cat sat on the mat"])["rouge1"] == pytest.approx(2 / 3)
    preds = ["Amanda baked cookies for Jerry.", "They will meet at 5 pm. Tom is late.", "nothing alike"]
    refs = ["Amanda baked cookies and will bring Jerry some tomorrow.", "Tom is late. They meet at 5.",
            "completely different words"]
    ours = rouge_scores(preds, refs)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    for key in ("rouge1", "rouge2", "rougeL"):
        expected = sum(scorer.score(r, p)[key].fmeasure for p, r in zip(preds, refs, strict=True)) / 3
        assert ours[key] == pytest.approx(expected)
    # rougeLsum scores sentence by sentence (newline-separated), so sentence order matters less than for rougeL.
    lsum = scorer.score("Tom is late.\nThey meet at 5.", "They will meet at 5 pm.\nTom is late.")["rougeLsum"]
    assert rouge_scores([preds[1]], [refs[1]])["rougeLsum"] == pytest.approx(lsum.fmeasure)
    assert ours["rougeLsum"] > ours["rougeL"]
    assert rouge_scores(["x"], ["x"]) == {"rouge1": 1.0, "rouge2": 0.0, "rougeL": 1.0, "rougeLsum": 1.0}


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return str(path)


def test_instruction_layouts(tmp_path: Path) -> None:
    dolly = _write(tmp_path / "d.jsonl", [{"instruction": "Say hi.", "context": "", "response": "hi"},
                                          {"instruction": "Add.", "context": "1 and 2", "response": "3"}])
    d = load_text_pairs(DataSpec(train=dolly, eval=dolly), "instruction")
    assert d.info["layout"] == "dolly" and d.train_targets == ["hi", "3"]
    assert "### Input:" not in d.train_sources[0] and "### Input:\n1 and 2" in d.train_sources[1]
    generic = _write(tmp_path / "g.jsonl", [{"prompt": "Q: 1+1?", "completion": "2"}])
    g = load_text_pairs(DataSpec(train=generic, eval=generic), "instruction")
    assert (g.info["layout"], g.train_sources, g.train_targets) == ("prompt/completion", ["Q: 1+1?"], ["2"])
    sam = _write(tmp_path / "s.jsonl", [{"dialogue": "A: hi\nB: yo", "summary": "They greet."}])
    t = load_text_pairs(DataSpec(train=sam, eval=sam, prompt_template="Summarize:\n{dialogue}\nSummary:",
                                 target_column="summary"), "instruction")
    assert t.train_sources == ["Summarize:\nA: hi\nB: yo\nSummary:"] and t.train_targets == ["They greet."]
    s = load_text_pairs(DataSpec(train=sam, eval=sam, preset="samsum"), "summarization")
    assert s.train_sources == ["A: hi\nB: yo"]
    with pytest.raises(DataError, match="neither instruction/response nor prompt/completion"):
        load_text_pairs(DataSpec(train=sam, eval=sam), "instruction")
    with pytest.raises(DataError, match="names column 'nope'"):
        load_text_pairs(DataSpec(train=sam, eval=sam, prompt_template="{nope}", target_column="summary"),
                        "instruction")
    empty = _write(tmp_path / "e.jsonl", [{"prompt": "x", "completion": " "}])
    with pytest.raises(DataError, match="empty target"):
        load_text_pairs(DataSpec(train=empty, eval=empty), "instruction")


def _spec(task: str, family: str, files: tuple[str, str], method: str = "lora") -> RunSpec:
    from peftbench.models.tiny import tiny_model_path

    return RunSpec.from_dict({"task": task, "model": {"name_or_path": str(tiny_model_path(family)), "dtype": "float32"},
                              "data": {"train": files[0], "eval": files[1], "max_length": 32},
                              "method": {"name": method}, "train": {"max_steps": 1, "batch_size": 2},
                              "save": "none"})


@pytest.mark.parametrize(("task", "family", "match"), [
    ("summarization", "gpt2", "needs a seq2seq model"),
    ("instruction", "t5", "needs a decoder model"),
    ("classification", "t5", "cannot run on a seq2seq model"),
])
def test_task_family_mismatch_is_a_clear_error(task: str, family: str, match: str, tmp_path: Path,
                                               sentiment_files: tuple[Path, Path]) -> None:
    from peftbench.core.runner import run

    rows = [{"dialogue": "A: hi", "summary": "hi", "prompt": "p", "completion": "c"}] * 2
    files = (str(sentiment_files[0]), str(sentiment_files[1])) if task == "classification" else \
        (_write(tmp_path / "t.jsonl", rows),) * 2
    with pytest.raises(SpecError, match=match):
        run(_spec(task, family, files), tmp_path / "runs", progress=False)


def test_method_that_cannot_apply_is_a_clear_error(tmp_path: Path, sentiment_files: tuple[Path, Path]) -> None:
    from peftbench.core.runner import run

    files = (str(sentiment_files[0]), str(sentiment_files[1]))
    with pytest.raises(ModelError, match="prefix_tuning' does not apply to encoder models"):
        run(_spec("classification", "roberta", files, "prefix_tuning"), tmp_path, progress=False)
    with pytest.raises(ModelError, match="Conv1D"):
        run(_spec("classification", "gpt2", files, "loha"), tmp_path, progress=False)


def test_generation_settings_reach_generate(tmp_path: Path) -> None:
    """Tiny random T5 repeats one word; no_repeat_ngram_size=1 must forbid any repeated token."""
    from peftbench.core.runner import run

    rows = [{"dialogue": f"A: I have {i} cats.\nB: ok", "summary": f"A has {i} cats."} for i in range(6)]
    data = _write(tmp_path / "s.jsonl", rows)
    outputs = {}
    for size in (0, 1):
        spec = _spec("summarization", "t5", (data, data), "ia3").with_overrides(
            ["data.preset=samsum", f"generation.no_repeat_ngram_size={size}", "generation.max_new_tokens=6",
             "generation.n_examples=3"])
        record = run(spec, tmp_path / f"runs{size}", progress=False)
        outputs[size] = record["predictions"]["pred"]
        assert record["metrics"]["n_generated"] == 3 and record["metrics"]["max_new_tokens"] == 6
    assert any(len(set(p.split())) < len(p.split()) for p in outputs[0])
    assert all(len(set(p.split())) == len(p.split()) for p in outputs[1])
