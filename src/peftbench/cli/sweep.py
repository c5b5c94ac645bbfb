"""`peftbench sweep` and `peftbench ls`: run a grid of runs, list the runs of a folder."""

from __future__ import annotations

import sys

import click


@click.command()
@click.argument("spec_file", metavar="SPEC.yaml")
@click.option("--out", default="runs", show_default=True, help="Output folder; each run writes <out>/<run_id>/.")
@click.option("--dry-run", is_flag=True, help="Print the expanded runs with their ids; run nothing.")
@click.option("--retry-failed", is_flag=True, help="Rerun runs whose record is 'failed' (success is always kept).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Per-run timeout in seconds (overrides timeout_s in the sweep file).")
@click.option("--quiet", is_flag=True, help="No per-run progress bars.")
@click.option("--model-override", help="Replace every run's model; 'tiny' = tiny random stand-ins (offline).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a key in every run.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: one process per run here; ray: one Ray task per run (pip install 'peftbench[ray]').")
@click.option("--address", default=None, help="Ray cluster address ('auto', 'ray://head:10001'); default: local Ray.")
def sweep(spec_file: str, out: str, dry_run: bool, retry_failed: bool, timeout_s: float | None, quiet: bool,
          model_override: str | None, sets: tuple[str, ...], executor: str, address: str | None) -> None:
    """Run a grid of runs (models x tasks x methods x hyper-parameters x seeds), one process per run.

    Rerunning skips runs with a success record; Ctrl-C, SIGTERM or SIGHUP record the run in flight as canceled.
    """
    from peftbench.config.sweep import SweepSpec
    from peftbench.sweeps.engine import run_sweep, summary_text

    spec = SweepSpec.from_yaml(spec_file, model_override, list(sets))
    if dry_run:
        planned = spec.expand()
        for run in planned:
            axes = "  ".join(f"{k}={v}" for k, v in run.axes.items())
            click.echo(f"{run.run_id}  {axes}")
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
    if any(s.startswith("failed") for s in result.statuses.values()):
        sys.exit(1)


@click.command(name="ls")
@click.argument("folder", default="runs")
@click.option("--status", "status_filter", default=None, help="Only runs with this status (success, failed...).")
def ls(folder: str, status_filter: str | None) -> None:
    """List the runs under FOLDER: id, model, task, method, key hyper-parameters, status, main metric, time."""
    from peftbench.reports.runlist import runs_table

    click.echo(runs_table(folder, status_filter))


COMMANDS = [sweep, ls]
