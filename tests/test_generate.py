"""`peftbench generate` on hand-built generation runs.

The generation tasks (summarization, instruction) are not part of this code base yet, so no
`peftbench run` can train one here. These tests build the run folders a generation run leaves
(a tiny random GPT-2 base, a LoRA adapter saved with peft, a record) and check that `generate`
reloads each adapter and reproduces its greedy outputs side by side.
"""

from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner

from peftbench.cli.app import cli
from peftbench.records.io import atomic_write_json


@pytest.fixture(scope="module")
def gpt2_base(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from peftbench.models.embedded import embedded_model_path

    path = tmp_path_factory.mktemp("tiny-gpt2")
    tok = AutoTokenizer.from_pretrained(str(embedded_model_path()))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                                       bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id))
    model.save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    return path


def _fake_run(base, out, name: str, seed: int):
    """A run folder as a generation run leaves it: adapter/ (peft safetensors) and result.json."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    model = get_peft_model(GPT2LMHeadModel.from_pretrained(str(base)),
                           LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["c_attn"], lora_alpha=64, fan_in_fan_out=True,
                                      init_lora_weights=False))
    run_dir = out / name
    model.save_pretrained(str(run_dir / "adapter"), safe_serialization=True)
    atomic_write_json(run_dir / "result.json", {
        "run_id": name, "status": "success", "task": "instruction", "method": "lora",
        "spec": {"task": "instruction", "model": {"name_or_path": str(base), "dtype": "float32"},
                 "method": {"name": "lora", "r": 4}, "train": {"device": "cpu"}},
        "artifact": {"saved": True, "kind": "adapter", "path": "adapter", "size_bytes": 1},
    })
    return run_dir, model


def test_generate_side_by_side(gpt2_base, tmp_path) -> None:
    import torch
    from transformers import AutoTokenizer

    (a, model_a), (b, _) = _fake_run(gpt2_base, tmp_path, "lora-a", 1), _fake_run(gpt2_base, tmp_path, "lora-b", 2)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the movie was\n\nsummarize: a long day at the office\n")
    out = tmp_path / "gen"
    result = CliRunner().invoke(cli, ["generate", "--runs", f"{a},{b}", "--prompts", str(prompts),
                                      "--max-new-tokens", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "gen.csv").open()))
    assert [r["prompt"] for r in rows] == ["the movie was", "summarize: a long day at the office"]
    assert list(rows[0]) == ["prompt", "lora-a", "lora-b"]
    # Same greedy decoding straight from the in-memory adapter model gives the same text.
    tok = AutoTokenizer.from_pretrained(str(gpt2_base))
    model_a.eval()
    for row in rows:
        enc = tok(row["prompt"], return_tensors="pt")
        with torch.inference_mode():
            ids = model_a.generate(**enc, do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id)
        assert row["lora-a"] == tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert any(r["lora-a"] != r["lora-b"] for r in rows)  # different adapters, different outputs
    assert "| prompt | lora-a | lora-b |" in (tmp_path / "gen.md").read_text()


def test_generate_refuses_classification_runs_and_bad_prompts(tmp_path) -> None:
    run_dir = tmp_path / "cls"
    atomic_write_json(run_dir / "result.json", {"run_id": "cls", "status": "success", "task": "classification"})
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    result = CliRunner().invoke(cli, ["generate", "--runs", str(run_dir), "--prompts", str(prompts)])
    assert result.exit_code == 2 and "does not generate text" in result.output
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    result = CliRunner().invoke(cli, ["generate", "--runs", str(run_dir), "--prompts", str(empty)])
    assert result.exit_code == 2 and "holds no prompts" in result.output
