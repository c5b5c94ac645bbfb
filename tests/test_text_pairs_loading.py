"""How generative data files become source and target texts: empty and numeric cells, presets for
instruction tuning, the seeded subsets of train and eval, the one-line errors users read, and the task
wiring (`load_data`, `load_model`, `judge_learning`) that passes the task's own name and metric direction."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from peftbench.config.spec import DataSpec
from peftbench.data.splits import random_subsample
from peftbench.data.text_pairs import dolly_prompt, format_source, load_text_pairs
from peftbench.errors import DataError


def _file(tmp_path: Path, rows: list[dict], name: str = "d.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(rows))
    return str(path)


def _load(tmp_path: Path, rows: list[dict], task: str = "instruction", **data) -> object:
    path = _file(tmp_path, rows)
    return load_text_pairs(DataSpec(train=path, eval=path, **data), task)


def test_empty_cells_give_no_input_block_and_numbers_stay_text(tmp_path: Path) -> None:
    """A Dolly row without context (missing in the file: NaN in the table; or None) has no Input block;
    a numeric response is its number as text, not an empty target."""
    assert format_source({"instruction": "Say hi.", "context": None}, "dolly", None, None, "d") == dolly_prompt("Say hi.")
    assert format_source({"instruction": "Say hi.", "context": float("nan")}, "dolly", None, None, "d") == \
        dolly_prompt("Say hi.")
    assert format_source({"instruction": "Say hi."}, "dolly", None, None, "d") == dolly_prompt("Say hi.")
    got = _load(tmp_path, [{"instruction": "Add 1 and 1.5.", "response": 2.5},
                           {"instruction": "Add them.", "context": "1 and 2", "response": "3"}])
    assert got.train_sources == [dolly_prompt("Add 1 and 1.5."), dolly_prompt("Add them.", "1 and 2")]
    assert got.train_targets == ["2.5", "3"]
    assert "### Input:" not in got.train_sources[0] and "nan" not in got.train_sources[0].lower()


def test_dolly_layout_needs_only_instruction_and_response(tmp_path: Path) -> None:
    got = _load(tmp_path, [{"instruction": "Say hi.", "response": "hi"}])
    assert (got.info["layout"], got.train_sources, got.train_targets) == ("dolly", [dolly_prompt("Say hi.")], ["hi"])


def test_a_preset_names_the_columns_for_instruction_tuning_too(tmp_path: Path) -> None:
    """`samsum` on an instruction run: the dialogue is the prompt and the summary the target, even where
    the file also has a `response` column (which would be the fallback target)."""
    rows = [{"dialogue": "A: hi\nB: yo", "summary": "They greet.", "response": "not this"}]
    got = _load(tmp_path, rows, preset="samsum")
    assert (got.info["layout"], got.train_sources, got.train_targets) == \
        ("prompt/completion", ["A: hi\nB: yo"], ["They greet."])
    assert _load(tmp_path, rows, text_column="dialogue").train_targets == ["not this"]


def test_summary_is_the_last_fallback_target(tmp_path: Path) -> None:
    got = _load(tmp_path, [{"question": "q", "summary": "s"}], text_column="question")
    assert (got.train_sources, got.train_targets) == (["q"], ["s"])


def test_train_and_eval_subsets_use_the_seed_and_the_seed_plus_one(tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(10)]
    got = _load(tmp_path, rows, n_train=3, n_eval=4, seed=5)
    assert got.train_sources == [f"p{i}" for i in random_subsample(10, 3, 5)]
    assert got.eval_sources == [f"p{i}" for i in random_subsample(10, 4, 6)]
    assert got.info == {"layout": "prompt/completion", "train_rows_in_file": 10, "eval_rows_in_file": 10,
                        "n_train": 3, "n_eval": 4}


@pytest.mark.parametrize("given", ["train", "eval"])
def test_one_missing_file_is_the_error_that_names_both_options(tmp_path: Path, given: str) -> None:
    path = _file(tmp_path, [{"prompt": "p", "completion": "c"}])
    with pytest.raises(DataError) as info:
        load_text_pairs(DataSpec(**{given: path}), "summarization")
    assert str(info.value) == ("summarization needs data.train and data.eval files (fix: pass --data-train FILE "
                               "--data-eval FILE (or set data.train / data.eval))")


@pytest.mark.parametrize("rows,data,line", [
    ([{"a": "x", "b": "y"}], {}, "'{path}' has neither instruction/response nor prompt/completion columns "
     "(columns: a, b) (fix: set data.text_column and data.target_column, or data.prompt_template)"),
    ([{"question": "q", "answer": "a"}], {"text_column": "query", "target_column": "answer"},
     "data file '{path}' has no column 'query' (columns: question, answer) "
     "(fix: set data.text_column / data.target_column to existing columns)"),
    ([{"question": "q", "answer": "a"}], {"text_column": "question"},
     "no target column found in '{path}' (columns: question, answer) (fix: set data.target_column)"),
    ([{"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": "c"}, {"prompt": "\t", "completion": "c"}],
     {}, "data file '{path}' has an empty source text in row 3 (fix: remove or fill rows with empty texts)"),
    ([{"question": "q", "answer": "a"}], {"prompt_template": "Q: {query}", "target_column": "answer"},
     "data.prompt_template names column 'query' that '{path}' does not have (columns: question, answer) "
     "(fix: use {{column}} placeholders naming existing columns)"),
    ([{"question": "q", "answer": "a"}], {"prompt_template": "Q: {question", "target_column": "answer"},
     "data.prompt_template is not a valid format string: expected '}}' before end of string "
     "(fix: write placeholders as {{column}}; double literal braces as {{{{ }}}})"),
])
def test_data_errors_are_the_documented_one_line(tmp_path: Path, rows, data, line: str) -> None:
    with pytest.raises(DataError) as info:
        _load(tmp_path, rows, **data)
    assert str(info.value) == line.format(path=tmp_path / "d.json")


# ---- the task classes: their own name and metric direction reach the shared code ----------------


def test_load_data_passes_the_task_name(tmp_path: Path) -> None:
    from peftbench.tasks.summarization import SummarizationTask

    path = _file(tmp_path, [{"dialogue": "A: hi", "summary": "A greets."}])
    prepared = SummarizationTask().load_data(SimpleNamespace(data=DataSpec(train=path, eval=path)))
    assert prepared.data.train_sources == ["A: hi"] and prepared.info["layout"] == "source/target"


def test_load_model_refusal_names_the_task(tmp_path: Path) -> None:
    from peftbench.config.spec import RunSpec
    from peftbench.errors import SpecError
    from peftbench.models.embedded import EMBEDDED_CAUSAL, EMBEDDED_SEQ2SEQ
    from peftbench.tasks.instruction import InstructionTask

    path = _file(tmp_path, [{"prompt": "p", "completion": "c"}])
    spec = RunSpec.from_dict({"task": "instruction", "model": {"name_or_path": EMBEDDED_SEQ2SEQ},
                              "data": {"train": path, "eval": path}, "method": {"name": "lora"}})
    with pytest.raises(SpecError) as info:
        InstructionTask().load_model(spec, None, {})
    assert str(info.value) == (f"task 'instruction' cannot run on '{EMBEDDED_SEQ2SEQ}' "
                               f"(fix: use model '{EMBEDDED_CAUSAL}' for instruction)")


@pytest.mark.parametrize("task,tuned,base,learned", [
    ("summarization", {"rougeL": 0.5}, {"rougeL": 0.3}, True),  # higher ROUGE is better
    ("summarization", {"rougeL": 0.3}, {"rougeL": 0.5}, False),
    ("instruction", {"perplexity": 5.0}, {"perplexity": 9.0}, True),  # lower perplexity is better
    ("instruction", {"perplexity": 9.0}, {"perplexity": 5.0}, False),
])
def test_judge_learning_follows_the_main_metric_direction(task: str, tuned: dict, base: dict, learned: bool) -> None:
    from peftbench.tasks.instruction import InstructionTask
    from peftbench.tasks.summarization import SummarizationTask

    t = SummarizationTask() if task == "summarization" else InstructionTask()
    judged = t.judge_learning(None, None, tuned, {"metrics": base, "cached": True})
    assert judged["learning"]["learned"] is learned
    assert judged["baselines"] == {"base_model": base, "base_model_cached": True}
    assert t.judge_learning(None, None, tuned, None) == {}
