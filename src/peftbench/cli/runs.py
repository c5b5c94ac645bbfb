"""Commands on saved runs: `eval`, `merge`, `disagreements`, `generate`, and the batch-size `probe`."""

from __future__ import annotations

import json

import click

from peftbench.cli.options import methods_option, one_run_folder, run_folders, split_names


@click.command(name="eval", short_help="Reload a run's saved adapter or model and evaluate it again (its own data "
                                      "or another file).",
               epilog="""\b
Examples:
  peftbench eval runs/lora-0a1b2c3d4e
  peftbench eval runs/lora-0a1b2c3d4e --data-eval other.csv --json""")
@click.argument("run_dir", metavar="RUN", required=False)
@click.option("--run", "old_run", hidden=True, help="Deprecated: give RUN as an argument.")
@click.option("--data-eval", default=None, help="Evaluation file (default: the run's own eval set).")
@click.option("--n-eval", type=click.IntRange(min=1), default=None, help="Subsample the evaluation file.")
@click.option("--json", "as_json", is_flag=True, help="Print all metrics as JSON.")
def eval_cmd(run_dir: str | None, old_run: str | None, data_eval: str | None, n_eval: int | None,
             as_json: bool) -> None:
    """Reload base model + saved adapter and evaluate with the run's own metrics."""
    from peftbench.core.artifacts import evaluate_run

    metrics = evaluate_run(one_run_folder(run_dir, old_run, "eval"), data_eval, n_eval)
    metrics.pop("predictions", None)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    for key in ("data_eval", "n_eval", "accuracy", "f1_macro", "precision_macro", "recall_macro", "eval_loss"):
        if key in metrics:
            value = metrics[key]
            click.echo(f"{key:16} {value:.6f}" if isinstance(value, float) else f"{key:16} {value}")


@click.command(short_help="Merge a run's LoRA/DoRA/IA3 adapter (QLoRA: base dequantized first) into a standalone "
                          "model.",
               epilog="""\b
Examples:
  peftbench merge runs/lora-0a1b2c3d4e --out merged/""")
@click.argument("run_dir", metavar="RUN", required=False)
@click.option("--run", "old_run", hidden=True, help="Deprecated: give RUN as an argument.")
@click.option("--out", "out_dir", required=True, help="New folder for the standalone merged model.")
def merge(run_dir: str | None, old_run: str | None, out_dir: str) -> None:
    """Merge a LoRA/DoRA/IA3 adapter (QLoRA: base dequantized first) into a standalone model."""
    from peftbench.core.artifacts import merge_run
    from peftbench.records.io import require_folder

    run_dir = one_run_folder(run_dir, old_run, "merge")
    require_folder(out_dir, "--out")
    out = merge_run(run_dir, out_dir)
    click.echo(f"merged model: {out}")


COMMANDS = [eval_cmd, merge]


@click.command(short_help="Show the eval examples where classification runs disagree, with the gold label.",
               epilog="""\b
Examples:
  peftbench disagreements runs/lora-0a1b2c3d4e runs/ia3-5f6a7b8c9d \\
      --csv disagreements.csv""")
@click.argument("runs", metavar="RUN RUN [RUN...]", nargs=-1, required=True)
@click.option("--csv", "csv_path", default=None, help="Also write the table as CSV here.")
@click.option("--max-text", default=80, show_default=True, help="Truncate texts in the printed table.")
def disagreements(runs: tuple[str, ...], csv_path: str | None, max_text: int) -> None:
    """Eval examples where classification runs disagree, with the gold label (✗ marks wrong)."""
    from peftbench.core.qualitative import disagreements as find
    from peftbench.records.io import atomic_write_text
    from peftbench.reports.text_tables import csv_rows, markdown_rows

    names, rows = find(list(runs))
    click.echo(markdown_rows(rows, max_text), nl=False)
    click.echo(f"{len(rows)} disagreements between {len(names)} runs", err=True)
    if csv_path:
        atomic_write_text(csv_path, csv_rows(rows))


COMMANDS.append(disagreements)


@click.command(short_help="Find the largest batch size per method that fits a memory limit; or the CPU's GEMM peak.",
               epilog="""\b
Examples:
  peftbench probe --model embedded --methods full,lora --max-length 128
  peftbench probe --peak""")
@click.option("--model", default=None, help="Model folder or hub id ('embedded' = the bundled MiniLM).")
@methods_option(help="Methods, comma-separated  [default: full,lora,qlora]")
@click.option("--max-length", default=256, show_default=True, type=click.IntRange(min=1),
              help="Sequence length of every probe batch.")
@click.option("--memory-limit", default=None,
              help="Memory budget, e.g. 4GB (default: GPU memory, or available RAM measured as RSS on the CPU).")
@click.option("--max-batch", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Stop doubling at this batch size.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True)
@click.option("--out", "out_path", default="probe.json", show_default=True, help="JSON result file.")
@click.option("--peak", is_flag=True,
              help="Probe the CPU GEMM peak (the MFU denominator) afresh in --dtype, replace its cached entry when "
                   "the machine is quiet, and show the cache with the load each entry was probed under.")
@click.option("--threads", "thread_list", default=None,
              help="With --peak: thread counts to probe, e.g. 1,2 (default: the count a run would pick now and "
                   "every physical core).")
def probe(model: str | None, method_names: tuple[str, ...], max_length: int, memory_limit: str | None, max_batch: int,
          device: str, dtype: str, out_path: str, peak: bool, thread_list: str | None) -> None:
    """Largest batch size per method that trains a step within a memory limit (one process per trial);
    with --peak, the machine's GEMM peak and its cache."""
    from peftbench.errors import SpecError
    from peftbench.profiling.probe import (
        parse_bytes,
        parse_threads,
        peak_cache_table,
        probe_table,
        refresh_peaks,
    )
    from peftbench.profiling.probe import probe as run_probe
    from peftbench.records.io import atomic_write_json

    if not model and not peak:
        raise SpecError("peftbench probe needs --model (batch-size probe) or --peak (the machine's GEMM peak)",
                        hint="e.g. peftbench probe --peak, or peftbench probe --model embedded")
    if peak:
        from peftbench.perf.peak import cache_file, read_cache

        refresh_peaks(dtype, parse_threads(thread_list) if thread_list else None,
                      say=lambda msg: click.echo(msg, err=True))
        click.echo(peak_cache_table(read_cache()))
        click.echo(f"cache: {cache_file()}", err=True)
    if not model:
        return
    limit = parse_bytes(memory_limit) if memory_limit else None
    methods = split_names(method_names) if method_names else ["full", "lora", "qlora"]
    result = run_probe(model, methods, max_length, memory_limit=limit, device=device, max_batch=max_batch,
                       dtype=dtype, say=lambda msg: click.echo(msg, err=True))
    atomic_write_json(out_path, result)
    click.echo(probe_table(result))
    click.echo(f"written: {out_path}", err=True)


COMMANDS.append(probe)


@click.command(short_help="Generate from each run's saved adapter on the same prompts, side by side.",
               epilog="""\b
Examples:
  peftbench generate runs/lora-0a1b2c3d4e runs/ia3-5f6a7b8c9d \\
      --prompts prompts.txt --max-new-tokens 32""")
@click.argument("runs", metavar="RUN [RUN...]", nargs=-1)
@click.option("--runs", "old_runs", multiple=True, hidden=True, help="Deprecated: give the run folders as arguments.")
@click.option("--prompts", "prompts_path", required=True,
              help="Text file, one prompt per line, formatted by each run's prompt template (a JSON object "
                   "line fills a template of several columns).")
@click.option("--max-new-tokens", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--out", "out_prefix", default="generations", show_default=True,
              help="Writes OUT.md, OUT.csv and OUT.json (what each model saw and said).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: the runs' own device.")
def generate(runs: tuple[str, ...], old_runs: tuple[str, ...], prompts_path: str, max_new_tokens: int, out_prefix: str,
             device: str | None) -> None:
    """Generate from each run's saved adapter on the same prompts (greedy) and show them side by side."""
    from peftbench.core.qualitative import read_prompts, side_by_side
    from peftbench.records.io import atomic_write_json, atomic_write_text
    from peftbench.reports.text_tables import csv_rows, markdown_rows

    run_dirs = run_folders(runs, old_runs, "generate")
    prompts = read_prompts(prompts_path)
    _names, rows, seen = side_by_side(run_dirs, prompts, max_new_tokens=max_new_tokens, device=device)
    md = markdown_rows(rows, max_text=10_000)
    atomic_write_text(f"{out_prefix}.md", md)
    atomic_write_text(f"{out_prefix}.csv", csv_rows(rows))
    atomic_write_json(f"{out_prefix}.json", {"prompts": prompts, "max_new_tokens": max_new_tokens, "runs": seen})
    click.echo(md, nl=False)
    click.echo(f"written: {out_prefix}.md, {out_prefix}.csv, {out_prefix}.json", err=True)


COMMANDS.append(generate)
