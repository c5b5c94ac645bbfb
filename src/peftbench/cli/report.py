"""`peftbench report`: the report command (tables, comparison, plots, HTML, exports)."""

from __future__ import annotations

import click

from peftbench.reports.trust import TARGET_FRACTION  # a constant of a light module (no torch, no pandas)


@click.command("report")
@click.argument("runs", type=str)
@click.option("--out", default="report", show_default=True, help="Folder for report.html, report.md, CSV/JSON, plots.")
@click.option("--baseline", default="full", show_default=True,
              help="Baseline per task: a method name, configuration label, config id or run id ('' for none).")
@click.option("--metric", default=None, help="Metric to rank and compare by (default: each task's main metric).")
@click.option("--bootstrap-seeds", is_flag=True, help="Add a percentile bootstrap interval over seeds to the t-interval.")
@click.option("--target-fraction", type=float, default=TARGET_FRACTION, show_default=True,
              help="Time to target: training time until the per-epoch metric came within this share of its final value.")
def report(runs: str, out: str, baseline: str, metric: str | None, bootstrap_seeds: bool,
           target_fraction: float) -> None:
    """Build a report from every <run>/result.json under RUNS (and a cost-curves section from any
    profile*.json written there by `peftbench profile`)."""
    from pathlib import Path

    from peftbench.errors import SpecError
    from peftbench.records.io import load_records
    from peftbench.reports.build import write_report
    from peftbench.reports.cost_curves import find_profiles
    from peftbench.reports.sections import terminal_report

    if not Path(runs).exists():
        raise SpecError(f"runs folder '{runs}' does not exist", hint="pass the --out folder used by `peftbench run`")
    records = load_records(runs)
    if not records:
        raise SpecError(f"no result.json found under '{runs}'", hint="point at the folder holding the run folders")
    html_path, analysis = write_report(records, out, baseline=baseline or None, metric=metric,
                                       bootstrap=bootstrap_seeds, target_fraction=target_fraction,
                                       profiles=find_profiles(runs))
    click.echo(terminal_report(analysis))
    click.echo(f"report: {html_path}")


COMMANDS = [report]
