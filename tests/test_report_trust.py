"""The report's trust sections: tuning, protocol flag, forgetting, weight change, time to target.

Real records come from short runs on a tiny model (a tuning search, runs with retention data, one
run that selects on the test split); exact cases use constructed records."""

from __future__ import annotations

import base64
import copy
import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from conftest import tiny_spec
from peftbench.reports.stats import pareto_front

QUIET = {"progress": False, "log": lambda _msg: None}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, sentiment_files: tuple[Path, Path]) -> Path:
    """full and ia3 with retention data (2 epochs; ia3 selects its epoch on test), a 2-trial lora search."""
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run
    from peftbench.sweeps.tune import tune_method

    out = tmp_path_factory.mktemp("trust-runs")
    for method in ("full", "ia3"):
        spec = tiny_spec(tiny_bert, sentiment_files, method, seed=1, num_threads=1, epochs=2)
        spec["data"].update(n_train=96)
        spec["retention"] = {"file": str(sentiment_files[1]), "n": 40}
        if method == "ia3":
            spec.update(select={"split": "test", "strategy": "best"}, allow_test_selection=True)
        run(RunSpec.from_dict(spec), out, **QUIET)
    tune = tiny_spec(tiny_bert, sentiment_files, "lora", max_steps=1, num_threads=1)
    tune["data"].update(n_train=64, n_eval=32)
    tune["tune"] = {"trials": 2}
    tune_method(RunSpec.from_dict(tune), out, log=lambda _msg: None)
    return out


@pytest.fixture(scope="module")
def records(runs: Path) -> list[dict[str, Any]]:
    from peftbench.records.io import load_records

    recs = load_records(runs)
    assert len(recs) == 6  # full, ia3, 2 trials, defaults, tuned
    return recs


@pytest.fixture(scope="module")
def built(records: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from peftbench.reports.build import build_report

    html_path = build_report(records, tmp_path_factory.mktemp("trust-report"))
    return html_path, json.loads((html_path.parent / "analysis.json").read_text())


def _task(analysis: dict[str, Any]) -> dict[str, Any]:
    return analysis["tasks"]["classification"]


def _config(analysis: dict[str, Any], label: str) -> dict[str, Any]:
    return next(c for c in _task(analysis)["configs"] if c["label"] == label)


def _one(records: list[dict[str, Any]], **where: Any) -> dict[str, Any]:
    (rec,) = [r for r in records if all(r.get(k) == v for k, v in where.items())
              and (r.get("tuning") or {}).get("role") is None]
    return rec


# ---- tuning ---------------------------------------------------------------------------------------


def test_trials_are_left_out_and_final_runs_labelled(records: list[dict[str, Any]],
                                                     built: tuple[Path, dict[str, Any]]) -> None:
    html_path, analysis = built
    trials = {r["run_id"] for r in records if (r.get("tuning") or {}).get("role") == "trial"}
    assert len(trials) == 2
    configs = _task(analysis)["configs"]
    assert {c["label"] for c in configs} == {"full", "lora (defaults)", "lora (tuned)", "ia3"}
    assert not trials & {rid for c in configs for rid in c["runs"]}
    assert all(not trials & {p["run_a"], p["run_b"]} for pair in _task(analysis)["pairs"] for p in pair["per_seed"])
    assert _config(analysis, "lora (tuned)")["tuning_role"] == "tuned"
    assert any("2 tuning trial run(s) are left out" in n for n in analysis["notes"])
    md = (html_path.parent / "report.md").read_text()
    dash = md.split("### Dashboard")[1].split("\n### ")[0]  # with the "did not learn" and failed tables
    assert not any(t in dash for t in trials) and "lora (tuned)" in dash and "lora (defaults)" in dash
    # The flat exports keep every run, trials marked as such.
    rows = list(csv.DictReader(io.StringIO((html_path.parent / "report.csv").read_text())))
    assert {r["run_id"] for r in rows if r["tuning_role"] == "trial"} == trials


def test_tuning_table_equals_the_search_summary(runs: Path, built: tuple[Path, dict[str, Any]]) -> None:
    html_path, analysis = built
    (summary_file,) = runs.glob("tune-lora-*.json")
    summary = json.loads(summary_file.read_text())
    (t,) = _task(analysis)["trust"]["tuning"]
    assert t["tune_id"] == summary["tune_id"] and t["method"] == "lora" and t["split"] == "validation"
    assert t["budget"]["trials"] == 2 and t["budget"]["trials_run"] == 2 and t["trial_records"] == 2
    assert t["best_validation"] == summary["best"]["value"] and t["best_params"] == summary["best"]["params"]
    for side, role in (("defaults", "default"), ("tuned", "tuned")):
        assert t[side]["test"]["mean"] == pytest.approx(summary[role]["test_mean"])
        assert t[side]["params"] == summary[role]["params"]
        assert t[side]["label"] == f"lora ({side})"
    assert t["delta"] == pytest.approx(summary["tuned"]["test_mean"] - summary["default"]["test_mean"])
    md = (html_path.parent / "report.md").read_text()
    table = md.split("### Tuning: defaults vs tuned")[1].split("###")[0]
    assert "2 trials" in table and f"{t['delta']:+.4f}" in table and f"r={summary['best']['params']['r']}" in table


# ---- protocol -------------------------------------------------------------------------------------


def test_test_selected_runs_are_flagged(records: list[dict[str, Any]], built: tuple[Path, dict[str, Any]]) -> None:
    html_path, analysis = built
    assert _one(records, method="ia3")["protocol"]["test_selection"] is True
    flags = {c["label"]: c["test_selection"] for c in _task(analysis)["configs"]}
    assert flags == {"full": False, "lora (defaults)": False, "lora (tuned)": False, "ia3": True}
    proto = _task(analysis)["trust"]["protocol"]
    assert proto["test_selected"] == ["ia3"] and proto["numbers_from"]["metrics"] == ["test"]
    assert set(proto["selection_split"]) == {"test", "validation"}
    md = (html_path.parent / "report.md").read_text()
    assert "| ia3 ⚠ |" in md and "> ⚠ selected on the test split" in md and "optimistic: ia3." in md
    # the search's final runs used 32 test rows, full and ia3 64; ia3 selected its epoch on test
    final = [r for r in records if (r.get("tuning") or {}).get("role") != "trial"]
    sizes = {len(r["predictions"]["gold"]) for r in final}
    assert sizes == {32, 64} and {t["n"] for t in proto["test_split"]} == sizes
    assert set(proto["numbers_from"]["eval.per_epoch"]) == {"validation", "test"}
    splits = next(line for line in md.splitlines() if "Splits, as the records state them" in line)
    assert all(f"n={n}" in splits for n in sizes)
    assert {"test", "validation"} <= set(splits.split("epoch selection on")[1].strip(" .").split(" / "))
    parser = _parse(html_path)
    assert parser.row_classes.get("ia3 ⚠") == "flagged" and parser.row_classes.get("full (baseline)") in ("best", "baseline")
    rows = list(csv.DictReader(io.StringIO((html_path.parent / "report.csv").read_text())))
    assert {r["method"] for r in rows if r["test_selection"] == "True"} == {"ia3"}


# ---- forgetting -----------------------------------------------------------------------------------


def test_forgetting_table_and_front_from_real_runs(records: list[dict[str, Any]],
                                                   built: tuple[Path, dict[str, Any]]) -> None:
    _, analysis = built
    points = {p["label"]: p for p in _task(analysis)["trust"]["forgetting"]}
    assert set(points) == {"full", "ia3"}  # only these runs had retention data
    for label in points:
        rec = _one(records, method=label)
        assert points[label]["forgetting"] == rec["retention"]["forgetting"]
        assert points[label]["forgetting_metric"] == "probe_accuracy_drop"
        assert _config(analysis, label)["stats"]["probe_after_accuracy"]["mean"] == rec["retention"]["probe"]["after_accuracy"]
    pts = [points["full"], points["ia3"]]
    # Runs that did not learn (two epochs of a tiny random model) are never on the front (the issue).
    learners = [p for p in pts if p["learned"] is not False]
    assert [p["pareto"] for p in learners] == pareto_front([(p["value"], p["forgetting"]) for p in learners],
                                                           [True, False])
    assert not any(p["pareto"] for p in pts if p["learned"] is False)
    assert [p["learned"] for p in pts] == [_config(analysis, p["label"])["learning"]["learned"] for p in pts]


def _record(i: int, method: str, value: float, *, metric: str = "accuracy", **extra: Any) -> dict[str, Any]:
    """A minimal success record of its own configuration."""
    return {"run_id": f"{method}-{i}", "status": "success", "task": "classification", "method": method,
            "seed": 1, "main_metric": metric, "metrics": {metric: value},
            "spec": {"task": "classification", "method": {"name": method, "r": i}, "train": {"seed": 1}}, **extra}


def _retention(forgetting: float) -> dict[str, Any]:
    return {"retention": {"forgetting": forgetting, "forgetting_metric": "probe_accuracy_drop", "drift": 0.1}}


@pytest.mark.parametrize(("metric", "points", "front"), [
    # accuracy (higher is better) vs forgetting (lower is better)
    ("accuracy", [(0.90, 0.10), (0.85, 0.02), (0.80, 0.05), (0.95, 0.20), (0.90, 0.12), (0.70, 0.02)],
     [True, True, False, True, False, False]),
    # perplexity (lower is better)
    ("perplexity", [(10.0, 0.10), (12.0, 0.05), (13.0, 0.06), (9.0, 0.30)], [True, True, False, True]),
])
def test_forgetting_front_on_a_constructed_case(metric: str, points: list[tuple[float, float]],
                                                front: list[bool]) -> None:
    from peftbench.reports.analysis import analyze

    recs = [_record(i, "lora", v, metric=metric, **_retention(f)) for i, (v, f) in enumerate(points)]
    trust = analyze(recs, baseline=None).trust["classification"]
    got = {p["config_id"]: p["pareto"] for p in trust["forgetting"]}
    by_run = {c.runs[0]["run_id"]: c.config_id for c in analyze(recs, baseline=None).configs}
    assert [got[by_run[f"lora-{i}"]] for i in range(len(points))] == front


# ---- weight change --------------------------------------------------------------------------------


def test_weight_change_table_and_layer_profiles(records: list[dict[str, Any]],
                                                built: tuple[Path, dict[str, Any]]) -> None:
    html_path, analysis = built
    full, ia3 = _one(records, method="full"), _one(records, method="ia3")
    for label, rec in (("full", full), ("ia3", ia3)):
        st = _config(analysis, label)["stats"]
        assert st["dw_mean_rel_norm"]["mean"] == rec["diagnostics"]["summary"]["mean_rel_norm"]
        assert st["dw_intruders_total"]["mean"] == rec["diagnostics"]["summary"]["intruders_total"]
    wc = _task(analysis)["trust"]["weight_change"]
    order = wc["layers"]
    tuned = next(r for r in records if (r.get("tuning") or {}).get("role") == "tuned")
    assert set(order) == set(full["diagnostics"]["layers"]) | set(ia3["diagnostics"]["layers"])
    assert set(tuned["diagnostics"]["layers"]) < set(order)
    for rec in (full, ia3, tuned):  # each record's layers keep their model order in the merged order
        names = list(rec["diagnostics"]["layers"])
        assert sorted(names, key=order.index) == names
    prof = next(c for c in wc["configs"] if c["label"] == "ia3")
    for name, value in zip(order, prof["rel_norm"], strict=True):
        assert value == (ia3["diagnostics"]["layers"][name]["rel_norm"] if name in ia3["diagnostics"]["layers"]
                         else None)
    assert len(set(wc["short_names"])) == len(order)
    md = (html_path.parent / "report.md").read_text()
    assert "### Weight change (ΔW)" in md and "-dw-layers.png" in md


def test_layer_order_merge_and_short_names() -> None:
    from peftbench.reports.trust import merge_orders, short_layer_names

    model = ["l.0.q", "l.0.k", "l.0.v", "l.0.o", "l.1.q", "l.1.k", "l.1.v", "l.1.o"]
    lora = ["l.0.q", "l.0.v", "l.1.q", "l.1.v"]
    assert merge_orders([lora, model]) == model and merge_orders([model, lora]) == model
    assert merge_orders([lora, ["l.0.q", "l.0.k", "l.0.v", "l.1.q", "l.1.k"]]) == [*model[:3], "l.1.q", "l.1.k", "l.1.v"]
    top = ["l.1.q", "l.1.o"]  # e.g. partial fine-tuning of the top block only
    assert merge_orders([top, lora]) == ["l.0.q", "l.0.v", "l.1.q", "l.1.o", "l.1.v"]
    assert merge_orders([["b.2", "b.10"], ["b.10", "b.2"]]) == ["b.2", "b.10"]  # disagreement: natural order
    bert = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.output.dense",
            "bert.encoder.layer.11.intermediate.dense", "bert.encoder.layer.11.output.dense", "bert.pooler.dense"]
    assert short_layer_names(bert) == ["0.attn.query", "0.attn.out", "11.inter", "11.out", "pooler"]
    t5 = ["encoder.block.0.layer.0.SelfAttention.q", "decoder.block.0.layer.0.SelfAttention.q"]
    assert short_layer_names(t5) == ["enc.0.0.attn.q", "dec.0.0.attn.q"]
    assert short_layer_names(["model.layers.10.very_long_module_name.projection"]) == ["10.very_….projection"]  # 20 characters


# ---- time to target -------------------------------------------------------------------------------


CURVE = [{"epoch": 1, "step": 10, "train_time_s": 4.0, "accuracy": 0.60, "eval_loss": 1.00},
         {"epoch": 2, "step": 20, "train_time_s": 8.5, "accuracy": 0.86, "eval_loss": 0.50},
         {"epoch": 3, "step": 30, "train_time_s": 13.0, "accuracy": 0.90, "eval_loss": 0.45},
         {"epoch": 4, "step": 40, "train_time_s": 17.5, "accuracy": 0.90, "eval_loss": 0.44}]


@pytest.mark.parametrize(("metric", "fraction", "seconds", "epoch"), [
    ("accuracy", 0.95, 8.5, 2),     # target 0.855: 0.86 at epoch 2
    ("accuracy", 0.99, 13.0, 3),    # target 0.891
    ("accuracy", 0.5, 4.0, 1),
    ("eval_loss", 0.95, 13.0, 3),   # loss ≤ 0.44 / 0.95 = 0.4632: 0.45 at epoch 3
    ("eval_loss", 0.85, 8.5, 2),    # loss ≤ 0.5176
    ("eval_loss", 1.0, 17.5, 4),
])
def test_time_to_target_on_a_constructed_curve(metric: str, fraction: float, seconds: float, epoch: int) -> None:
    from peftbench.reports.trust import time_to_target

    rec = {"eval": {"per_epoch": CURVE}, "train": {"time_s": 17.5, "steps": 40}}
    got = time_to_target(rec, metric, fraction)
    assert got["seconds"] == seconds and got["epoch"] == epoch and got["time_source"] == "recorded"
    assert got["share_of_train_time"] == pytest.approx(seconds / 17.5)


def test_time_to_target_without_a_recorded_clock_uses_the_step_share() -> None:
    from peftbench.reports.trust import time_to_target

    old = [{k: v for k, v in e.items() if k != "train_time_s"} for e in CURVE]
    got = time_to_target({"eval": {"per_epoch": old}, "train": {"time_s": 12.0, "steps": 40}}, "accuracy", 0.95)
    assert got["seconds"] == 6.0 and got["time_source"] == "step share of train.time_s"
    assert time_to_target({"eval": {"per_epoch": [{"epoch": 1, "step": 1, "x": 0.0}]}}, "x") is None
    assert time_to_target({"eval": {"per_epoch": old}}, "rouge1") is None


def test_time_to_target_reaches_the_report_and_exports(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from peftbench.cli.app import cli
    from peftbench.records.io import atomic_write_json

    a = _record(1, "lora", 0.9, eval={"per_epoch": CURVE}, train={"time_s": 17.5, "steps": 40})
    b = _record(2, "lora", 0.9, eval={"per_epoch": CURVE[:2]}, train={"time_s": 8.5, "steps": 20})
    b.update(seed=2, spec=copy.deepcopy(a["spec"]))  # the same configuration, another seed
    for rec in (a, b):
        atomic_write_json(tmp_path / "runs" / rec["run_id"] / "result.json", rec)
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"),
                                   "--baseline", "", "--target-fraction", "0.9"])
    assert res.exit_code == 0, res.output
    analysis = json.loads((tmp_path / "rep" / "analysis.json").read_text())
    assert analysis["target_fraction"] == 0.9
    (cfg,) = _task(analysis)["configs"]
    # a: target 0.81 -> epoch 2 at 8.5 s; b: final 0.86, target 0.774 -> epoch 2 at 8.5 s
    assert cfg["stats"]["time_to_target_s"]["values"] == [8.5, 8.5]
    per_run = {t["run_id"]: t for t in _task(analysis)["trust"]["time_to_target"]}
    assert per_run["lora-1"]["target"] == pytest.approx(0.81) and per_run["lora-2"]["final"] == 0.86
    rows = {r["run_id"]: r for r in csv.DictReader(io.StringIO((tmp_path / "rep" / "report.csv").read_text()))}
    assert float(rows["lora-1"]["time_to_target_s"]) == 8.5 and float(rows["lora-1"]["target_fraction"]) == 0.9
    flat = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {r["time_to_target_s"] for r in flat} == {8.5}
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "to 90% (s)" in md and "8.5 ± 0.0" in md
    # no trust data in these records: their sections stay out
    for title in ("Tuning", "Forgetting", "Weight change", "selected on the test split"):
        assert title not in md
    bad = CliRunner().invoke(cli, ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "r2"),
                                   "--target-fraction", "1.5"])
    assert bad.exit_code == 2 and "target fraction 1.5" in bad.output


def test_real_curves_carry_the_training_clock(records: list[dict[str, Any]],
                                              built: tuple[Path, dict[str, Any]]) -> None:
    from peftbench.reports.trust import time_to_target

    _, analysis = built
    rec = _one(records, method="full")
    curve = rec["eval"]["per_epoch"]
    assert len(curve) == 2 and 0 < curve[0]["train_time_s"] < curve[1]["train_time_s"]
    assert curve[-1]["train_time_s"] == rec["train"]["time_s"]
    expected = time_to_target(rec, "accuracy")["seconds"]
    assert expected in (curve[0]["train_time_s"], curve[1]["train_time_s"])
    assert _config(analysis, "full")["stats"]["time_to_target_s"]["mean"] == expected


# ---- HTML -----------------------------------------------------------------------------------------


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str]] = []
        self.headings: list[str] = []
        self.row_classes: dict[str, str] = {}
        self._tag = ""
        self._row = ""
        self._cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self._tag = tag
        if tag == "img":
            self.images.append((a.get("alt") or "", a.get("src") or ""))
        if tag == "tr":
            self._row, self._cells = a.get("class") or "", []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and len(self._cells) > 2:
            self.row_classes.setdefault(self._cells[2], self._row)  # dashboard: best, model, config, ...

    def handle_data(self, data: str) -> None:
        if self._tag in ("h3", "h4"):
            self.headings.append(data)
        if self._tag == "td":
            self._cells.append(data)


def _parse(path: Path) -> _Collect:
    parser = _Collect()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def test_html_has_the_trust_sections_and_their_figures(built: tuple[Path, dict[str, Any]]) -> None:
    from PIL import Image

    html_path, _ = built
    parser = _parse(html_path)
    for title in ("Tuning: defaults vs tuned", "Forgetting", "Weight change (ΔW)"):
        assert title in parser.headings
    captions = [alt for alt, _ in parser.images]
    assert any(c.startswith("Learning vs forgetting") for c in captions)
    assert any(c.startswith("Weight change per layer") for c in captions)
    for _, src in parser.images:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as img:
            img.load()
            assert img.width > 300 and img.height > 200
