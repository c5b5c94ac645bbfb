"""`peftbench report`: tables, baseline comparison, plots, exports and one self-contained HTML file.

`build_report(records, out_dir)` writes into `out_dir`: report.html (images inlined), report.md,
report.csv and report.json (one flat row per run), analysis.json (every number the report
states) and plots/*.png. The analysis itself lives in compare.py and stats.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .compare import Analysis, analyze, config_key, model_label, record_costs, scalar_metrics
from .records import atomic_write_json, atomic_write_text
from .summary import fmt_bytes

# ---- cells and formatting ---------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """A table cell: what is shown and what it sorts by (numbers sort as numbers in the HTML)."""

    text: str
    sort: float | str | None = None


def fmt_num(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def fmt_count(n: float | None) -> str:
    if n is None:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}×"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def mean_std(stats: dict[str, Any] | None, digits: int = 4) -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    if stats.get("std") is None:
        return fmt_num(stats["mean"], digits)
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def ci_text(stats: dict[str, Any] | None, digits: int = 4) -> str:
    if not stats or stats.get("ci_low") is None:
        return "-"
    text = f"[{stats['ci_low']:.{digits}f}, {stats['ci_high']:.{digits}f}]"
    if stats.get("boot_low") is not None:
        text += f" boot [{stats['boot_low']:.{digits}f}, {stats['boot_high']:.{digits}f}]"
    return text


# ---- tables ---------------------------------------------------------------------------------------


def dashboard(analysis: Analysis, task: str) -> list[dict[str, Cell]]:
    """One row per configuration (seeds pooled) and one per failed run, with its reason."""
    rows: list[dict[str, Cell]] = []
    for c in analysis.task_configs(task):
        hp = c.hparams
        m = c.metric
        if c.runs:
            st = c.stats
            status = "ok" if not c.failed else f"ok, {len(c.failed)} failed"
            rows.append({
                "best": Cell("★" if c.best else "", 1 if c.best else 0),
                "model": Cell(c.model),
                "config": Cell(c.label + (" (baseline)" if c.baseline else "")),
                "r": Cell(str(hp["r"]) if hp["r"] is not None else "-", hp["r"]),
                "lr": Cell(f"{hp['lr']:g}" if hp["lr"] is not None else "-", hp["lr"]),
                "epochs": Cell(str(hp["epochs"]) if hp["epochs"] is not None else "-", hp["epochs"]),
                "seeds": Cell(str(len(c.runs)), len(c.runs)),
                "status": Cell(status),
                m: Cell(mean_std(st.get(m)), c.mean(m)),
                "95% CI": Cell(ci_text(st.get(m)), (st.get(m) or {}).get("ci_low")),
                "eval_loss": Cell(mean_std(st.get("eval_loss")), c.mean("eval_loss")),
                "trainable": Cell(fmt_count(c.mean("trainable_params")), c.mean("trainable_params")),
                "trainable %": Cell(fmt_num(c.mean("trainable_pct"), 3), c.mean("trainable_pct")),
                "train s": Cell(mean_std(st.get("train_time_s"), 1), c.mean("train_time_s")),
                "peak mem": Cell(fmt_bytes(c.mean("peak_memory_bytes")), c.mean("peak_memory_bytes")),
                "saved size": Cell(fmt_bytes(c.mean("artifact_bytes")), c.mean("artifact_bytes")),
            })
        for r in c.failed:
            err = r.get("error") or {}
            rows.append({
                "best": Cell("", 0), "model": Cell(c.model), "config": Cell(f"{c.label} seed {r.get('seed')}"),
                "r": Cell(str(hp["r"]) if hp["r"] is not None else "-", hp["r"]),
                "lr": Cell(f"{hp['lr']:g}" if hp["lr"] is not None else "-", hp["lr"]),
                "epochs": Cell(str(hp["epochs"]) if hp["epochs"] is not None else "-", hp["epochs"]),
                "seeds": Cell("-", 0),
                "status": Cell(f"{r.get('status')} ({err.get('type', '?')}): {err.get('message', '')}"),
                m: Cell("-"), "95% CI": Cell("-"), "eval_loss": Cell("-"), "trainable": Cell("-"),
                "trainable %": Cell("-"), "train s": Cell("-"), "peak mem": Cell("-"), "saved size": Cell("-"),
            })
    return rows


def comparison_rows(analysis: Analysis, task: str) -> list[dict[str, Cell]]:
    rows = []
    for cmp in analysis.comparisons.get(task, []):
        d = cmp["deltas"].get(cmp["metric"]) or {}
        t = cmp["test"]
        rows.append({
            "config": Cell(cmp["label"]),
            f"Δ {cmp['metric']}": Cell(f"{d['abs']:+.4f}" if d else "-", d.get("abs")),
            "Δ rel %": Cell(f"{d['rel_pct']:+.2f}" if d.get("rel_pct") is not None else "-", d.get("rel_pct")),
            "Δ eval_loss": Cell(f"{cmp['deltas']['eval_loss']['abs']:+.4f}" if "eval_loss" in cmp["deltas"] else "-",
                                (cmp["deltas"].get("eval_loss") or {}).get("abs")),
            "test": Cell(t.get("test") or "-"),
            "p": Cell(fmt_p(t.get("pvalue")), t.get("pvalue")),
            "param reduction %": Cell(fmt_num(cmp["param_reduction_pct"], 2), cmp["param_reduction_pct"]),
            "× fewer params": Cell(fmt_ratio(cmp["x_fewer_params"]), cmp["x_fewer_params"]),
            f"{cmp['metric']} / M params": Cell(fmt_num(cmp["metric_per_million_params"], 3),
                                                cmp["metric_per_million_params"]),
            "speed-up": Cell(fmt_ratio(cmp["speedup"]), cmp["speedup"]),
            "memory saving": Cell(fmt_ratio(cmp["memory_saving"]), cmp["memory_saving"]),
            "size ratio": Cell(fmt_ratio(cmp["size_ratio"]), cmp["size_ratio"]),
            "verdict": Cell(cmp["verdict"]["label"]),
        })
    return rows


def per_class_rows(analysis: Analysis, task: str) -> list[dict[str, Cell]]:
    rows = []
    for cmp in analysis.comparisons.get(task, []):
        if not cmp["per_class_deltas"]:
            continue
        row = {"config": Cell(cmp["label"])}
        for cls, d in cmp["per_class_deltas"].items():
            for k in ("f1", "precision", "recall"):
                if k in d:
                    row[f"{cls} Δ{k}"] = Cell(f"{d[k]:+.4f}", d[k])
        rows.append(row)
    return rows


def pair_rows(analysis: Analysis, task: str) -> list[dict[str, Cell]]:
    rows = []
    for p in analysis.pairs.get(task, []):
        per_seed = p.get("per_seed") or []
        welch = p.get("welch") or {}
        rows.append({
            "A": Cell(p["a"]), "B": Cell(p["b"]),
            f"Δ {p['metric']} (A−B)": Cell(f"{p['delta']:+.4f}" if p.get("delta") is not None else "-", p.get("delta")),
            "test": Cell(p.get("test") or "none possible"),
            "seed pairs": Cell(str(len(per_seed)), len(per_seed)),
            "p per seed pair": Cell(", ".join(fmt_p(t["pvalue"]) for t in per_seed) or "-"),
            "p": Cell(fmt_p(p.get("pvalue")), p.get("pvalue")),
            "Welch p (seeds)": Cell(fmt_p(welch.get("pvalue")), welch.get("pvalue")),
            "significant (α=0.05)": Cell("yes" if p["significant"] else "no"),
            "better": Cell(p.get("better") or "-"),
        })
    return rows


def run_rows(analysis: Analysis, task: str) -> list[dict[str, Cell]]:
    """Every run of the task, one row each (failed ones with their reason)."""
    rows = []
    for c in analysis.task_configs(task):
        for r in sorted(c.runs + c.failed, key=lambda r: int(r.get("seed") or 0)):
            err = r.get("error") or {}
            value = scalar_metrics(r).get(c.metric)
            costs = record_costs(r)
            rows.append({
                "run_id": Cell(str(r.get("run_id"))), "config": Cell(c.label),
                "seed": Cell(str(r.get("seed")), r.get("seed")),
                "status": Cell(str(r.get("status")) + (f" ({err.get('type')}): {err.get('message')}" if err else "")),
                c.metric: Cell(fmt_num(value), value),
                "train s": Cell(fmt_num(costs["train_time_s"], 1), costs["train_time_s"]),
            })
    return rows


def markdown(rows: list[dict[str, Cell]]) -> str:
    if not rows:
        return "(none)\n"
    headers = _headers(rows)
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_md_escape(r.get(h, Cell("")).text) for h in headers) + " |")
    return "\n".join(out) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def terminal(rows: list[dict[str, Cell]], max_width: int = 60) -> str:
    if not rows:
        return "(none)"
    headers = _headers(rows)

    def clip(s: str) -> str:
        return s if len(s) <= max_width else s[: max_width - 3] + "..."

    widths = {h: max(len(h), *(len(clip(r.get(h, Cell("")).text)) for r in rows)) for h in headers}
    lines = ["  ".join(h.ljust(widths[h]) for h in headers), "  ".join("-" * widths[h] for h in headers)]
    lines += ["  ".join(clip(r.get(h, Cell("")).text).ljust(widths[h]) for h in headers).rstrip() for r in rows]
    return "\n".join(lines)


def _headers(rows: list[dict[str, Cell]]) -> list[str]:
    headers: list[str] = []
    for r in rows:
        headers += [h for h in r if h not in headers]
    return headers


# ---- flat per-run export ---------------------------------------------------------------------------


def flat_row(record: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """One run as a flat dict of scalars (pandas-friendly)."""
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
    }
    row.update(record_costs(record))
    row.update(scalar_metrics(record))
    for k, v in method.items():
        if k != "name" and (v is None or isinstance(v, int | float | str | bool)):
            row[f"method.{k}"] = v
    return row


def flat_rows(records: list[dict[str, Any]], analysis: Analysis) -> list[dict[str, Any]]:
    labels = {c.config_id: c.label for c in analysis.configs}
    return [flat_row(r, labels) for r in records]


def write_exports(rows: list[dict[str, Any]], out: Path) -> None:
    import pandas as pd

    df = pd.DataFrame(rows)
    atomic_write_text(out / "report.csv", df.to_csv(index=False))
    atomic_write_json(out / "report.json", rows)


# ---- report -----------------------------------------------------------------------------------------


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "task"


def markdown_report(analysis: Analysis, plots: dict[str, list[tuple[str, Path]]], out: Path) -> str:
    parts = ["# peftbench report\n"]
    parts += [f"> {n}\n" for n in analysis.notes]
    for task in analysis.tasks:
        base = analysis.baselines.get(task)
        metric = analysis.task_configs(task)[0].metric
        parts.append(f"\n## Task: {task} (metric: {metric})\n")
        parts.append("\n### Dashboard\n\n" + markdown(dashboard(analysis, task)))
        parts.append("\n★ = best mean " + metric + " in the task; ± is the std over seeds; "
                     "95% CI is a t-interval over seeds.\n")
        if base is not None:
            parts.append(f"\n### Against the baseline: {base.label}\n\n" + markdown(comparison_rows(analysis, task)))
            parts.append("\n" + "".join(f"- **{c['label']}**: {c['verdict']['text']}\n"
                                        for c in analysis.comparisons.get(task, [])))
            pc = per_class_rows(analysis, task)
            if pc:
                parts.append("\n#### Per-class deltas\n\n" + markdown(pc))
        parts.append("\n### Paired significance (α = 0.05)\n\n" + markdown(pair_rows(analysis, task)))
        parts.append("\n### All runs\n\n" + markdown(run_rows(analysis, task)))
        for caption, p in plots.get(task, []):
            parts.append(f"\n![{caption}]({p.relative_to(out).as_posix()})\n")
    return "".join(parts)


def terminal_report(analysis: Analysis) -> str:
    out = []
    for task in analysis.tasks:
        out.append(f"== {task} ==")
        out.append(terminal(dashboard(analysis, task)))
        for c in analysis.comparisons.get(task, []):
            out.append(f"  {c['label']}: {c['verdict']['text']}")
    out += [f"note: {n}" for n in analysis.notes]
    return "\n".join(out)


def build_report(records: list[dict[str, Any]], out_dir: str | Path, *, baseline: str | None = "full",
                 metric: str | None = None, bootstrap: bool = False) -> Path:
    """Write the whole report into `out_dir`; return the path of the HTML file."""
    return write_report(records, out_dir, baseline=baseline, metric=metric, bootstrap=bootstrap)[0]


def write_report(records: list[dict[str, Any]], out_dir: str | Path, *, baseline: str | None = "full",
                 metric: str | None = None, bootstrap: bool = False,
                 profiles: list[tuple[Path, dict[str, Any]]] | None = None) -> tuple[Path, Analysis]:
    """`build_report`, also returning the analysis (the CLI prints its tables). `profiles`
    (`profile.find_profiles`) add a "Cost curves" section."""
    from .errors import SpecError
    from .plots import task_plots
    from .report_html import render_html

    if not records:
        raise SpecError("no run records to report on", hint="point the report at a folder holding <run>/result.json")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyze(records, baseline=baseline, metric=metric, bootstrap=bootstrap)
    plots = {t: task_plots(analysis.task_configs(t), out / "plots", slug(t)) for t in analysis.tasks}
    write_exports(flat_rows(records, analysis), out)
    atomic_write_json(out / "analysis.json", analysis.to_dict())
    md, extra_html = markdown_report(analysis, plots, out), ""
    if profiles:
        from .profile import cost_curves

        section = cost_curves(profiles, out)
        md, extra_html = md + section.markdown, section.html
    atomic_write_text(out / "report.md", md)
    html_path = out / "report.html"
    atomic_write_text(html_path, render_html(analysis, plots, records, extra_html))
    return html_path, analysis
