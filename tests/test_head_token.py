"""The last layer computed for the head's token only: same logits, same loss, same gradients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tiny_spec

torch = pytest.importorskip("torch")


def _classifier(family: str, attn: str = "sdpa", dropout: float = 0.0) -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    from peftbench.models.tiny import tiny_model_path

    torch.manual_seed(0)
    names = (("dropout", "attention_dropout", "seq_classif_dropout") if family == "distilbert"
             else ("hidden_dropout_prob", "attention_probs_dropout_prob"))
    return AutoModelForSequenceClassification.from_pretrained(
        str(tiny_model_path(family)), num_labels=3, attn_implementation=attn, **dict.fromkeys(names, dropout))


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(5, vocab, (4, 12), generator=g)
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[1, 7:] = 0  # padded rows: the first token must not attend to them
    mask[3, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1, 2])}


def _loss_and_grads(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), grads


@pytest.mark.parametrize(("family", "attn", "method"), [("bert", "sdpa", "full"), ("bert", "eager", "full"),
                                                        ("roberta", "sdpa", "full"), ("bert", "sdpa", "lora"),
                                                        ("distilbert", "sdpa", "full"),
                                                        ("distilbert", "eager", "lora")])
def test_logits_loss_and_every_gradient_equal_the_whole_layer(family: str, attn: str, method: str) -> None:
    from peftbench.models.loading import transformers_model
    from peftbench.perf import head_token

    model = _classifier(family, attn)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        targets = ["q_lin", "v_lin"] if family == "distilbert" else ["query", "value"]
        model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, modules_to_save=["classifier"]))
    model.train()  # dropout is 0: training mode, and still deterministic
    batch = _batch(model.config.vocab_size)
    ref_logits, ref_grads = _loss_and_grads(model, batch)
    section = head_token.install(model)
    assert section["first_token_only"] is True and section["layer"].endswith(".layer.1")
    logits, grads = _loss_and_grads(model, batch)
    assert torch.allclose(logits, ref_logits, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) > 4
    for name, g in grads.items():
        assert torch.allclose(g, ref_grads[name], atol=1e-6), name
    # and it is in force: the encoder's last hidden state holds the first token only
    base = transformers_model(model)
    hidden = getattr(base, base.base_model_prefix)(batch["input_ids"], batch["attention_mask"]).last_hidden_state
    assert hidden.shape[1] == 1


def test_the_masked_keys_matter_so_a_wrong_mask_would_show() -> None:
    """Guards the test above: the padded rows change the logits when the mask is dropped."""
    model = _classifier("bert").eval()
    batch = _batch(model.config.vocab_size)
    with torch.no_grad():
        a = model(**batch).logits
        b = model(input_ids=batch["input_ids"]).logits
    assert (a[1] - b[1]).abs().max() > 50 * 1e-6  # far above the atol of the equality test


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_training_with_dropout_runs_through_the_cpu_attention(family: str) -> None:
    from peftbench.perf import cpu_ops, head_token

    model = _classifier(family, dropout=0.1)
    cpu_ops.install(model, "cpu")
    head_token.install(model)
    model.train()
    out = model(**_batch(model.config.vocab_size))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.logits.shape == (4, 3)
    query = model.get_submodule(head_token.installed(model)["per_sequence"][0])  # the last layer's query
    assert query.weight.grad.abs().sum() > 0


def test_every_position_gives_the_whole_last_layer_back() -> None:
    from peftbench.perf import head_token

    model = _classifier("bert").eval()
    batch = _batch(model.config.vocab_size)
    batch.pop("labels")
    with torch.no_grad():
        ref = model(**batch, output_hidden_states=True).hidden_states[-1]
        head_token.install(model)
        assert model(**batch, output_hidden_states=True).hidden_states[-1].shape[1] == 1
        with head_token.every_position(model):
            assert torch.allclose(model(**batch, output_hidden_states=True).hidden_states[-1], ref, atol=1e-6)
        assert model(**batch, output_hidden_states=True).hidden_states[-1].shape[1] == 1
        head_token.remove(model)
        assert model(**batch, output_hidden_states=True).hidden_states[-1].shape == ref.shape


def test_it_stands_aside_where_it_would_not_be_exact() -> None:
    from transformers import AutoModelForSequenceClassification

    from peftbench.models.tiny import tiny_model_path
    from peftbench.perf import head_token

    bert = _classifier("bert")
    assert head_token.install(bert, packing=True) == {
        "first_token_only": False, "reason": "packed rows: each example has its own first token"}
    assert head_token.install(bert, enabled=False)["reason"] == "train.head_token_only is false"
    gpt2 = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_path("gpt2")), num_labels=2)
    assert "not among the classifiers known" in head_token.install(gpt2)["reason"]  # reads the last real token
    assert head_token.installed(bert) is None and head_token.installed(gpt2) is None
    assert "forward" not in vars(bert.bert.encoder.layer[-1])


def test_the_layer_runs_whole_when_asked_for_more_than_the_head_reads() -> None:
    """A KV cache (prefix methods), cross-attention or attention weights: the layer's own forward runs."""
    from transformers import DynamicCache

    from peftbench.perf import head_token

    model = _classifier("bert").eval()
    head_token.install(model)
    layer = model.bert.encoder.layer[-1]
    hidden = torch.randn(2, 5, model.config.hidden_size)
    with torch.no_grad():
        assert layer(hidden).shape == (2, 1, model.config.hidden_size)
        whole = type(layer).forward(layer, hidden)
        assert torch.allclose(layer(hidden, output_attentions=True), whole, atol=1e-6)
        assert layer(hidden, cache=DynamicCache(config=model.config)).shape == (2, 5, model.config.hidden_size)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_flops_count_the_last_layer_once_per_sequence(family: str) -> None:
    from peftbench.perf import head_token
    from peftbench.perf.flops import training_flops

    model = _classifier(family)
    cfg = model.config
    d, inner = cfg.hidden_size, getattr(cfg, "intermediate_size", None) or cfg.hidden_dim
    tokens, sq, seqs = 1000, 40_000, 50
    whole = training_flops(model, tokens, sq)
    head_token.install(model)
    with pytest.raises(ValueError, match="pass `sequences`"):
        training_flops(model, tokens, sq)
    head = training_flops(model, tokens, sq, seqs)
    # query and attention-output (d×d), feed-forward (d×inner twice): 6·W per token, now per sequence
    linear_saved = 6 * (2 * d * d + 2 * d * inner) * (tokens - seqs)
    attention_saved = 12 * d * (sq - tokens)  # one layer's 12·d·ΣL² becomes 12·d·ΣL
    assert whole["linear_flops"] - head["linear_flops"] == linear_saved
    assert whole["attention_flops"] - head["attention_flops"] == attention_saved
    assert "head's token only" in head["formula"]


def test_runs_record_it_and_can_switch_it_off(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run
    from peftbench.models.tiny import tiny_model_path

    on = run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "full")), out_dir=tmp_path / "on")
    assert on["status"] == "success"
    assert on["train"]["head_token"] == {"first_token_only": True, "layer": "bert.encoder.layer.1",
                                         "model_class": "BertForSequenceClassification"}
    off = run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "full", head_token_only=False)),
              out_dir=tmp_path / "off")
    assert off["train"]["head_token"] == {"first_token_only": False, "reason": "train.head_token_only is false"}
    assert off["train"]["flops"] > on["train"]["flops"]
    packed = run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora", packing=True)),
                 out_dir=tmp_path / "packed")
    assert packed["train"]["head_token"]["first_token_only"] is False
    distil = run(RunSpec.from_dict(tiny_spec(tiny_model_path("distilbert"), sentiment_files, "lora")),
                 out_dir=tmp_path / "distil")
    assert distil["status"] == "success"
    assert distil["train"]["head_token"]["layer"] == "distilbert.transformer.layer.1"
    # The FLOP estimate follows the switch: only the run that computes the head's token alone says so.
    assert "head's token only" in on["train"]["flops_formula"]
    assert "head's token only" not in off["train"]["flops_formula"]
    assert on["train"]["flops_linear"] < off["train"]["flops_linear"]
    (saved,) = (tmp_path / "on").glob("*/result.json")
    assert json.loads(saved.read_text())["train"]["head_token"] == on["train"]["head_token"]
