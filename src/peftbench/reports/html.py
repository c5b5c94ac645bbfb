"""The report as one self-contained HTML file: inline CSS, PNGs as base64 data URIs, the interactive
results board (`board`: its data, Plotly's bundle and its script inlined) and a few lines of inline
JavaScript to sort the static tables by clicking a header. Opens offline in any browser."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from peftbench.reports.analysis import Analysis
from peftbench.reports.board import CSS as BOARD_CSS
from peftbench.reports.escape import html_text
from peftbench.reports.rows import TEST_SELECTED_MARK
from peftbench.reports.sections import Section, slug, task_sections, task_title
from peftbench.reports.stats import ALPHA
from peftbench.reports.tables import Cell, Row, headers

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{margin-bottom:4px} h2{border-bottom:2px solid #457b9d;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 16px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;white-space:nowrap}
td.wrap{white-space:normal;min-width:280px}
.tw{overflow-x:auto}
th{background:#f1f5f9;cursor:pointer;user-select:none;white-space:nowrap}
th:hover{background:#e2e8f0} tr.best td{background:#e6f4f1} tr.failed td{color:#a4161a}
tr.baseline td{background:#fdf6e3} .muted{color:#666;font-size:13px}
tr.flagged td{background:#fde2e1} p.warn{color:#a4161a;font-size:13px;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:16px}
figure.wide{grid-column:1/-1} figure{margin:0;border:1px solid #eee;padding:8px} figure img{max-width:100%} figcaption{font-size:13px;color:#444}
ul.verdicts li{margin:4px 0} nav a{margin-right:12px}
p.lead{font-size:15px;font-weight:600;color:#222;background:#eef6fb;border-left:4px solid #457b9d;padding:8px 12px}
p.lead.warn{background:#fde2e1;border-left-color:#a4161a;color:#a4161a}
"""

# Click a header: sort rows by that column (numbers by value, blanks last); click again to reverse.
JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
    var asc=th.dataset.dir!=='asc'; th.dataset.dir=asc?'asc':'desc';
    var body=t.tBodies[0], rows=Array.from(body.rows);
    function key(r){var c=r.cells[i]; var v=c.dataset.v!==undefined?c.dataset.v:c.textContent;
      var n=parseFloat(v); return v===''||v==='-'?[2,'']:(isNaN(n)?[1,v.toLowerCase()]:[0,n]);}
    rows.sort(function(a,b){var x=key(a),y=key(b); if(x[0]!==y[0])return x[0]-y[0];
      return (x[1]<y[1]?-1:x[1]>y[1]?1:0)*(asc?1:-1);});
    rows.forEach(function(r){body.appendChild(r);});
  });});
});
"""


def table(rows: list[Row], row_class: list[str] | None = None, empty: str = "(none)") -> str:
    """A sortable table; each cell carries its sort value in data-v."""
    if not rows:
        return f'<p class="muted">{html_text(empty)}</p>'
    cols = headers(rows)
    out = ['<div class="tw"><table class="sortable"><thead><tr>']
    out += [f"<th>{html_text(h)}</th>" for h in cols]
    out.append("</tr></thead><tbody>")
    for i, r in enumerate(rows):
        cls = (row_class or [""] * len(rows))[i]
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        for h in cols:
            cell = r.get(h, Cell(""))
            sort = "" if cell.sort is None else cell.sort
            wrap = ' class="wrap"' if len(cell.text) > 40 else ""
            out.append(f'<td data-v="{html_text(sort)}"{wrap}>{html_text(cell.text)}</td>')
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    wide = ' class="wide"' if path.stem.endswith(("-pareto", "-confusion", "-loss", "-layers")) else ""
    return (f'<figure{wide}><img alt="{html_text(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html_text(caption)}</figcaption></figure>")


def _row_classes(rows: list[Row]) -> list[str]:
    out = []
    for r in rows:
        status = r["status"].text
        out.append("failed" if not status.startswith("ok") else
                   "flagged" if r["config"].text.endswith(TEST_SELECTED_MARK) else
                   "best" if r.get("best", Cell("")).text else
                   "baseline" if "(baseline)" in r["config"].text else "")
    return out


def html_section(section: Section) -> str:
    """One section: heading, table, note, remarks, verdict list, figure grid."""
    h = f"h{section.level}"
    parts = [f"<{h}>{html_text(section.title)}</{h}>"]
    if section.rows is not None:
        parts.append(table(section.rows, _row_classes(section.rows) if section.highlight else None, section.empty))
    if section.note:
        parts.append(f"<p class='muted'>{html_text(section.note)}</p>")
    lead = "lead " if section.lead else ""
    parts += [f"<p class='{lead}{'warn' if line.startswith(TEST_SELECTED_MARK) else 'muted'}'>{html_text(line)}</p>"
              for line in section.lines]
    if section.verdicts is not None:
        parts.append("<ul class='verdicts'>" + "".join(
            f"<li><b>{html_text(c['label'])}</b> [{html_text(c['verdict']['label'])}]: {html_text(c['verdict']['text'])}</li>"
            for c in section.verdicts) + "</ul>")
    if section.figures:
        parts.append("<div class='grid'>" + "".join(image(p, c) for c, p in section.figures) + "</div>")
    return "".join(parts)


def render_html(analysis: Analysis, plots: dict[str, list[tuple[str, Path]]], records: list[dict[str, Any]],
                extra_html: str = "", board: tuple[str, str] | None = None) -> str:
    """The whole page; `extra_html` (e.g. the cost-curves section) goes after the tasks, and `board`
    (`board.board_parts`: the results board's section and its scripts) after the page header."""
    n_ok = sum(r.get("status") == "success" for r in records)
    section, scripts = board or ("", "")
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>peftbench report</title>", f"<style>{CSS}{BOARD_CSS if board else ''}</style></head><body>",
             "<h1>peftbench report</h1>",
             f"<p class='muted'>{len(records)} runs ({n_ok} successful, {len(records) - n_ok} not), "
             f"{len(analysis.configs)} configurations, {len(analysis.tasks)} task(s). "
             f"Significance level α = {ALPHA}. Click a column header to sort.</p>"]
    if len(analysis.tasks) > 1:
        parts.append("<nav>" + "".join(f"<a href='#task-{slug(t)}'>{html_text(t)}</a>" for t in analysis.tasks) + "</nav>")
    parts += [f"<p class='muted'>Note: {html_text(n)}</p>" for n in analysis.notes]
    parts.append(section)
    for task in analysis.tasks:
        parts.append(f"<section id='task-{slug(task)}'><h2>{html_text(task_title(analysis, task))}</h2>")
        parts += [html_section(s) for s in task_sections(analysis, task, plots.get(task, []))]
        parts.append("</section>")
    parts.append(extra_html)
    parts.append(f"{scripts}<script>{JS}</script></body></html>")
    return "\n".join(parts)
