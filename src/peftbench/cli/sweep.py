"""`peftbench sweep` and `peftbench ls`: run a grid of runs, list the runs of a folder."""

from __future__ import annotations

import shlex
import sys

import click

from peftbench.cli.options import config_option, spec_file, training_options, training_sets
from peftbench.records.fields import settings_text


@click.command(short_help="Run a grid of runs (models x methods x settings x seeds), one process each; "
                          "end with the dashboard.",
               epilog="""\b
Examples:
  peftbench sweep --config sweep.yaml --out runs/cmp --dry-run
  peftbench sweep --config examples/studies/gpt2_sst2.yaml \\
      --model-override tiny --epochs 1 --out runs/cmp""")
@config_option(help="Sweep file: a grid (grid/seeds) or a list of runs (models/methods with axes).")
@click.argument("positional_file", metavar="[FILE]", required=False)
@click.option("--out", default="runs", show_default=True, help="Output folder; each run writes <out>/<run_id>/.")
@click.option("--dry-run", is_flag=True, help="Print the expanded runs with their ids; run nothing.")
@click.option("--retry-failed", is_flag=True, help="Rerun runs whose record is 'failed' (success is always kept).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Per-run timeout in seconds (overrides timeout_s in the sweep file).")
@click.option("--quiet", is_flag=True, help="No per-run progress bars.")
@click.option("--model-override", help="Replace every run's model; 'tiny' = tiny random stand-ins (offline).")
@training_options
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a key in every run.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: one process per run here; ray: one Ray task per run (pip install 'peftbench[ray]').")
@click.option("--address", default=None, help="Ray cluster address ('auto', 'ray://head:10001'); default: local Ray.")
def sweep(config: str | None, positional_file: str | None, out: str, dry_run: bool, retry_failed: bool,
          timeout_s: float | None, quiet: bool, model_override: str | None, sets: tuple[str, ...], executor: str,
          address: str | None) -> None:
    """Run a grid of runs (models x tasks x methods x hyper-parameters x seeds), one process per run,
    then print the dashboard and the `peftbench report` command to run next.

    The training flags (--epochs, --lr, --batch-size, --max-length, --seed) apply to every run, as
    --set does. Rerunning skips runs with a success record; Ctrl-C, SIGTERM or SIGHUP record the run
    in flight as canceled. `sweep FILE` (the file as an argument) is the older spelling of --config."""
    from peftbench.config.sweep import SweepSpec
    from peftbench.sweeps.engine import planned_records, run_sweep, summary_text

    path = spec_file(config, positional_file, "sweep")
    spec = SweepSpec.from_yaml(path, model_override, [*training_sets(), *sets])
    if dry_run:
        planned = spec.expand()
        for run in planned:
            click.echo(f"{run.run_id}  {settings_text(run.axes, '  ')}")
        click.echo(f"{len(planned)} runs", err=True)
        return
    result = run_sweep(spec, out, retry_failed=retry_failed, timeout_s=timeout_s, progress=not quiet,
                       executor=executor, address=address)
    click.echo(summary_text(result))
    if result.interrupted:
        click.echo("peftbench: sweep interrupted; the run in flight is recorded 'canceled', finished records "
                   "are intact (rerun the same command to resume)", err=True)
        from peftbench.runtime.signals import exit_code

        sys.exit(exit_code())
    _print_dashboard(planned_records(spec, out))
    click.echo(f"next: peftbench report {shlex.quote(out)}")
    if any(s.startswith("failed") for s in result.statuses.values()):
        sys.exit(1)


def _print_dashboard(records: list[dict]) -> None:
    """The report's terminal dashboard of the sweep's runs, fitted to the terminal."""
    from peftbench.reports.analysis import analyze
    from peftbench.reports.sections import terminal_dashboard

    if not records:
        return
    analysis = analyze(records)
    for task in analysis.tasks:
        click.echo("\n".join(terminal_dashboard(analysis, task)))


@click.command(name="ls", short_help="List the runs of a folder: id, model, method, the settings they differ in, "
                                     "status, main metric, time.",
               epilog="""\b
Examples:
  peftbench ls runs
  peftbench ls runs --status failed""")
@click.argument("folder", default="runs")
@click.option("--status", "status_filter", default=None, help="Only runs with this status (success, failed...).")
def ls(folder: str, status_filter: str | None) -> None:
    """List the runs under FOLDER: id, model, task, method, key hyper-parameters and the settings in
    which runs of one method differ (as report labels name them), status, main metric, time."""
    from peftbench.reports.runlist import runs_table

    click.echo(runs_table(folder, status_filter))


COMMANDS = [sweep, ls]
