"""Tables of free text (the examples runs disagree on, side-by-side generations) as markdown and CSV.

Every cell is user-controlled text (eval examples, prompts, what a model generated, class names), so
each is escaped for its format with the report's escapers: `escape.md_text` for markdown (no live
markup, control characters shown, one line per row) and `escape.csv_cell` for CSV (no formulas)."""

from __future__ import annotations

import csv
import io

from peftbench.reports.escape import csv_cell
from peftbench.reports.tables import Cell, markdown


def markdown_rows(rows: list[dict[str, str]], max_text: int = 80) -> str:
    """A markdown table of `rows` (column name -> text); the `text` column is cut to `max_text`
    characters (with '…') so a long example does not bury the predictions beside it."""

    def cut(column: str, value: str) -> str:
        return value[: max_text - 1] + "…" if column == "text" and len(value) > max_text else value

    return markdown([{k: Cell(cut(k, v)) for k, v in row.items()} for row in rows])


def csv_rows(rows: list[dict[str, str]]) -> str:
    """`rows` as CSV (RFC 4180 line ends, so a carriage return inside a text stays in its cell)."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()
