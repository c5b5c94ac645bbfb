"""Rendering profiles written by `peftbench profile` (profile.json): the terminal table, profile.md
and its figures (throughput and peak memory against sequence length, merged vs unmerged latency),
and the report's "Cost curves" section for the profiles found beside the runs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.records.fields import PROFILE_KIND, fmt_bytes
from peftbench.records.io import atomic_write_text
from peftbench.reports.escape import html_text, md_link, md_text, plain_plot_text
from peftbench.reports.html import image, table
from peftbench.reports.plots import BAR_COLOR, BEST_COLOR, label_axes, new_figure, save_figure
from peftbench.reports.tables import TERMINAL_CELL_WIDTH, Cell, Row, markdown, terminal

# ---- tables ------------------------------------------------------------------------------------------


def table_rows(rows: list[dict[str, Any]]) -> list[Row]:
    """One table row per configuration (cells: shown text and sort value)."""

    def num(x: float | None, fmt: str) -> Any:
        return Cell("-" if x is None else format(x, fmt), x)

    out = []
    for r in rows:
        merged = r.get("latency_merged_ms")
        out.append({
            "method": Cell(r["method"]), "length": Cell(str(r["length"]), r["length"]),
            "batch": Cell(str(r["batch_size"]), r["batch_size"]),
            "status": Cell(r["status"] if r["status"] == "ok" else f"{r['status']}: {r['error']}"),
            "tokens/s": num(r.get("tokens_per_s"), ",.0f"), "s/step": num(r.get("step_time_s"), ".3g"),
            "peak mem": Cell(fmt_bytes(r.get("peak_memory_bytes")), r.get("peak_memory_bytes")),
            "latency ms": num(r.get("latency_unmerged_ms"), ".3g"),
            "merged ms": Cell("n/a", None) if r.get("merge") == "n/a" else num(merged, ".3g"),
            "merged Δ": num(r.get("merge_max_abs_diff"), ".1e"),
        })
    return out


def terminal_table(result: dict[str, Any]) -> str:
    return terminal(table_rows(result["rows"]), max_width=TERMINAL_CELL_WIDTH)


def _machine(result: dict[str, Any]) -> str:
    env = result.get("environment") or {}
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    dtypes = sorted({r["compute_dtype"] for r in rows})
    threads = sorted({r["threads"] for r in rows})
    where = env.get("gpu") if result.get("device") == "cuda" else f"{env.get('cpu')} ({env.get('cpu_count')} CPUs)"
    load = result.get("load_average") or {}
    text = f"{result['device']}: {where}; {', '.join(dtypes) or '-'}; threads {', '.join(map(str, threads)) or '-'}"
    if load.get("start") is not None:
        text += f"; 1-minute load average {load['start']:.1f} at the start"
    return text


def section_markdown(result: dict[str, Any], figures: list[tuple[str, Path]], base: Path, level: str) -> str:
    """One profile as markdown: heading, machine, table, figures (paths relative to `base`)."""
    s = result["settings"]
    parts = [f"\n{level} {md_text(result['model_name'])} ({md_text(result['task'])})\n\n",
             md_text(f"Measured on {_machine(result)}. {s['warmup']} untimed + {s['steps']} timed steps per row; "
                     f"latency: median of {s['latency_calls']} forwards; peak memory: {result['memory_kind']}.")
             + "\n\n", markdown(table_rows(result["rows"]))]
    parts += [f"\n![{md_text(caption)}]({md_link(p.relative_to(base).as_posix())})\n" for caption, p in figures]
    return "".join(parts)


# ---- plots -------------------------------------------------------------------------------------------


def curve_plot(rows: list[dict[str, Any]], key: str, path: Path, *, ylabel: str, title: str,
               scale: float = 1.0) -> Path | None:
    """`key` against sequence length: one line per method (and batch size, when there are several)."""
    from matplotlib import colormaps

    ok = [r for r in rows if r["status"] == "ok" and r.get(key) is not None]
    if not ok:
        return None
    methods = list(dict.fromkeys(r["method"] for r in rows))
    sizes = sorted({r["batch_size"] for r in ok})
    cmap = colormaps["tab10"]
    styles = ["-", "--", ":", "-."]
    fig = new_figure(7, 4.2)
    ax = fig.add_subplot()
    for m_i, method in enumerate(methods):
        for b_i, bs in enumerate(sizes):
            pts = sorted((r["length"], r[key] * scale) for r in ok if r["method"] == method and r["batch_size"] == bs)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", color=cmap(m_i % cmap.N), ls=styles[b_i % len(styles)],
                        label=method + (f" (batch {bs})" if len(sizes) > 1 else ""))
    lengths = sorted({r["length"] for r in ok})
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.minorticks_off()
    label_axes(ax, "sequence length (tokens)", ylabel, title)
    return save_figure(fig, path)


def latency_plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Forward latency per method, unmerged vs merged bars, one panel per length (smallest batch size)."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("latency_unmerged_ms") is not None]
    if not ok:
        return None
    bs = min(r["batch_size"] for r in ok)
    ok = [r for r in ok if r["batch_size"] == bs]
    lengths = sorted({r["length"] for r in ok})
    ncols = min(3, len(lengths))
    nrows = (len(lengths) + ncols - 1) // ncols
    methods = list(dict.fromkeys(r["method"] for r in ok))
    fig = new_figure(max(4.5, 0.9 * len(methods) + 1.5) * ncols, 3.6 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(lengths):]:
        ax.axis("off")
    for ax, length in zip(axes, lengths, strict=False):
        by_method = {r["method"]: r for r in ok if r["length"] == length}
        for i, method in enumerate(methods):
            r = by_method.get(method)
            if r is None:
                continue
            ax.bar(i - 0.2, r["latency_unmerged_ms"], 0.4, color=BAR_COLOR, label="unmerged" if i == 0 else None)
            if r.get("latency_merged_ms") is not None:
                ax.bar(i + 0.2, r["latency_merged_ms"], 0.4, color=BEST_COLOR, hatch="//", label="merged")
            else:
                ax.text(i + 0.2, 0, "n/a", ha="center", va="bottom", fontsize=7, color="#666666")
        ax.set_xticks(range(len(methods)), methods, fontsize=8)
        ax.set_ylabel("forward latency (ms)")
        ax.set_title(f"length {length}, batch {bs}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7)
    fig.suptitle("eval-mode forward latency: adapter unmerged vs merged (median)", fontsize=10)
    return save_figure(fig, path)


def profile_plots(rows: list[dict[str, Any]], out_dir: Path, slug: str) -> list[tuple[str, Path]]:
    """The three cost-curve figures, as (caption, path), for those the rows can fill; method names
    drawn as written (`escape.plain_plot_text`)."""
    with plain_plot_text():
        return _draw_profile_plots(rows, out_dir, slug)


def _draw_profile_plots(rows: list[dict[str, Any]], out_dir: Path, slug: str) -> list[tuple[str, Path]]:
    specs = [
        ("Training throughput against sequence length",
         curve_plot(rows, "tokens_per_s", out_dir / f"{slug}-throughput.png", ylabel="training tokens/s",
                    title="training throughput (timed steps)")),
        ("Peak training memory against sequence length",
         curve_plot(rows, "peak_memory_bytes", out_dir / f"{slug}-memory.png", ylabel="peak memory (MB)",
                    title="peak training memory", scale=1 / 2**20)),
        ("Forward latency, adapter unmerged vs merged", latency_plot(rows, out_dir / f"{slug}-latency.png")),
    ]
    return [(caption, p) for caption, p in specs if p is not None]


# ---- the report's "Cost curves" section --------------------------------------------------------------


@dataclass
class CostCurves:
    """What the report adds for the profiles it found: markdown and an HTML section."""

    markdown: str
    html: str


def find_profiles(root: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every `profile*.json` written by `peftbench profile` under `root` (other JSON files are skipped)."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(root.rglob("profile*.json"))
    found = []
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("kind") == PROFILE_KIND and isinstance(data.get("rows"), list):
            found.append((f, data))
    return found


def cost_curves(profiles: list[tuple[Path, dict[str, Any]]], out_dir: Path) -> CostCurves:
    """The report's "Cost curves" section: per profile its table and figures (written under out_dir/plots)."""
    md = ["\n## Cost curves\n"]
    parts = ["<section id='cost-curves'><h2>Cost curves</h2>",
             "<p class='muted'>From <code>peftbench profile</code>: training throughput and peak memory against "
             "sequence length, and forward latency with the adapter unmerged and merged (synthetic tokens, no "
             "padding).</p>"]
    for i, (path, result) in enumerate(profiles, 1):
        figures = profile_plots(result["rows"], out_dir / "plots", f"cost-curves-{i}")
        md.append(section_markdown(result, figures, out_dir, "###"))
        parts.append(f"<h3>{html_text(result['model_name'])} ({html_text(result['task'])})</h3>"
                     f"<p class='muted'>{html_text(path.name)}: measured on {html_text(_machine(result))}.</p>")
        parts.append(table(table_rows(result["rows"])))
        if figures:
            parts.append("<div class='grid'>" + "".join(image(p, c) for c, p in figures) + "</div>")
    parts.append("</section>")
    return CostCurves("".join(md), "\n".join(parts))


def write_profile_report(result: dict[str, Any], out_dir: str | Path) -> None:
    """`peftbench profile`'s own report next to its profile.json: profile.md and plots/."""
    out = Path(out_dir)
    figures = profile_plots(result["rows"], out / "plots", "profile")
    atomic_write_text(out / "profile.md", "# peftbench profile\n" + section_markdown(result, figures, out, "##"))
