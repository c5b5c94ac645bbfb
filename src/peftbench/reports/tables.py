"""Compact comparison tables (terminal and markdown) from run records."""

from __future__ import annotations

from typing import Any


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def rows(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for r in records:
        m = r.get("metrics") or {}
        t = r.get("train") or {}
        p = r.get("params") or {}
        main = r.get("main_metric") or "accuracy"
        out.append({
            "method": r.get("method", "?"),
            "status": r.get("status", "?") if r.get("status") == "success" else
            f"{r.get('status')}:{(r.get('error') or {}).get('type', '?')}",
            main: f"{m[main]:.4f}" if isinstance(m.get(main), float) else "-",
            "f1_macro": f"{m['f1_macro']:.4f}" if isinstance(m.get("f1_macro"), float) else "-",
            "eval_loss": f"{m['eval_loss']:.4f}" if isinstance(m.get("eval_loss"), float) else "-",
            "trainable_%": f"{p['trainable_pct']:.3f}" if "trainable_pct" in p else "-",
            "train_time_s": f"{t['time_s']:.1f}" if isinstance(t.get("time_s"), float) else "-",
            "peak_mem": fmt_bytes(t.get("peak_memory_bytes")),
            "saved_size": fmt_bytes((r.get("artifact") or {}).get("size_bytes")),
        })
    return out


def terminal_table(records: list[dict[str, Any]]) -> str:
    table = rows(records)
    if not table:
        return "(no runs)"
    headers = list(table[0])
    widths = {h: max(len(h), *(len(row.get(h, "")) for row in table)) for h in headers}
    lines = ["  ".join(h.ljust(widths[h]) for h in headers), "  ".join("-" * widths[h] for h in headers)]
    lines += ["  ".join(row.get(h, "").ljust(widths[h]) for h in headers) for row in table]
    return "\n".join(lines)


def markdown_table(records: list[dict[str, Any]]) -> str:
    table = rows(records)
    if not table:
        return "(no runs)\n"
    headers = list(table[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row.get(h, "") for h in headers) + " |" for row in table]
    return "\n".join(lines) + "\n"
