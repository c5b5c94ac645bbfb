"""Command line: a thin layer over the Python API.

Errors the user can fix print one line and exit non-zero (2 for spec/usage/data problems);
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from peftbench.cli.options import config_option, methods_option, split_names, training_options, training_sets
from peftbench.methods.base import SEED_METHODS  # names only: imports no torch


def usage_exit(err: click.UsageError) -> NoReturn:
    """A usage error as one line naming the help to read; exit 2."""
    where = f" (fix: see '{err.ctx.command_path} --help')" if err.ctx else ""
    click.echo(f"peftbench: error: {' '.join(err.format_message().split())}{where}", err=True)
    sys.exit(2)


# The top-level help lists commands in the order of a comparison, then the tools.
WORKFLOW = ("run", "sweep", "report")
TOOLS = ("eval", "generate", "merge", "disagreements", "ls", "methods", "tune", "probe", "profile", "demo")


class _Group(click.Group):
    """Turns peftbench errors into one line and an exit code, unless --debug; lists commands by
    workflow (run, sweep, report, then the tools), each with its whole one-line description."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        known = [*WORKFLOW, *TOOLS]
        return [n for n in known if n in self.commands] + sorted(set(self.commands) - set(known))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = [n for n in self.list_commands(ctx) if not self.commands[n].hidden]
        for title, group in (("Workflow", [n for n in names if n in WORKFLOW]),
                             ("Tools", [n for n in names if n not in WORKFLOW])):
            with formatter.section(title):
                formatter.write_dl([(n, self.commands[n].get_short_help_str(limit=10_000)) for n in group])

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Usage errors before the command (an unknown option) are one line too; `peftbench`
        alone still prints the help."""
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as err:
            if "--debug" in args:
                raise
            usage_exit(err)

    def invoke(self, ctx: click.Context) -> Any:
        from peftbench.runtime import signals

        signals.install()  # SIGTERM and SIGHUP cancel like Ctrl-C; SIGINT even when started with it ignored
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            if ctx.params.get("debug"):  # parsed even when the command name itself is wrong
                raise
            usage_exit(err)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("peftbench: interrupted; finished records are intact", err=True)
            sys.exit(signals.exit_code())
        except Exception as err:
            from peftbench.errors import PeftbenchError, RunCanceled

            if (ctx.obj or {}).get("debug"):
                raise
            from peftbench.records.failure import os_failure

            err = os_failure(err) or err
            if isinstance(err, RunCanceled):
                click.echo("peftbench: interrupted; the run in flight is recorded 'canceled'", err=True)
                sys.exit(signals.exit_code())
            if isinstance(err, PeftbenchError):
                click.echo(f"peftbench: error: {err.one_line()}", err=True)
                sys.exit(err.exit_code)
            click.echo(f"peftbench: internal error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                       " (rerun with --debug for the traceback)", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog="""\b
Examples:
  peftbench demo                  # offline: six methods, a bundled model
  peftbench run --model embedded --data-train train.csv \\
      --data-eval eval.csv --method lora
  peftbench report runs

Each command's --help shows its own examples.""")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="peftbench")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """peftbench: compare fine-tuning methods (full, partial, LoRA, QLoRA, IA3, DoRA, any peft method)."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def spec_from_flags(config: str | None, model: str | None, data_train: str | None, data_eval: str | None,
                     method: str | None, n_train: int | None, n_eval: int | None, sets: tuple[str, ...]) -> Any:
    from peftbench.config.spec import RunSpec, apply_overrides, load_yaml, set_dotted

    data: dict[str, Any] = load_yaml(config) if config else {}
    # Flag values are set as given (a file name is never re-read as YAML); --set items apply last.
    for path, value in (("model.name_or_path", model), ("data.train", data_train), ("data.eval", data_eval),
                        ("method.name", method), ("data.n_train", n_train), ("data.n_eval", n_eval)):
        if value is not None:
            set_dotted(data, path.split("."), value)
    return RunSpec.from_dict(apply_overrides(data, list(sets)))


@cli.command(short_help="Train and evaluate one method on your data; write its record (metrics, costs, settings).",
             epilog="""\b
Examples:
  peftbench run --model embedded --data-train train.csv \\
      --data-eval eval.csv --method lora --epochs 3
  peftbench run --config spec.yaml --lr 1e-4 --seed 1 --out runs""")
@config_option(help="YAML spec file (any flag below overrides it).")
@click.option("--model", help="Model folder or hub id ('embedded' = the bundled all-MiniLM-L6-v2).")
@click.option("--data-train", help="Training data file (.csv/.tsv/.json/.jsonl/.parquet).")
@click.option("--data-eval", help="Evaluation data file.")
@methods_option(run=True, help="Method name (see `peftbench methods`); one per run: compare several with "
                               "`peftbench sweep` or `peftbench demo --methods`.")
@click.option("--n-train", type=click.IntRange(min=1), help="Subsample the training set (stratified, seeded).")
@click.option("--n-eval", type=click.IntRange(min=1), help="Subsample the evaluation set.")
@training_options
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any spec key, e.g. method.r=16.")
@click.option("--out", default="runs", show_default=True, help="Output folder; each run writes <out>/<run_id>/.")
@click.option("--force", is_flag=True, help="Rerun even if a success record exists (it is kept if the rerun fails).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--model-override", help="Replace every run's model: a model name/path, or 'tiny' for tiny random "
              "stand-ins of the same families (offline).")
@click.option("--peak-tflops", type=click.FloatRange(min=0, min_open=True),
              help="Peak TFLOP/s for MFU (default: GPU table, or a cached GEMM probe on the CPU).")
def run(config: str | None, model: str | None, data_train: str | None, data_eval: str | None,
        method_names: tuple[str, ...], n_train: int | None, n_eval: int | None, sets: tuple[str, ...], out: str,
        force: bool, quiet: bool, model_override: str | None, peak_tflops: float | None = None) -> None:
    """Train and evaluate one method (or each run of a multi-run file); write <out>/<run_id>/result.json.

    The training flags (--epochs, --lr, --batch-size, --max-length, --seed) set train.epochs, train.lr,
    train.batch_size, data.max_length and train.seed, as --set would; --set items apply last."""
    from peftbench.core.distributed import is_main_process
    from peftbench.core.runner import run as run_one
    from peftbench.errors import SpecError

    methods = split_names(method_names)
    if len(methods) > 1:
        raise SpecError(f"`peftbench run` trains one method, got {len(methods)}: {', '.join(methods)}",
                        hint=f"compare methods with `peftbench sweep --config FILE` (a 'methods:' list) or "
                             f"`peftbench demo --methods {','.join(methods)}`")
    method = methods[0] if methods else None
    sets = (*training_sets(), *sets, *([f"train.peak_tflops={peak_tflops}"] if peak_tflops else []))
    if config and (model_override or _is_multi_run_file(config)):
        from peftbench.sweeps.engine import run_spec_file

        if any((model, data_train, data_eval, method, n_train, n_eval)):
            raise click.UsageError("with a multi-run file or --model-override, change runs with --set KEY=VALUE")
        records = run_spec_file(config, out, model_override=model_override, overrides=list(sets),
                                progress=not quiet, force=force, say=lambda m: click.echo(m, err=True))
        _print_summary(records)
        click.echo(f"records: {out}/<run_id>/result.json ({sum(r['status'] == 'success' for r in records)}"
                   f"/{len(records)} succeeded)")
        click.echo(f"next: peftbench report {shlex.quote(out)}")
        if any(r["status"] != "success" for r in records):
            sys.exit(1)
        return

    spec = spec_from_flags(config, model, data_train, data_eval, method, n_train, n_eval, sets)
    record = run_one(spec, out, progress=not quiet, force=force)
    if not is_main_process():  # in a multi-process run rank 0 reports
        return
    _print_summary([record])
    click.echo(f"record: {Path(out) / str(record['run_id']) / 'result.json'}")
    click.echo(f"next: peftbench report {shlex.quote(out)}")


def _is_multi_run_file(config: str) -> bool:
    from peftbench.config.multirun import is_multi_run
    from peftbench.config.spec import load_yaml

    return is_multi_run(load_yaml(config))


def _print_summary(records: list[dict[str, Any]]) -> None:
    from peftbench.reports.tables import terminal_table

    click.echo(terminal_table(records))


@cli.command(short_help="List the methods with their default learning rate, model families and settings.",
             epilog="""\b
Examples:
  peftbench methods
  COLUMNS=200 peftbench methods      # a wider table""")
def methods() -> None:
    """List methods with their defaults (learning rate included) and where each was verified; the
    table fits the terminal ($COLUMNS when set)."""
    from peftbench.methods.base import METHODS
    from peftbench.methods.verified import verified_on
    from peftbench.records.fields import fmt_number
    from peftbench.reports.tables import Cell, terminal

    rows = [{"method": Cell(name), "lr": Cell(fmt_number(m.default_lr)), "families": Cell(", ".join(m.families)),
             "defaults": Cell(", ".join(f"{k}={fmt_number(v)}" for k, v in m.defaults.items()) or "-"),
             "summary": Cell(f"{m.summary} [verified: {verified_on(name)}]")}
            for name, m in METHODS.items()]
    click.echo(terminal(rows, whole=("method", "lr")))


@cli.command(short_help="Offline demo: compare six methods on the bundled MiniLM and a generated sentiment set.",
             epilog="""\b
Examples:
  peftbench demo
  peftbench demo --methods lora,ia3 --epochs 1 --out demo_runs
  peftbench demo --device cuda""")
@click.option("--out", default="demo_runs", show_default=True, help="Output folder.")
@methods_option(help=f"Methods to compare, comma-separated  [default: {','.join(SEED_METHODS)}]")
@click.option("--n-train", default=None, type=click.IntRange(min=1), help="Synthetic training examples.")
@click.option("--epochs", default=None, type=click.IntRange(min=1), help="Epochs per method.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="train.device of every method ('auto': CUDA when present).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out: str, method_names: tuple[str, ...], n_train: int | None, epochs: int | None, device: str,
         quiet: bool) -> None:
    """Offline demo: all six methods on the bundled MiniLM and a generated sentiment set."""
    from peftbench.demo import run_demo

    run_demo(out, split_names(method_names) if method_names else list(SEED_METHODS), n_train=n_train, epochs=epochs,
             progress=not quiet, device=device)


# Commands that live in their own modules: each module defines click commands and is listed here
# (imported when the CLI is built; such modules must import only click at module level).
_COMMAND_MODULES: list[str] = [
    "sweep",
    "runs",
    "report",
    "tune",
    "profile",
]


def _add_commands() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        module = importlib.import_module(f".{name}", __package__)
        for command in getattr(module, "COMMANDS", []):
            cli.add_command(command)


_add_commands()


def main() -> None:
    from peftbench.runtime.device import quiet_kernel_notices

    quiet_kernel_notices()
    cli(prog_name="peftbench")


if __name__ == "__main__":
    main()
