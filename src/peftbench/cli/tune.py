"""`peftbench tune`: the same hyper-parameter search budget for each method (see `tune`)."""

from __future__ import annotations

import click

from peftbench.cli.options import config_option, methods_option, split_names
from peftbench.records.fields import settings_text


@click.command("tune", short_help="Tune each method's learning rate (and rank) with the same trial budget; "
                                  "report best against defaults on test.",
               epilog="""\b
Examples:
  peftbench tune --config spec.yaml --methods lora,ia3 --trials 8
  peftbench tune --config spec.yaml --set 'tune.seeds=[1,2,3]' --out tuned""")
@config_option(required=True, help="YAML spec file (its 'tune:' section sets the budget).")
@methods_option(help="Methods, comma-separated, each tuned with the same budget (default: the spec's method).")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Trials per method (overrides tune.trials).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any spec key, e.g. tune.seeds=[1,2,3].")
@click.option("--out", default="runs", show_default=True, help="Output folder.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def tune(config: str, method_names: tuple[str, ...], trials: int | None, sets: tuple[str, ...], out: str,
         quiet: bool) -> None:
    """Search each method's learning rate (and r/alpha for LoRA-family) on validation; report best vs default on test."""
    from peftbench.cli.app import spec_from_flags
    from peftbench.sweeps.tune import tune_methods

    extra = [*sets, *([f"tune.trials={trials}"] if trials else [])]
    spec = spec_from_flags(config, None, None, None, None, None, None, tuple(extra))
    if spec.tune is None:
        spec = spec.with_overrides(["tune.trials=8"])
    methods = split_names(method_names) or [spec.method.name]
    for s in tune_methods(spec, methods, out, progress=not quiet):
        d, t = s["default"], s["tuned"]
        click.echo(f"{s['method']}: {s['budget']['trials_complete']}/{s['budget']['trials']} trials on "
                   f"{s['split']}; best {s['metric']} {s['best']['value']:.4f} with {settings_text(s['best']['params'])}; "
                   f"test {s['metric']}: default {d['test_mean']:.4f}, tuned {t['test_mean']:.4f} "
                   f"(summary: {out}/{s['tune_id']}.json)")


COMMANDS = [tune]
