"""`peftbench tune`: the same hyper-parameter search budget for each method (see `tune`)."""

from __future__ import annotations

import click


@click.command("tune")
@click.option("--config", "config", type=str, required=True, help="YAML spec file (its 'tune:' section sets the budget).")
@click.option("--methods", "method_list", default=None,
              help="Comma-separated methods, each tuned with the same budget (default: the spec's method).")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Trials per method (overrides tune.trials).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any spec key, e.g. tune.seeds=[1,2,3].")
@click.option("--out", default="runs", show_default=True, help="Output folder.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def tune(config: str, method_list: str | None, trials: int | None, sets: tuple[str, ...], out: str,
         quiet: bool) -> None:
    """Search each method's learning rate (and r/alpha for LoRA-family) on validation; report best vs default on test."""
    from peftbench.cli.app import spec_from_flags
    from peftbench.sweeps.tune import tune_methods

    extra = [*sets, *([f"tune.trials={trials}"] if trials else [])]
    spec = spec_from_flags(config, None, None, None, None, None, None, tuple(extra))
    if spec.tune is None:
        spec = spec.with_overrides(["tune.trials=8"])
    methods = [m.strip() for m in method_list.split(",") if m.strip()] if method_list else [spec.method.name]
    for s in tune_methods(spec, methods, out, progress=not quiet):
        d, t = s["default"], s["tuned"]
        click.echo(f"{s['method']}: {s['budget']['trials_complete']}/{s['budget']['trials']} trials on "
                   f"{s['split']}; best {s['metric']} {s['best']['value']:.4f} with {s['best']['params']}; "
                   f"test {s['metric']}: default {d['test_mean']:.4f}, tuned {t['test_mean']:.4f} "
                   f"(summary: {out}/{s['tune_id']}.json)")


COMMANDS = [tune]
