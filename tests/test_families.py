"""Every seed method on every model family: one short training each, and a valid record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftbench.config.spec import RunSpec
from peftbench.core.runner import run

SEED_METHODS = ("full", "partial", "lora", "qlora", "ia3", "dora")
FAMILY_TASK = {"t5": "summarization", "gpt2": "instruction", "gpt_neox": "instruction", "llama": "instruction",
               "roberta": "classification", "distilbert": "classification"}


@pytest.fixture(scope="module")
def task_files(tmp_path_factory: pytest.TempPathFactory, sentiment_files: tuple[Path, Path]) -> dict:
    root = tmp_path_factory.mktemp("families")
    dialogues = [{"dialogue": f"Ann: I have {i} cats.\nBob: Nice, {i} is a lot!", "summary": f"Ann has {i} cats."}
                 for i in range(12)]
    instructions = [{"instruction": f"Add {i} and 2.", "context": "" if i % 2 else "Numbers.",
                     "response": f"It is {i + 2}."} for i in range(12)]
    files = {"classification": sentiment_files}
    for name, rows in (("summarization", dialogues), ("instruction", instructions)):
        train, eval_ = root / f"{name}-train.json", root / f"{name}-eval.json"
        train.write_text(json.dumps(rows[:8]))
        eval_.write_text(json.dumps(rows[8:]))
        files[name] = (train, eval_)
    return files


def short_spec(model: Path, task: str, files: tuple[Path, Path], method: str, **method_params: object) -> RunSpec:
    return RunSpec.from_dict({
        "task": task,
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "data": {"train": str(files[0]), "eval": str(files[1]), "n_train": 8, "n_eval": 4,
                 "max_length": 32, "max_target_length": 16},
        "method": {"name": method, **method_params},
        "train": {"epochs": 1, "batch_size": 4, "max_steps": 2, "log_every": 1, "num_threads": 1},
        "generation": {"max_new_tokens": 4},
        "save": "none",
    })


@pytest.mark.parametrize("family", list(FAMILY_TASK))
@pytest.mark.parametrize("method", SEED_METHODS)
def test_method_on_family(family: str, method: str, task_files: dict, tmp_path: Path) -> None:
    from peftbench.models.tiny import tiny_model_path

    task = FAMILY_TASK[family]
    record = run(short_spec(tiny_model_path(family), task, task_files[task], method), tmp_path, progress=False)
    assert record["status"] == "success"
    assert record["model"]["family"] == family
    on_disk = json.loads((tmp_path / record["run_id"] / "result.json").read_text())
    assert on_disk["status"] == "success" and on_disk["metrics"] == record["metrics"]
    metrics = record["metrics"]
    assert metrics["eval_loss"] > 0 and record["train"]["steps"] == 2
    trainable, total = record["params"]["trainable"], record["params"]["total"]
    assert 0 < trainable <= total
    if method == "full":
        assert trainable == total
    else:
        assert trainable < total
    if task == "summarization":
        assert {"rouge1", "rouge2", "rougeL", "rougeLsum"} <= set(metrics)
        assert len(record["predictions"]["pred"]) == 4
    elif task == "instruction":
        assert metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["eval_loss"], rel=1e-6)
    else:  # the eval subsample (n_eval: 4) predicted one by one, and the metrics computed from them
        pred, gold = record["predictions"]["pred"], record["predictions"]["gold"]
        assert len(pred) == len(gold) == 4 and set(gold) <= {0, 1}
        assert metrics["accuracy"] == pytest.approx(sum(p == g for p, g in zip(pred, gold, strict=True)) / 4)
        assert record["baselines"]["majority_accuracy"] == max(gold.count(0), gold.count(1)) / 4


@pytest.mark.parametrize(("family", "top_block", "frozen"), [
    ("t5", "decoder.block.1.", ("shared.", "encoder.block.1.", "decoder.block.0.")),
    ("bart", "model.decoder.layers.1.", ("model.shared.", "model.encoder.layers.1.", "model.decoder.layers.0.")),
    ("gpt2", "transformer.h.1.", ("transformer.wte.", "transformer.wpe.", "transformer.h.0.")),
    ("gpt_neox", "gpt_neox.layers.1.", ("gpt_neox.embed_in.", "gpt_neox.layers.0.")),
    ("llama", "model.layers.1.", ("model.embed_tokens.", "model.layers.0.")),
])
def test_partial_trains_the_top_block_of_each_family(family: str, top_block: str, frozen: tuple[str, ...]) -> None:
    """`partial` with layers=1 finds the family's block list (T5/BART: encoder then decoder blocks)."""
    import transformers

    from peftbench.methods.base import METHODS, MethodContext
    from peftbench.models.families import family_for
    from peftbench.models.tiny import tiny_model_path

    path = tiny_model_path(family)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(path) if family in ("t5", "bart") else \
        transformers.AutoModelForCausalLM.from_pretrained(path)
    method = METHODS.get("partial")
    ctx = MethodContext(model, family_for(model.config.model_type), "CAUSAL_LM")
    method.prepare(method, {"layers": 1, "fraction": 0.5}, ctx)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith(top_block) for n in trainable)
    assert all(n in trainable for n in names if n.startswith(top_block))
    assert not any(n.startswith(prefix) for n in trainable for prefix in frozen), sorted(trainable)


@pytest.mark.parametrize("method", ["lora", "ia3", "partial"])
def test_generic_fallback_for_unknown_architectures(method: str, task_files: dict, tmp_path: Path) -> None:
    """family: generic (what an unregistered architecture gets): all linear layers but the head."""
    from peftbench.models.tiny import tiny_model_path

    spec = short_spec(tiny_model_path("llama"), "instruction", task_files["instruction"], method)
    spec = spec.with_overrides(["model.family=generic"])
    record = run(spec, tmp_path, progress=False)
    assert record["status"] == "success" and record["model"]["family"] == "generic"
    if method != "partial":
        targets = set(record["peft_config"]["target_modules"])
        assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
