"""The report's lm-eval tables (records' `lm_eval` section): scores beside the task metric, forgetting on
general tasks, and paired tests between configurations on the same items.

- `lm_eval_rows(role="evaluation")`: per configuration and lm-eval task, the base and the tuned score,
  each ± lm-eval's standard error (with several seeds: the mean over seeds ± the mean standard error),
  the change and the p-value of base vs tuned on the same items, next to the run's own task metric.
- `lm_eval_rows(role="retention")`: the same for `retention.lm_eval_tasks`, with the drop (positive =
  the tuned model forgot), beside the forgetting probe's section.
- `lm_eval_pair_rows`: every two configurations on each lm-eval task they both scored on the same
  items (same document hashes): McNemar's test where per-item scores are 0/1 (accuracy), a paired
  bootstrap otherwise, per matched seed pair, combined as the task metric's pairs are
  (`stats.combine_seed_tests`: significant only if every seed pair is, p = the largest).
"""

from __future__ import annotations

from itertools import combinations
from statistics import fmean
from typing import Any

from peftbench.records.fields import value_at
from peftbench.reports.analysis import Analysis
from peftbench.reports.comparisons import match_seeds
from peftbench.reports.configs import Config
from peftbench.reports.stats import ALPHA, combine_seed_tests, mcnemar_test, paired_bootstrap
from peftbench.reports.tables import Cell, Row, fmt_num, fmt_p

LM_EVAL_NOTE = ("lm-evaluation-harness tasks scored in memory on the untrained base model and on the tuned one; "
                "± is lm-eval's standard error (with several seeds: the mean score ± the mean standard error). "
                "p: base vs tuned on the same items (McNemar for 0/1 scores, else paired bootstrap), "
                "every seed significant for a significant result (largest p shown).")
LM_EVAL_FORGETTING_NOTE = ("Forgetting on general lm-eval tasks (retention.lm_eval_tasks): drop = base − tuned in the "
                           "metric's good direction, positive = forgot.")
LM_EVAL_PAIRED_NOTE = ("Tuned scores of two configurations on the same lm-eval items: McNemar's test on per-item "
                       "correctness, or a paired bootstrap of per-item scores; each seed pair tested, significant "
                       "only if every pair is (p shown = largest).")


def _tasks(record: dict[str, Any]) -> dict[str, Any]:
    return value_at(record, "lm_eval", "tasks") or {}


def _with(c: Config, name: str) -> list[dict[str, Any]]:
    """The config's runs' results for lm-eval task `name`."""
    return [t for r in c.runs if (t := _tasks(r).get(name)) is not None]


def _score(values: list[dict[str, Any]]) -> tuple[float | None, str]:
    """(mean, 'mean ± mean stderr') of {value, stderr} entries."""
    vals = [v["value"] for v in values if v.get("value") is not None]
    errs = [v["stderr"] for v in values if v.get("stderr") is not None]
    if not vals:
        return None, "-"
    mean = fmean(vals)
    return mean, f"{mean:.4f}" + (f" ± {fmean(errs):.4f}" if errs else "")


def paired_item_test(a: list[float], b: list[float], higher: bool = True) -> dict[str, Any]:
    """A's and B's per-item scores on the same items: McNemar when every score is 0 or 1, else a paired
    bootstrap; `delta_good` > 0 when A is better."""
    if set(a) | set(b) <= {0.0, 1.0}:
        res = mcnemar_test([int(x) for x in a], [int(x) for x in b], [1] * len(a))
    else:
        res = paired_bootstrap(a, b)
    res["delta_good"] = res["delta"] if higher else -res["delta"]
    return res


def _base_vs_tuned(results: list[dict[str, Any]]) -> dict[str, Any]:
    tests = [paired_item_test(t["items"]["tuned"], t["items"]["base"], t.get("higher_is_better", True))
             for t in results if t.get("items")]
    return combine_seed_tests([{**t, "delta": t["delta_good"]} for t in tests])


def lm_eval_rows(analysis: Analysis, task: str, role: str = "evaluation") -> list[Row]:
    """One row per configuration and lm-eval task of `role` (see the module docstring)."""
    rows: list[Row] = []
    for c in analysis.task_configs(task):
        names = sorted({n for r in c.runs for n, t in _tasks(r).items() if t.get("role") == role})
        for name in names:
            results = _with(c, name)
            base_mean, base_text = _score([t["base"] for t in results])
            tuned_mean, tuned_text = _score([t["tuned"] for t in results])
            deltas = [t["delta"] for t in results if t.get("delta") is not None]
            test = _base_vs_tuned(results)
            row = {"config": Cell(c.label), "lm-eval task": Cell(name), "metric": Cell(results[0]["metric"]),
                   "n": Cell(str(results[0].get("n") or "-"), results[0].get("n")),
                   "seeds": Cell(str(len(results)), len(results)),
                   "base": Cell(base_text, base_mean), "tuned": Cell(tuned_text, tuned_mean)}
            if role == "retention":
                drops = [t["forgetting"] for t in results if t.get("forgetting") is not None]
                row["drop"] = Cell(f"{fmean(drops):+.4f}" if drops else "-", fmean(drops) if drops else None)
            else:
                row["Δ"] = Cell(f"{fmean(deltas):+.4f}" if deltas else "-", fmean(deltas) if deltas else None)
            row["p (base vs tuned)"] = Cell(fmt_p(test["pvalue"]), test["pvalue"])
            row[c.metric] = Cell(fmt_num(c.mean(c.metric)), c.mean(c.metric))
            rows.append(row)
    return rows


def lm_eval_pair_rows(analysis: Analysis, task: str) -> list[Row]:
    """Paired tests between every two configurations on each lm-eval task both scored on the same items."""
    rows: list[Row] = []
    for a, b in combinations([c for c in analysis.task_configs(task) if c.runs], 2):
        names = sorted({n for r in a.runs for n in _tasks(r)} & {n for r in b.runs for n in _tasks(r)})
        for name in names:
            tests, deltas = [], []
            for ra, rb in match_seeds(a, b):
                ta, tb = _tasks(ra).get(name), _tasks(rb).get(name)
                if not (ta and tb and ta.get("items") and tb.get("items")) or ta["items_sha256"] != tb["items_sha256"]:
                    continue
                tests.append(paired_item_test(ta["items"]["tuned"], tb["items"]["tuned"], ta["higher_is_better"]))
                deltas.append(ta["tuned"]["value"] - tb["tuned"]["value"])
            if not tests:
                continue
            verdict = combine_seed_tests([{**t, "delta": t["delta_good"]} for t in tests])
            rows.append({
                "A": Cell(a.label), "B": Cell(b.label), "lm-eval task": Cell(name),
                "role": Cell(str(_tasks(a.runs[0]).get(name, {}).get("role", "-"))),
                "Δ (A−B)": Cell(f"{fmean(deltas):+.4f}", fmean(deltas)), "test": Cell(tests[0]["test"]),
                "seed pairs": Cell(str(len(tests)), len(tests)),
                "p": Cell(fmt_p(verdict["pvalue"]), verdict["pvalue"]),
                f"significant (α={ALPHA})": Cell("yes" if verdict["significant"] else "no"),
            })
    return rows
