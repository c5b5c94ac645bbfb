"""`peftbench generate` on real tiny runs of every generative family.

Each case trains one step of LoRA on a tiny random model (or a bundled MiniLM stand-in) with
`peftbench.run`, saves the adapter, then runs `peftbench generate` on it and checks that it exits 0,
writes one generation per prompt, and that the model saw each prompt formatted by the run's own prompt
template and tokenized as training tokenized it (compared with the tokenizer on the expected text).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from peftbench.cli.app import cli
from peftbench.records.io import atomic_write_json

MAX_NEW = 3
DOLLY = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
         "request.\n\n### Instruction:\n{}\n\n### Response:\n")
TWO_COLUMNS = "Q: {question}\nContext: {context}\nA:"

# family, task, prompt template (None: the data's own layout), prompt lines, the texts the model must see
CASES = {
    "t5": ("summarization", "summarize: {dialogue}", ["A: hi\\nB: yo", "A: rain today"],
           ["summarize: A: hi\nB: yo", "summarize: A: rain today"]),
    "bart": ("summarization", None, ["A: hi\\nB: yo", "A: rain today"], ["A: hi\nB: yo", "A: rain today"]),
    "embedded-seq2seq": ("summarization", "summarize: {dialogue}", ["A: rain today"], ["summarize: A: rain today"]),
    "gpt2": ("instruction", None, ["Say hi.", "Add 1 and 2."], [DOLLY.format("Say hi."), DOLLY.format("Add 1 and 2.")]),
    "gpt_neox": ("instruction", TWO_COLUMNS,
                 ['{"question": "How many cats?", "context": "two cats"}', '{"question": "Why?", "context": ""}'],
                 ["Q: How many cats?\nContext: two cats\nA:", "Q: Why?\nContext: \nA:"]),
    "llama": ("instruction", "Question: {instruction}\nAnswer:", ["Say hi.", "Add 1 and 2."],
              ["Question: Say hi.\nAnswer:", "Question: Add 1 and 2.\nAnswer:"]),
    "embedded-causal": ("instruction", None, ["Say hi."], [DOLLY.format("Say hi.")]),
}


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _data(root: Path, task: str, template: str | None) -> str:
    if task == "summarization":
        rows = [{"dialogue": f"A: I have {i} cats.\nB: ok", "summary": f"A has {i} cats."} for i in range(4)]
    elif template == TWO_COLUMNS:
        rows = [{"question": f"How many cats, {i}?", "context": f"{i} cats", "response": str(i)} for i in range(4)]
    else:
        rows = [{"instruction": f"Count to {i}.", "context": "", "response": str(i)} for i in range(4)]
    return _write_jsonl(root / f"{task}-{bool(template)}.jsonl", rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """One real one-step LoRA run per family, trained on first use and kept for the module."""
    from peftbench.api import run
    from peftbench.models.tiny import tiny_model_path

    root = tmp_path_factory.mktemp("gen-runs")
    runs: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in runs:
            task, template, _, _ = CASES[family]
            data = _data(root, task, template)
            name = family if family.startswith("embedded") else str(tiny_model_path(family))
            spec: dict[str, Any] = {
                "task": task, "model": {"name_or_path": name, "dtype": "float32"},
                "data": {"train": data, "eval": data, "max_length": 96, "prompt_template": template,
                         "target_column": "response" if template == TWO_COLUMNS else None},
                "method": {"name": "lora"}, "train": {"max_steps": 1, "batch_size": 2, "device": "cpu"},
                "generation": {"max_new_tokens": 2, "n_examples": 1}, "save": "adapter"}
            record = run(spec, root / family, progress=False)
            assert record["status"] == "success"
            runs[family] = root / family / record["run_id"]
        return runs[family]

    return get


def _expected_ids(tok: Any, task: str, text: str) -> list[int]:
    """What training feeds the model for a source text: the encoder input with the tokenizer's special
    tokens (seq2seq); the BOS stand-in ([CLS] for these BERT-vocabulary models) and the prompt (causal)."""
    if task == "summarization":
        return tok(text)["input_ids"]
    return [tok.cls_token_id, *tok(text, add_special_tokens=False)["input_ids"]]


def _generate(run_dirs: list[Path], prompt_lines: list[str], out: Path):
    prompts = out.with_suffix(".prompts.txt")
    prompts.write_text("\n".join(prompt_lines) + "\n")
    args = ["generate", *map(str, run_dirs), "--prompts", str(prompts),
            "--max-new-tokens", str(MAX_NEW), "--out", str(out)]
    return CliRunner().invoke(cli, args)


@pytest.mark.parametrize("family", list(CASES))
def test_generate_formats_prompts_as_the_run_trained(family: str, trained, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from peftbench.models.embedded import embedded_model_path

    task, _, lines, seen = CASES[family]
    run_dir = trained(family)
    result = _generate([run_dir], lines, tmp_path / "gen")
    assert result.exit_code == 0, result.output
    name = run_dir.name
    rows = list(csv.DictReader((tmp_path / "gen.csv").open()))
    assert [r["prompt"] for r in rows] == [line.replace("\\n", "\n") for line in lines]
    assert list(rows[0]) == ["prompt", name]
    info = json.loads((tmp_path / "gen.json").read_text())
    (run,) = info["runs"]
    assert run["run"] == name and len(run["outputs"]) == len(lines) == len(run["output_ids"])
    assert all(1 <= len(ids) <= MAX_NEW for ids in run["output_ids"])
    assert [r[name] for r in rows] == run["outputs"]
    tok = AutoTokenizer.from_pretrained(str(embedded_model_path()))  # every tiny model shares MiniLM's vocabulary
    assert run["input_ids"] == [_expected_ids(tok, task, text) for text in seen]


def test_generate_side_by_side_applies_each_runs_template(trained, tmp_path: Path) -> None:
    """Two runs of different templates on the same prompt lines: each model sees its own template."""
    gpt2, llama = trained("gpt2"), trained("llama")
    result = _generate([gpt2, llama], ["Say hi."], tmp_path / "gen")
    assert result.exit_code == 0, result.output
    assert "| prompt | " + gpt2.name + " | " + llama.name + " |" in (tmp_path / "gen.md").read_text()
    runs = json.loads((tmp_path / "gen.json").read_text())["runs"]
    assert "# # # instruction : say hi." in runs[0]["model_inputs"][0]
    assert "question : say hi. answer :" in runs[1]["model_inputs"][0]


def test_generate_refuses_plain_lines_for_a_template_of_several_columns(trained, tmp_path: Path) -> None:
    result = _generate([trained("gpt_neox")], ["How many cats?"], tmp_path / "gen")
    assert result.exit_code == 2, result.output
    assert "names 2 columns (question, context)" in result.output and "JSON object" in result.output
    result = _generate([trained("gpt_neox")], ['{"question": "How many cats?"}'], tmp_path / "gen")
    assert result.exit_code == 2 and "has no key 'context'" in result.output


def test_generate_refuses_classification_runs_and_bad_prompts(tmp_path: Path) -> None:
    run_dir = tmp_path / "cls"
    atomic_write_json(run_dir / "result.json", {"run_id": "cls", "status": "success", "task": "classification"})
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    result = CliRunner().invoke(cli, ["generate", str(run_dir), "--prompts", str(prompts)])
    assert result.exit_code == 2 and "does not generate text" in result.output
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    result = CliRunner().invoke(cli, ["generate", str(run_dir), "--prompts", str(empty)])
    assert result.exit_code == 2 and "holds no prompts" in result.output
