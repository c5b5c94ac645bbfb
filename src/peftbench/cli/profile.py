"""`peftbench profile`: cost curves per method (throughput and peak memory against sequence length,
merged vs unmerged inference latency); see `profile`."""

from __future__ import annotations

import sys

import click

from peftbench.cli.options import methods_option, split_names
from peftbench.profiling.limits import DEFAULT_TIMEOUT_S, MAX_WARMUP


@click.command("profile", short_help="Measure cost curves per method: training tokens/s and peak memory against "
                                     "sequence length, merged against unmerged latency.",
               epilog="""\b
Examples:
  peftbench profile --model tiny:gpt2 --methods lora,ia3 --lengths 64,128
  peftbench profile --model embedded --budget 600 --out profile""")
@click.option("--model", required=True,
              help="Model folder, hub id, 'embedded' (the bundled MiniLM), 'embedded-causal', or 'tiny[:FAMILY]' "
                   "(a tiny random stand-in, e.g. tiny:gpt2).")
@methods_option(help="Methods, comma-separated (default: the demo's six: full,partial,lora,qlora,ia3,dora).")
@click.option("--lengths", default="64,128,256", show_default=True,
              help="Comma-separated sequence lengths in tokens (every sequence exactly that long, no padding).")
@click.option("--batch-sizes", default="8", show_default=True, help="Comma-separated batch sizes.")
@click.option("--steps", default=5, show_default=True, type=click.IntRange(min=1),
              help="Timed training steps per configuration.")
@click.option("--warmup", default=1, show_default=True, type=click.IntRange(min=1, max=MAX_WARMUP),
              help="Untimed steps before them (at least 1: the first step pays one-time costs).")
@click.option("--latency-calls", default=10, show_default=True, type=click.IntRange(min=1),
              help="Timed eval-mode forwards per model, unmerged and merged (the median is reported).")
@click.option("--task", default="classification", show_default=True,
              help="classification (encoders, decoders), instruction (causal LMs) or summarization (seq2seq).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True, help="As model.dtype: auto = bf16 only where it is native.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: as runs, one per idle physical core).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the synthetic tokens and the head.")
@click.option("--out", "out_dir", default="profile", show_default=True,
              help="Folder for profile.json, profile.md and plots/.")
@click.option("--timeout", "timeout_s", default=DEFAULT_TIMEOUT_S, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds one configuration may take (warm-up included); then it is a `timeout` row.")
@click.option("--budget", "budget_s", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Seconds for the whole profile; configurations left when it is spent are `skipped` rows.")
@click.option("--quiet", is_flag=True, help="No progress lines (a line as each configuration starts and ends).")
def profile(model: str, method_names: tuple[str, ...], lengths: str, batch_sizes: str, steps: int, warmup: int,
            latency_calls: int, task: str, device: str, dtype: str, threads: int | None, seed: int, out_dir: str,
            timeout_s: float, budget_s: float | None, quiet: bool) -> None:
    """Cost curves: per method, training tokens/s and peak memory against sequence length and batch
    size, and merged vs unmerged inference latency (each configuration in its own process)."""
    from peftbench.profiling.profile import parse_sizes
    from peftbench.profiling.profile import profile as run_profile
    from peftbench.reports.cost_curves import terminal_table, write_profile_report

    methods = split_names(method_names) if method_names else None
    result = run_profile(model, methods, parse_sizes(lengths, "--lengths"), parse_sizes(batch_sizes, "--batch-sizes"),
                         task=task, steps=steps, warmup=warmup, latency_calls=latency_calls, seed=seed,
                         device=device, dtype=dtype, num_threads=threads, out_dir=out_dir,
                         timeout_s=timeout_s, budget_s=budget_s, say=None if quiet else (lambda msg: click.echo(msg, err=True)))
    write_profile_report(result, out_dir)
    click.echo(terminal_table(result))
    click.echo(f"written: {out_dir}/profile.json, {out_dir}/profile.md, {out_dir}/plots/", err=True)
    if not any(r["status"] == "ok" for r in result["rows"]):
        sys.exit(1)


COMMANDS = [profile]
