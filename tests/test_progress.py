"""What a run shows while it works, and how soon bad input stops it.

Bad input (a wrong column, a file without the label column, a label the training file lacks) must fail
before torch is imported: the check needs only pandas, and importing torch, transformers and peft
takes seconds before a model is even read. A run that starts announces each phase that can take
time, with its duration, and its training bar shows a loss from the first step on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import tiny_spec

# Runs `peftbench run` in a fresh interpreter for each argument list and reports, for each, the exit
# code, the output and whether torch had been imported when the command returned.
PROBE = """
import json, sys
from click.testing import CliRunner
from peftbench.cli.app import cli
out = []
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(cli, args)
    out.append({"code": result.exit_code, "output": result.output, "torch": "torch" in sys.modules,
                "transformers": "transformers" in sys.modules})
print(json.dumps(out))
"""


def test_bad_columns_and_labels_fail_before_torch_is_imported(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    train, eval_ = (str(p) for p in sentiment_files)
    no_label = tmp_path / "no_label.csv"
    no_label.write_text("text\nfine film\ndull film\n", encoding="utf-8")
    new_class = tmp_path / "new_class.csv"
    new_class.write_text("text,label\nfine film,1\nodd film,7\n", encoding="utf-8")
    base = ["run", "--model", str(tiny_bert), "--out", str(tmp_path / "runs")]
    cases = {
        "label column": ([*base, "--data-train", train, "--data-eval", eval_, "--set", "data.label_column=stars"],
                         "no label column 'stars'"),
        "text column": ([*base, "--data-train", train, "--data-eval", eval_, "--set", "data.text_column=nope"],
                        "no text column 'nope'"),
        "eval file": ([*base, "--data-train", train, "--data-eval", str(no_label)], "no label column 'label'"),
        "eval class": ([*base, "--data-train", train, "--data-eval", str(new_class)], "never occurs in train"),
    }
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([args for args, _ in cases.values()])],
                          capture_output=True, text=True, timeout=120, check=True)
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for (name, (_args, message)), got in zip(cases.items(), results, strict=True):
        assert got["code"] == 2, (name, got)
        assert message in got["output"], (name, got["output"])
        assert len(got["output"].strip().splitlines()) == 1, (name, got["output"])  # one line, no traceback
        assert not got["torch"] and not got["transformers"], f"{name}: torch was imported before the check failed"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_run_announces_each_phase_with_its_time(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run

    lines: list[str] = []
    record = run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora", epochs=2)), tmp_path,
                 progress=False, log=lines.append)
    assert record["status"] == "success"
    prefix = f"[peftbench] {record['run_id']}: "
    assert all(line.startswith(prefix) for line in lines), lines
    said = [line.removeprefix(prefix) for line in lines]
    expected = ["data: 144 train, 16 validation, 64 test examples, 2 classes", "loading ", "torch ",
                "read bert weights after ", "loaded bert (",
                "tokenizing 144 train, 16 validation, 64 test examples (max_length 32)", "tokenized 224 examples",
                "pre-flight checks (", "pre-flight checks passed in ", "training 144 examples, 2 epoch(s)",
                "epoch 1/2: validation accuracy ", "epoch 2/2: validation accuracy ", "evaluating on the test split",
                "test accuracy ", "measuring the weight change", "measured in ",
                "saving the trained weights", "saved adapter ("]
    at = 0
    for start in expected:  # in this order, other lines (notes, warnings) allowed between them
        found = next((i for i in range(at, len(said)) if said[i].startswith(start)), None)
        assert found is not None, f"no line starting {start!r} after line {at}: {said}"
        at = found + 1
    timed = [s for s in said if s.startswith(("loaded ", "tokenized ", "pre-flight checks passed", "test ", "measured ",
                                              "saved "))]
    assert len(timed) == 6 and all(s.endswith(" s") and " in " in s for s in timed), timed
    assert f"{record['metrics']['accuracy']:.4f}" in next(s for s in said if s.startswith("test accuracy"))


def test_the_training_bar_shows_the_loss_from_the_first_step(tiny_bert: Path, sentiment_files: tuple[Path, Path]) -> None:
    from peftbench.config.spec import RunSpec
    from peftbench.core.train import TrainingLoop
    from peftbench.methods.base import METHODS, MethodContext
    from peftbench.tasks.base import TASKS

    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora", max_steps=1, log_every=50)).resolved()
    task, method = TASKS.get(spec.task), METHODS.get("lora")
    prepared = task.load_data(spec)
    loaded = task.load_model(spec, prepared, {})
    model = method.prepare(method, spec.method.params, MethodContext(loaded.model, loaded.family, task.peft_task_type))
    enc, _ = task.encode(loaded, prepared, spec)
    loop = TrainingLoop(model, spec.train, len(enc), device="cpu", autocast_dtype=None, progress=True,
                        collate_fn=task.collate, loss_fn=None, on_log=None)
    loop.train_epoch(0, enc, enc.lengths(), loaded.tokenizer.pad_token_id)
    assert loop.step == 1 and loop.bar.desc.startswith("epoch 1/1")
    # Step 1 is far from log_every (50); the bar shows that step's own loss, the loss curve's only point.
    assert loop.bar.postfix == f"loss={loop.out.loss_curve[0]['loss']:.4f}"


def test_the_smoothed_loss_starts_at_the_first_loss_and_follows_later_ones() -> None:
    from peftbench.runtime.progress import SmoothedLoss

    smooth = SmoothedLoss(beta=0.5)
    assert smooth.add(2.0) == 2.0  # bias-corrected: not (1 - beta) * 2.0
    assert smooth.add(0.0) == (0.5 * 0.5 * 2.0) / (1 - 0.25)  # the weights 0.25 and 0.5, normalised
