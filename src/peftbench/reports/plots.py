"""Report figures as PNG files, drawn with matplotlib's object API (no pyplot, no global backend).

Every function takes one task's configurations and writes one PNG, or returns None when the
records hold nothing to draw (e.g. no rank sweep).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftbench.reports.configs import Config, summed_confusion
from peftbench.reports.escape import plain_plot_text
from peftbench.reports.stats import pareto_front
from peftbench.reports.trust import forgetting_points, layer_profiles
from peftbench.tasks.metrics import higher_is_better

BEST_COLOR = "#2a9d8f"
BASE_COLOR = "#e9c46a"
BAR_COLOR = "#457b9d"
GREY = "#b0b0b0"
FRONT_COLOR = "#d62828"
COST_LABELS = {
    "trainable_params": "trainable parameters",
    "train_time_s": "train time (s)",
    "peak_memory_bytes": "peak training memory",
    "model_footprint_bytes": "model in memory",
    "artifact_bytes": "saved artifact",
}
MB_COSTS = ("peak_memory_bytes", "model_footprint_bytes", "artifact_bytes")


def new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def label_axes(ax: Any, xlabel: str, ylabel: str, title: str, **legend: Any) -> None:
    """Axis labels, title, light grid and a small legend: the finish every line chart shares."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(**{"fontsize": 8, **legend})


def _colors(configs: list[Config]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(configs) <= 10 else "tab20"]
    return {c.config_id: cmap(i % cmap.N) for i, c in enumerate(configs)}


def _bar_color(c: Config) -> str:
    return BEST_COLOR if c.best else BASE_COLOR if c.baseline else BAR_COLOR


def _unit(key: str, configs: list[Config]) -> tuple[float, str]:
    """Byte costs in MB, or KB when all are under a megabyte (adapters often are)."""
    if key not in MB_COSTS:
        return 1.0, ""
    top = max((abs(c.mean(key) or 0.0) for c in configs), default=0.0)
    return (1 / 2**20, "MB") if top >= 2**20 else (1 / 2**10, "KB")


def reference_lines(configs: list[Config], metric: str) -> list[tuple[str, float]]:
    """What answering without learning scores on the metric (majority class, chance), when every
    configuration of the task was evaluated on the same eval set."""
    bases = [c.learning.get("baselines") or {} for c in configs if c.runs]
    keys = {"accuracy": (("majority class", "majority_accuracy"), ("chance", "chance_accuracy")),
            "f1_macro": (("majority class", "majority_f1_macro"),)}.get(metric, ())
    out = []
    for name, key in keys:
        values = {b.get(key) for b in bases}
        if len(values) == 1 and (v := values.pop()) is not None:
            out.append((name, float(v)))
    base_model = {(b.get("base_model") or {}).get(metric) for b in bases}
    if len(base_model) == 1 and isinstance(v := base_model.pop(), int | float):
        out.append(("untrained base model", float(v)))
    return out


def stat_bars(configs: list[Config], key: str, path: Path, *, title: str, xlabel: str,
              log: bool = False, lines: list[tuple[str, float]] | None = None) -> Path | None:
    """Horizontal bars of a per-configuration mean with its value, 95% CI error bars, each seed as a
    dot, and `lines` (name, value) as dashed reference lines (e.g. the majority-class accuracy)."""
    rows = [c for c in configs if (c.stats.get(key) or {}).get("mean") is not None]
    if not rows:
        return None
    k, unit = _unit(key, rows)
    xlabel = f"{xlabel} ({unit})" if unit else xlabel
    fig = new_figure(7.5, 0.9 + 0.42 * len(rows))
    ax = fig.add_subplot()
    ys = list(range(len(rows)))[::-1]
    for y, c in zip(ys, rows, strict=True):
        s = c.stats[key]
        mean = s["mean"] * k
        xerr = None
        if key in COST_LABELS and s.get("std") is not None:  # costs: ± std, clipped at zero
            xerr = [[min(mean, s["std"] * k)], [s["std"] * k]]
        elif s.get("ci_low") is not None:
            xerr = [[mean - s["ci_low"] * k], [s["ci_high"] * k - mean]]
        ax.barh(y, mean, color=_bar_color(c), xerr=xerr, capsize=4, error_kw={"elinewidth": 1.2})
        ax.annotate(f"{s['mean']:.4g}" if key not in COST_LABELS else _value_text(s["mean"] * k, unit),
                    (mean, y), xytext=(4, 6), textcoords="offset points", fontsize=7)
        if len(s["values"]) > 1:
            ax.scatter([v * k for v in s["values"]], [y] * len(s["values"]), s=12, color="black", zorder=3)
    ax.set_yticks(ys, [("★ " if c.best else "") + c.label + (" (baseline)" if c.baseline else "")
                       for c in rows], fontsize=8)
    if log:
        ax.set_xscale("log")
    elif key not in COST_LABELS and all(0 <= c.stats[key]["mean"] <= 1 for c in rows):
        low = min([min(c.stats[key]["values"]) for c in rows] + [v for _, v in lines or []])
        ax.set_xlim(max(0.0, low - 0.1), 1.0)
    for (name, value), style in zip(lines or [], ("--", ":"), strict=False):
        ax.axvline(value, color="#a4161a", lw=1.1, ls=style, label=f"{name}: {value:.4f}")
    if lines:
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def _value_text(value: float, unit: str) -> str:
    """A bar's value label: in the axis unit, counts as 1.20M, small numbers to 3 digits."""
    from peftbench.reports.tables import fmt_count

    return f"{value:.1f} {unit}" if unit else fmt_count(value) if abs(value) >= 1000 else f"{value:.3g}"


def loss_curves(configs: list[Config], path: Path, *, title: str) -> Path | None:
    """Training loss per logged step (solid, every seed) and eval loss after each epoch (dashed)."""
    rows = [c for c in configs if any((r.get("train") or {}).get("loss_curve") for r in c.runs)]
    if not rows:
        return None
    colors = _colors(configs)
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    for c in rows:
        color = colors[c.config_id]
        for i, r in enumerate(c.runs):
            curve = (r.get("train") or {}).get("loss_curve") or []
            pts = [(p["step"], p["loss"]) for p in curve if "step" in p and "loss" in p]
            if pts:
                ax.plot(*zip(*pts, strict=True), color=color, lw=1.2, alpha=0.85, marker="." if len(pts) < 4 else None,
                        label=f"{c.label} train" if i == 0 else None)
            ev = [(e["step"], e["eval_loss"]) for e in (r.get("eval") or {}).get("per_epoch") or []
                  if "step" in e and e.get("eval_loss") is not None]
            if ev:
                ax.plot(*zip(*ev, strict=True), color=color, lw=1.2, ls="--", marker="o", ms=4,
                        label=f"{c.label} eval" if i == 0 else None)
    label_axes(ax, "optimizer step", "loss", title, fontsize=7, ncols=2 if len(rows) > 4 else 1)
    ax.set_ylim(0.0, ax.get_ylim()[1] * 1.1)  # from zero: a flat loss (0.686-0.693) is not magnified into a trend
    return save_figure(fig, path)


def rank_sweeps(configs: list[Config], path: Path, *, title: str) -> Path | None:
    """Metric vs rank for each family of configurations that differ only in `method.r`."""
    families: dict[str, list[Config]] = {}
    for c in configs:
        method = dict(c.spec.get("method") or {})
        if c.runs and isinstance(method.get("r"), int | float) and c.mean(c.metric) is not None:
            rest = {**c.spec, "name": None, "method": {k: v for k, v in method.items() if k not in ("r", "alpha")},
                    "train": {k: v for k, v in (c.spec.get("train") or {}).items() if k != "seed"}}
            families.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(c)
    sweeps = [sorted(f, key=lambda c: c.spec["method"]["r"]) for f in families.values()
              if len({c.spec["method"]["r"] for c in f}) >= 2]
    if not sweeps:
        return None
    fig = new_figure(7, 4.2)
    ax = fig.add_subplot()
    metric = sweeps[0][0].metric
    for f in sweeps:
        xs = [c.spec["method"]["r"] for c in f]
        ys = [c.mean(metric) for c in f]
        lows = [y - (c.stats[metric]["ci_low"] if c.stats[metric].get("ci_low") is not None else y)
                for c, y in zip(f, ys, strict=True)]
        highs = [(c.stats[metric]["ci_high"] if c.stats[metric].get("ci_high") is not None else y) - y
                 for c, y in zip(f, ys, strict=True)]
        ax.errorbar(xs, ys, yerr=[lows, highs], marker="o", capsize=4, label=f[0].method)
    ax.set_xscale("log", base=2)
    label_axes(ax, "rank r", metric, title)
    return save_figure(fig, path)


def pareto(configs: list[Config], path: Path, *, title: str) -> Path | None:
    """Metric vs each cost; the non-dominated configurations in colour joined by a line, the rest grey.
    Configurations that did not learn are left out, and the title names them."""
    rows = [c for c in configs if c.mean(c.metric) is not None and c.learned is not False]
    left_out = [c.label for c in configs if c.runs and c.learned is False]
    costs = [k for k in COST_LABELS if sum(c.mean(k) is not None for c in rows) >= 1]
    if not rows or not costs:
        return None
    metric = rows[0].metric
    up = higher_is_better(metric)
    ncols = min(2, len(costs))
    nrows = (len(costs) + ncols - 1) // ncols
    fig = new_figure(5.2 * ncols, 4.0 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(costs):]:
        ax.axis("off")
    for ax, cost in zip(axes, costs, strict=False):
        pts = [c for c in rows if c.mean(cost) is not None]
        k, unit = _unit(cost, pts)
        xy = [(c.mean(cost) * k, c.mean(metric)) for c in pts]
        mask = pareto_front([(y, x) for x, y in xy], [up, False])
        _front_panel(ax, xy, mask, [c.label for c in pts], [c.baseline for c in pts],
                     xlabel=COST_LABELS[cost] + (f" ({unit})" if unit else "") + ", lower is better",
                     ylabel=f"{metric} ({'higher' if up else 'lower'} is better)",
                     log_x=cost in ("trainable_params", "artifact_bytes") and min(x for x, _ in xy) > 0)
    fig.suptitle(title + (f"\nleft out (did not learn): {', '.join(left_out)}" if left_out else ""), fontsize=10)
    return save_figure(fig, path)


def _front_panel(ax: Any, xy: list[tuple[float, float]], mask: list[bool], labels: list[str],
                 baselines: list[bool], *, xlabel: str, ylabel: str, log_x: bool = False) -> None:
    """One Pareto panel (x lower is better): front points red, labelled and joined by a step line;
    dominated points grey; the baseline with a black edge."""
    for (x, y), label, on, base in zip(xy, labels, mask, baselines, strict=True):
        ax.scatter([x], [y], s=40, color=FRONT_COLOR if on else GREY, zorder=3, edgecolor="black" if base else "none")
        ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points",
                    color="black" if on else "#888888")
    front = sorted((p for p, on in zip(xy, mask, strict=True) if on), key=lambda p: p[0])
    if len(front) > 1:
        ax.plot(*zip(*front, strict=True), color=FRONT_COLOR, lw=1, ls="-", alpha=0.6, drawstyle="steps-post")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.margins(x=0.18, y=0.12)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


FORGETTING_LABELS = {"probe_accuracy_drop": "forgetting: probe accuracy drop",
                     "representation_drift": "forgetting: representation drift",
                     "lm_eval_drop": "forgetting: lm-eval score drop (retention tasks)"}


def forgetting_pareto(configs: list[Config], path: Path, *, title: str) -> Path | None:
    """Task metric vs forgetting per configuration, one panel per way forgetting was measured;
    the front is `trust.forgetting_points`'s, so the figure and analysis.json agree."""
    points = forgetting_points(configs)
    if not points:
        return None
    kinds = sorted({p["forgetting_metric"] for p in points})
    fig = new_figure(6.0 * len(kinds), 4.4)
    for ax, kind in zip(fig.subplots(1, len(kinds), squeeze=False).ravel(), kinds, strict=True):
        pts = [p for p in points if p["forgetting_metric"] == kind]
        metric = pts[0]["metric"]
        _front_panel(ax, [(p["forgetting"], p["value"]) for p in pts], [p["pareto"] for p in pts],
                     [p["label"] for p in pts], [p["baseline"] for p in pts],
                     xlabel=f"{FORGETTING_LABELS.get(kind, kind)}, lower is better",
                     ylabel=f"{metric} ({'higher' if higher_is_better(metric) else 'lower'} is better)")
        ax.axvline(0.0, color="#888888", lw=0.8, ls=":")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def weight_change_layers(configs: list[Config], path: Path, *, title: str) -> Path | None:
    """Per-layer ‖ΔW‖/‖W‖ (log scale) and effective rank of ΔW, one line per configuration, layers in
    model order; a third panel with intruder dimensions when any layer has some."""
    prof = layer_profiles(configs)
    if not prof:
        return None
    panels = [("rel_norm", "‖ΔW‖ / ‖W‖ (log)"), ("effective_rank", "effective rank of ΔW")]
    if any(v for c in prof["configs"] for v in c["intruders"] if v):
        panels.append(("intruders", "intruder dimensions"))
    n = len(prof["layers"])
    colors = _colors(configs)
    fig = new_figure(max(8.0, min(22.0, 0.22 * n + 4)), 2.6 * len(panels) + 1.6)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False).ravel()
    xs = list(range(n))
    for ax, (key, ylabel) in zip(axes, panels, strict=True):
        for c in prof["configs"]:
            pts = [(x, v) for x, v in zip(xs, c[key], strict=True) if v is not None and (key != "rel_norm" or v > 0)]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, lw=1.2, label=c["label"],
                        color=colors.get(c["config_id"]))
        if key == "rel_norm" and ax.lines:
            ax.set_yscale("log")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    step = max(1, n // 60)  # at most ~60 tick labels
    axes[-1].set_xticks(xs[::step], prof["short_names"][::step], rotation=90, fontsize=7)
    axes[-1].set_xlabel("layer (model order)")
    axes[0].legend(fontsize=7, ncols=2 if len(prof["configs"]) > 6 else 1, loc="best")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def confusion_matrices(configs: list[Config], path: Path, *, title: str) -> Path | None:
    """Confusion matrices side by side (summed over seeds), the baseline first."""
    rows = sorted((c for c in configs if c.runs), key=lambda c: not c.baseline)
    mats = [(c, m) for c in rows if (m := summed_confusion(c)) is not None]
    if not mats:
        return None
    ncols = min(4, len(mats))
    nrows = (len(mats) + ncols - 1) // ncols
    n_cls = len(mats[0][1][0])
    side = max(2.6, 0.45 * n_cls + 1.6)
    fig = new_figure(side * ncols, side * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    top = max(max(max(r) for r in cm) for _, (cm, _) in mats) or 1  # one colour scale for all panels
    for ax, (c, (cm, labels)) in zip(axes, mats, strict=False):
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=top)
        for i, row in enumerate(cm):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                        color="white" if v > top / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=45 if n_cls > 3 else 0)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("gold", fontsize=8)
        ax.set_title(c.label + (" (baseline)" if c.baseline else ""), fontsize=8)
    for ax in axes[len(mats):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def task_plots(configs: list[Config], out_dir: Path, slug: str) -> list[tuple[str, Path]]:
    """All figures of one task, as (caption, path), in the order the report shows them. Labels, class
    names and metric names are drawn as written (`escape.plain_plot_text`: no mathtext)."""
    with plain_plot_text():
        return _draw_task_plots(configs, out_dir, slug)


def _draw_task_plots(configs: list[Config], out_dir: Path, slug: str) -> list[tuple[str, Path]]:
    metric = configs[0].metric if configs else "metric"
    specs: list[tuple[str, Path | None]] = [
        (f"{metric} per configuration (mean, 95% CI, seeds as dots; dashed: without learning)",
         stat_bars(configs, metric, out_dir / f"{slug}-metric.png", title=f"{metric}", xlabel=metric,
                   lines=reference_lines(configs, metric))),
        ("Trainable parameters (log scale)",
         stat_bars(configs, "trainable_params", out_dir / f"{slug}-params.png", title="trainable parameters",
                   xlabel="trainable parameters", log=True)),
        ("Training time (mean ± std over seeds)",
         stat_bars(configs, "train_time_s", out_dir / f"{slug}-time.png", title="train time",
                   xlabel="seconds")),
        ("Peak training memory (mean ± std over seeds)",
         stat_bars(configs, "peak_memory_bytes", out_dir / f"{slug}-memory.png", title="peak memory",
                   xlabel="peak memory")),
        ("Loss curves", loss_curves(configs, out_dir / f"{slug}-loss.png", title="training (solid) and eval (dashed) loss")),
        ("Metric vs rank", rank_sweeps(configs, out_dir / f"{slug}-rank.png", title=f"{metric} vs LoRA-style rank")),
        ("Pareto fronts (red: non-dominated; grey: dominated; configurations that did not learn left out)",
         pareto(configs, out_dir / f"{slug}-pareto.png", title=f"{metric} vs cost")),
        ("Confusion matrices (summed over seeds)",
         confusion_matrices(configs, out_dir / f"{slug}-confusion.png", title="confusion matrices")),
        ("Learning vs forgetting (red: Pareto-optimal; grey: dominated)",
         forgetting_pareto(configs, out_dir / f"{slug}-forgetting-pareto.png", title=f"{metric} vs forgetting")),
        ("Weight change per layer (mean over seeds)",
         weight_change_layers(configs, out_dir / f"{slug}-dw-layers.png", title="weight change per layer")),
    ]
    return [(caption, p) for caption, p in specs if p is not None]
