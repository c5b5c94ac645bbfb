"""The rows of each report table, per task: dashboard, tuning, baseline comparison, per-class
deltas, paired tests, forgetting, weight change and every run. Cells carry a shown text and a sort
value (`tables.Cell`); the writers (`sections`, `html`) lay them out."""

from __future__ import annotations

from typing import Any

from peftbench.records.fields import fmt_bytes, fmt_number
from peftbench.reports.analysis import Analysis
from peftbench.reports.configs import Config, record_costs, scalar_metrics
from peftbench.reports.load_marks import comparison_load_mark, run_load_text
from peftbench.reports.stats import ALPHA
from peftbench.reports.tables import Cell, Row, ci_text, fmt_count, fmt_num, fmt_p, fmt_ratio, mean_std
from peftbench.reports.trust import source_name

TEST_SELECTED_MARK = "⚠"


def target_header(fraction: float) -> str:
    """The dashboard column of time to target, e.g. 'to 95% (s)'."""
    return f"to {fraction * 100:g}% (s)"


def _hparam_cells(hp: dict[str, Any]) -> Row:
    return {
        "r": Cell(str(hp["r"]) if hp["r"] is not None else "-", hp["r"]),
        "lr": Cell(fmt_number(hp["lr"]) if hp["lr"] is not None else "-", hp["lr"]),
        "epochs": Cell(str(hp["epochs"]) if hp["epochs"] is not None else "-", hp["epochs"]),
    }


def _second_metric(metric: str, configs: list[Config]) -> str | None:
    """Macro F1 next to accuracy (and accuracy next to macro F1) where the records have it."""
    other = {"accuracy": "f1_macro", "f1_macro": "accuracy"}.get(metric)
    return other if other and any(other in c.stats for c in configs) else None


def _config_row(c: Config, ttt: str | None, second: str | None) -> Row:
    st, m = c.stats, c.metric
    return {
        "best": Cell("★" if c.best else "", 1 if c.best else 0),
        "model": Cell(c.model),
        "config": Cell(c.label + (" (baseline)" if c.baseline else "")
                       + (f" {TEST_SELECTED_MARK}" if c.test_selection else "")),
        **_hparam_cells(c.hparams),
        "seeds": Cell(str(len(c.runs)), len(c.runs)),
        "status": Cell("ok" if not c.failed else f"ok, {len(c.failed)} failed"),
        m: Cell(mean_std(st.get(m)), c.mean(m)),
        "95% CI": Cell(ci_text(st.get(m)), (st.get(m) or {}).get("ci_low")),
        **({second: Cell(mean_std(st.get(second)), c.mean(second))} if second else {}),
        "eval_loss": Cell(mean_std(st.get("eval_loss")), c.mean("eval_loss")),
        "trainable": Cell(fmt_count(c.mean("trainable_params")), c.mean("trainable_params")),
        "trainable %": Cell(fmt_num(c.mean("trainable_pct"), 3), c.mean("trainable_pct")),
        "train s": Cell(mean_std(st.get("train_time_s"), 1), c.mean("train_time_s")),
        **({ttt: Cell(mean_std(st.get("time_to_target_s"), 1), c.mean("time_to_target_s"))} if ttt else {}),
        "peak mem": Cell(fmt_bytes(c.mean("peak_memory_bytes")), c.mean("peak_memory_bytes")),
        "model mem": Cell(fmt_bytes(c.mean("model_footprint_bytes")), c.mean("model_footprint_bytes")),
        "saved size": Cell(fmt_bytes(c.mean("artifact_bytes")), c.mean("artifact_bytes")),
    }


def dashboard_optional(analysis: Analysis) -> tuple[str, ...]:
    """The dashboard columns a narrow terminal leaves out, least needed first: settings the
    configuration's label already names where they differ, then costs and spreads."""
    return ("r", "lr", "epochs", "model mem", "trainable", "saved size", "why", target_header(analysis.target_fraction),
            "eval_loss", "status", "seeds", "95% CI", "model")


def dashboard(analysis: Analysis, task: str, *, learned: bool = True) -> list[Row]:
    """One row per configuration with successful runs (seeds pooled): those that learned (or whose
    verdict is unknown), or with `learned=False` those that did not, with the reason. Configurations
    that selected on the test split carry ⚠; time to target is a column when some run has a curve."""
    configs = analysis.task_configs(task)
    ttt = target_header(analysis.target_fraction) if any("time_to_target_s" in c.stats for c in configs) else None
    second = _second_metric(configs[0].metric, configs) if configs else None
    rows = []
    for c in configs:
        if c.runs and (c.learned is not False) == learned:
            row = _config_row(c, ttt, second)
            if not learned:
                row = {"learned": Cell(c.learning.get("summary", "no")),  # in the place of ★
                       **{k: v for k, v in row.items() if k != "best"},
                       "why": Cell("; ".join(c.learning.get("reasons", [])))}
            rows.append(row)
    return rows


def failed_rows(analysis: Analysis, task: str) -> list[Row]:
    """Failed and canceled runs, one row each with the reason (kept out of the dashboard)."""
    rows = []
    for c in analysis.task_configs(task):
        for r in c.failed:
            err = r.get("error") or {}
            rows.append({"config": Cell(c.label), "seed": Cell(str(r.get("seed")), r.get("seed")),
                         "status": Cell(f"{r.get('status')} ({err.get('type', '?')})"),
                         "reason": Cell(str(err.get("message", ""))), "run_id": Cell(str(r.get("run_id")))})
    return rows


def baseline_lines(analysis: Analysis, task: str) -> list[str]:
    """What a run must beat on the task's eval set: answering without learning (classification), or the
    untrained base model (generative tasks)."""
    base = next((c.learning.get("baselines") for c in analysis.task_configs(task) if c.learning.get("baselines")), None)
    if base and isinstance(base.get("base_model"), dict):
        scores = ", ".join(f"{k} {v:.4g}" for k, v in base["base_model"].items() if k != "eval_tokens")
        return [f"Before training, the untrained base model scores {scores} on the same eval set."]
    if not base or base.get("majority_class") is None:
        return []
    return [f"Without learning: always answering '{base['majority_class']}' scores accuracy "
            f"{base['majority_accuracy']:.4f} (macro F1 {base['majority_f1_macro']:.4f}); chance (1/"
            f"{base['n_classes']}) is {base['chance_accuracy']:.4f}, on {base['n_eval']} eval examples."]


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


def tuning_rows(analysis: Analysis, task: str) -> list[Row]:
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


def forgetting_rows(analysis: Analysis, task: str) -> list[Row]:
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


def weight_change_rows(analysis: Analysis, task: str) -> list[Row]:
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


def comparison_rows(analysis: Analysis, task: str, *, against_best: bool = False) -> list[Row]:
    """Each configuration against the baseline (or, `against_best`, against the task's ★)."""
    rows = []
    for cmp in (analysis.best_comparisons if against_best else analysis.comparisons).get(task, []):
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
            "load": Cell(comparison_load_mark(analysis, task, cmp)),  # reports/load_marks.py
            "memory saving": Cell(fmt_ratio(cmp["memory_saving"]), cmp["memory_saving"]),
            "model mem saving": Cell(fmt_ratio(cmp.get("footprint_saving")), cmp.get("footprint_saving")),
            "size ratio": Cell(fmt_ratio(cmp["size_ratio"]), cmp["size_ratio"]),
            "verdict": Cell(cmp["verdict"]["label"]),
        })
    return rows


def per_class_rows(analysis: Analysis, task: str) -> list[Row]:
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


def pair_rows(analysis: Analysis, task: str) -> list[Row]:
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
            f"significant (α={ALPHA})": Cell("yes" if p["significant"] else "no"),
            "better": Cell(p.get("better") or "-"),
        })
    return rows


def run_rows(analysis: Analysis, task: str) -> list[Row]:
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
                "load (1-min)": Cell(run_load_text(r)),
            })
    return rows
