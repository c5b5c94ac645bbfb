"""Packed classification batches give the loss and gradients of the padded batch.

Tiny BERT, RoBERTa, DistilBERT (first-token pooling, bidirectional) and GPT-2, GPT-NeoX, Llama
(last-token pooling, causal) classifiers built from configs, full fine-tuning and LoRA; the attention
runs through SDPA, eager and peftbench's CPU attention (in training mode)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from peftbench.data.batching import Encoded, collate  # noqa: E402
from peftbench.perf.packing import (  # noqa: E402
    collate_packed_classification,
    fill_rows,
    packed_classification_loss,
    packed_rows,
    packing_problem,
)

VOCAB = 120
LENGTHS = [9, 3, 17, 5, 12, 4, 2, 16, 7]


def _config(family: str, attn: str) -> object:
    from transformers import (
        BertConfig,
        DistilBertConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        RobertaConfig,
    )

    # Larger initial weights than the default 0.02 make the first-token states depend clearly on context.
    common = {"vocab_size": VOCAB, "num_labels": 3, "attn_implementation": attn, "initializer_range": 0.3}
    if family == "bert":
        return BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                          type_vocab_size=2, **common)
    if family == "roberta":
        return RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                             pad_token_id=1, max_position_embeddings=40, **common)
    if family == "distilbert":
        return DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, **common)
    if family == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=40, pad_token_id=0, **common)
    if family == "gpt_neox":
        return GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                             max_position_embeddings=40, pad_token_id=0, **common)
    return LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=64, max_position_embeddings=40, pad_token_id=0, **common)


LORA_TARGETS = {"distilbert": ["q_lin", "v_lin"], "gpt2": ["c_attn"], "gpt_neox": ["query_key_value"],
                "llama": ["q_proj", "v_proj"]}


def _model(family: str, attn: str = "sdpa", lora: bool = False) -> object:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(_config(family, attn))
    if lora:
        from peft import LoraConfig, get_peft_model

        targets = LORA_TARGETS.get(family, ["query", "value"])
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=targets,
                                                 init_lora_weights=False))
    return model


def _encoded(pairs: bool) -> Encoded:
    g = torch.Generator().manual_seed(3)
    ids = [[5, *torch.randint(5, VOCAB, (n - 1,), generator=g).tolist()] for n in LENGTHS]
    extra = {"token_type_ids": [[0] * (n // 2) + [1] * (n - n // 2) for n in LENGTHS]} if pairs else {}
    return Encoded(input_ids=ids, labels=[i % 3 for i in range(len(LENGTHS))], extra=extra)


IDX = [6, 0, 2, 5, 8, 1, 3]  # not sorted, not all: batches are arbitrary index lists


def _losses_and_grads(model: object, batch: dict | None, enc: Encoded, pad_id: int) -> tuple[torch.Tensor, list]:
    """The padded batch's loss when `batch` is None, else the packed `batch`'s."""
    model.zero_grad()
    if batch is None:
        loss = model(**collate(enc, IDX, pad_id)).loss
    else:
        loss = packed_classification_loss(model, batch)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    return loss.detach(), grads


def _check_equal(model: object, enc: Encoded, pad_id: int, batch: dict | None = None) -> None:
    ref, ref_grads = _losses_and_grads(model, None, enc, pad_id)
    got, grads = _losses_and_grads(model, batch or collate_packed_classification(enc, IDX, pad_id), enc, pad_id)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "gpt2", "gpt_neox", "llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_packed_loss_and_grads_equal_padded(family: str, attn: str, lora: bool) -> None:
    model = _model(family, attn, lora).eval()  # no dropout: both sides compute the same function
    enc = _encoded(pairs=family == "bert")
    pad_id = 1 if family == "roberta" else 0
    assert packing_problem(model) is None
    _check_equal(model, enc, pad_id)


def test_packed_equal_through_cpu_attention_in_training_mode() -> None:
    """peftbench's CPU attention runs only in training mode with attention dropout: a dropout too small
    to drop anything (p is applied in steps of 1/65536) exercises it on the block-diagonal mask."""
    from peftbench.perf.cpu_ops import install

    model = _model("bert")
    model.config.attention_probs_dropout_prob = 1e-9
    for m in model.modules():
        if hasattr(m, "dropout") and isinstance(m.dropout, float):
            m.dropout = 1e-9
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    assert install(model, "cpu")["attention"] == "peftbench_cpu"
    model.train()
    _check_equal(model, _encoded(pairs=True), 0)


def test_packing_removes_padding_and_keeps_every_example_once() -> None:
    enc = _encoded(pairs=False)
    idx = list(range(len(LENGTHS)))
    batch = collate_packed_classification(enc, idx, pad_id=0)
    rows, width = batch["input_ids"].shape
    # 75 tokens: rows of 17 (the longest) need 5 (85 tokens computed); rows of 19 need 4 (76).
    assert (rows, width) == (4, 19)
    assert packed_rows(LENGTHS, slack=0.0) == (17, fill_rows(LENGTHS, 17))
    assert len(fill_rows(LENGTHS, 17)) == 5
    flat = batch["input_ids"].flatten()
    for k, i in enumerate(idx):  # every example starts where first_token says, with its own positions
        start = int(batch["first_token"][k])
        assert flat[start:start + LENGTHS[i]].tolist() == enc.input_ids[i]
        assert batch["position_ids"].flatten()[start:start + LENGTHS[i]].tolist() == list(range(LENGTHS[i]))
    assert sorted(k for row in fill_rows(LENGTHS, 17) for k in row) == idx
    assert all(sum(LENGTHS[k] for k in row) <= 17 for row in fill_rows(LENGTHS, 17))


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_packing_without_the_block_mask_or_positions_differs(family: str) -> None:
    """The equality above depends on the mask and the positions: the same check fails without either
    (and, for decoders, when pooling the first token instead of the last)."""
    model = _model(family).eval()
    enc = _encoded(pairs=family == "bert")
    no_mask = collate_packed_classification(enc, IDX, 0)
    no_mask["segment_ids"] = torch.zeros_like(no_mask["segment_ids"])  # one segment per row
    no_restart = collate_packed_classification(enc, IDX, 0)
    no_restart["position_ids"] = torch.arange(no_restart["input_ids"].shape[1]).expand_as(no_restart["input_ids"])
    broken = [no_mask, no_restart]
    if family == "gpt2":
        first = collate_packed_classification(enc, IDX, 0)
        first["last_token"] = first["first_token"]
        broken.append(first)
    for batch in broken:
        with pytest.raises(AssertionError):
            _check_equal(model, enc, 0, batch)


def test_packing_problems_are_named() -> None:
    from peft import PromptTuningConfig, get_peft_model
    from transformers import OPTConfig, OPTForSequenceClassification

    opt = OPTForSequenceClassification(OPTConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1,
                                                 num_attention_heads=2, ffn_dim=64, word_embed_proj_dim=32))
    assert packing_problem(opt) == ("packing is built for bert, distilbert, gpt2, gpt_neox, llama, roberta, "
                                    "xlm-roberta classifiers, not opt")
    prompt = get_peft_model(_model("bert"), PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4))
    assert packing_problem(prompt) == "prompt_tuning adds virtual tokens, which packed rows cannot hold"
    flash = _model("llama")
    flash.config._attn_implementation = "flash_attention_2"  # set on the config only: no flash-attn kernel here
    assert packing_problem(flash) == "attention 'flash_attention_2' takes no ready-made block-diagonal mask"


def test_packed_run_trains_on_the_same_batches_with_less_padding(tiny_bert, sentiment_files, tmp_path) -> None:
    from conftest import tiny_spec
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run

    recs = {packing: run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora", packing=packing)),
                         tmp_path / str(packing), progress=False) for packing in (False, True)}
    plain, packed = recs[False]["train"], recs[True]["train"]
    assert recs[True]["status"] == "success" and recs[True]["run_id"] != recs[False]["run_id"]
    assert (packed["steps"], packed["samples"], packed["real_tokens"]) == (plain["steps"], plain["samples"],
                                                                            plain["real_tokens"])
    assert packed["computed_tokens"] < plain["computed_tokens"]
    assert packed["padding_efficiency"] > plain["padding_efficiency"] + 0.15  # 0.88 against 0.66 here
    assert abs(recs[True]["metrics"]["eval_loss"] - recs[False]["metrics"]["eval_loss"]) < 0.05


def test_packing_is_checked_before_training(tiny_bert, sentiment_files, tmp_path) -> None:
    from conftest import tiny_spec
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run
    from peftbench.errors import SpecError

    base = tiny_spec(tiny_bert, sentiment_files, "lora")
    assert RunSpec.from_dict(base).run_id() == RunSpec.from_dict({**base, "train": {**base["train"],
                                                                                     "packing": False}}).run_id()
    with pytest.raises(SpecError, match=r"train\.packing is built for task 'classification', not 'summarization'"):
        RunSpec.from_dict({**base, "task": "summarization", "train": {"packing": True}})
    with pytest.raises(SpecError, match="cannot be combined"):
        RunSpec.from_dict({**base, "train": {"packing": True, "compile": True}})
    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "prompt_tuning", packing=True))
    with pytest.raises(SpecError, match="virtual tokens"):
        run(spec, tmp_path, progress=False)


def test_packing_refuses_multi_process_runs(tiny_bert, sentiment_files, monkeypatch) -> None:
    """The packed loss goes past DistributedDataParallel's forward, whose hooks average gradients."""
    from conftest import tiny_spec
    from peftbench.config.spec import RunSpec
    from peftbench.core.build import training_batches
    from peftbench.errors import SpecError
    from peftbench.tasks.base import TASKS

    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "full", packing=True))
    task = TASKS.get("classification")
    assert training_batches(spec, _model("bert"), task)[1] is packed_classification_loss
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SpecError, match="one process, this run has 2"):
        training_batches(spec, _model("bert"), task)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_packed_equal_padded_with_the_heads_dropout_in_training_mode(family: str) -> None:
    """Encoders classify through their own head (pooler, dropout, classifier): in training mode, with
    only the head's dropout on and the same random stream on both sides, packed and padded batches
    draw the same dropout mask over the same pooled rows, so loss and gradients agree. A packed head
    that skips the dropout (or applies it twice) does not."""
    model = _model(family)
    if family == "bert":
        model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
        model.dropout.p = 0.5
    else:
        model.dropout.p = 0.5
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Dropout) and name != "dropout":
            m.p = 0.0
    model.train()
    enc = _encoded(pairs=family == "bert")
    losses = []
    for batch in (None, collate_packed_classification(enc, IDX, 0)):
        torch.manual_seed(11)
        losses.append(_losses_and_grads(model, batch, enc, 0))
    (ref, ref_grads), (got, grads) = losses
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    model.dropout.p = 0.0
    torch.manual_seed(11)
    assert not torch.allclose(_losses_and_grads(model, None, enc, 0)[0], ref), "the head's dropout changes nothing"


def test_first_fit_never_overfills_after_an_oversized_example() -> None:
    from peftbench.perf.packing import first_fit

    assert first_fit([5, 1], [0, 1], 4) == [[0], [1]]  # the row of the 5 has no room left, not 1
    assert first_fit([3, 1, 2], [0, 1, 2], 4) == [[0, 1], [2]]


@pytest.mark.parametrize("lengths, multiple, expected", [
    ([10, 4, 4, 4], 1, (12, [[0], [1, 2, 3]])),  # up to 1.25 × the longest: 2 rows of 12, not 1 of 22
    ([7, 6, 10, 4, 5, 3], 1, (10, [[2], [0, 5], [1, 3], [4]])),  # 13 (past 1.25 × 10) is not tried
    ([11, 12, 9, 11, 6, 3], 1, (12, [[1], [0], [3], [2, 5], [4]])),  # ties (60 tokens) go to the narrower
    ([2, 11], 4, (12, [[1], [0]])),  # widths in steps of `multiple`, from the longest rounded up
    ([8, 6, 10, 4], 4, (12, [[2], [0, 3], [1]])),
    ([7, 1, 5, 9, 8], 8, (16, [[3, 0], [4, 2, 1]])),
])
def test_packed_rows_picks_the_fewest_computed_tokens(lengths: list[int], multiple: int,
                                                      expected: tuple[int, list[list[int]]]) -> None:
    assert packed_rows(lengths, multiple) == expected


def test_collate_rounds_the_row_width_to_the_multiple() -> None:
    enc = Encoded(input_ids=[[5, 6], [5, *range(10, 20)]], labels=[0, 1])
    batch = collate_packed_classification(enc, [0, 1], pad_id=0, multiple=4)
    assert batch["input_ids"].shape == (2, 12)
    pad = int(batch["segment_ids"][1, -1])  # padding is a segment of its own, no example's
    assert pad < 0 and batch["segment_ids"].tolist() == [[0] * 11 + [pad], [0, 0] + [pad] * 10]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0, 1]


def test_packed_mask_is_built_in_the_models_dtype() -> None:
    """A bfloat16 model under eager attention adds the mask to its scores: a mask built in float32 would
    turn them into float32 and the product with the bfloat16 values would fail. (Only the dtype is checked:
    single-threaded bfloat16 eager attention on this CPU can give NaN, packed or padded alike.)"""
    model = _model("bert", "eager").eval().to(torch.bfloat16)
    got = packed_classification_loss(model, collate_packed_classification(_encoded(pairs=True), IDX, 0))
    assert got.dtype == torch.bfloat16 and got.shape == ()
