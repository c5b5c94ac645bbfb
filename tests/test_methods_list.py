"""`peftbench methods` lists every method with its families; peft config kwargs pass through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from peftbench.cli.app import cli
from peftbench.config.spec import RunSpec
from peftbench.errors import SpecError
from peftbench.methods.base import METHODS


def test_methods_command_lists_at_least_16_with_families() -> None:
    result = CliRunner().invoke(cli, ["methods"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()[2:]  # under the header and its rule
    listed = {line.split()[0] for line in lines}
    assert listed == set(METHODS.names()) and len(listed) >= 16
    for name in ("adalora", "loha", "lokr", "vera", "prefix_tuning", "prompt_tuning", "oft", "boft", "ia3_attention"):
        assert name in listed
    prefix = next(line for line in lines if line.startswith("prefix_tuning "))
    assert "seq2seq, decoder" in prefix and "encoder" not in prefix.split("seq2seq")[0]


def test_peft_kwargs_pass_through(tmp_path: Path, sentiment_files: tuple[Path, Path]) -> None:
    from peftbench.core.runner import run
    from peftbench.models.tiny import tiny_model_path

    spec = RunSpec.from_dict({
        "model": {"name_or_path": str(tiny_model_path("roberta")), "dtype": "float32"},
        "data": {"train": str(sentiment_files[0]), "eval": str(sentiment_files[1]), "n_train": 8, "n_eval": 8,
                 "max_length": 32},
        "method": {"name": "loha", "r": 4, "rank_dropout": 0.25, "module_dropout": 0.1},
        "train": {"max_steps": 1, "batch_size": 4}, "save": "none"})
    record = run(spec, tmp_path, progress=False)
    cfg = record["peft_config"]
    assert (cfg["peft_type"], cfg["r"], cfg["rank_dropout"], cfg["module_dropout"]) == ("LOHA", 4, 0.25, 0.1)
    assert set(cfg["target_modules"]) == {"query", "value"}
    with pytest.raises(SpecError, match="Did you mean: rank_dropout"):
        RunSpec.from_dict({"method": {"name": "loha", "rank_dropot": 0.1}})


@pytest.mark.parametrize(("method", "family", "task"), [
    ("prompt_tuning", "distilbert", "classification"),  # DistilBERT names its sizes dim/n_heads/n_layers
    ("prefix_tuning", "gpt2", "instruction"),
    ("p_tuning", "t5", "summarization"),
    ("vera", "llama", "instruction"),
])
def test_more_peft_methods_train(method: str, family: str, task: str, tmp_path: Path,
                                 sentiment_files: tuple[Path, Path]) -> None:
    import json

    from peftbench.core.runner import run
    from peftbench.models.tiny import tiny_model_path

    files = (str(sentiment_files[0]), str(sentiment_files[1]))
    if task != "classification":
        rows = [{"dialogue": f"A: {i} apples\nB: ok", "summary": f"A has {i} apples.",
                 "prompt": f"Count {i}.", "completion": f"{i}"} for i in range(8)]
        (tmp_path / "d.json").write_text(json.dumps(rows))
        files = (str(tmp_path / "d.json"),) * 2
    spec = RunSpec.from_dict({
        "task": task, "model": {"name_or_path": str(tiny_model_path(family)), "dtype": "float32"},
        "data": {"train": files[0], "eval": files[1], "n_train": 8, "n_eval": 4, "max_length": 32,
                 **({"preset": "samsum"} if task == "summarization" else {})},
        "method": {"name": method}, "train": {"max_steps": 2, "batch_size": 4},
        "generation": {"max_new_tokens": 4}, "save": "none"})
    record = run(spec, tmp_path / "runs", progress=False)
    assert record["status"] == "success"
    assert record["peft_config"]["peft_type"] == {"prompt_tuning": "PROMPT_TUNING", "prefix_tuning": "PREFIX_TUNING",
                                                  "p_tuning": "P_TUNING", "vera": "VERA"}[method]
    assert record["params"]["trainable"] < record["params"]["total"] / 2


def test_methods_say_where_each_was_verified() -> None:
    from peftbench.methods.verified import verified_on

    everywhere = "bert/classification, gpt2/classification, llama/instruction, t5/summarization"
    assert verified_on("lora") == everywhere
    assert verified_on("prefix_tuning") == "gpt2/classification, llama/instruction, t5/summarization"
    assert verified_on("xlora") == "none"  # refused on every target it was tried on
    assert verified_on("no_such_method") == "not tested"
    result = CliRunner().invoke(cli, ["methods"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.rstrip() for line in result.output.splitlines()[2:]}
    assert rows["lora"].endswith(f"[verified: {everywhere}]")
    assert rows["xlora"].endswith("[verified: none]")
    assert rows["prefix_tuning"].endswith("[verified: gpt2/classification, llama/instruction, t5/summarization]")


def test_a_null_peft_setting_is_the_default_and_a_wrong_type_is_a_spec_error(tmp_path: Path,
                                                                           sentiment_files: tuple[Path, Path]) -> None:
    """`method.rank_pattern: null` gives LoraConfig its own default (peft fails on None); a value of the
    wrong type is refused naming the key and the type, every such key at once."""
    from peftbench.core.runner import run
    from peftbench.models.tiny import tiny_model_path

    def spec(**method: Any) -> RunSpec:
        return RunSpec.from_dict({
            "model": {"name_or_path": str(tiny_model_path("roberta")), "dtype": "float32"},
            "data": {"train": str(sentiment_files[0]), "eval": str(sentiment_files[1]), "n_train": 8, "n_eval": 8,
                     "max_length": 32},
            "method": {"name": "lora", **method}, "train": {"max_steps": 1, "batch_size": 4}, "save": "none"})

    record = run(spec(rank_pattern=None, use_dora=None), tmp_path / "a", progress=False)
    assert record["status"] == "success"
    assert (record["peft_config"]["rank_pattern"], record["peft_config"]["use_dora"]) == ({}, False)
    with pytest.raises(SpecError) as err:
        run(spec(rank_pattern=5, use_rslora=3, alpha=1.5), tmp_path / "b", progress=False)
    assert err.value.message == ("2 problems in the method section: method.rank_pattern=5 is not of the type "
                                 "LoraConfig takes (Optional[dict]); method.use_rslora=3 is not of the type "
                                 "LoraConfig takes (bool)")
