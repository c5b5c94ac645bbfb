"""The results board at the top of report.html: filters (task, model, method, status), a Pareto plot of
any two recorded numbers with the front recomputed in the page, a sortable run table, runs compared
side by side (metrics, per-class scores, loss curves) and CSV export of the filtered rows.

The page stays one offline file: the runs go in as one JSON blob (`escape.script_json`, so no string in
a record can close its <script> element), Plotly's bundle is inlined, and `board.js` (next to this
module) draws everything from the blob with DOM text nodes, never markup built from record strings.
The board is hidden until that script runs and is left out of print; the static tables and figures
after it are the same numbers for printing and for readers without JavaScript.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

from peftbench.records.fields import number, value_at
from peftbench.reports.configs import COSTS, record_costs, scalar_metrics
from peftbench.reports.escape import script_json
from peftbench.reports.plots import COST_LABELS
from peftbench.tasks.metrics import higher_is_better

BOARD_JS = Path(__file__).with_name("board.js")
# Memory at the training peak by kind (`train.memory_by_kind.at_peak`: parameters, gradients, optimizer
# state, activations, buffers) become cost axes named like this.
MEMORY_KIND_KEY = "memory_{}_bytes"

CSS = """
#board .controls{display:flex;flex-wrap:wrap;gap:6px 16px;align-items:center;font-size:13px;margin:8px 0}
#board select{font-size:13px;max-width:260px} #board button{font-size:13px}
#board .plot{min-height:380px;border:1px solid #eee}
#board table td.axis,#board table th.axis{background:#eef6fb} #board tr.picked td{background:#fff7d6}
#board .side{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
@media print{#board{display:none}}
"""

SECTION = """<section id="board" hidden><h2>Results board</h2>
<p class="muted">Filter the runs, pick the two axes of the Pareto plot (red: the runs no other run of the same
task beats on both), click a column header to sort, tick two or more runs (or click their points) to compare
them side by side, and export the filtered rows as CSV. The tables and figures below show the same records
for printing and without JavaScript.</p>
<div class="controls" id="board-controls"></div><div class="plot" id="board-plot"></div>
<div class="tw" id="board-table"></div><div id="board-compare"></div></section>"""


@lru_cache(maxsize=1)
def plotly_bundle() -> str:
    """Plotly's minified JavaScript, as the installed `plotly` package ships it (no CDN)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().replace("</script", "<\\/script")  # the bundle has none; inlined text must not


def run_values(record: dict[str, Any]) -> dict[str, float]:
    """Every number of a run the board's axes can show: its scalar metrics, its costs and its memory at
    the training peak by kind."""
    values = dict(scalar_metrics(record))
    values.update({k: v for k, v in record_costs(record).items() if v is not None})
    at_peak = value_at(record, "train", "memory_by_kind", "at_peak")
    for kind, v in (at_peak.items() if isinstance(at_peak, dict) else ()):
        if number(v) is not None:
            values[MEMORY_KIND_KEY.format(kind)] = number(v)
    return values


def _axis(key: str, kind: str) -> dict[str, Any]:
    label = COST_LABELS.get(key) or (f"memory at peak: {key[7:-6].replace('_', ' ')}"
                                     if key.startswith("memory_") and key.endswith("_bytes") else key)
    return {"key": key, "label": label, "kind": kind, "up": higher_is_better(key), "bytes": key.endswith("_bytes")}


def axes(records: list[dict[str, Any]], values: list[dict[str, float]]) -> list[dict[str, Any]]:
    """The numbers some successful run has: costs first (as `configs.COSTS` orders them, then memory by
    kind), then quality metrics (the runs' main metrics first); each with its direction."""
    seen = {k for r, v in zip(records, values, strict=True) if r.get("status") == "success" for k in v}
    memory = sorted(k for k in seen if k.startswith("memory_") and k.endswith("_bytes") and k not in COSTS)
    mains = [m for m, _ in Counter(r.get("main_metric") for r in records if r.get("main_metric")).most_common()]
    quality = [m for m in mains if m in seen] + sorted(seen - set(COSTS) - set(memory) - set(mains))
    return ([_axis(k, "cost") for k in COSTS if k in seen] + [_axis(k, "cost") for k in memory]
            + [_axis(k, "quality") for k in quality])


def _points(curve: Any, x: str, y: str) -> list[list[float]]:
    return [[p[x], p[y]] for p in (curve if isinstance(curve, list) else [])
            if isinstance(p, dict) and number(p.get(x)) is not None and number(p.get(y)) is not None]


def _per_class(record: dict[str, Any]) -> dict[str, dict[str, float]]:
    pc = value_at(record, "metrics", "per_class")
    return {str(cls): {k: number(v) for k, v in scores.items() if number(v) is not None}
            for cls, scores in (pc.items() if isinstance(pc, dict) else ()) if isinstance(scores, dict)}


def board_data(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the page draws from: the axes, one entry per run (labels from the flat export `rows`,
    `build.flat_rows`, which are also the CSV rows) and the default axes (trainable parameters against
    the most common main metric)."""
    values = [run_values(r) for r in records]
    ax = axes(records, values)
    keys = [a["key"] for a in ax]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    runs = []
    for i, (rec, row, v) in enumerate(zip(records, rows, values, strict=True)):
        runs.append({
            "i": i, "id": str(row.get("run_id")), "task": str(row.get("task")), "model": str(row.get("model")),
            "method": str(row.get("method")), "config": str(row.get("config") or "-"), "seed": row.get("seed"),
            "status": str(row.get("status")), "learned": row.get("learned"), "v": v, "pc": _per_class(rec),
            "loss": _points(value_at(rec, "train", "loss_curve"), "step", "loss"),
            "evl": _points(value_at(rec, "eval", "per_epoch"), "step", "eval_loss"),
        })
    costs = [a["key"] for a in ax if a["kind"] == "cost"]
    quality = [a["key"] for a in ax if a["kind"] == "quality"]
    x = "trainable_params" if "trainable_params" in keys else (costs or keys or [None])[0]
    y = (quality or [k for k in keys if k != x] or [x])[0]
    return {"axes": ax, "x": x, "y": y, "runs": runs, "columns": columns,
            "rows": [[row.get(c) for c in columns] for row in rows]}


def board_parts(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> tuple[str, str]:
    """The board's section (placed after the page header) and its scripts (placed at the end of the
    body): the data blob, Plotly's bundle and `board.js`."""
    scripts = (f'<script type="application/json" id="board-data">{script_json(board_data(records, rows))}</script>'
               f"<script>{plotly_bundle()}</script><script>{BOARD_JS.read_text(encoding='utf-8')}</script>")
    return SECTION, scripts
