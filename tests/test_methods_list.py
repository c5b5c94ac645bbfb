"""`peftbench methods` lists every method with its families; peft config kwargs pass through."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from peftbench.cli import cli
from peftbench.errors import SpecError
from peftbench.methods import METHODS
from peftbench.spec import RunSpec


def test_methods_command_lists_at_least_16_with_families() -> None:
    result = CliRunner().invoke(cli, ["methods"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()[1:]
    listed = {line.split()[0] for line in lines}
    assert listed == set(METHODS.names()) and len(listed) >= 16
    for name in ("adalora", "loha", "lokr", "vera", "prefix_tuning", "prompt_tuning", "oft", "boft", "ia3_attention"):
        assert name in listed
    prefix = next(line for line in lines if line.startswith("prefix_tuning "))
    assert "seq2seq,decoder" in prefix and "encoder" not in prefix.split()[2]


def test_peft_kwargs_pass_through(tmp_path: Path, sentiment_files: tuple[Path, Path]) -> None:
    from peftbench.runner import run
    from peftbench.tiny import tiny_model_path

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
