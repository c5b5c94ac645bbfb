"""Commands on saved runs: `eval`, `merge`, `disagreements`, `generate`, and the batch-size `probe`."""

from __future__ import annotations

import json

import click


@click.command(name="eval")
@click.option("--run", "run_dir", required=True, help="Run folder (runs/<run_id>).")
@click.option("--data-eval", default=None, help="Evaluation file (default: the run's own eval set).")
@click.option("--n-eval", type=click.IntRange(min=1), default=None, help="Subsample the evaluation file.")
@click.option("--json", "as_json", is_flag=True, help="Print all metrics as JSON.")
def eval_cmd(run_dir: str, data_eval: str | None, n_eval: int | None, as_json: bool) -> None:
    """Reload base model + saved adapter and evaluate with the run's own metrics."""
    from .artifacts import evaluate_run

    metrics = evaluate_run(run_dir, data_eval, n_eval)
    metrics.pop("predictions", None)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    for key in ("data_eval", "n_eval", "accuracy", "f1_macro", "precision_macro", "recall_macro", "eval_loss"):
        if key in metrics:
            value = metrics[key]
            click.echo(f"{key:16} {value:.6f}" if isinstance(value, float) else f"{key:16} {value}")


@click.command()
@click.option("--run", "run_dir", required=True, help="Run folder (runs/<run_id>) with a saved adapter.")
@click.option("--out", "out_dir", required=True, help="New folder for the standalone merged model.")
def merge(run_dir: str, out_dir: str) -> None:
    """Merge a LoRA/DoRA/IA3 adapter (QLoRA: base dequantized first) into a standalone model."""
    from .artifacts import merge_run

    out = merge_run(run_dir, out_dir)
    click.echo(f"merged model: {out}")


COMMANDS = [eval_cmd, merge]


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--csv", "csv_path", default=None, help="Also write the table as CSV here.")
@click.option("--max-text", default=80, show_default=True, help="Truncate texts in the printed table.")
def disagreements(runs: tuple[str, ...], csv_path: str | None, max_text: int) -> None:
    """Eval examples where classification runs disagree, with the gold label (✗ marks wrong)."""
    from .compare import disagreements as find
    from .compare import markdown, to_csv
    from .records import atomic_write_text

    names, rows = find(list(runs))
    click.echo(markdown(rows, max_text), nl=False)
    click.echo(f"{len(rows)} disagreements between {len(names)} runs", err=True)
    if csv_path:
        atomic_write_text(csv_path, to_csv(rows))


COMMANDS.append(disagreements)
