"""Packed rows give the same loss and gradients as the padded batch, on tiny causal LMs built from configs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from peftbench.data.batching import IGNORE_INDEX  # noqa: E402
from peftbench.perf.packing import collate_packed, pack, prepare_for_packing  # noqa: E402

VOCAB = 97


def _llama() -> object:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return prepare_for_packing(LlamaForCausalLM(cfg).eval())


def _gpt2() -> object:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return prepare_for_packing(GPT2LMHeadModel(cfg).eval())


def _examples(seed: int = 1) -> tuple[list[list[int]], list[list[int]]]:
    g = torch.Generator().manual_seed(seed)
    lengths = [5, 11, 3, 17, 8]
    seqs = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in lengths]
    # Prompt tokens masked in two examples, as an instruction task would.
    labels = [list(s) for s in seqs]
    labels[1][:4] = [IGNORE_INDEX] * 4
    labels[3][:6] = [IGNORE_INDEX] * 6
    return seqs, labels


def _padded_loss(model: object, seqs: list[list[int]], labels: list[list[int]]) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    lab = torch.full_like(ids, IGNORE_INDEX)
    for r, (s, lb) in enumerate(zip(seqs, labels, strict=True)):
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
        lab[r, : len(s)] = torch.tensor(lb)
    return model(input_ids=ids, attention_mask=mask, labels=lab).loss


@pytest.mark.parametrize("build", [_llama, _gpt2], ids=["llama", "gpt2"])
def test_packed_loss_and_grads_equal_unpacked(build: object) -> None:
    model = build()
    seqs, labels = _examples()
    ref = _padded_loss(model, seqs, labels)
    ref.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    packed = pack(seqs, labels)
    assert packed["input_ids"].shape == (1, sum(len(s) for s in seqs))
    loss = model(**packed).loss
    loss.backward()
    assert torch.allclose(loss, ref, atol=1e-5), (loss.item(), ref.item())
    for g_ref, p in zip(ref_grads, model.parameters(), strict=True):
        assert torch.allclose(p.grad, g_ref, atol=1e-5)


def test_packing_leaks_without_boundaries_or_with_a_cache() -> None:
    """The check above can fail: drop the position ids, or leave the KV cache on, and the loss differs."""
    model = _llama()
    seqs, labels = _examples()
    ref = _padded_loss(model, seqs, labels)
    packed = pack(seqs, labels)
    assert not torch.allclose(model(**packed, use_cache=True).loss, ref, atol=1e-4)
    del packed["position_ids"]
    assert not torch.allclose(model(**packed).loss, ref, atol=1e-4)


def test_pack_masks_first_label_of_each_example() -> None:
    out = pack([[5, 6, 7], [8, 9]])
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert out["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9]]
    with pytest.raises(ValueError, match="labels"):
        pack([[1, 2]], [[1]])


def test_collate_packed_reads_encoded_examples() -> None:
    from peftbench.data.batching import Encoded

    enc = Encoded(input_ids=[[3, 4, 5], [6, 7], [8, 9, 10, 11]], labels=[0, 0, 0])
    out = collate_packed(enc, [2, 0])
    assert out["input_ids"].tolist() == [[8, 9, 10, 11, 3, 4, 5]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2]]


def test_pack_refuses_no_sequences_or_an_empty_one_but_takes_one_token() -> None:
    for bad in ([], [[1, 2], []]):
        with pytest.raises(ValueError, match=r"^pack\(\) needs at least one sequence and no empty ones$"):
            pack(bad)
    out = pack([[5], [6, 7]])
    assert out["input_ids"].tolist() == [[5, 6, 7]]
    assert out["labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 7]]


def test_collate_packed_reads_per_token_labels_from_extra() -> None:
    from types import SimpleNamespace

    from peftbench.data.batching import Encoded

    enc = Encoded(input_ids=[[3, 4, 5], [6, 7]], labels=[0, 0],
                  extra={"labels": [[IGNORE_INDEX, 4, 5], [IGNORE_INDEX, 7]]})
    assert collate_packed(enc, [1, 0])["labels"].tolist() == [[IGNORE_INDEX, 7, IGNORE_INDEX, 4, 5]]
    enc.extra["labels"][0] = [IGNORE_INDEX, IGNORE_INDEX, 5]  # a prompt of two tokens
    assert collate_packed(enc, [0])["labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 5]]
    bare = SimpleNamespace(input_ids=[[3, 4, 5]])  # an encoded set without `extra`: the inputs are the targets
    assert collate_packed(bare, [0])["labels"].tolist() == [[IGNORE_INDEX, 4, 5]]


def test_prepare_for_packing_turns_the_cache_off_and_accepts_models_without_config() -> None:
    from types import SimpleNamespace

    model = SimpleNamespace(config=SimpleNamespace(use_cache=True))
    assert prepare_for_packing(model) is model and model.config.use_cache is False
    bare = object()
    assert prepare_for_packing(bare) is bare
