"""The fuzz harness: generated spec files, sweep files, data files and command lines go through the
CLI entry point (`peftbench.cli.app:cli`, in process) and must end in exit 0 or 2 with a one-line
message on error: never "internal error", a traceback, or a run failed for an unexpected reason.

Two profiles. The default one (deterministic, a few dozen inputs per target, about a minute on two
cores) runs in the default test run. The long one (random, hundreds of inputs per target, plus a real
sweep) is marked `fuzz` and deselected by default:

    .venv/bin/python -m pytest -q -m fuzz tests/test_fuzz_cli.py      # or: make test-fuzz

The API-level properties of spec parsing and sweep expansion are in tests/test_spec_fuzz.py and
tests/test_sweep_fuzz.py; this file reuses their spec strategies and drives the commands themselves.
Only data that passes validation trains: the tiny BERT, one step. The generated data files are
in tests/fuzz_data.py.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from fuzz_data import VALID_ROWS, data_bytes, data_files
from test_spec_fuzz import overrides, spec_dicts, values

pytestmark = pytest.mark.reliability

# The default profile is derandomized: the same inputs every run, so its time and result are stable.
QUICK = {"deadline": None, "derandomize": True, "database": None, "suppress_health_check": list(HealthCheck),
         "phases": [Phase.explicit, Phase.generate, Phase.shrink]}
LONG = {"deadline": None, "suppress_health_check": list(HealthCheck)}
# Failure reasons a training run may legitimately end with (exit 1); anything else is a bug.
EXPECTED_FAILURES = {"nan_loss", "oom", "disk_full", "canceled", "io"}
ONE_STEP = ["--quiet", "--set", "train.max_steps=1", "--set", "train.epochs=1", "--set", "train.num_threads=1",
            "--set", "model.dtype=float32", "--set", "data.max_length=16", "--set", "train.batch_size=4"]
MAX_MESSAGE = 3000  # characters in the one error line: every problem of a spec, no whole input quoted


# ---- the check every input goes through --------------------------------------------------------------


def invoke(args: list[str], out: Path | None = None) -> Any:
    """Run the CLI on `args` from `out`'s parent folder (relative defaults such as `runs` land there);
    fail unless it ends cleanly (see `assert_clean`)."""
    from click.testing import CliRunner

    from peftbench.cli.app import cli

    with contextlib.chdir(out.parent if out is not None else tempfile.gettempdir()):
        result = CliRunner().invoke(cli, args, catch_exceptions=True)
    assert_clean(result, args, out)
    return result


def assert_clean(result: Any, args: list[str], out: Path | None) -> None:
    """Exit 0 or 2 (or 1 for a run that failed for an expected reason), no internal error or
    traceback, and exactly one `peftbench: error:` line, of readable length, when it fails."""
    text = result.output + (result.stderr if result.stderr not in result.output else "")
    where = f"args={args!r}\noutput tail:\n{text[-1500:]}"
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"uncaught {type(exc).__name__}: {exc}\n{where}"
    assert "internal error" not in text and "Traceback" not in text, where
    assert result.exit_code in (0, 1, 2), where
    if result.exit_code == 1:
        reasons = failure_reasons(out)
        assert reasons and reasons <= EXPECTED_FAILURES, f"exit 1 with failure reasons {reasons}\n{where}"
    if result.exit_code:
        errors = [line for line in result.stderr.splitlines() if line.startswith("peftbench: error:")]
        assert len(errors) == 1, where
        assert len(errors[0]) <= MAX_MESSAGE, f"{len(errors[0])}-character message\n{where}"


def failure_reasons(out: Path | None) -> set[str]:
    """The error types of the failed runs recorded under `out`."""
    if out is None or not out.is_dir():
        return set()
    reasons = set()
    for f in out.rglob("result.json"):
        rec = json.loads(f.read_text(encoding="utf-8"))
        if rec.get("status") != "success":
            reasons.add(str((rec.get("error") or {}).get("type")))
    return reasons


def in_temp(fn: Callable[[Path], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as d:
        fn(Path(d))


# ---- shared inputs: the tiny model and a small valid data pair ---------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny BERT and a small generated train/eval pair (valid data)."""
    from peftbench.data.synthetic import generate, write_csv

    root = tmp_path_factory.mktemp("fuzz-data")
    train, eval_ = generate(40, 16, seed=3)
    return {"model": str(tiny_bert), "train": str(write_csv(train, root / "train.csv")),
            "eval": str(write_csv(eval_, root / "eval.csv"))}


def base_spec(tiny: dict[str, str]) -> dict[str, Any]:
    return {"model": {"name_or_path": tiny["model"], "dtype": "float32"},
            "data": {"train": tiny["train"], "eval": tiny["eval"], "max_length": 16},
            "method": {"name": "lora"}, "train": {"epochs": 1, "max_steps": 1, "batch_size": 4, "num_threads": 1}}


# ---- spec files: `peftbench run --config` ------------------------------------------------------------

YAML_TEXTS = st.one_of(
    st.text(max_size=60),
    st.sampled_from([
        "", "5", "- a\n- b", "null", "a: 1\na: 2\n", "model: {name_or_path: x}\nmodel: {}\n",
        "a: &a [*a]", "a: !!python/object/apply:os.system [echo]", "x: &x [1]\ny: &y [*x, *x, *x, *x]\n",
        "model: [1, 2", "\ufeffmethod: {name: lora}", "method:\n\tname: lora", "runs: 3", "models: 5",
        "methods: [lora]\nmodels: [{name: t5}]", "train: {lr: ${HOME}}", "data: {train: \"a\\0b\"}",
    ]),
)


def check_spec_yaml(tiny: dict[str, str], text: str) -> None:
    def go(d: Path) -> None:
        (d / "spec.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        invoke(["run", "--config", str(d / "spec.yaml"), "--out", str(d / "runs"), "--quiet"], d / "runs")

    in_temp(go)


def dump(data: Any) -> str:
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return json.dumps(data, default=str)


def check_spec_dict(tiny: dict[str, str], data: Any, items: list[str], on_base: bool) -> None:
    """A generated spec (alone, or merged over the valid base spec) and `--set` items."""
    if on_base and isinstance(data, dict):
        base = base_spec(tiny)
        for k, v in data.items():
            base[k] = {**base[k], **v} if isinstance(base.get(k), dict) and isinstance(v, dict) else v
        data = base

    def go(d: Path) -> None:
        (d / "spec.yaml").write_text(dump(data), encoding="utf-8", errors="surrogatepass")
        sets = [a for item in items for a in ("--set", item)]
        invoke(["run", "--config", str(d / "spec.yaml"), "--out", str(d / "runs"), "--quiet", *sets], d / "runs")

    in_temp(go)


@settings(max_examples=40, **QUICK)
@given(YAML_TEXTS)
def test_spec_yaml_text(tiny: dict[str, str], text: str) -> None:
    check_spec_yaml(tiny, text)


@pytest.mark.fuzz
@settings(max_examples=1000, **LONG)
@given(YAML_TEXTS)
def test_spec_yaml_text_long(tiny: dict[str, str], text: str) -> None:
    check_spec_yaml(tiny, text)


@settings(max_examples=30, **QUICK)
@given(spec_dicts, st.lists(overrides, max_size=2), st.booleans())
@example({"method": {"name": "lora", "r": 2}}, [], True)  # a valid spec: one training step
@example({"data": {"max_length": 100_000}}, [], True)
@example({"train": {"seed": -1}}, [], True)
@example({"train": {"batch_size": True}}, [], True)
@example({"method": {"target_modules": 5}}, [], True)
@example({"method": {"": None, "0": None, "00": None}}, [], True)  # once a 2,000-character message
@example({"model": {"": None, "0": None, "00": None}, "train": {"": None, "epochs": None}}, [], False)
@example({}, ["method.rank_pattern="], True)  # once an AttributeError inside peft, exit 1
@example({}, ["method.rank_pattern=5"], True)
def test_spec_dicts(tiny: dict[str, str], data: Any, items: list[str], on_base: bool) -> None:
    check_spec_dict(tiny, data, items, on_base)


@pytest.mark.fuzz
@settings(max_examples=400, **LONG)
@given(spec_dicts, st.lists(overrides, max_size=3), st.booleans())
def test_spec_dicts_long(tiny: dict[str, str], data: Any, items: list[str], on_base: bool) -> None:
    check_spec_dict(tiny, data, items, on_base)


# ---- sweep files: `peftbench sweep --dry-run`, and a real sweep in the long profile ------------------

SWEEP_KEYS = ["defaults", "models", "tasks", "methods", "grid", "seeds", "per_model", "per_method", "max_runs",
              "timeout_s", "name", "axes", "metods"]
GRID_KEYS = ["method.r", "train.lr", "train.seed", "method.alpha", "data.max_length", "model.dtype", "x.y", "train"]
methods_entry = st.one_of(st.sampled_from(["lora", "full", "ia3", "dora", "qlora", "nope", ""]),
                          st.fixed_dictionaries({"name": st.sampled_from(["lora", "t5", "x"])},
                                                optional={"method": values, "train": values}))
models_entry = st.one_of(st.sampled_from(["embedded", "tiny", "", "../x"]),
                         st.fixed_dictionaries({"name": st.sampled_from(["t5", "bert", "m"])},
                                               optional={"tiny": st.fixed_dictionaries({"family": st.sampled_from(
                                                   ["t5", "bert", "llama", "nope"])}), "model": values,
                                                   "path": values}))
sweep_dicts = st.one_of(
    st.dictionaries(st.sampled_from(SWEEP_KEYS), values, max_size=5),
    st.fixed_dictionaries({"methods": st.lists(methods_entry, max_size=3)}, optional={
        "models": st.lists(models_entry, max_size=2),
        "grid": st.dictionaries(st.sampled_from(GRID_KEYS), st.lists(values, max_size=3), max_size=2),
        "seeds": st.one_of(st.lists(st.integers(-2, 3), max_size=3), values),
        "max_runs": st.one_of(st.integers(-1, 5), values), "timeout_s": values,
        "tasks": st.lists(st.sampled_from(["classification", "summarization", "nope"]), max_size=2)}),
)
SWEEP_FLAGS = st.lists(st.sampled_from([["--model-override", "tiny"], ["--model-override", ""],
                                        ["--set", "train.lr=0"], ["--set", "method.r=2"], ["--set", "=x"],
                                        ["--timeout", "0"], ["--timeout", "1"], ["--retry-failed"]]), max_size=2)


def check_sweep(tiny: dict[str, str], data: Any, flags: list[list[str]]) -> None:
    if isinstance(data, dict) and "defaults" not in data:
        data = {"defaults": base_spec(tiny), **data}

    def go(d: Path) -> None:
        (d / "sweep.yaml").write_text(dump(data), encoding="utf-8", errors="surrogatepass")
        invoke(["sweep", "--config", str(d / "sweep.yaml"), "--dry-run", "--out", str(d / "runs"),
                *[a for f in flags for a in f]], d / "runs")

    in_temp(go)


@settings(max_examples=40, **QUICK)
@given(sweep_dicts, SWEEP_FLAGS)
@example({"methods": ["lora"], "models": [{"name": "t5", "tiny": {"family": "t5"}}]}, [])
@example({"methods": [{"name": "lora", "method": [None]}]}, [])  # once an internal AttributeError
@example({"methods": ["lora"], "grid": {"method.r": [1, 2]}, "seeds": [1, 2]}, [["--model-override", "tiny"]])
def test_sweep_dry_run(tiny: dict[str, str], data: Any, flags: list[list[str]]) -> None:
    check_sweep(tiny, data, flags)


@pytest.mark.fuzz
@settings(max_examples=600, **LONG)
@given(sweep_dicts, SWEEP_FLAGS)
def test_sweep_dry_run_long(tiny: dict[str, str], data: Any, flags: list[list[str]]) -> None:
    check_sweep(tiny, data, flags)


@pytest.mark.fuzz
@settings(max_examples=4, **LONG)
@given(st.lists(st.sampled_from(["lora", "ia3", "full", "nope"]), min_size=1, max_size=2, unique=True),
       st.lists(st.integers(0, 3), min_size=1, max_size=2, unique=True))
def test_real_sweep_on_the_tiny_model(tiny: dict[str, str], methods: list[str], seeds: list[int]) -> None:
    """A real sweep (each run in its own process) ends cleanly: exit 0, 1 for failed runs, or 2."""
    data = {"defaults": base_spec(tiny), "methods": methods, "seeds": seeds}

    def go(d: Path) -> None:
        (d / "sweep.yaml").write_text(dump(data), encoding="utf-8")
        invoke(["sweep", "--config", str(d / "sweep.yaml"), "--out", str(d / "runs"), "--quiet"], d / "runs")

    in_temp(go)


# ---- data files: `peftbench run --data-train/--data-eval` --------------------------------------------

def check_data(tiny: dict[str, str], train: dict[str, Any], eval_: dict[str, Any] | None) -> None:
    def go(d: Path) -> None:
        paths = []
        for name, spec in (("train", train), ("eval", eval_ or train)):  # no eval: a copy of the train file
            path = d / f"{name}.{spec['format']}"
            path.write_bytes(data_bytes(spec))
            paths.append(str(path))
        invoke(["run", "--model", tiny["model"], "--data-train", paths[0], "--data-eval", paths[1], "--method", "lora",
                "--out", str(d / "runs"), *ONE_STEP], d / "runs")

    in_temp(go)


@settings(max_examples=40, **QUICK)
@given(data_files, st.one_of(st.none(), data_files))
@example({"format": "csv", "columns": ("text", "label"), "rows": VALID_ROWS, "encoding": "utf-8"}, None)
@example({"format": "csv", "columns": ("text", "label"), "rows": [("a", 0), ("b", 999)] * 4, "encoding": "utf-8"},
         None)
@example({"format": "jsonl", "columns": ("text", "label"), "rows": [("a", 0.5), ("b", 1)] * 4, "encoding": "utf-8"},
         None)
@example({"format": "csv", "columns": ("text", "label"), "rows": VALID_ROWS, "encoding": "latin-1"},
         {"format": "csv", "columns": ("text", "label"), "rows": [("é", "pos"), ("b", "neg")], "encoding": "latin-1"})
def test_data_files(tiny: dict[str, str], train: dict[str, Any], eval_: dict[str, Any] | None) -> None:
    check_data(tiny, train, eval_)


@pytest.mark.fuzz
@settings(max_examples=400, **LONG)
@given(data_files, st.one_of(st.none(), data_files))
def test_data_files_long(tiny: dict[str, str], train: dict[str, Any], eval_: dict[str, Any] | None) -> None:
    check_data(tiny, train, eval_)


# ---- command lines -----------------------------------------------------------------------------------

# Commands whose valid use is cheap or impossible from these words (no demo, profile, probe or tune:
# a lucky valid command line would run for minutes).
COMMANDS = ["run", "sweep", "ls", "report", "eval", "merge", "generate", "disagreements", "methods", "nope", ""]
WORDS = ["--out", "--model", "--data-train", "--data-eval", "--method", "--n-train", "--n-eval", "--set", "--run",
         "--runs", "--methods", "--epochs", "--lr", "--batch-size", "--max-length", "--seed", "--config", "--dry-run", "--force", "--status", "--baseline", "--metric", "--prefer", "--target-fraction",
         "--min-accuracy", "--max-perplexity", "--model-override", "--timeout", "--help", "--", "-",
         "", "0", "-1", "1", "nan", "inf", "1e999", "x", "lora", "full", "tiny", "embedded", "method.r=abc",
         "a=b", "=", "train.lr=", "{FILE}", "{DIR}", "{MISSING}", "{BADYAML}", "é", "a b", "../..", "runs"]


def check_argv(words: list[str]) -> None:
    def go(d: Path) -> None:
        (d / "file.txt").write_text("not a folder\n")
        (d / "bad.yaml").write_text("a: [1\n")
        (d / "dir").mkdir()
        subs = {"{FILE}": str(d / "file.txt"), "{DIR}": str(d / "dir"), "{MISSING}": str(d / "missing"),
                "{BADYAML}": str(d / "bad.yaml"), "runs": str(d / "runs")}
        args = [subs.get(w, w) for w in words]
        if not args:  # `peftbench` alone prints its help (exit 2, click's convention): nothing to check
            return
        if "--out" not in args:
            args += ["--out", str(d / "out")] if args and args[0] in ("run", "sweep", "report", "merge") else []
        if args and args[0] == "sweep" and "--dry-run" not in args:
            args.append("--dry-run")
        invoke(args, d / "runs")

    in_temp(go)


argvs = st.tuples(st.sampled_from(COMMANDS), st.lists(st.sampled_from(WORDS), max_size=6)).map(
    lambda t: ([t[0]] if t[0] else []) + t[1])


@settings(max_examples=60, **QUICK)
@given(argvs)
@example(["--out", "x"])  # an unknown option before the command: once click's multi-line usage text
@example(["report", "{DIR}"])
@example(["ls", "{FILE}"])
@example(["run", "--config", "{BADYAML}"])
def test_command_lines(words: list[str]) -> None:
    check_argv(words)


@pytest.mark.fuzz
@settings(max_examples=1500, **LONG)
@given(argvs)
def test_command_lines_long(words: list[str]) -> None:
    check_argv(words)


# ---- the harness reaches training ---------------------------------------------------------------------


def test_the_base_inputs_train(tiny: dict[str, str], tmp_path: Path) -> None:
    """The valid spec and data the generators start from pass validation and train one step, so the
    generated inputs that are refused are refused for what was generated, not for the base."""
    (tmp_path / "spec.yaml").write_text(dump(base_spec(tiny)))
    invoke(["run", "--config", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "a"), "--quiet"], tmp_path / "a")
    (tmp_path / "train.csv").write_bytes(data_bytes({"format": "csv", "columns": ("text", "label"),
                                                     "rows": VALID_ROWS, "encoding": "utf-8"}))
    invoke(["run", "--model", tiny["model"], "--data-train", str(tmp_path / "train.csv"),
            "--data-eval", str(tmp_path / "train.csv"),
            "--method", "lora", "--out", str(tmp_path / "b"), *ONE_STEP], tmp_path / "b")
    for out in ("a", "b"):
        records = [json.loads(f.read_text()) for f in (tmp_path / out).rglob("result.json")]
        assert [r["status"] for r in records] == ["success"]
        assert records[0]["train"]["steps"] == 1


def test_each_list_of_valid_keys_is_stated_once(tiny: dict[str, str], tmp_path: Path) -> None:
    """Several unknown keys of one section give one error line that lists that section's valid keys once
    (each unknown key once repeated the whole list: 2,000 characters for three keys)."""
    spec = base_spec(tiny)
    spec["method"].update({"rr": 1, "alpah": 2, "dropuot": 0.1})
    spec["train"].update({"lrr": 1, "sed": 2})
    (tmp_path / "spec.yaml").write_text(dump(spec))
    result = invoke(["run", "--config", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "runs")], tmp_path / "runs")
    line = result.stderr.strip().splitlines()[-1]
    assert result.exit_code == 2 and line.startswith("peftbench: error: 5 problems in the spec")
    for key in ("'method.rr'", "'method.alpah'", "'method.dropuot'", "'train.lrr'", "'train.sed'"):
        assert key in line
    assert line.count("use_rslora") == 1 and line.count("eval_batch_size") == 1  # each section's valid keys
