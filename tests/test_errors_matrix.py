"""The bad-input matrix (docs/errors.md): every row is one case below, run through the real CLI.

Each case checks the exit code, exactly one `peftbench:` message line naming the problem, no
traceback, and that no record claims success. Cases that fail after a run started also check the
`failed`/`canceled` record and its error type. Runs use the tiny random BERT from conftest.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from peftbench.cli.app import cli

pytestmark = pytest.mark.reliability

DOCS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


@dataclass
class Ctx:
    """Paths one case works with; `file` writes a small input file next to them."""

    tmp: Path
    model: Path
    train: Path
    eval: Path
    out: Path

    def file(self, name: str, content: str | bytes) -> str:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
        return str(p)

    def run(self, *extra: str, model: str | Path | None = None, train: str | Path | None = None,
            eval_: str | Path | None = None, method: str = "lora") -> list[str]:
        """`peftbench run` on the tiny model and small data, plus `extra` arguments."""
        return ["run", "--model", str(model or self.model), "--data-train", str(train or self.train),
                "--data-eval", str(eval_ or self.eval), "--method", method, "--n-train", "64", "--n-eval", "32",
                "--out", str(self.out), "--quiet", "--set", "train.epochs=1", "--set", "train.batch_size=16",
                "--set", "data.max_length=32", "--set", "model.dtype=float32", *extra]

    def config(self, text: str, *extra: str) -> list[str]:
        return ["run", "--config", self.file("spec.yaml", text), "--out", str(self.out), "--quiet", *extra]

    def model_copy(self, name: str, drop: tuple[str, ...] = ()) -> Path:
        """A copy of the tiny model folder without the files named in `drop`."""
        target = self.tmp / name
        shutil.copytree(self.model, target, ignore=shutil.ignore_patterns(*drop))
        return target


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Ctx], list[str]]
    phrase: str  # must appear (case-insensitive) in the one message line
    code: int = 2
    record: str | None = None  # error type of the failed/canceled record the run must leave
    patch: Callable[[pytest.MonkeyPatch, Ctx], None] | None = None
    check: Callable[[Ctx], None] | None = None  # extra assertion after the run
    marks: tuple = field(default=())


# ---- helpers for cases that need more than arguments ----------------------------------------


def _csv(ctx: Ctx, name: str, rows: list[tuple[str, object]]) -> str:
    return ctx.file(name, "text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))


_GOOD = [("a fine film", 0), ("a bad film", 1), ("great acting", 0), ("dull plot", 1)]


def _raise_in_forward(exc: BaseException, after: int = 1) -> Callable[[pytest.MonkeyPatch, Ctx], None]:
    """Make the model's forward raise `exc` on its (after+1)-th training call: mid-loop."""
    def patch(mp: pytest.MonkeyPatch, ctx: Ctx) -> None:
        from transformers.models.bert import modeling_bert

        cls = modeling_bert.BertForSequenceClassification
        original = cls.forward
        calls = {"n": 0}

        def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if self.training:
                calls["n"] += 1
                if calls["n"] > after:
                    raise exc
            return original(self, *args, **kwargs)

        mp.setattr(cls, "forward", forward)

    return patch


def _disk_full_on_save(mp: pytest.MonkeyPatch, ctx: Ctx) -> None:
    """The adapter's weights file gets half written, then the disk is full."""
    import peft.peft_model

    def save_file(tensors, filename, metadata=None):  # type: ignore[no-untyped-def]
        Path(filename).write_bytes(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    mp.setattr(peft.peft_model, "safe_save_file", save_file)


def _hide_bitsandbytes(mp: pytest.MonkeyPatch, ctx: Ctx) -> None:
    import sys

    mp.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError


def _no_cuda(mp: pytest.MonkeyPatch, ctx: Ctx) -> None:
    import torch

    mp.setattr(torch.cuda, "is_available", lambda: False)


def _dialogues(ctx: Ctx) -> str:
    """Summarization data (dialogue → summary), so that only the model is wrong."""
    rows = [{"dialogue": f"A: hi {i}\nB: hello", "summary": f"greetings {i}"} for i in range(4)]
    return ctx.file("dialogues.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _instructions(ctx: Ctx) -> str:
    """Instruction data (prompt → completion) for the instruction task."""
    rows = [{"prompt": f"Add {i} and 2.", "completion": f"It is {i + 2}."} for i in range(4)]
    return ctx.file("instructions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _tiny_gpt2(ctx: Ctx) -> str:
    from peftbench.models.tiny import tiny_model_path

    return str(tiny_model_path("gpt2"))


def _remote_code_model(ctx: Ctx) -> str:
    """A model folder whose config asks for custom Python code (which would write a marker file)."""
    folder = ctx.model_copy("remote-model")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="evil", auto_map={"AutoConfig": "configuration_evil.EvilConfig"})
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "configuration_evil.py").write_text(
        f"from pathlib import Path\nPath({str(ctx.tmp / 'PWNED')!r}).write_text('ran')\n"
        "from transformers import BertConfig\nclass EvilConfig(BertConfig):\n    model_type = 'evil'\n")
    return str(folder)


def _no_marker(ctx: Ctx) -> None:
    assert not (ctx.tmp / "PWNED").exists(), "untrusted code ran"


def _corrupt_weights(ctx: Ctx) -> str:
    folder = ctx.model_copy("corrupt-model")
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage" + b"\x01" * 64)
    return str(folder)


def _broken_config(ctx: Ctx) -> str:
    folder = ctx.model_copy("broken-config")
    (folder / "config.json").write_text('{"model_type": "bert",')
    return str(folder)


def _pickle_only(ctx: Ctx) -> str:
    folder = ctx.model_copy("pickle-model", drop=("model.safetensors",))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    return str(folder)


def _unsafe_yaml(ctx: Ctx) -> list[str]:
    marker = ctx.tmp / "PWNED"
    return ctx.config(f"method: !!python/object/apply:os.system ['touch {marker}']\n")


def _not_writable_out(ctx: Ctx) -> list[str]:
    blocker = ctx.file("a-regular-file", "x")  # a folder below a regular file fails for root too
    argv = ctx.run()
    argv[argv.index("--out") + 1] = f"{blocker}/runs"
    return argv


# ---- the matrix -----------------------------------------------------------------------------

CASES: list[Case] = [
    # spec files
    Case("yaml-malformed", lambda c: c.config("model: {name_or_path: x\ntrain: [1, 2\n"), "malformed YAML"),
    Case("yaml-unsafe-tag", _unsafe_yaml, "could not determine a constructor", check=_no_marker),
    Case("yaml-alias-bomb", lambda c: c.config("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))), "aliases expand to more than"),
    Case("yaml-duplicate-key", lambda c: c.config("train:\n  epochs: 1\ntrain:\n  lr: 0.1\n"), "duplicate key 'train'"),
    Case("spec-env-secret", lambda c: c.config("env: [HF_TOKEN]\nmethods: [{method: {name: lora}}]\ndefaults: {model: {revision: 'x-${HF_TOKEN}'}}\n"), "looks like a credential"),
    Case("yaml-not-mapping", lambda c: c.config("- lora\n- full\n"), "must hold a mapping"),
    Case("yaml-empty", lambda c: c.config(""), "is empty"),
    Case("config-missing", lambda c: ["run", "--config", str(c.tmp / "nope.yaml")], "does not exist"),
    Case("unknown-top-key", lambda c: c.config("trian:\n  epochs: 1\n"), "unknown key 'trian'. Did you mean: train"),
    Case("unknown-nested-key", lambda c: c.config("train:\n  epoch: 1\n"),
         "unknown key 'train.epoch'. Did you mean: epochs"),
    Case("unknown-method-key", lambda c: c.run("--set", "method.alpah=32"),
         "unknown key 'method.alpah' for method 'lora'. Did you mean: alpha"),
    Case("section-not-mapping", lambda c: c.config("train: 5\n"), "'train' must be a mapping"),
    Case("wrong-type-lr", lambda c: c.run("--set", "train.lr=fast"), "invalid value for 'train.lr'"),
    Case("wrong-type-epochs", lambda c: c.config("train:\n  epochs: three\n"), "invalid value for 'train.epochs'"),
    Case("lr-zero", lambda c: c.run("--set", "train.lr=0"), "invalid value for 'train.lr': Input should be greater than 0"),
    Case("lr-negative", lambda c: c.run("--set", "train.lr=-2e-4"), "invalid value for 'train.lr'"),
    Case("epochs-zero", lambda c: c.run("--set", "train.epochs=0"), "invalid value for 'train.epochs'"),
    Case("batch-size-negative", lambda c: c.run("--set", "train.batch_size=-8"), "invalid value for 'train.batch_size'"),
    Case("rank-zero", lambda c: c.run("--set", "method.r=0"), "'method.r': must be a positive number"),
    Case("rank-negative", lambda c: c.run("--set", "method.r=-4"), "'method.r': must be a positive number"),
    Case("lr-infinite", lambda c: c.run("--set", "train.lr=.inf"), "invalid value for 'train.lr': Input should be a finite number"),
    Case("rank-fractional", lambda c: c.run("--set", "method.r=2.5"), "'method.r': must be a positive integer"),
    Case("dropout-out-of-range", lambda c: c.run("--set", "method.dropout=1.5"), "'method.dropout': must be a number in [0, 1)"),
    Case("max-length-zero", lambda c: c.run("--set", "data.max_length=0"), "invalid value for 'data.max_length'"),
    Case("unknown-task", lambda c: c.run("--set", "task=regression"), "invalid value for 'task'"),
    Case("unknown-method", lambda c: c.run(method="lorra"), "Unknown method 'lorra'. Did you mean: lora"),
    Case("unknown-family", lambda c: c.run("--set", "model.family=bertt"), "Unknown model family 'bertt'. Did you mean: bert"),
    Case("run-name-too-long", lambda c: c.run("--set", "name=" + "x" * 101), "up to 100 characters"),
    Case("run-name-escapes", lambda c: c.run("--set", "name=../../outside"), "run name may hold only"),
    Case("device-cuda-absent", lambda c: c.run("--set", "train.device=cuda"), "no CUDA device", patch=_no_cuda),
    # the command line
    Case("set-no-equals", lambda c: c.run("--set", "train.lr"), "malformed --set 'train.lr': expected KEY=VALUE"),
    Case("set-empty-key", lambda c: c.run("--set", "train..lr=1"), "malformed --set 'train..lr=1': empty key"),
    Case("set-bad-yaml", lambda c: c.run("--set", "train.lr=[1"), "value is not valid YAML"),
    Case("set-into-scalar", lambda c: c.run("--set", "model.name_or_path.x=1"), "'name_or_path' is not a section"),
    Case("n-train-zero", lambda c: c.run("--n-train", "0"), "Invalid value for '--n-train'"),
    Case("unknown-option", lambda c: ["run", "--methd", "lora"], "No such option '--methd'. (Did you mean one of: '--method'"),
    Case("unknown-command", lambda c: ["rnu"], "No such command 'rnu'"),
    # models
    Case("model-missing", lambda c: c.run(model=c.tmp / "no-such-model"), "does not exist or is not a folder"),
    Case("model-is-file", lambda c: c.run(model=c.file("model.txt", "hi")), "does not exist or is not a folder"),
    Case("model-no-config", lambda c: c.run(model=c.model_copy("m", drop=("config.json",))), "has no config.json"),
    Case("model-config-not-json", lambda c: c.run(model=_broken_config(c)), "is not readable JSON"),
    Case("model-no-weights", lambda c: c.run(model=c.model_copy("m", drop=("model.safetensors",))),
         "holds no weights", record="model"),
    Case("model-corrupt-safetensors", lambda c: c.run(model=_corrupt_weights(c)), "corrupt weights file",
         record="model"),
    Case("model-pickle-only", lambda c: c.run(model=_pickle_only(c)), "only pickle weights", record="model"),
    Case("model-remote-code", lambda c: c.run(model=_remote_code_model(c)), "needs its own Python code to load, and model.trust_remote_code is false",
         record="model", check=_no_marker),
    Case("partial-too-many-layers", lambda c: c.run("--set", "method.layers=5", method="partial"),
         "method.layers=5 but the model has only 2 layers", record="spec"),
    Case("target-modules-match-nothing", lambda c: c.run("--set", "method.target_modules=[nonexistent_proj]"),
         "target modules matched nothing", record="model"),
    Case("method-family-mismatch", lambda c: c.run(method="prefix_tuning"),
         "method 'prefix_tuning' does not apply to encoder models (bert)"),
    Case("task-family-mismatch", lambda c: c.run("--set", "task=summarization", train=_dialogues(c),
                                                 eval_=_dialogues(c)),
         "task 'summarization' needs a seq2seq model", record="spec"),
    Case("retention-seq2seq", lambda c: c.run("--set", "task=summarization", "--set", f"retention.file={c.eval}"),
         "retention: is not supported for task 'summarization'"),
    Case("packing-wrong-task", lambda c: c.run("--set", "task=summarization", "--set", "train.packing=true"),
         "train.packing is built for task 'classification', not 'summarization'"),
    Case("packing-prompt-method", lambda c: c.run("--set", "train.packing=true", method="prompt_tuning"),
         "prompt_tuning adds virtual tokens", record="spec"),
    Case("prompt-masking-truncated", lambda c: c.run("--set", "task=instruction", "--set", "data.max_length=2",
                                                     model=_tiny_gpt2(c), train=_instructions(c),
                                                     eval_=_instructions(c)),
         "4 of 4 training examples have no response token carrying loss", record="preflight"),
    Case("qlora-without-bitsandbytes", lambda c: c.run(method="qlora"), "needs the bitsandbytes package",
         record="model", patch=_hide_bitsandbytes),
    # data
    Case("data-missing", lambda c: c.run(train=c.tmp / "nope.csv"), "nope.csv' does not exist"),
    Case("data-empty-file", lambda c: c.run(train=c.file("empty.csv", "")), "is empty"),
    Case("data-header-only", lambda c: c.run(train=c.file("header.csv", "text,label\n")), "has no rows"),
    Case("data-is-folder", lambda c: c.run(train=c.tmp), "is a folder, not a file"),
    Case("data-unsupported-type", lambda c: c.run(train=c.file("train.txt", "text,label\n")),
         "unsupported data file type '.txt'"),
    Case("data-no-such-column", lambda c: c.run("--set", "data.text_column=sentence"),
         "has no text column 'sentence'"),
    Case("data-no-label-column", lambda c: c.run("--set", "data.label_column=sentiment"),
         "has no label column 'sentiment'"),
    Case("data-mixed-label-types", lambda c: c.run(train=_csv(c, "mixed.csv", [*_GOOD, ("meh", "positive")])),
         "mixes integer and string labels"),
    Case("data-label-types-differ", lambda c: c.run(train=_csv(c, "named.csv", [("good", "pos"), ("bad", "neg")])),
         "different label types"),
    Case("data-label-not-declared", lambda c: c.run(
        "--set", "data.labels=[negative,positive]",
        train=_csv(c, "n.csv", [("good", "positive"), ("bad", "negative"), ("so-so", "neutral")]),
        eval_=_csv(c, "e.csv", [("fine", "positive"), ("awful", "negative")])),
        "label 'neutral', which is not in the declared label set"),
    Case("data-one-class", lambda c: c.run(train=_csv(c, "one.csv", [("a", 1), ("b", 1), ("c", 1)]),
                                           eval_=_csv(c, "one-eval.csv", [("d", 1)])), "has only one class"),
    Case("data-not-utf8", lambda c: c.run(train=c.file("latin1.csv", b"text,label\ncaf\xe9 ok,0\nbad,1\n")),
         "is not valid UTF-8"),
    Case("data-empty-text", lambda c: c.run(train=_csv(c, "blank.csv", [*_GOOD, ("   ", 1)])), "has an empty text"),
    Case("eval-class-absent-from-train", lambda c: c.run(eval_=_csv(c, "e3.csv", [*_GOOD, ("odd", 2)])),
         "class 2 that never occurs in train"),
    Case("data-train-not-given", lambda c: ["run", "--model", str(c.model), "--out", str(c.out)],
         "needs data.train and data.eval"),
    # output and the machine
    Case("out-not-writable", _not_writable_out, "is not writable"),
    Case("disk-full-during-save", lambda c: c.run(), "no space left on device", code=1, record="disk_full",
         patch=_disk_full_on_save),
    # failures during training
    Case("nan-loss", lambda c: c.run("--set", "train.lr=1e6", method="full"), "loss became nan", code=1,
         record="nan_loss"),
    Case("out-of-memory", lambda c: c.run(), "out of memory during training", code=1, record="oom",
         patch=_raise_in_forward(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))),
    Case("ctrl-c", lambda c: c.run(), "interrupted", code=130, record="canceled",
         patch=_raise_in_forward(KeyboardInterrupt())),
]

MESSAGE = re.compile(r"^peftbench: (error|interrupted)")


def _records(out: Path) -> list[dict]:
    found = []
    for f in sorted(out.rglob("*.json")) if out.exists() else []:
        if f.name == "result.json" or f.name.startswith("failed-"):
            found.append(json.loads(f.read_text()))  # every record parses
    return found


@pytest.fixture(scope="module")
def files(tiny_bert: Path, sentiment_files: tuple[Path, Path]) -> tuple[Path, Path, Path]:
    return tiny_bert, *sentiment_files


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, files: tuple[Path, Path, Path], tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    model, train, eval_ = files
    ctx = Ctx(tmp=tmp_path, model=model, train=train, eval=eval_, out=tmp_path / "runs")
    argv = case.argv(ctx)
    if case.patch:
        case.patch(monkeypatch, ctx)
    result = CliRunner().invoke(cli, argv, prog_name="peftbench")

    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}\n{result.output}"
    assert result.exit_code == case.code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if MESSAGE.match(line)]
    assert len(lines) == 1, result.stderr
    assert case.phrase.lower() in lines[0].lower(), lines[0]
    records = _records(ctx.out)
    assert all(r["status"] != "success" for r in records)
    if case.record:
        assert [r["error"]["type"] for r in records] == [case.record]
        assert records[0]["status"] == ("canceled" if case.record == "canceled" else "failed")
    if case.check:
        case.check(ctx)


def _doc_rows() -> dict[str, dict[str, str]]:
    rows = {}
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = {"case": cells[1], "input": cells[2], "message": cells[3], "exit": cells[4]}
    return rows


def test_docs_match_cases() -> None:
    """docs/errors.md lists exactly these cases, with their exit codes and key phrases."""
    rows = _doc_rows()
    assert sorted(rows) == sorted(c.id for c in CASES)
    assert len(rows) >= 30
    for c in CASES:
        assert rows[c.id]["exit"] == str(c.code), c.id
        assert c.phrase.lower() in rows[c.id]["message"].replace("\\|", "|").lower(), c.id


def test_every_test_a_docs_row_names_exists() -> None:
    """The rows of docs/errors.md outside the matrix name the test that checks each: every test
    function and file named there exists, so a row cannot point at a test that was renamed away."""
    import re

    tests = Path(__file__).resolve().parent
    defined = {m for f in tests.glob("test_*.py") for m in re.findall(r"^def (test_\w+)", f.read_text(), re.M)}
    named: set[str] = set()
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[0].startswith("`"):
            last = cells[-1]
            named |= set(re.findall(r"\b(test_\w+?)(?:\[|`|$)", last))
            for path in re.findall(r"(tests/test_\w+\.py)", last):
                assert (tests.parent / path).is_file(), (cells[0], path)
    assert len(named) >= 40
    assert sorted(named - defined) == []
