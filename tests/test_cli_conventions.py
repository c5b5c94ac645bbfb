"""One convention across commands: every --help shows examples that parse, shared concepts carry
one option name, run folders are positional (old spellings still work with a note), `run` trains one
method, the training flags reach the record, and terminal output fits $COLUMNS."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from rich.cells import cell_len

from conftest import tiny_spec
from peftbench.cli.app import TOOLS, WORKFLOW, cli
from peftbench.records.io import atomic_write_json, read_record

# Concept -> (the option names every command uses for it, spellings no command may use instead).
CONCEPTS: dict[str, tuple[set[str], set[str]]] = {
    "spec file": ({"--config"}, {"--spec", "--spec-file", "--config-file", "--file", "-c"}),
    "methods": ({"--method", "--methods"}, {"--method-list", "-m"}),
    "out folder": ({"--out"}, {"--output", "--out-dir", "--output-dir", "--outdir", "-o"}),
    "run folders": (set(), {"--run", "--runs", "--run-dir", "--runs-dir"}),  # positional, never an option
    "seed": ({"--seed"}, {"--seeds", "--random-seed"}),
    "epochs": ({"--epochs"}, {"--num-epochs", "--n-epochs", "--epoch"}),
    "learning rate": ({"--lr"}, {"--learning-rate"}),
    "batch size": ({"--batch-size"}, {"--bs", "--batch", "--train-batch-size"}),
    "max length": ({"--max-length"}, {"--max-len", "--max-seq-length", "--seq-len"}),
    "model": ({"--model"}, {"--model-name", "--model-path", "--model-name-or-path"}),
    "overrides": ({"--set"}, {"--override", "--overrides"}),
    "quiet": ({"--quiet"}, {"-q", "--silent", "--no-progress"}),
    "eval data": ({"--data-eval"}, {"--eval-data", "--eval-file"}),
}
# Hidden options: the older spellings, kept as aliases that print a deprecation note.
DEPRECATED = {("eval", "--run"), ("merge", "--run"), ("generate", "--runs")}
# Commands that act on run folders take them as arguments.
RUN_FOLDER_COMMANDS = ("eval", "merge", "generate", "disagreements", "report", "ls")
# Commands with the training flags, and the commands that take methods.
TRAINING_FLAGS = {"--epochs", "--lr", "--batch-size", "--max-length", "--seed"}
METHOD_COMMANDS = ("run", "tune", "probe", "profile", "demo")
TWIN = "lora-0000000048"  # the copied record of the `runs` fixture, as a run with --max-length 48


def invoke(*args: str, columns: int | None = None) -> Any:
    env = {"COLUMNS": str(columns)} if columns else None
    return CliRunner().invoke(cli, list(args), prog_name="peftbench", env=env)


def examples(help_text: str) -> list[str]:
    """The commands under 'Examples:' of a --help text: lines that start with `peftbench` (after an
    environment assignment such as COLUMNS=200), backslash continuations joined, comments dropped."""
    lines = help_text.split("Examples:", 1)[1].splitlines() if "Examples:" in help_text else []
    commands: list[str] = []
    continued = False
    for line in (raw.strip() for raw in lines):
        if continued:
            commands[-1] = commands[-1][:-1] + " " + line
        elif re.match(r"^([A-Z_]+=\S+ )*peftbench ", line):
            commands.append(line)
        continued = bool(commands) and commands[-1].endswith("\\")
    words = [shlex.split(cmd, comments=True) for cmd in commands]
    return [" ".join(w[w.index("peftbench"):]) for w in words]


def parse(command_line: str) -> click.Context:
    """Parse an example as the CLI would (options, arguments, types), without running it."""
    _, name, *rest = shlex.split(command_line)
    return cli.commands[name].make_context(name, rest, parent=click.Context(cli, info_name="peftbench"))


# ---- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_help_shows_examples_that_parse_and_fit_80_columns(name: str) -> None:
    result = invoke(name, "--help", columns=80)
    assert result.exit_code == 0, result.output
    found = examples(result.output)
    assert found, f"`peftbench {name} --help` shows no example"
    assert all(cmd.startswith(f"peftbench {name}") for cmd in found), found
    for cmd in found:
        parse(cmd)
    tail = result.output.split("Examples:", 1)[1]
    assert max(cell_len(line) for line in tail.splitlines()) <= 80, tail


def test_top_level_help_groups_commands_by_workflow_with_whole_descriptions() -> None:
    result = invoke("--help", columns=100)
    assert result.exit_code == 0, result.output
    text = result.output
    sections = {title: re.findall(r"^  (\w+) ", text.split(f"{title}:", 1)[1].split("\n\n", 1)[0], re.M)
                for title in ("Workflow", "Tools")}
    assert sections == {"Workflow": list(WORKFLOW), "Tools": list(TOOLS)}
    assert set(WORKFLOW) | set(TOOLS) == set(cli.commands)
    listing = text.split("Workflow:", 1)[1].split("Examples:", 1)[0]
    assert "..." not in listing and "…" not in listing
    flat = " ".join(text.split())
    for name, command in cli.commands.items():
        assert command.short_help and " ".join(command.short_help.split()) in flat, name
    for cmd in examples(text):
        parse(cmd)


def test_shared_options_carry_one_name_across_commands() -> None:
    for name, command in cli.commands.items():
        params = [p for p in command.params if isinstance(p, click.Option)]
        for p in params:
            opts = set(p.opts) | set(p.secondary_opts)
            if p.hidden:
                assert {(name, o) for o in opts} <= DEPRECATED, (name, opts)
                assert "Deprecated" in (p.help or ""), (name, opts)
                continue
            for concept, (canonical, variants) in CONCEPTS.items():
                if opts & (canonical | variants):
                    assert opts == canonical, f"{name}: {sorted(opts)} for {concept}, expected {sorted(canonical)}"
    for name in RUN_FOLDER_COMMANDS:
        assert any(isinstance(p, click.Argument) for p in cli.commands[name].params), name
    for name in ("run", "sweep"):
        assert {o for p in cli.commands[name].params for o in p.opts} >= TRAINING_FLAGS, name
    for name in METHOD_COMMANDS:
        assert {"--method", "--methods"} <= {o for p in cli.commands[name].params for o in p.opts}, name
    spec_commands = [n for n, c in cli.commands.items() if any("--config" in p.opts for p in c.params)]
    assert set(spec_commands) == {"run", "sweep", "tune"}


# ---- one run and its copy: eval, merge, generate, ls --------------------------------------------


@pytest.fixture(scope="module")
def runs(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny lora run made by `peftbench run` with the training flags, and a copy of its record
    that differs only in data.max_length (as a second run with --max-length 48 would)."""
    out = tmp_path_factory.mktemp("conventions") / "runs"
    result = invoke("run", "--model", str(tiny_bert), "--data-train", str(sentiment_files[0]),
                    "--data-eval", str(sentiment_files[1]), "--methods", "lora", "--epochs", "2", "--lr", "2e-3",
                    "--batch-size", "8", "--max-length", "24", "--seed", "7", "--set", "train.max_steps=1",
                    "--set", "model.dtype=float32", "--quiet", "--out", str(out))
    assert result.exit_code == 0, result.output
    (first,) = [p.parent for p in out.glob("*/result.json")]
    record = read_record(first)
    assert result.stdout.splitlines()[-2:] == [f"record: {first / 'result.json'}", f"next: peftbench report {out}"]
    assert "accuracy" in result.stdout.splitlines()[0]
    twin = out / TWIN
    shutil.copytree(first, twin)
    record.update(run_id=twin.name)
    record["spec"]["data"]["max_length"] = 48
    atomic_write_json(twin / "result.json", record)
    return out


def first_run(runs: Path) -> Path:
    """The run folder `peftbench run` made (not its twin)."""
    return next(p.parent for p in sorted(runs.glob("*/result.json")) if p.parent.name != TWIN)


def test_training_flags_land_in_the_records_spec(runs: Path) -> None:
    spec = read_record(first_run(runs))["spec"]
    assert (spec["train"]["epochs"], spec["train"]["lr"], spec["train"]["batch_size"], spec["train"]["seed"],
            spec["data"]["max_length"], spec["method"]["name"]) == (2, 2e-3, 8, 7, 24, "lora")
    from peftbench.cli.options import TRAINING_FLAGS as KEYS

    assert set(KEYS.values()) == {"train.epochs", "train.lr", "train.batch_size", "data.max_length", "train.seed"}


def test_ls_shows_the_setting_two_runs_of_one_method_differ_in(runs: Path) -> None:
    result = invoke("ls", str(runs))
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[2:]}
    twin = rows.pop(TWIN)
    (first,) = rows.values()
    assert "max_length=48" in twin and "max_length=24" in first
    assert "lr=2e-3" in first and "seed=7" in first
    from peftbench.records.io import load_records
    from peftbench.reports.configs import group_configs

    labels = sorted(c.label for c in group_configs(load_records(runs)))
    assert labels == ["lora (max_length=24)", "lora (max_length=48)"]  # the report's labels, the same words


def test_eval_takes_the_run_folder_as_an_argument_and_run_as_a_deprecated_alias(runs: Path) -> None:
    run_dir = str(first_run(runs))
    new = invoke("eval", run_dir, "--json")
    assert new.exit_code == 0, new.output
    old = invoke("eval", "--run", run_dir, "--json")
    assert old.exit_code == 0, old.output
    assert json.loads(old.stdout) == json.loads(new.stdout)
    assert old.stderr.splitlines().count("peftbench: note: `eval --run RUN` is deprecated; use `eval RUN`") == 1
    assert "deprecated" not in new.stderr
    both = invoke("eval", run_dir, "--run", run_dir)
    assert both.exit_code == 2 and both.stderr.startswith("peftbench: error: give the run folder once")
    neither = invoke("eval")
    assert neither.exit_code == 2 and "missing the run folder" in neither.stderr


def test_merge_run_is_a_deprecated_alias(runs: Path, tmp_path: Path) -> None:
    run_dir = str(first_run(runs))
    old = invoke("merge", "--run", run_dir, "--out", str(tmp_path / "merged"))
    assert old.exit_code == 0, old.output
    assert "peftbench: note: `merge --run RUN` is deprecated; use `merge RUN`" in old.stderr
    assert (tmp_path / "merged" / "config.json").is_file()


def test_generate_runs_is_a_deprecated_alias(runs: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    folders = [str(first_run(runs)), str(runs / TWIN)]
    new = invoke("generate", *folders, "--prompts", str(prompts))
    old = invoke("generate", "--runs", ",".join(folders), "--prompts", str(prompts))
    # Classification runs do not generate: both spellings reach the same check on the same runs.
    assert new.exit_code == old.exit_code == 2 and new.stderr.splitlines()[-1] == old.stderr.splitlines()[-1]
    assert old.stderr.splitlines()[0] == ("peftbench: note: `generate --runs a,b` is deprecated; "
                                          "use `generate RUN [RUN...]`")
    both = invoke("generate", folders[0], "--runs", folders[1], "--prompts", str(prompts))
    assert both.exit_code == 2 and "give the run folders once" in both.stderr


# ---- run, sweep ------------------------------------------------------------------------------------


@pytest.mark.parametrize("methods", [["--methods", "lora,ia3"], ["--method", "lora", "--method", "ia3"]])
def test_run_refuses_two_methods_and_points_to_sweep_or_demo(methods: list[str], tiny_bert: Path,
                                                             sentiment_files: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    result = invoke("run", "--model", str(tiny_bert), "--data-train", str(sentiment_files[0]),
                    "--data-eval", str(sentiment_files[1]), *methods, "--out", str(tmp_path / "runs"))
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("peftbench: error: `peftbench run` trains one method, got 2: lora, ia3")
    assert "peftbench sweep --config FILE" in line and "peftbench demo --methods lora,ia3" in line
    assert not (tmp_path / "runs").exists()


@pytest.fixture()
def sweep_file(tmp_path: Path, tiny_bert: Path, sentiment_files: tuple[Path, Path]) -> Path:
    import yaml

    spec = tiny_spec(tiny_bert, sentiment_files, "lora", max_steps=1, num_threads=1)
    spec["data"].update(n_train=16, n_eval=16)
    doc = {"defaults": {k: v for k, v in spec.items() if k != "method"}, "methods": ["lora"]}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_sweep_file_as_argument_is_deprecated_and_given_twice_is_refused(sweep_file: Path) -> None:
    new = invoke("sweep", "--config", str(sweep_file), "--dry-run")
    old = invoke("sweep", str(sweep_file), "--dry-run")
    assert new.exit_code == old.exit_code == 0, old.output
    assert new.stdout == old.stdout and len(new.stdout.splitlines()) == 1
    assert old.stderr.splitlines()[0] == "peftbench: note: `sweep FILE` is deprecated; use `sweep --config FILE`"
    assert "deprecated" not in new.stderr
    both = invoke("sweep", str(sweep_file), "--config", str(sweep_file), "--dry-run")
    assert both.exit_code == 2 and both.stderr.startswith("peftbench: error: give the spec file once")
    neither = invoke("sweep", "--dry-run")
    assert neither.exit_code == 2 and "missing the spec file" in neither.stderr


def test_sweep_ends_with_the_dashboard_and_the_report_command(sweep_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "my runs"
    result = invoke("sweep", "--config", str(sweep_file), "--out", str(out), "--quiet", "--lr", "3e-3",
                    "--max-length", "20", "--seed", "5", "--set", "train.seed=6", columns=90)
    assert result.exit_code == 0, result.output
    (record,) = [read_record(p.parent) for p in out.glob("*/result.json")]
    assert (record["spec"]["train"]["lr"], record["spec"]["data"]["max_length"], record["spec"]["train"]["seed"]) \
        == (3e-3, 20, 6)  # the flags apply to every run, --set items after them
    lines = result.stdout.splitlines()
    assert lines[0] == "sweep: 1 runs: success 1" and lines[1] == "== classification =="
    assert any(line.startswith("lora") or " lora" in line for line in lines[2:-1])
    assert lines[-1] == f"next: peftbench report '{out}'"
    assert max(cell_len(line) for line in lines[:-1]) <= 90  # the command holds a long temporary path
    accuracy = record["metrics"]["accuracy"]
    assert re.search(rf"\[sweep\] {record['run_id']}: success in [0-9.]+s, accuracy={accuracy:.4f} \| done 1/1",
                     result.stderr), result.stderr


# ---- terminal width and number formats ------------------------------------------------------------


def test_numbers_have_one_format() -> None:
    from peftbench.records.fields import fmt_number

    assert [fmt_number(x) for x in (5e-5, 1e-4, 1e-3, 2.5e-4, 0.005, 0.01, 0.1, 16, 3.0, 1e6, 0.0)] == \
        ["5e-5", "1e-4", "1e-3", "2.5e-4", "5e-3", "0.01", "0.1", "16", "3", "1e6", "0"]


def test_methods_table_fits_the_terminal_with_one_lr_format() -> None:
    from peftbench.methods.base import METHODS

    wide = invoke("methods")
    narrow = invoke("methods", columns=100)
    assert wide.exit_code == narrow.exit_code == 0
    assert max(cell_len(line) for line in narrow.stdout.splitlines()) <= 100
    assert max(cell_len(line) for line in wide.stdout.splitlines()) > 100  # it had to wrap
    rows = {line.split()[0]: line.split()[1] for line in wide.stdout.splitlines()[2:]}
    assert set(rows) == set(METHODS.names())
    assert (rows["full"], rows["lora"], rows["ia3"]) == ("5e-5", "1e-3", "5e-3")


def test_report_dashboard_fits_the_terminal(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peftbench.records.io import load_records
    from peftbench.reports.analysis import analyze
    from peftbench.reports.sections import terminal_report
    from peftbench.reports.tables import Cell, terminal

    analysis = analyze(load_records(runs))
    wide = terminal_report(analysis)
    assert max(cell_len(line) for line in wide.splitlines()) > 100
    for width in (60, 100):
        monkeypatch.setenv("COLUMNS", str(width))
        text = terminal_report(analysis)
        assert max(cell_len(line) for line in text.splitlines()) <= width, text
        assert f"left out to fit {width} columns" in text
    unlimited = terminal([{"a": Cell("x" * 150), "b": Cell("y")}], width=0)
    assert unlimited.splitlines()[2] == "x" * 150 + "  y"


def test_report_takes_several_runs_folders_and_metric_floors_among_them(runs: Path, tmp_path: Path) -> None:
    for folder, run in ((tmp_path / "a", runs / TWIN),
                        (tmp_path / "b", first_run(runs))):
        shutil.copytree(run, folder / run.name)
    result = invoke("report", str(tmp_path / "a"), "--min-accuracy", "0.1", str(tmp_path / "b"),
                    "--out", str(tmp_path / "rep"))
    assert result.exit_code == 0, result.output
    analysis = json.loads((tmp_path / "rep" / "analysis.json").read_text())
    labels = sorted(c["label"] for c in analysis["tasks"]["classification"]["configs"])
    assert labels == ["lora (max_length=24)", "lora (max_length=48)"]
    missing = invoke("report", str(tmp_path / "a"), str(tmp_path / "nope"))
    assert missing.exit_code == 2 and f"runs folder '{tmp_path / 'nope'}' does not exist" in missing.stderr
