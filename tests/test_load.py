"""The machine's load beside every timing: /proc parsing, windows, the record's `train.load`, the
rule that says two loads differ, and the report's marks on time comparisons."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from conftest import load_schema, tiny_spec
from peftbench.perf.load import (
    Snapshot,
    busy_reason,
    load_differs,
    merge_windows,
    parse_proc_stat,
    snapshot,
    window,
)

STAT = """cpu  1000 50 200 5000 100 0 30 20 0 0
cpu0 500 25 100 2500 50 0 15 10 0 0
intr 12345
"""


def test_proc_stat_gives_total_busy_and_steal() -> None:
    # total = all eight fields; busy = user + nice + system + irq + softirq; steal the eighth.
    assert parse_proc_stat(STAT) == (6400, 1280, 20)
    assert parse_proc_stat("cpu  10 0 5 100\n") == (115, 15, None)  # a kernel without a steal field
    assert parse_proc_stat("intr 1 2 3\n") is None
    assert parse_proc_stat("cpu  a b c d\n") is None


def test_window_subtracts_this_process_and_shares_steal() -> None:
    hz = os.sysconf("SC_CLK_TCK")
    a = Snapshot(wall_s=10.0, load_1min=1.0, ticks=(0, 0, 0), own_cpu_s=5.0)
    # 2 s on 2 cores: 4 s of CPU, 3 s of it busy; this process used 1 s of it, steal 0.4 s.
    b = Snapshot(wall_s=12.0, load_1min=1.5, ticks=(4 * hz, 3 * hz, int(0.4 * hz)), own_cpu_s=6.0)
    w = window(a, b, threads=1)
    assert w["window_s"] == 2.0
    assert w["other_busy_cores"] == pytest.approx(1.0)  # (3 s - 1 s) / 2 s
    assert w["steal_share"] == pytest.approx(0.1, abs=1 / (4 * hz))
    assert w["cpu_share"] == pytest.approx(0.5)  # 1 s of CPU over 2 s at one thread
    # This process busier than /proc saw (tick rounding): never negative.
    assert window(a, Snapshot(12.0, 1.5, (4 * hz, hz, 0), 8.0))["other_busy_cores"] == 0.0
    # No /proc counters: unknown, not zero.
    no_proc = window(Snapshot(0.0, None, None, 0.0), Snapshot(1.0, None, None, 0.5))
    assert no_proc["other_busy_cores"] is None and no_proc["steal_share"] is None


def test_a_real_window_is_sane() -> None:
    import time

    before = snapshot()
    start = time.process_time()
    while time.process_time() - start < 0.5:  # this process's own work: counted as its own, not as others'.
        pass  # Half a second of it: the kernel counts CPU time in 10 ms ticks, a few percent of the window.
    w = window(before, snapshot(), threads=1)
    cpus = os.cpu_count() or 1
    assert w["window_s"] > 0 and w["cpus"] == cpus
    assert 0.0 <= w["other_busy_cores"] <= cpus + 0.1
    assert 0.0 < w["cpu_share"] <= 1.1
    assert 0.0 <= w["steal_share"] <= 1.0


def test_load_differs_on_cores_steal_and_the_load_average() -> None:
    quiet, busy = {"other_busy_cores": 0.1, "steal_share": 0.0}, {"other_busy_cores": 1.8, "steal_share": 0.0}
    assert load_differs(quiet, busy) == "0.1 vs 1.8 cores busy with other work"
    assert load_differs(busy, {"other_busy_cores": 1.5}) is None  # 0.3 apart: alike
    assert load_differs({"other_busy_cores": 4.0}, {"other_busy_cores": 4.6}) is None  # 0.6 apart, 1.12×: alike
    assert load_differs({"other_busy_cores": 0.0}, {"other_busy_cores": 0.5}) is not None  # half a core from none
    assert load_differs({"steal_share": 0.02}, {"steal_share": 0.25}) == "CPU steal 2% vs 25%"
    # Without /proc figures: the mean load average less the run's own threads.
    assert load_differs({"mean_1min": 1.1}, {"mean_1min": 3.0}, 1, 1) == "0.1 vs 2.0 cores busy with other work"
    assert load_differs(None, busy) is None and load_differs({}, busy) is None and load_differs("x", busy) is None


def test_busy_reason_for_a_peak_probe() -> None:
    quiet = {"cpus": 2, "other_busy_cores": 0.05, "cpu_share": 0.99, "steal_share": 0.0}
    assert busy_reason(quiet, threads=2) is None
    assert busy_reason({**quiet, "other_busy_cores": 1.0}, threads=1) is None  # the core it left free
    assert "busy with other work" in busy_reason({**quiet, "other_busy_cores": 1.0}, threads=2)
    assert "got 40%" in busy_reason({**quiet, "cpu_share": 0.4}, threads=1)
    assert "steal" in busy_reason({**quiet, "steal_share": 0.3}, threads=1)
    assert "load 6.5" in busy_reason({"cpus": 2, "load_1min": 6.5}, threads=1)  # no /proc: the load average


def test_merge_windows_weights_by_time() -> None:
    merged = merge_windows([{"window_s": 1.0, "other_busy_cores": 2.0, "steal_share": 0.0},
                            {"window_s": 3.0, "other_busy_cores": 0.0, "steal_share": None}])
    assert merged["window_s"] == 4.0
    assert merged["other_busy_cores"] == pytest.approx(0.5)
    assert merged["steal_share"] == 0.0  # only the window that knew it


@pytest.fixture(scope="module")
def two_records(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path,
                sentiment_files: tuple[Path, Path]) -> list[dict[str, Any]]:
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run

    out = tmp_path_factory.mktemp("runs")
    return [run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, m, max_steps=4, num_threads=1, peak_tflops=1)),
                out, progress=False, log=lambda _m: None) for m in ("full", "lora")]


def test_record_carries_the_load_it_trained_under(two_records: list[dict[str, Any]]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    for rec in two_records:
        jsonschema.validate(rec, load_schema("record"))
        t = rec["train"]
        load = t["load"]
        assert set(load) >= {"start_1min", "end_1min", "mean_1min", "samples", "window_s", "cpus",
                             "other_busy_cores", "steal_share"}
        ends = (load["start_1min"], load["end_1min"])
        assert all(v >= 0 for v in ends) and load["samples"] >= 2
        assert load["mean_1min"] >= 0
        # The window covers the training clock (and the epochs' evaluations): never shorter.
        assert load["window_s"] >= t["time_s"]
        assert 0.0 <= load["other_busy_cores"] <= load["cpus"] + 0.1
        assert 0.0 <= load["steal_share"] <= 1.0


def _with_load(rec: dict[str, Any], others: float | None) -> dict[str, Any]:
    rec = copy.deepcopy(rec)
    if others is None:
        rec["train"].pop("load")
    else:
        rec["train"]["load"].update(other_busy_cores=others, steal_share=0.0)
    return rec


def test_report_marks_time_comparisons_under_different_load(two_records: list[dict[str, Any]],
                                                            tmp_path: Path) -> None:
    from peftbench.reports.analysis import analyze
    from peftbench.reports.build import build_report
    from peftbench.reports.rows import comparison_rows, run_rows

    full, lora = two_records
    marked = analyze([_with_load(full, 0.1), _with_load(lora, 1.8)])
    (row,) = comparison_rows(marked, "classification")
    assert row["load"].text.startswith("⚠ 1.8 vs 0.1 cores busy with other work (this configuration vs")
    assert sorted(r["load (1-min)"].text.split("; ")[1] for r in run_rows(marked, "classification")) == [
        "others 0.1", "others 1.8"]
    (same,) = comparison_rows(analyze([_with_load(full, 0.9), _with_load(lora, 1.0)]), "classification")
    assert same["load"].text == "similar"
    # Records from before the load fields: no mark, '-' shown, and the report still builds.
    old = [_with_load(full, None), _with_load(lora, None)]
    (unknown,) = comparison_rows(analyze(old), "classification")
    assert unknown["load"].text == "-"
    assert all(r["load (1-min)"].text == "-" for r in run_rows(analyze(old), "classification"))
    html = build_report(old, tmp_path).read_text()
    assert "load (1-min)" in html
