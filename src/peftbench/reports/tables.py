"""Tables as text: cells and their number formats, the one terminal and markdown renderer, and the
compact per-run table printed after `peftbench run` and in the demo summary."""

from __future__ import annotations

import io
import os
import shutil
import sys
import textwrap
from dataclasses import dataclass
from typing import Any

from rich.box import Box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from peftbench.records.fields import fmt_bytes, status_label
from peftbench.reports.configs import cost_of
from peftbench.reports.escape import md_text, terminal_text

# ---- cells and formatting ---------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """A table cell: what is shown and what it sorts by (numbers sort as numbers in the HTML)."""

    text: str
    sort: float | str | None = None


Row = dict[str, Cell]
# Report tables in the terminal clip longer cells to this width.
TERMINAL_CELL_WIDTH = 60


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


# ---- rendering --------------------------------------------------------------------------------------


def headers(rows: list[Row]) -> list[str]:
    """Every column of the rows, in order of first appearance (rows may lack some)."""
    out: list[str] = []
    for r in rows:
        out += [h for h in r if h not in out]
    return out


def console_width() -> int | None:
    """The width terminal tables fit: $COLUMNS when set, else the terminal's when stdout is one;
    None (no limit) when the output goes to a file or a pipe."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    except (AttributeError, ValueError, OSError):
        return None


def fit_lines(text: str, width: int | None = None, indent: str = "") -> list[str]:
    """A line of prose wrapped to `width` (default: `console_width()`; 0: left whole), each piece
    starting with `indent` and the continuations indented two spaces more."""
    width = console_width() if width is None else width
    if not width or len(indent) + len(text) <= width:
        return [indent + text]
    return textwrap.wrap(text, width=max(width, len(indent) + 20), initial_indent=indent,
                         subsequent_indent=indent + "  ", break_on_hyphens=False) or [indent]


# The header rule of terminal tables: dashes under each column, no other lines.
_RULE = Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)


# Columns wrap down to this width before a table leaves out a column to fit.
WRAP_WIDTH = 30


def _table_width(cols: list[str], texts: list[dict[str, str]]) -> int:
    """The width a table needs: each column as wide as its widest cell (at most `WRAP_WIDTH`: longer
    texts wrap), two spaces apart."""
    return sum(min(WRAP_WIDTH, max(cell_len(h), *(cell_len(t[h]) for t in texts))) + 2 for h in cols) - 2


def terminal(rows: list[Row], *, max_width: int | None = None, empty: str = "(none)", width: int | None = None,
             optional: tuple[str, ...] = (), whole: tuple[str, ...] = ()) -> str:
    """Columns padded to their widest cell, under a dashed rule, fitted to `width` (default:
    `console_width()`; 0: no limit): the `optional` columns are left out, in that order, while the table is
    wider, then cells wrap (the `whole` columns never break). Cells longer than `max_width` are
    clipped with '...'. Control characters in any text are shown, not acted on
    (`escape.terminal_text`); no text is read as markup."""
    if not rows:
        return empty
    cols = headers(rows)
    width = console_width() if width is None else width

    def clip(s: str) -> str:
        s = terminal_text(s)
        return s if max_width is None or len(s) <= max_width else s[: max_width - 3] + "..."

    texts = [{h: clip(r.get(h, Cell("")).text) for h in cols} for r in rows]
    left_out = []
    for name in optional:
        if not width or _table_width(cols, texts) <= width:
            break
        if name in cols:
            cols.remove(name)
            left_out.append(name)
    table = Table(box=_RULE, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), header_style="")
    for h in cols:
        widest = max(cell_len(terminal_text(h)), *(cell_len(t[h]) for t in texts))
        table.add_column(Text(terminal_text(h)), overflow="fold", no_wrap=h in whole,
                         min_width=widest if h in whole else None)
    for t in texts:
        table.add_row(*(Text(t[h]) for h in cols))
    buffer = io.StringIO()
    Console(file=buffer, width=width or 100_000, color_system=None, highlight=False, markup=False, emoji=False,
            soft_wrap=False).print(table)
    lines = [line.rstrip() for line in buffer.getvalue().splitlines()]
    if left_out:
        lines += fit_lines(f"(left out to fit {width} columns: {', '.join(left_out)})", width)
    return "\n".join(lines)


def markdown(rows: list[Row], *, empty: str = "(none)") -> str:
    """A markdown table; every header and cell escaped (`escape.md_text`)."""
    if not rows:
        return md_text(empty) + "\n"
    cols = headers(rows)
    out = ["| " + " | ".join(md_text(h) for h in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(md_text(r.get(h, Cell("")).text) for h in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


# ---- the compact per-run table ----------------------------------------------------------------------


def _float_cell(value: Any, spec: str) -> Cell:
    return Cell(format(value, spec) if isinstance(value, float) else "-")


def rows(records: list[dict[str, Any]]) -> list[Row]:
    """One row per record: method, status, main metric, F1, loss and costs."""
    out = []
    for r in records:
        m = r.get("metrics") or {}
        t = r.get("train") or {}
        p = r.get("params") or {}
        main = r.get("main_metric") or "accuracy"
        out.append({
            "method": Cell(r.get("method", "?")),
            "status": Cell(status_label(r)),
            main: _float_cell(m.get(main), ".4f"),
            "f1_macro": _float_cell(m.get("f1_macro"), ".4f"),
            "eval_loss": _float_cell(m.get("eval_loss"), ".4f"),
            "trainable_%": Cell(f"{p['trainable_pct']:.3f}" if "trainable_pct" in p else "-"),
            "train_time_s": _float_cell(t.get("time_s"), ".1f"),
            "peak_mem": Cell(fmt_bytes(cost_of(r, "peak_memory_bytes"))),
            "saved_size": Cell(fmt_bytes((r.get("artifact") or {}).get("size_bytes"))),
        })
    return out


def terminal_table(records: list[dict[str, Any]]) -> str:
    return terminal(rows(records), empty="(no runs)")


def markdown_table(records: list[dict[str, Any]]) -> str:
    return markdown(rows(records), empty="(no runs)")
