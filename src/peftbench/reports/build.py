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

from peftbench.records.io import atomic_write_json, atomic_write_text
from peftbench.reports.analysis import (
    TARGET_FRACTION,
    Analysis,
    analyze,
    config_key,
    model_label,
    record_costs,
    scalar_metrics,
    selected_on_test,
)
from peftbench.reports.tables import fmt_bytes
from peftbench.reports.trust import record_values, source_name

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


def mean_std(stats: dict[str, Any] | None, digits: int = 4, spec: str | None = None) -> str:
    """'mean ± std' with `digits` decimals, or in format `spec` (e.g. '.3g' for small ratios)."""
    if not stats or stats.get("mean") is None:
        return "-"
    spec = spec or f".{digits}f"
    if stats.get("std") is None:
        return f"{stats['mean']:{spec}}"
    return f"{stats['mean']:{spec}} ± {stats['std']:{spec}}"


def ci_text(stats: dict[str, Any] | None, digits: int = 4) -> str:
    if not stats or stats.get("ci_low") is None:
        return "-"
    text = f"[{stats['ci_low']:.{digits}f}, {stats['ci_high']:.{digits}f}]"
    if stats.get("boot_low") is not None:
        text += f" boot [{stats['boot_low']:.{digits}f}, {stats['boot_high']:.{digits}f}]"
    return text


# ---- tables ---------------------------------------------------------------------------------------


TEST_SELECTED_MARK = "⚠"


def target_header(fraction: float) -> str:
    """The dashboard column of time to target, e.g. 'to 95% (s)'."""
    return f"to {fraction * 100:g}% (s)"


def dashboard(analysis: Analysis, task: str) -> list[dict[str, Cell]]:
    """One row per configuration (seeds pooled) and one per failed run, with its reason. Configurations
    that selected on the test split carry ⚠; time to target is a column when some run has a curve."""
    rows: list[dict[str, Cell]] = []
    configs = analysis.task_configs(task)
    ttt = target_header(analysis.target_fraction) if any("time_to_target_s" in c.stats for c in configs) else None
    for c in configs:
        hp = c.hparams
        m = c.metric
        if c.runs:
            st = c.stats
            status = "ok" if not c.failed else f"ok, {len(c.failed)} failed"
            rows.append({
                "best": Cell("★" if c.best else "", 1 if c.best else 0),
                "model": Cell(c.model),
                "config": Cell(c.label + (" (baseline)" if c.baseline else "")
                               + (f" {TEST_SELECTED_MARK}" if c.test_selection else "")),
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
                **({ttt: Cell(mean_std(st.get("time_to_target_s"), 1), c.mean("time_to_target_s"))} if ttt else {}),
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
                "trainable %": Cell("-"), "train s": Cell("-"), **({ttt: Cell("-")} if ttt else {}),
                "peak mem": Cell("-"), "saved size": Cell("-"),
            })
    return rows


def protocol_lines(analysis: Analysis, task: str) -> list[str]:
    """Which split the task's numbers came from, and a warning naming test-selected configurations."""
    proto = analysis.trust.get(task, {}).get("protocol") or {}
    lines = []
    frm = proto.get("numbers_from") or {}
    if frm.get("metrics"):
        tests = ", ".join(f"{source_name(t['source'])} n={t['n']}" for t in proto.get("test_split", []))
        parts = [f"reported metrics on {' / '.join(frm['metrics'])}" + (f" ({tests})" if tests else "")]
        if frm.get("eval.per_epoch"):
            parts.append(f"per-epoch curves on {' / '.join(frm['eval.per_epoch'])}")
        if proto.get("selection_split"):
            parts.append(f"epoch selection on {' / '.join(proto['selection_split'])}")
        lines.append("Splits, as the records state them: " + "; ".join(parts) + ".")
    if proto.get("test_selected"):
        lines.append(f"{TEST_SELECTED_MARK} selected on the test split (allow_test_selection: checkpoint, early "
                     f"stopping or tuning looked at test), so their test numbers are optimistic: "
                     f"{', '.join(proto['test_selected'])}.")
    return lines


def _params_text(params: dict[str, Any] | None) -> str:
    if not params:
        return "-"
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def tuning_rows(analysis: Analysis, task: str) -> list[dict[str, Cell]]:
    """One row per tuning search: budget, best trial on validation, defaults vs tuned on test."""
    rows = []
    for t in analysis.trust.get(task, {}).get("tuning", []):
        b = t["budget"]
        budget = " + ".join(x for x in (f"{b['trials']} trials" if b.get("trials") else "",
                                        f"{b['timeout_s']:g} s" if b.get("timeout_s") else "") if x) or "-"
        done = b.get("trials_run")
        d, tu = t["defaults"]["test"], t["tuned"]["test"]
        rows.append({
            "method": Cell(t["method"] + (f" {TEST_SELECTED_MARK}" if t["test_selection"] else "")),
            "model": Cell(t["model"]),
            "budget": Cell(budget, b.get("trials") or b.get("timeout_s")),
            "trials done": Cell("-" if done is None else str(done)
                                + (f" ({b['trials_complete']} complete)" if b.get("trials_complete") not in (None, done)
                                   else ""), done),
            "searched on": Cell(f"{t['metric']}, {t['split'] or '?'}"),
            "best validation": Cell(fmt_num(t["best_validation"]), t["best_validation"]),
            "best params": Cell(_params_text(t["best_params"])),
            "defaults (test)": Cell(mean_std(d) + (f" n={d['n']}" if d["n"] else ""), d["mean"]),
            "tuned (test)": Cell(mean_std(tu) + (f" n={tu['n']}" if tu["n"] else ""), tu["mean"]),
            "Δ tuned − defaults": Cell(f"{t['delta']:+.4f}" if t["delta"] is not None else "-", t["delta"]),
        })
    return rows


def forgetting_rows(analysis: Analysis, task: str) -> list[dict[str, Cell]]:
    """Per configuration: forgetting and its parts (means ± std over seeds), and the Pareto mark."""
    points = {p["config_id"]: p for p in analysis.trust.get(task, {}).get("forgetting", [])}
    rows = []
    for c in analysis.task_configs(task):
        if "forgetting" not in c.stats:
            continue
        p = points.get(c.config_id) or {}
        rows.append({
            "config": Cell(c.label), "seeds": Cell(str(c.stats["forgetting"]["n"]), c.stats["forgetting"]["n"]),
            "forgetting": Cell(mean_std(c.stats["forgetting"]), c.mean("forgetting")),
            "measured as": Cell(str(p.get("forgetting_metric", "-"))),
            "probe acc before": Cell(mean_std(c.stats.get("probe_before_accuracy")), c.mean("probe_before_accuracy")),
            "probe acc after": Cell(mean_std(c.stats.get("probe_after_accuracy")), c.mean("probe_after_accuracy")),
            "drift": Cell(mean_std(c.stats.get("retention_drift"), spec=".3g"), c.mean("retention_drift")),
            c.metric: Cell(mean_std(c.stats.get(c.metric)), c.mean(c.metric)),
            "Pareto-optimal": Cell("yes" if p.get("pareto") else "no" if p else "-", 1 if p.get("pareto") else 0),
        })
    return rows


def weight_change_rows(analysis: Analysis, task: str) -> list[dict[str, Cell]]:
    """Per configuration: the diagnostics summary, means ± std over seeds."""
    rows = []
    for c in analysis.task_configs(task):
        if "dw_layers" not in c.stats:
            continue
        st = c.stats
        rows.append({
            "config": Cell(c.label), "seeds": Cell(str(st["dw_layers"]["n"]), st["dw_layers"]["n"]),
            "layers": Cell(fmt_num(c.mean("dw_layers"), 0), c.mean("dw_layers")),
            "mean ‖ΔW‖/‖W‖": Cell(mean_std(st.get("dw_mean_rel_norm"), spec=".3g"), c.mean("dw_mean_rel_norm")),
            "max ‖ΔW‖/‖W‖": Cell(mean_std(st.get("dw_max_rel_norm"), spec=".3g"), c.mean("dw_max_rel_norm")),
            "mean effective rank": Cell(mean_std(st.get("dw_mean_effective_rank"), 2), c.mean("dw_mean_effective_rank")),
            "intruders (total)": Cell(mean_std(st.get("dw_intruders_total"), 1), c.mean("dw_intruders_total")),
            "layers with intruders": Cell(mean_std(st.get("dw_layers_with_intruders"), 1),
                                          c.mean("dw_layers_with_intruders")),
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


def flat_row(record: dict[str, Any], labels: dict[str, str], *, metric: str | None = None,
             fraction: float = TARGET_FRACTION) -> dict[str, Any]:
    """One run as a flat dict of scalars (pandas-friendly); trust numbers only where the run has them."""
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
        "test_selection": selected_on_test(record),
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
    return [flat_row(r, labels, metric=metrics.get(r.get("task") or "classification"),
                     fraction=analysis.target_fraction) for r in records]


def write_exports(rows: list[dict[str, Any]], out: Path) -> None:
    import pandas as pd

    df = pd.DataFrame(rows)
    atomic_write_text(out / "report.csv", df.to_csv(index=False))
    atomic_write_json(out / "report.json", rows)


# ---- report -----------------------------------------------------------------------------------------


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "task"


TUNING_NOTE = ("Each method searched with the same budget on the validation split; the best trial's settings "
               "(tuned) and the spec's own (defaults) then ran over the same seeds and are reported on test. "
               "Trial runs are not in the dashboard.")
FORGETTING_NOTE = ("Forgetting: probe accuracy before − after fine-tuning on the retention data (positive = forgot), "
                   "or representation drift for text-only data; lower is better. Pareto-optimal: no other "
                   "configuration has both less forgetting and a better task metric.")
WEIGHT_CHANGE_NOTE = ("‖ΔW‖/‖W‖ per adapted layer, the effective rank of ΔW and intruder dimensions (new "
                      "high-magnitude singular directions), averaged over seeds.")


def target_note(analysis: Analysis, task: str) -> str:
    if not any("time_to_target_s" in c.stats for c in analysis.task_configs(task)):
        return ""
    pct = f"{analysis.target_fraction * 100:g}%"
    return (f" {target_header(analysis.target_fraction)}: training time until the per-epoch metric first came "
            f"within {pct} of its final value (one evaluation per epoch).")


def markdown_report(analysis: Analysis, plots: dict[str, list[tuple[str, Path]]], out: Path) -> str:
    parts = ["# peftbench report\n"]
    parts += [f"> {n}\n" for n in analysis.notes]
    for task in analysis.tasks:
        base = analysis.baselines.get(task)
        metric = analysis.task_configs(task)[0].metric
        parts.append(f"\n## Task: {task} (metric: {metric})\n")
        parts.append("\n### Dashboard\n\n" + markdown(dashboard(analysis, task)))
        parts.append("\n★ = best mean " + metric + " in the task; ± is the std over seeds; "
                     "95% CI is a t-interval over seeds." + target_note(analysis, task) + "\n")
        parts += [f"\n> {line}\n" for line in protocol_lines(analysis, task)]
        tuning = tuning_rows(analysis, task)
        if tuning:
            parts.append("\n### Tuning: defaults vs tuned\n\n" + markdown(tuning) + "\n" + TUNING_NOTE + "\n")
        if base is not None:
            parts.append(f"\n### Against the baseline: {base.label}\n\n" + markdown(comparison_rows(analysis, task)))
            parts.append("\n" + "".join(f"- **{c['label']}**: {c['verdict']['text']}\n"
                                        for c in analysis.comparisons.get(task, [])))
            pc = per_class_rows(analysis, task)
            if pc:
                parts.append("\n#### Per-class deltas\n\n" + markdown(pc))
        parts.append("\n### Paired significance (α = 0.05)\n\n" + markdown(pair_rows(analysis, task)))
        forgetting = forgetting_rows(analysis, task)
        if forgetting:
            parts.append("\n### Forgetting\n\n" + markdown(forgetting) + "\n" + FORGETTING_NOTE + "\n")
        change = weight_change_rows(analysis, task)
        if change:
            parts.append("\n### Weight change (ΔW)\n\n" + markdown(change) + "\n" + WEIGHT_CHANGE_NOTE + "\n")
        parts.append("\n### All runs\n\n" + markdown(run_rows(analysis, task)))
        for caption, p in plots.get(task, []):
            parts.append(f"\n![{caption}]({p.relative_to(out).as_posix()})\n")
    return "".join(parts)


def terminal_report(analysis: Analysis) -> str:
    out = []
    for task in analysis.tasks:
        out.append(f"== {task} ==")
        out.append(terminal(dashboard(analysis, task)))
        out += [f"  {line}" for line in protocol_lines(analysis, task) if line.startswith(TEST_SELECTED_MARK)]
        for c in analysis.comparisons.get(task, []):
            out.append(f"  {c['label']}: {c['verdict']['text']}")
    out += [f"note: {n}" for n in analysis.notes]
    return "\n".join(out)


def build_report(records: list[dict[str, Any]], out_dir: str | Path, *, baseline: str | None = "full",
                 metric: str | None = None, bootstrap: bool = False,
                 target_fraction: float = TARGET_FRACTION) -> Path:
    """Write the whole report into `out_dir`; return the path of the HTML file."""
    return write_report(records, out_dir, baseline=baseline, metric=metric, bootstrap=bootstrap,
                        target_fraction=target_fraction)[0]


def write_report(records: list[dict[str, Any]], out_dir: str | Path, *, baseline: str | None = "full",
                 metric: str | None = None, bootstrap: bool = False,
                 target_fraction: float = TARGET_FRACTION,
                 profiles: list[tuple[Path, dict[str, Any]]] | None = None) -> tuple[Path, Analysis]:
    """`build_report`, also returning the analysis (the CLI prints its tables). `profiles`
    (`profile.find_profiles`) add a "Cost curves" section."""
    from peftbench.errors import SpecError
    from peftbench.reports.html import render_html
    from peftbench.reports.plots import task_plots

    if not records:
        raise SpecError("no run records to report on", hint="point the report at a folder holding <run>/result.json")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyze(records, baseline=baseline, metric=metric, bootstrap=bootstrap, target_fraction=target_fraction)
    plots = {t: task_plots(analysis.task_configs(t), out / "plots", slug(t)) for t in analysis.tasks}
    write_exports(flat_rows(records, analysis), out)
    atomic_write_json(out / "analysis.json", analysis.to_dict())
    md, extra_html = markdown_report(analysis, plots, out), ""
    if profiles:
        from peftbench.profiling.profile import cost_curves

        section = cost_curves(profiles, out)
        md, extra_html = md + section.markdown, section.html
    atomic_write_text(out / "report.md", md)
    html_path = out / "report.html"
    atomic_write_text(html_path, render_html(analysis, plots, records, extra_html))
    return html_path, analysis
