"""Decoder-only sequence classification: a pad token when the tokenizer has none, and last-token
pooling that reads the last real token under right padding (what peftbench batches) and left padding."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from peftbench.config.spec import ModelSpec
from peftbench.models.loading import load_classifier


@pytest.fixture(scope="module")
def no_pad_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 whose tokenizer, like GPT-2's own, has an EOS token but no pad token."""
    from transformers import AutoTokenizer

    from peftbench.models.tiny import tiny_model_path

    target = tmp_path_factory.mktemp("nopad") / "gpt2"
    shutil.copytree(tiny_model_path("gpt2"), target)
    tok = AutoTokenizer.from_pretrained(str(target))
    tok.eos_token = "[SEP]"
    tok.pad_token = None
    tok.save_pretrained(str(target))
    assert AutoTokenizer.from_pretrained(str(target)).pad_token is None
    return target


def test_missing_pad_token_is_set_to_eos(no_pad_gpt2: Path) -> None:
    loaded = load_classifier(ModelSpec(name_or_path=str(no_pad_gpt2)), 2, ["neg", "pos"])
    assert loaded.tokenizer.pad_token == "[SEP]"
    assert loaded.model.config.pad_token_id == loaded.tokenizer.pad_token_id == loaded.tokenizer.eos_token_id


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama", "gpt2-pad-is-eos"])
def test_last_token_pooling_ignores_padding(family: str, request: pytest.FixtureRequest) -> None:
    import torch

    from peftbench.data.batching import collate
    from peftbench.data.classification import encode_classification
    from peftbench.models.tiny import tiny_model_path

    path = request.getfixturevalue("no_pad_gpt2") if family == "gpt2-pad-is-eos" else tiny_model_path(family)
    loaded = load_classifier(ModelSpec(name_or_path=str(path)), 2, ["neg", "pos"])
    model, tok = loaded.model.eval(), loaded.tokenizer
    enc = encode_classification(tok, ["a short one", "a much longer sentence with many more words in it"],
                                None, [0, 1], 64)
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([ids])).logits[0] for ids in enc.input_ids]
        right = collate(enc, [0, 1], tok.pad_token_id)  # peftbench pads on the right
        right_logits = model(input_ids=right["input_ids"], attention_mask=right["attention_mask"]).logits
        # Left padding: positions must count real tokens only, so pass them explicitly.
        ids, mask = right["input_ids"].clone(), right["attention_mask"].clone()
        for row, seq in enumerate(enc.input_ids):
            n = len(seq)
            ids[row] = torch.cat([torch.full((ids.shape[1] - n,), tok.pad_token_id), torch.tensor(seq)])
            mask[row] = torch.cat([torch.zeros(ids.shape[1] - n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        left_logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    for row in range(2):
        torch.testing.assert_close(right_logits[row], alone[row], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(left_logits[row], alone[row], rtol=1e-4, atol=1e-5)
    # The two sentences really differ (the check above could not pass by pooling a constant).
    assert not torch.allclose(alone[0], alone[1])
