"""Tables in the shapes the seed studies reported, each shown where a task's runs have that shape (chosen by
the data, never by a study's name), per model:

- a rank table where some method's configurations differ in `method.r` (LoRA at several ranks, next to
  the methods without a rank);
- partial fine-tuning against each adapter method, with deltas and a verdict, where both ran;
- the main metric, trainable parameters, training time, peak memory and the overfitting gap against full
  fine-tuning, where full and other methods ran;
- the model footprint of full fine-tuning against each 4-bit-base configuration, with the ratio.

Every configuration with successful runs is listed, learned or not (the `learned` column says which);
comparisons and verdicts come from `comparisons`, so a delta is called better or worse only when a paired
test says so.
"""

from __future__ import annotations

from typing import Any

from peftbench.records.fields import fmt_bytes, fmt_number, number, value_at
from peftbench.reports.analysis import Analysis
from peftbench.reports.comparisons import compare_pair, compare_to_baseline, pick_baseline
from peftbench.reports.configs import Config
from peftbench.reports.tables import Cell, Row, fmt_count, fmt_num, fmt_p, fmt_ratio, mean_std
from peftbench.tasks.metrics import higher_is_better

StudyTable = tuple[str, list[Row], str]  # (title, rows, note)
NOT_ADAPTERS = ("full", "partial")  # every other method is compared with partial fine-tuning

RANK_NOTE = ("One row per configuration of this model, every one listed whether it learned or not; r is the "
             "rank (blank for methods without one). ★ marks the best mean among configurations that learned.")
PARTIAL_NOTE = ("Δ is the adapter's mean minus partial fine-tuning's; the verdict calls a difference only when "
                "the paired test is significant. × columns: partial ÷ adapter (above 1: the adapter trains fewer "
                "parameters, is faster, or peaks lower).")
FULL_NOTE = ("Against full fine-tuning of the same model (the best full configuration when there are several). "
             "× columns: full ÷ this (above 1: fewer trainable parameters, faster, less peak memory). "
             "eval − train loss: the final eval loss minus the last training loss (large positive: overfitting).")
FOOTPRINT_NOTE = ("Model in memory as trained (record `model.footprint`): parameters and buffers, a 4-bit base "
                  "by its packed bytes and quantization state. Embeddings and the head stay unquantized, so the "
                  "whole-model ratio is below the quantized layers' own; it is lowest where the embedding "
                  "dominates (small models, large vocabularies, as in the tiny stand-ins). Quantized layers: "
                  "their full-precision bytes (full's footprint minus the 4-bit model's unquantized base) ÷ "
                  "their 4-bit bytes; blank when the two models hold their weights in different dtypes.")


def study_tables(analysis: Analysis, task: str) -> list[StudyTable]:
    """The study-shaped tables of one task, in report order; none where the runs have no such shape."""
    configs = [c for c in analysis.task_configs(task) if c.runs]
    by_model: dict[str, list[Config]] = {}
    for c in configs:
        by_model.setdefault(c.model, []).append(c)
    tables: list[StudyTable] = []
    for model, group in by_model.items():
        tables += rank_table(model, group)
    for model, group in by_model.items():
        tables += partial_table(analysis, task, model, group)
    for model, group in by_model.items():
        tables += against_full_table(model, group)
    for model, group in by_model.items():
        tables += footprint_table(model, group)
    return tables


# ---- cells --------------------------------------------------------------------------------------------


def learned_cell(c: Config) -> Cell:
    return Cell({True: "yes", False: "no"}.get(c.learned, "?"))  # type: ignore[arg-type]


def metric_cell(c: Config) -> Cell:
    return Cell(mean_std(c.stats.get(c.metric)), c.mean(c.metric))


def run_mean(c: Config, *path: str) -> float | None:
    """The mean of a record field over the configuration's successful runs (None where no run has it)."""
    values = [v for v in (number(value_at(r, *path)) for r in c.runs) if v is not None]
    return sum(values) / len(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def best_of(configs: list[Config]) -> Config | None:
    """The configuration with the best mean metric among those not known to have failed to learn."""
    scored = [c for c in configs if c.mean(c.metric) is not None and c.learned is not False]
    if not scored:
        return None
    sign = 1.0 if higher_is_better(scored[0].metric) else -1.0
    return max(scored, key=lambda c: sign * (c.mean(c.metric) or 0.0))


# ---- rank table -----------------------------------------------------------------------------------------


def rank_table(model: str, configs: list[Config]) -> list[StudyTable]:
    """Where some method varies `method.r` on this model: every configuration, by method, lr and rank."""
    ranks: dict[str, set[float]] = {}
    for c in configs:
        if (r := number(c.hparams["r"])) is not None:
            ranks.setdefault(c.method, set()).add(r)
    if not any(len(r) > 1 for r in ranks.values()):
        return []
    best = best_of(configs)
    ordered = sorted(configs, key=lambda c: (c.method, number(c.hparams["lr"]) or 0.0, number(c.hparams["r"]) or 0.0))
    rows = [{
        "best": Cell("★" if c is best else ""),
        "config": Cell(c.label),
        "method": Cell(c.method),
        "r": Cell(str(c.hparams["r"]) if c.hparams["r"] is not None else "", number(c.hparams["r"])),
        "alpha": Cell(str(value_at(c.spec, "method", "alpha") or "")),
        "lr": Cell(fmt_number(lr) if (lr := number(c.hparams["lr"])) is not None else "-", lr),
        c.metric: metric_cell(c),
        "learned": learned_cell(c),
        "trainable": Cell(fmt_count(c.mean("trainable_params")), c.mean("trainable_params")),
        "trainable %": Cell(fmt_num(c.mean("trainable_pct"), 3), c.mean("trainable_pct")),
        "train s": Cell(mean_std(c.stats.get("train_time_s"), 1), c.mean("train_time_s")),
    } for c in ordered]
    return [(f"Rank sweep: {model}", rows, RANK_NOTE)]


# ---- partial fine-tuning against the adapters -------------------------------------------------------------


def partial_table(analysis: Analysis, task: str, model: str, configs: list[Config]) -> list[StudyTable]:
    """Where partial fine-tuning and adapter methods ran on this model: each adapter against each partial."""
    partials = [c for c in configs if c.method == "partial"]
    adapters = [c for c in configs if c.method not in NOT_ADAPTERS]
    if not partials or not adapters:
        return []
    pairs = {(p["a"], p["b"]): p for p in analysis.pairs.get(task, [])}
    rows = [partial_row(a, p, pairs.get((a.label, p.label)) or compare_pair(a, p))
            for p in partials for a in adapters]
    return [(f"Partial fine-tuning against the adapters: {model}", rows, PARTIAL_NOTE)]


def partial_row(adapter: Config, partial: Config, test: dict[str, Any]) -> Row:
    cmp = compare_to_baseline(adapter, partial, test)
    delta = (cmp["deltas"].get(adapter.metric) or {}).get("abs")
    return {
        "adapter": Cell(adapter.label),
        "partial": Cell(partial.label),
        f"{adapter.metric} adapter": metric_cell(adapter),
        f"{adapter.metric} partial": metric_cell(partial),
        "Δ": Cell("-" if delta is None else f"{delta:+.4f}", delta),
        "p": Cell(fmt_p(test.get("pvalue")), test.get("pvalue")),
        "trainable ×": Cell(fmt_ratio(cmp["x_fewer_params"]), cmp["x_fewer_params"]),
        "time ×": Cell(fmt_ratio(cmp["speedup"]), cmp["speedup"]),
        "peak mem ×": Cell(fmt_ratio(cmp["memory_saving"]), cmp["memory_saving"]),
        "verdict": Cell(cmp["verdict"]["label"]),
        "why": Cell(cmp["verdict"]["text"]),
    }


# ---- against full fine-tuning -----------------------------------------------------------------------------


def against_full_table(model: str, configs: list[Config]) -> list[StudyTable]:
    """Where full fine-tuning and other methods ran on this model: metric and costs, with ratios to full."""
    full = pick_baseline(configs, "full")
    if full is None or full.method != "full" or len(configs) < 2:
        return []
    rows = [against_full_row(c, full) for c in configs]
    title = f"{full.metric[:1].upper()}{full.metric[1:]}, parameters, time and memory against full fine-tuning: {model}"
    return [(title, rows, FULL_NOTE)]


def against_full_row(c: Config, full: Config) -> Row:
    delta = None if c.mean(c.metric) is None or full.mean(c.metric) is None else c.mean(c.metric) - full.mean(c.metric)
    gap = run_mean(c, "overfit_gap")
    return {
        "config": Cell(c.label + (" (reference)" if c is full else "")),
        c.metric: metric_cell(c),
        "Δ vs full": Cell("" if c is full or delta is None else f"{delta:+.4f}", delta),
        "learned": learned_cell(c),
        "trainable": Cell(fmt_count(c.mean("trainable_params")), c.mean("trainable_params")),
        "trainable %": Cell(fmt_num(c.mean("trainable_pct"), 3), c.mean("trainable_pct")),
        "trainable ×": Cell(fmt_ratio(ratio(full.mean("trainable_params"), c.mean("trainable_params")))),
        "train s": Cell(mean_std(c.stats.get("train_time_s"), 1), c.mean("train_time_s")),
        "time ×": Cell(fmt_ratio(ratio(full.mean("train_time_s"), c.mean("train_time_s")))),
        "peak mem": Cell(fmt_bytes(c.mean("peak_memory_bytes")), c.mean("peak_memory_bytes")),
        "peak mem ×": Cell(fmt_ratio(ratio(full.mean("peak_memory_bytes"), c.mean("peak_memory_bytes")))),
        "eval − train loss": Cell(fmt_num(gap), gap),
    }


# ---- model footprint: full against a 4-bit base -----------------------------------------------------------


def footprint_table(model: str, configs: list[Config]) -> list[StudyTable]:
    """Where full fine-tuning and a 4-bit-base configuration ran on this model: both footprints, the ratio."""
    full = pick_baseline(configs, "full")
    quantized = [c for c in configs if (run_mean(c, "model", "footprint", "four_bit_bytes") or 0) > 0]
    if full is None or full.method != "full" or not quantized or run_mean(full, "model", "footprint", "bytes") is None:
        return []
    rows = [footprint_row(c, full) for c in [full, *quantized]]
    return [(f"Model footprint: full against 4-bit: {model}", rows, FOOTPRINT_NOTE)]


def footprint_row(c: Config, full: Config) -> Row:
    total = run_mean(c, "model", "footprint", "bytes")
    four_bit = run_mean(c, "model", "footprint", "four_bit_bytes") or 0.0
    whole = ratio(run_mean(full, "model", "footprint", "bytes"), total)
    layers = quantized_layer_ratio(c, full)
    return {
        "config": Cell(c.label + (" (reference)" if c is full else "")),
        "model mem": Cell(fmt_bytes(total), total),
        "4-bit part": Cell(fmt_bytes(four_bit), four_bit),
        "unquantized part": Cell(fmt_bytes(None if total is None else total - four_bit)),
        "full ÷ this": Cell(fmt_ratio(whole), whole),
        "quantized layers: full ÷ 4-bit": Cell("" if c is full else fmt_ratio(layers), layers),
    }


def quantized_layer_ratio(c: Config, full: Config) -> float | None:
    """Full-precision bytes of the layers `c` holds in 4 bits ÷ their 4-bit bytes, from the footprints:
    full = base; c = base with those layers in 4 bits + its trainable additions (adapters, head copies).
    None unless both hold their unquantized weights in the same single dtype."""
    run_q, run_f = c.runs[0], full.runs[0]
    fp_q, fp_f = value_at(run_q, "model", "footprint") or {}, value_at(run_f, "model", "footprint") or {}
    dtypes_q = {k for k in (fp_q.get("parameters_by_dtype") or {}) if k != "4bit"}
    dtypes_f = set(fp_f.get("parameters_by_dtype") or {})
    values = [number(fp_q.get(k)) for k in ("bytes", "four_bit_bytes", "trainable_bytes")] + [number(fp_f.get("bytes"))]
    if len(dtypes_q) != 1 or dtypes_q != dtypes_f or any(v is None for v in values):
        return None
    total_q, four_bit, trainable, total_f = (float(v) for v in values)  # type: ignore[arg-type]
    full_precision = total_f - (total_q - four_bit - trainable)
    return full_precision / four_bit if four_bit > 0 and full_precision > 0 else None
