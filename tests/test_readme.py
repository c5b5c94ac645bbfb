"""Every command in the README runs as written.

The README's shell blocks are what a newcomer copies. The default test runs them in a fresh folder with
`peftbench` replaced by a shell function that only records its arguments, and parses each call with the
real command line (options, types, choices): a renamed option or command fails here in seconds. The slow
test runs the blocks for real, with a tiny random BERT in place of the bundled model. `make` lines are the
install and are left out of both.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from conftest import REPO

README = REPO / "README.md"


def shell_blocks() -> list[str]:
    """The README's ```bash blocks, without their `make` lines."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    return ["\n".join(line for line in block.splitlines() if not line.lstrip().startswith("make ")) for block in blocks]


def run_blocks(folder: Path, prelude: str = "", replace: dict[str, str] | None = None,
               timeout: int = 60) -> subprocess.CompletedProcess[str]:
    """Run the README's shell blocks in order, in `folder`, stopping at the first failure; `peftbench`
    and `python` are this interpreter's."""
    script = "\n".join(shell_blocks())
    for old, new in (replace or {}).items():
        script = script.replace(old, new)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", prelude + script], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=timeout)


def parse(args: list[str]) -> str:
    """Parse one `peftbench ...` call with the real command line without running it; its command name."""
    from peftbench.cli.app import cli

    ctx = click.Context(cli, info_name="peftbench")  # the README passes no options before the command
    name, command, rest = cli.resolve_command(ctx, list(args))
    assert command is not None, args
    command.make_context(name, rest, parent=ctx).close()
    return str(name)


RECORD_CALLS = 'peftbench() { printf "%s\\037" "$@" >> "$PWD/.calls"; printf "\\036" >> "$PWD/.calls"; }\n'


def test_every_readme_command_parses_with_the_options_it_shows(tmp_path: Path) -> None:
    done = run_blocks(tmp_path, prelude=RECORD_CALLS)
    assert done.returncode == 0, done.stderr
    calls = [c.split("\x1f")[:-1] for c in (tmp_path / ".calls").read_text(encoding="utf-8").split("\x1e")[:-1]]
    names = []
    for args in calls:
        try:
            names.append(parse(args))
        except click.exceptions.ClickException as err:
            pytest.fail(f"README: `peftbench {' '.join(args)}` does not parse: {err.format_message()}")
    # The newcomer's path is all there: runs, a sweep, the report, the tools on saved runs.
    assert {"run", "sweep", "report", "ls", "eval"} <= set(names), names
    assert names.count("run") >= 3  # the loop over methods ran once per method
    assert (tmp_path / "train.csv").is_file() and (tmp_path / "eval.csv").is_file()  # the user-made data


def test_readme_stays_short_and_free_of_local_paths() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 160
    assert "../shared" not in text and "shared/data" not in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):  # every linked file exists
        if not target.startswith("http"):
            assert (REPO / target).exists(), target


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tiny_bert: Path, tmp_path: Path) -> None:
    done = run_blocks(tmp_path, replace={"--model embedded": f"--model {tiny_bert}",
                                         "name_or_path: embedded": f"name_or_path: {tiny_bert}"}, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    from peftbench.records.io import load_records

    runs = load_records(tmp_path / "runs")
    assert {r["method"] for r in runs if r["status"] == "success"} >= {"full", "lora", "ia3"}
    assert (tmp_path / "report" / "report.html").is_file()
    assert "next: peftbench report" in done.stdout
