"""What a report shows for each task, in order: one list of sections (title, rows, note, ...) that
both the markdown writer here and the HTML writer (`html.render_html`) lay out; and the short
terminal summary the CLI prints."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.reports.analysis import Analysis
from peftbench.reports.decision import learning_line
from peftbench.reports.escape import md_link, md_text, terminal_text
from peftbench.reports.lm_eval_tables import (
    LM_EVAL_FORGETTING_NOTE,
    LM_EVAL_NOTE,
    LM_EVAL_PAIRED_NOTE,
    lm_eval_pair_rows,
    lm_eval_rows,
)
from peftbench.reports.rows import (
    TEST_SELECTED_MARK,
    baseline_lines,
    comparison_rows,
    dashboard,
    dashboard_optional,
    failed_rows,
    forgetting_rows,
    pair_rows,
    per_class_rows,
    protocol_lines,
    run_rows,
    target_header,
    tuning_rows,
    weight_change_rows,
)
from peftbench.reports.stats import ALPHA
from peftbench.reports.study_tables import study_tables
from peftbench.reports.tables import TERMINAL_CELL_WIDTH, Row, fit_lines, markdown, terminal

TUNING_NOTE = ("Each method searched with the same budget on the validation split; the best trial's settings "
               "(tuned) and the spec's own (defaults) then ran over the same seeds and are reported on test. "
               "Trial runs are not in the dashboard.")
FORGETTING_NOTE = ("Forgetting: probe accuracy before − after fine-tuning on the retention data (positive = forgot), "
                   "or representation drift for text-only data; lower is better. Pareto-optimal: no other "
                   "configuration has both less forgetting and a better task metric.")
WEIGHT_CHANGE_NOTE = ("‖ΔW‖/‖W‖ per adapted layer, the effective rank of ΔW and intruder dimensions (new "
                      "high-magnitude singular directions), averaged over seeds.")
LEARNING_NOTE = ("A run learned when its accuracy and macro F1 are both significantly above always answering the "
                 "majority class (one-sided exact binomial test; paired bootstrap) and it did not predict one class "
                 "for 95% or more of the examples. These get no ★, no Pareto membership and no cost praise.")
PAIRED_NOTE = ("Classification: McNemar's test on per-example correctness; generation: paired bootstrap of "
               "per-example scores. With several seeds, each seed pair is tested and the pair is significant only "
               "if every seed pair is (p shown = largest).")


@dataclass
class Section:
    """One titled part of a task's report. `rows` None: no table (a figure grid). `lines` are remarks
    after the note (a line starting with ⚠ is a warning); `verdicts` (the baseline section only) are the
    comparisons whose verdicts are listed; `figures` are (caption, PNG path)."""

    title: str
    rows: list[Row] | None = None
    note: str = ""
    level: int = 3
    lines: list[str] = field(default_factory=list)
    verdicts: list[dict[str, Any]] | None = None
    figures: list[tuple[str, Path]] = field(default_factory=list)
    highlight: bool = False  # the dashboard: rows coloured by status, best, baseline
    lead: bool = False  # the decision: its lines are the task's first screen
    empty: str = "(none)"  # what a table without rows says


def slug(text: str) -> str:
    """A task name as a file-name and anchor part."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "task"


def task_title(analysis: Analysis, task: str) -> str:
    return f"Task: {task} (metric: {analysis.task_configs(task)[0].metric})"


def target_note(analysis: Analysis, task: str) -> str:
    if not any("time_to_target_s" in c.stats for c in analysis.task_configs(task)):
        return ""
    pct = f"{analysis.target_fraction * 100:g}%"
    return (f" {target_header(analysis.target_fraction)}: training time until the per-epoch metric first came "
            f"within {pct} of its final value (one evaluation per epoch).")


def decision_lines(analysis: Analysis, task: str) -> list[str]:
    """The first screen of a task: the decision, and who did not learn (⚠ marks a warning)."""
    d = analysis.decisions.get(task)
    lines = [] if d is None else [(TEST_SELECTED_MARK + " " if d["kind"] != "recommend" else "") + d["text"]]
    bad = learning_line(analysis.task_configs(task))
    return lines + ([f"{TEST_SELECTED_MARK} {bad}"] if bad else [])


def task_sections(analysis: Analysis, task: str, figures: list[tuple[str, Path]]) -> list[Section]:
    """The sections of one task, in report order; optional ones only where there is something to show."""
    metric = analysis.task_configs(task)[0].metric
    base = analysis.baselines.get(task)
    sections = [Section("Decision", lines=decision_lines(analysis, task), lead=True),
                Section("Dashboard", dashboard(analysis, task), highlight=True,
                        note=(f"★ best mean {metric} among configurations that learned. ± is the standard deviation "
                              f"over seeds; 95% CI is a t-interval over seeds (blank with one seed)."
                              f"{target_note(analysis, task)}"),
                        lines=baseline_lines(analysis, task) + protocol_lines(analysis, task),
                        empty="(no configuration learned)")]
    for title, rows, note in (("Did not learn", dashboard(analysis, task, learned=False), LEARNING_NOTE),
                              ("Failed and canceled runs", failed_rows(analysis, task), "")):
        if rows:
            sections.append(Section(title, rows, note, level=4, highlight=title == "Did not learn"))
    sections += [Section(title, rows, note) for title, rows, note in study_tables(analysis, task)]
    tuning = tuning_rows(analysis, task)
    if tuning:
        sections.append(Section("Tuning: defaults vs tuned", tuning, TUNING_NOTE))
    if base is not None:
        sections.append(Section(f"Against the baseline: {base.label}", comparison_rows(analysis, task),
                                verdicts=analysis.comparisons.get(task, [])))
        per_class = per_class_rows(analysis, task)
        if per_class:
            sections.append(Section("Per-class deltas against the baseline", per_class, level=4))
    best = analysis.best(task)
    if analysis.best_comparisons.get(task) and best is not None:
        sections.append(Section(f"Against the best: {best.label}", comparison_rows(analysis, task, against_best=True),
                                verdicts=analysis.best_comparisons[task]))
    sections.append(Section(f"Paired significance (α = {ALPHA})", pair_rows(analysis, task), PAIRED_NOTE))
    for title, rows, note in (("lm-eval tasks: base vs tuned", lm_eval_rows(analysis, task), LM_EVAL_NOTE),
                              ("lm-eval: paired significance", lm_eval_pair_rows(analysis, task), LM_EVAL_PAIRED_NOTE),
                              ("Forgetting", forgetting_rows(analysis, task), FORGETTING_NOTE),
                              ("Forgetting on lm-eval tasks", lm_eval_rows(analysis, task, role="retention"),
                               LM_EVAL_FORGETTING_NOTE),
                              ("Weight change (ΔW)", weight_change_rows(analysis, task), WEIGHT_CHANGE_NOTE)):
        if rows:
            sections.append(Section(title, rows, note))
    if figures:
        sections.append(Section("Figures", figures=figures))
    sections.append(Section("All runs", run_rows(analysis, task)))
    return sections


# ---- markdown ---------------------------------------------------------------------------------------


def markdown_section(section: Section, out: Path) -> str:
    """One section as markdown; figure paths relative to the report folder `out`. Every text is
    escaped (`escape.md_text`): labels, names and messages come from records."""
    parts = [f"\n{'#' * section.level} {md_text(section.title)}\n\n"]
    if section.rows is not None:
        parts.append(markdown(section.rows, empty=section.empty))
    if section.note:
        parts.append(f"\n{md_text(section.note)}\n")
    parts += [f"\n> {md_text(line)}\n" for line in section.lines]
    if section.verdicts is not None:
        parts.append("\n" + "".join(f"- **{md_text(c['label'])}**: {md_text(c['verdict']['text'])}\n"
                                    for c in section.verdicts))
    parts += [f"\n![{md_text(caption)}]({md_link(p.relative_to(out).as_posix())})\n"
              for caption, p in section.figures]
    return "".join(parts)


def markdown_report(analysis: Analysis, plots: dict[str, list[tuple[str, Path]]], out: Path) -> str:
    parts = ["# peftbench report\n"]
    parts += [f"> {md_text(n)}\n" for n in analysis.notes]
    for task in analysis.tasks:
        parts.append(f"\n## {md_text(task_title(analysis, task))}\n")
        parts += [markdown_section(s, out) for s in task_sections(analysis, task, plots.get(task, []))]
    return "".join(parts)


# ---- terminal ---------------------------------------------------------------------------------------


def terminal_dashboard(analysis: Analysis, task: str) -> list[str]:
    """A task's first screen in the terminal: its decision, the dashboard, and the configurations
    that did not learn or failed; tables fitted to the terminal (`tables.terminal`), leaving out
    the columns the report's other tables also show first."""
    t = terminal_text
    optional = dashboard_optional(analysis)
    out = [f"== {t(task)} =="]
    out += [piece for line in decision_lines(analysis, task) for piece in fit_lines(t(line))]
    out.append(terminal(dashboard(analysis, task), max_width=TERMINAL_CELL_WIDTH, optional=optional,
                        empty="(no configuration learned)"))
    for title, rows in (("did not learn", dashboard(analysis, task, learned=False)),
                        ("failed or canceled", failed_rows(analysis, task))):
        if rows:
            out += [f"-- {title} --", terminal(rows, max_width=TERMINAL_CELL_WIDTH, optional=optional)]
    return out


def terminal_report(analysis: Analysis) -> str:
    """Per task: the dashboard (`terminal_dashboard`), test-selection warnings and verdicts; then the
    notes. Names from the records are shown, not acted on (`escape.terminal_text`)."""
    t = terminal_text
    out = []
    for task in analysis.tasks:
        out += terminal_dashboard(analysis, task)
        for line in protocol_lines(analysis, task):
            if line.startswith(TEST_SELECTED_MARK):
                out += fit_lines(t(line), indent="  ")
        for c in analysis.comparisons.get(task, []):
            out += fit_lines(f"{t(c['label'])}: {t(c['verdict']['text'])}", indent="  ")
        if analysis.best_comparisons.get(task):
            out += fit_lines(f"against the best ({t(analysis.best_comparisons[task][0]['baseline'])}):", indent="  ")
            for c in analysis.best_comparisons[task]:
                out += fit_lines(f"{t(c['label'])}: {t(c['verdict']['text'])}", indent="    ")
    for n in analysis.notes:
        out += fit_lines(f"note: {t(n)}")
    return "\n".join(out)
