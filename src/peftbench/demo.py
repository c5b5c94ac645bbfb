"""`peftbench demo`: every seed method on the bundled MiniLM and a generated sentiment set, offline."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from peftbench.config.spec import RunSpec
from peftbench.data.synthetic import generate, write_csv
from peftbench.methods.base import SEED_METHODS
from peftbench.records.io import atomic_write_text
from peftbench.reports.tables import markdown_table, terminal_table

DEMO_METHODS = list(SEED_METHODS)


def demo_spec(method: str, train: Path, eval_: Path, epochs: int, device: str = "auto") -> RunSpec:
    """One method's run; `device` other than 'auto' becomes `train.device` (left out otherwise, so the
    default demo's specs stay as they were)."""
    return RunSpec.from_dict({
        "name": f"demo-{method}",
        "model": {"name_or_path": "embedded"},
        "data": {"train": str(train), "eval": str(eval_), "labels": ["negative", "positive"], "max_length": 64},
        "method": {"name": method},
        "train": {"epochs": epochs, "batch_size": 32, "seed": 42, **({"device": device} if device != "auto" else {})},
    })


def _split_text(records: list[dict[str, Any]], n_train: int, n_test: int) -> str:
    """Sizes as trained: part of the generated training rows is held out for validation."""
    data = next((r.get("data") for r in records if r.get("data")), None) or {}
    n_val = data.get("n_validation") or 0
    if n_val:
        return f"{data.get('n_train', n_train - n_val)} train / {n_val} validation / {n_test} test"
    return f"{n_train} train / {n_test} test"


def run_demo(out: str, methods: list[str] | None = None, *, n_train: int | None = None, epochs: int | None = None,
             progress: bool = True, device: str = "auto") -> list[dict[str, Any]]:
    from peftbench.config.sweep import SweepSpec
    from peftbench.runtime.device import pick_device
    from peftbench.sweeps.engine import sweep

    pick_device(device)  # 'cuda' without a GPU fails here, once, not in each method's process
    methods = methods or DEMO_METHODS
    root = Path(out)
    train_rows, eval_rows = generate(n_train or 1200, 600, seed=0)
    train_file = write_csv(train_rows, root / "data" / "train.csv")
    eval_file = write_csv(eval_rows, root / "data" / "eval.csv")
    specs = [demo_spec(m, train_file, eval_file, epochs or 3, device) for m in methods]  # validate all before training
    t0 = time.perf_counter()
    # Each method in its own process (the sweep engine): one run's memory peak is not muddied by the
    # allocator caches of the runs before it, and a crash in one method cannot take down the demo.
    records = sweep(SweepSpec(explicit=specs), root, progress=progress)
    wall = time.perf_counter() - t0
    table = terminal_table(records)
    print("\npeftbench demo: all-MiniLM-L6-v2 on generated sentiment data "
          f"({_split_text(records, len(train_rows), len(eval_rows))})\n")
    print(table)
    md = ("# peftbench demo\n\nModel: all-MiniLM-L6-v2 (bundled). Data: generated sentiment set "
          f"({_split_text(records, len(train_rows), len(eval_rows))}; negation, contrast, unseen words in the test "
          "set).\n\n"
          + markdown_table(records) + f"\nWall time: {wall:.0f} s.\n")
    atomic_write_text(root / "summary.md", md)
    print(f"\nsummary: {root / 'summary.md'}  (wall time {wall:.0f} s)")
    try:
        from peftbench.reports.build import build_report

        html = build_report(records, root / "report")
        print(f"report: {html}")
    except ImportError:
        pass
    return records
