"""`peftbench report`: the report command (tables, comparison, plots, HTML, exports)."""

from __future__ import annotations

import click

from peftbench.reports.trust import TARGET_FRACTION  # a constant of a light module (no torch, no pandas)


@click.command("report", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
               short_help="Build the report (HTML, markdown, CSV/JSON, plots) from the runs of one or more folders.",
               epilog="""\b
Examples:
  peftbench report runs
  peftbench report runs/cmp runs/more --out report --min-accuracy 0.85""")
@click.argument("args", metavar="RUNS...", nargs=-1, type=str)
@click.option("--out", default="report", show_default=True, help="Folder for report.html, report.md, CSV/JSON, plots.")
@click.option("--baseline", default="full", show_default=True,
              help="Baseline per task: a method name, configuration label, config id or run id ('' for none).")
@click.option("--metric", default=None, help="Metric to rank and compare by (default: each task's main metric).")
@click.option("--bootstrap-seeds", is_flag=True, help="Add a percentile bootstrap interval over seeds to the t-interval.")
@click.option("--target-fraction", type=float, default=TARGET_FRACTION, show_default=True,
              help="Time to target: training time until the per-epoch metric came within this share of its final value.")
@click.option("--prefer", type=click.Choice(["metric", "memory", "time", "params"]), default="metric",
              show_default=True, help="Priority of the recommendation: the best metric, or the cheapest method "
                                      "whose metric is not significantly worse than the best.")
@click.pass_context
def report(ctx: click.Context, args: tuple[str, ...], out: str, baseline: str, metric: str | None,
           bootstrap_seeds: bool, target_fraction: float, prefer: str) -> None:
    """Build a report from every <run>/result.json under the RUNS folders (and a cost-curves section
    from any profile*.json written there by `peftbench profile`).

    Metric floors for the recommendation: --min-<metric> VALUE (e.g. --min-accuracy 0.85) or
    --max-<metric> VALUE (e.g. --max-perplexity 20); a method that misses one is not recommended."""
    from pathlib import Path

    from peftbench.errors import SpecError
    from peftbench.records.io import load_records, require_folder
    from peftbench.reports.build import write_report
    from peftbench.reports.cost_curves import find_profiles
    from peftbench.reports.sections import terminal_report

    folders, floor_args = split_floor_args([*args, *ctx.args])
    if not folders:
        raise SpecError("no runs folder given", hint="e.g. peftbench report runs (the --out folder of run or sweep)")
    for runs in folders:
        if not Path(runs).exists():
            raise SpecError(f"runs folder '{runs}' does not exist",
                            hint="pass the --out folder used by `peftbench run` or `peftbench sweep`")
    require_folder(out, "--out")
    records = [r for runs in folders for r in load_records(runs)]
    if not records:
        raise SpecError(f"no result.json found under {', '.join(repr(f) for f in folders)}",
                        hint="point at the folder holding the run folders")
    floors = metric_floors(floor_args, records)
    html_path, analysis = write_report(records, out, baseline=baseline or None, metric=metric,
                                       bootstrap=bootstrap_seeds, target_fraction=target_fraction,
                                       profiles=[p for runs in folders for p in find_profiles(runs)], prefer=prefer,
                                       floors=floors)
    click.echo(terminal_report(analysis))
    click.echo(f"report: {html_path}")


def split_floor_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(runs folders, the `--min-<metric>`/`--max-<metric>` items and their values) from the
    command's free arguments: an item starting with '-' is an option; without '=' the next item is
    its value."""
    folders: list[str] = []
    options: list[str] = []
    rest = list(args)
    while rest:
        item = rest.pop(0)
        if item.startswith("-") and len(item) > 1:
            options.append(item)
            if "=" not in item and rest:
                options.append(rest.pop(0))
        else:
            folders.append(item)
    return folders, options


def metric_floors(args: list[str], records: list[dict]) -> dict[str, tuple[str, float]]:
    """`--min-<metric> V` / `--max-<metric> V` pairs from the extra arguments, checked against the
    metrics the records hold: {metric: ('min'|'max', V)}."""
    from peftbench.errors import SpecError

    known = {k for r in records for k, v in (r.get("metrics") or {}).items() if isinstance(v, int | float)}
    floors: dict[str, tuple[str, float]] = {}
    rest = list(args)
    while rest:
        flag = rest.pop(0)
        name, _, inline = flag.partition("=")
        side = name[2:5] if name.startswith(("--min-", "--max-")) else None
        value = inline or (rest.pop(0) if rest else "")
        if side is None:
            raise SpecError(f"unknown option or argument '{flag}'", hint="see `peftbench report --help`")
        key = name[6:].replace("-", "_")
        key = next((k for k in known if k.lower() == key.lower()), key)
        if key not in known:
            raise SpecError(f"{name}: no record has metric '{key}'",
                            hint=f"use one of: {', '.join(sorted(known)) or '(none)'}")
        try:
            floors[key] = (side, float(value))
        except ValueError:
            raise SpecError(f"{name} needs a number, got '{value}'", hint=f"e.g. {name} 0.85") from None
    return floors


COMMANDS = [report]
