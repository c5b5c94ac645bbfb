"""`peftbench report`: tables, baseline comparison, plots, exports and one self-contained HTML file.

`build_report(records, out_dir)` writes into `out_dir`: report.html (images inlined, with the
interactive results board of `board`), report.md, report.csv and report.json (one flat row per run),
analysis.json (every number the report states) and plots/*.png. The analysis itself lives in `analysis` (with `configs`, `comparisons`,
`trust` and `stats`), what each section shows in `rows` and `sections`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftbench.records.fields import model_label
from peftbench.records.io import atomic_write_json, atomic_write_text
from peftbench.reports.analysis import Analysis, analyze
from peftbench.reports.configs import config_key, record_costs, scalar_metrics, selected_on_test
from peftbench.reports.escape import csv_cell
from peftbench.reports.sections import markdown_report, slug
from peftbench.reports.trust import TARGET_FRACTION, record_values

# ---- flat per-run export ---------------------------------------------------------------------------

# The eval set's no-learning baselines exported with each run (classification).
BASELINE_COLUMNS = ("majority_class", "majority_accuracy", "majority_f1_macro", "chance_accuracy")


def flat_row(record: dict[str, Any], labels: dict[str, str], *, metric: str | None = None,
             fraction: float = TARGET_FRACTION, learned: bool | None = None,
             baselines: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run as a flat dict of scalars (pandas-friendly); trust numbers only where the run has them;
    `learned` and the eval set's `baselines` as the analysis judged them."""
    spec = record.get("spec") or {}
    method = spec.get("method") or {}
    train = spec.get("train") or {}
    err = record.get("error") or {}
    params = record.get("params") or {}
    key = config_key(record)
    row: dict[str, Any] = {
        "run_id": record.get("run_id"), "task": record.get("task"), "model": model_label(record.get("model_name")),
        "method": record.get("method"), "config": labels.get(key), "config_id": key, "seed": record.get("seed"),
        "status": record.get("status"), "error_type": err.get("type"), "error_message": err.get("message"),
        "main_metric": record.get("main_metric"),
        "main_metric_value": scalar_metrics(record).get(record.get("main_metric") or ""),
        "total_params": params.get("total"), "trainable_pct": params.get("trainable_pct"),
        "lr": train.get("lr"), "epochs": train.get("epochs"), "batch_size": train.get("batch_size"),
        "samples_per_s": (record.get("train") or {}).get("samples_per_s"),
        "eval_n": len((record.get("predictions") or {}).get("gold") or []) or None,
        "tuning_role": (record.get("tuning") or {}).get("role"), "tune_id": (record.get("tuning") or {}).get("tune_id"),
        "test_selection": selected_on_test(record), "learned": learned,
        **{k: v for k, v in (baselines or {}).items() if k in BASELINE_COLUMNS},
    }
    row.update(record_costs(record))
    trust = record_values(record, metric or record.get("main_metric") or "", fraction)
    if trust["time_to_target_s"] is not None:
        trust.update(target_metric=metric or record.get("main_metric"), target_fraction=fraction)
    if trust["forgetting"] is not None:
        trust["forgetting_metric"] = (record.get("retention") or {}).get("forgetting_metric")
    row.update({k: v for k, v in trust.items() if v is not None})
    row.update(scalar_metrics(record))
    for k, v in method.items():
        if k != "name" and (v is None or isinstance(v, int | float | str | bool)):
            row[f"method.{k}"] = v
    return row


def flat_rows(records: list[dict[str, Any]], analysis: Analysis) -> list[dict[str, Any]]:
    labels = {c.config_id: c.label for c in analysis.configs}
    metrics = {c.task: c.metric for c in analysis.configs}  # time to target follows each task's metric
    learned = {rid: v for c in analysis.configs for rid, v in (c.learning.get("runs") or {}).items()}
    bases = {c.config_id: c.learning.get("baselines") for c in analysis.configs}
    return [flat_row(r, labels, metric=metrics.get(r.get("task") or "classification"),
                     fraction=analysis.target_fraction, learned=learned.get(str(r.get("run_id"))),
                     baselines=bases.get(config_key(r))) for r in records]


def write_exports(rows: list[dict[str, Any]], out: Path) -> None:
    import pandas as pd

    df = pd.DataFrame([{k: csv_cell(v) for k, v in row.items()} for row in rows])
    # RFC 4180 line ends: with them a carriage return inside a value is quoted, not a row break.
    atomic_write_text(out / "report.csv", df.to_csv(index=False, lineterminator="\r\n"))
    atomic_write_json(out / "report.json", rows)


# ---- report -----------------------------------------------------------------------------------------


def build_report(records: list[dict[str, Any]], out_dir: str | Path, *, baseline: str | None = "full",
                 metric: str | None = None, bootstrap: bool = False,
                 target_fraction: float = TARGET_FRACTION, prefer: str = "metric",
                 floors: dict[str, tuple[str, float]] | None = None) -> Path:
    """Write the whole report into `out_dir`; return the path of the HTML file."""
    return write_report(records, out_dir, baseline=baseline, metric=metric, bootstrap=bootstrap,
                        target_fraction=target_fraction, prefer=prefer, floors=floors)[0]


def write_report(records: list[dict[str, Any]], out_dir: str | Path, *, baseline: str | None = "full",
                 metric: str | None = None, bootstrap: bool = False,
                 target_fraction: float = TARGET_FRACTION,
                 profiles: list[tuple[Path, dict[str, Any]]] | None = None, prefer: str = "metric",
                 floors: dict[str, tuple[str, float]] | None = None) -> tuple[Path, Analysis]:
    """`build_report`, also returning the analysis (the CLI prints its tables). `profiles`
    (`cost_curves.find_profiles`) add a "Cost curves" section; `prefer` and `floors` steer the
    decision each task opens with (`decision.decide`)."""
    from peftbench.errors import SpecError
    from peftbench.reports.board import board_parts
    from peftbench.reports.html import render_html
    from peftbench.reports.plots import task_plots

    if not records:
        raise SpecError("no run records to report on", hint="point the report at a folder holding <run>/result.json")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyze(records, baseline=baseline, metric=metric, bootstrap=bootstrap, target_fraction=target_fraction,
                       prefer=prefer, floors=floors)
    plots = {t: task_plots(analysis.task_configs(t), out / "plots", slug(t)) for t in analysis.tasks}
    rows = flat_rows(records, analysis)
    write_exports(rows, out)
    atomic_write_json(out / "analysis.json", analysis.to_dict())
    md, extra_html = markdown_report(analysis, plots, out), ""
    if profiles:
        from peftbench.reports.cost_curves import cost_curves

        section = cost_curves(profiles, out)
        md, extra_html = md + section.markdown, section.html
    atomic_write_text(out / "report.md", md)
    html_path = out / "report.html"
    atomic_write_text(html_path, render_html(analysis, plots, records, extra_html, board=board_parts(records, rows)))
    return html_path, analysis
