"""Reports built from real records of short runs on a tiny model, plus constructed statistical cases."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from conftest import tiny_spec
from peftbench.errors import SpecError

SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path,
            sentiment_files: tuple[Path, Path]) -> list[dict[str, Any]]:
    """full (1 seed), lora and ia3 (3 seeds each), lora r=4 (rank sweep) and one real failed run."""
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run
    from peftbench.records.io import load_records

    out = tmp_path_factory.mktemp("runs")
    quiet = {"progress": False, "log": lambda _msg: None}
    short = {"max_steps": 4, "num_threads": 1}
    run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "full", seed=1, **short)), out, **quiet)
    for method in ("lora", "ia3"):
        for seed in SEEDS:
            run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, method, seed=seed, **short)), out, **quiet)
    spec = tiny_spec(tiny_bert, sentiment_files, "lora", seed=1, **short)
    spec["method"]["r"] = 4
    run(RunSpec.from_dict(spec), out, **quiet)
    bad = tiny_spec(tiny_bert, sentiment_files, "partial", seed=1, **short)
    bad["method"]["layers"] = 99
    with pytest.raises(SpecError):
        run(RunSpec.from_dict(bad), out, **quiet)
    recs = load_records(out)
    assert len(recs) == 9
    return recs


@pytest.fixture(scope="module")
def built(records: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from peftbench.reports.build import build_report

    html_path = build_report(records, tmp_path_factory.mktemp("report"))
    analysis = json.loads((html_path.parent / "analysis.json").read_text())
    return html_path, analysis


def _config(analysis: dict[str, Any], label: str) -> dict[str, Any]:
    return next(c for c in analysis["tasks"]["classification"]["configs"] if c["label"] == label)


def _by_method(records: list[dict[str, Any]], method: str, r: int | None = None) -> list[dict[str, Any]]:
    return sorted((x for x in records if x["method"] == method and x["status"] == "success"
                   and (r is None or x["spec"]["method"].get("r") == r)), key=lambda x: x["seed"])


# ---- tables and exports -------------------------------------------------------------------------


def test_every_run_is_exported_and_tabled(records: list[dict[str, Any]], built: tuple[Path, dict[str, Any]]) -> None:
    html_path, analysis = built
    out = html_path.parent
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert sorted(r["run_id"] for r in rows) == sorted(r["run_id"] for r in records)
    flat = json.loads((out / "report.json").read_text())
    assert [r["run_id"] for r in flat] == [r["run_id"] for r in records]
    for row, rec in zip(flat, records, strict=True):
        assert row["status"] == rec["status"]
        if rec["status"] == "success":
            assert row["accuracy"] == rec["metrics"]["accuracy"]
            assert row["trainable_params"] == rec["params"]["trainable"]
    md = (out / "report.md").read_text()
    for rec in records:
        assert rec["run_id"] in md
    # One dashboard row per configuration: 3 seeds of lora pooled into one row with n=3.
    labels = {c["label"]: c for c in analysis["tasks"]["classification"]["configs"]}
    assert set(labels) == {"full", "partial", "lora (r=8)", "lora (r=4)", "ia3"}
    assert labels["lora (r=8)"]["seeds"] == list(SEEDS) and labels["ia3"]["n_success"] == 3
    failed = labels["partial"]
    assert failed["n_success"] == 0 and failed["failed_runs"][0]["error"]["type"] == "spec"
    assert "layers=99" in md and "failed (spec)" in md


def test_terminal_dashboard_marks_best_and_lists_failures(records: list[dict[str, Any]]) -> None:
    """Four steps on a tiny random model learn nothing: no ★ at all (the issue: stars went to runs that
    did not learn); the ★ goes to the best learner once a run's predictions beat the majority class."""
    import copy

    from peftbench.reports.analysis import analyze
    from peftbench.reports.sections import terminal_report

    analysis = analyze(records)
    text = terminal_report(analysis)
    assert "★" not in text and "failed (spec)" in text and "-- failed or canceled --" in text
    assert text.splitlines()[1].startswith("⚠ No method learned")
    fixed = copy.deepcopy(records)
    for r in fixed:
        if r["method"] == "ia3" and r["status"] == "success":  # ia3 now answers every example right
            r.pop("learning", None)
            r["predictions"]["pred"] = list(r["predictions"]["gold"])
            r["metrics"]["accuracy"] = 1.0
    analysis = analyze(fixed)
    best = [c for c in analysis.configs if c.best]
    assert [c.label for c in best] == ["ia3"] and "★" in terminal_report(analysis)
    top = max(c.mean("accuracy") for c in analysis.configs if c.runs)
    assert all(math.isclose(c.mean("accuracy"), top) for c in best)


# ---- baseline comparison --------------------------------------------------------------------------


def test_deltas_and_ratios_equal_the_records_numbers(records: list[dict[str, Any]],
                                                     built: tuple[Path, dict[str, Any]]) -> None:
    _, analysis = built
    task = analysis["tasks"]["classification"]
    assert task["baseline"] == "full"
    cmp = next(c for c in task["comparisons"] if c["label"] == "lora (r=8)")
    full = _by_method(records, "full")[0]
    lora = _by_method(records, "lora", r=8)

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    acc = mean([r["metrics"]["accuracy"] for r in lora])
    assert cmp["deltas"]["accuracy"]["abs"] == pytest.approx(acc - full["metrics"]["accuracy"])
    loss = mean([r["metrics"]["eval_loss"] for r in lora])
    assert cmp["deltas"]["eval_loss"]["abs"] == pytest.approx(loss - full["metrics"]["eval_loss"])
    tp = mean([r["params"]["trainable"] for r in lora])
    assert cmp["param_reduction_pct"] == pytest.approx((1 - tp / full["params"]["trainable"]) * 100)
    assert cmp["x_fewer_params"] == pytest.approx(full["params"]["trainable"] / tp)
    assert cmp["metric_per_million_params"] == pytest.approx(acc / (tp / 1e6))
    t = mean([r["train"]["time_s"] for r in lora])
    assert cmp["speedup"] == pytest.approx(full["train"]["time_s"] / t)
    mem = mean([r["train"]["memory_by_kind"]["peak_bytes"] for r in lora])  # counted by kind, not RSS
    assert cmp["memory_saving"] == pytest.approx(full["train"]["memory_by_kind"]["peak_bytes"] / mem)
    size = mean([r["artifact"]["size_bytes"] for r in lora])
    assert cmp["size_ratio"] == pytest.approx(full["artifact"]["size_bytes"] / size)
    for cls, d in cmp["per_class_deltas"].items():
        f1 = mean([r["metrics"]["per_class"][cls]["f1"] for r in lora])
        assert d["f1"] == pytest.approx(f1 - full["metrics"]["per_class"][cls]["f1"])
    # Four steps on a tiny random model learn nothing: no praise for the fewer parameters (the issue).
    assert cmp["learned"] is False and cmp["verdict"]["label"] == "did not learn"
    assert "fewer trainable parameters" not in cmp["verdict"]["text"]


def test_verdict_never_says_better_without_significance() -> None:
    from peftbench.reports.comparisons import verdict

    cmp = {"label": "lora", "metric": "accuracy", "deltas": {"accuracy": {"abs": 0.08}},
           "x_fewer_params": 100.0, "speedup": 1.05, "memory_saving": 0.5, "size_ratio": None}
    ns = verdict(cmp, {"test": "mcnemar", "pvalue": 0.06, "significant": False, "better": None})
    assert ns["label"] == "no significant difference" and "better" not in ns["text"]
    assert "100.0× fewer trainable parameters" in ns["text"]
    assert "similar training time" in ns["text"] and "2.0× more peak memory" in ns["text"]
    sig = verdict(cmp, {"test": "mcnemar", "pvalue": 0.01, "significant": True, "better": "lora"})
    assert sig["label"] == "better" and sig["text"].startswith("Significantly better accuracy")
    worse = verdict({**cmp, "deltas": {"accuracy": {"abs": -0.08}}},
                    {"test": "mcnemar", "pvalue": 0.01, "significant": True, "better": "full"})
    assert worse["label"] == "worse"
    mixed = verdict({**cmp, "deltas": {"accuracy": {"abs": -0.01}}},
                    {"test": "mcnemar", "pvalue": 0.01, "significant": True, "better": "lora"})
    assert mixed["label"] == "mixed" and "better" not in mixed["text"]
    untested = verdict(cmp, {"test": None, "pvalue": None, "significant": False})
    assert untested["label"] == "not tested"


# ---- statistics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("only_a,only_b", [(9, 2), (40, 18), (0, 0)])
def test_mcnemar_matches_statsmodels(only_a: int, only_b: int) -> None:
    from statsmodels.stats.contingency_tables import mcnemar

    from peftbench.reports.stats import mcnemar_test

    both, neither = 50, 7
    gold = [1] * (both + only_a + only_b + neither)
    pred_a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    pred_b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    res = mcnemar_test(pred_a, pred_b, gold)
    exact = only_a + only_b < 25
    ref = mcnemar([[both, only_a], [only_b, neither]], exact=exact, correction=True)
    assert (res["only_a"], res["only_b"], res["exact"]) == (only_a, only_b, exact)
    assert res["pvalue"] == pytest.approx(ref.pvalue) and res["statistic"] == pytest.approx(ref.statistic)
    assert res["delta"] == pytest.approx((only_a - only_b) / len(gold))


def test_paired_bootstrap_detects_a_real_shift_and_not_noise() -> None:
    import numpy as np

    from peftbench.reports.stats import paired_bootstrap

    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, 200)
    shifted = paired_bootstrap(base + 0.05 + rng.normal(0, 0.02, 200), base)
    assert shifted["pvalue"] < 0.05 and shifted["ci_low"] > 0
    noise = paired_bootstrap(base + rng.normal(0, 0.05, 200), base)
    assert noise["pvalue"] > 0.05 and noise["ci_low"] < 0 < noise["ci_high"]


def test_seed_summary_t_interval() -> None:
    from scipy import stats as sps

    from peftbench.reports.stats import seed_summary

    vals = [0.80, 0.83, 0.78]
    s = seed_summary(vals, bootstrap=True)
    low, high = sps.t.interval(0.95, 2, loc=sum(vals) / 3, scale=sps.sem(vals))
    assert (s["ci_low"], s["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert min(vals) - 1e-12 <= s["boot_low"] <= s["boot_high"] <= max(vals) + 1e-12
    one = seed_summary([0.8])
    assert one["mean"] == 0.8 and one["std"] is None and one["ci_low"] is None


def test_pareto_front_is_exactly_the_non_dominated_points() -> None:
    from peftbench.reports.stats import pareto_front

    # (accuracy up, params down)
    pts = [(0.90, 100), (0.85, 10), (0.80, 50), (0.85, 10), (0.70, 1), (0.95, 1000), (0.69, 1), (0.90, 200)]
    mask = pareto_front(pts, [True, False])
    assert [i for i, on in enumerate(mask) if on] == [0, 1, 3, 4, 5]
    # Lower-is-better metric (loss down, time down).
    mask = pareto_front([(0.3, 5.0), (0.2, 6.0), (0.4, 4.0), (0.5, 7.0)], [False, False])
    assert mask == [True, True, True, False]


def test_three_seeds_lora_vs_ia3_have_cis_and_a_mcnemar_p(records: list[dict[str, Any]],
                                                          built: tuple[Path, dict[str, Any]]) -> None:
    from statsmodels.stats.contingency_tables import mcnemar

    _, analysis = built
    for label in ("lora (r=8)", "ia3"):
        s = _config(analysis, label)["stats"]["accuracy"]
        assert s["n"] == 3 and s["ci_low"] is not None and s["ci_low"] <= s["mean"] <= s["ci_high"]
    pair = next(p for p in analysis["tasks"]["classification"]["pairs"] if {p["a"], p["b"]} == {"lora (r=8)", "ia3"})
    assert pair["test"] == "mcnemar" and len(pair["per_seed"]) == 3
    lora, ia3 = _by_method(records, "lora", r=8), _by_method(records, "ia3")
    if pair["a"] == "ia3":
        lora, ia3 = ia3, lora
    expected = []
    for ra, rb in zip(lora, ia3, strict=True):
        gold = ra["predictions"]["gold"]
        ok_a = [p == g for p, g in zip(ra["predictions"]["pred"], gold, strict=True)]
        ok_b = [p == g for p, g in zip(rb["predictions"]["pred"], gold, strict=True)]
        table = [[sum(a and b for a, b in zip(ok_a, ok_b, strict=True)), sum(a and not b for a, b in zip(ok_a, ok_b, strict=True))],
                 [sum(b and not a for a, b in zip(ok_a, ok_b, strict=True)), sum(not a and not b for a, b in zip(ok_a, ok_b, strict=True))]]
        expected.append(mcnemar(table, exact=table[0][1] + table[1][0] < 25).pvalue)
    assert [t["pvalue"] for t in pair["per_seed"]] == pytest.approx(expected)
    assert pair["pvalue"] == pytest.approx(max(expected))
    assert pair["significant"] == (max(expected) < 0.05 and pair["better"] is not None)


@pytest.mark.parametrize("metric,key,sign", [("rouge1", "rouge1", 1.0), ("perplexity", "loss", -1.0)])
def test_generation_scores_use_a_paired_bootstrap(records: list[dict[str, Any]], metric: str, key: str,
                                                  sign: float) -> None:
    """Per-example scores saved by a generation task are paired by seed and bootstrapped; for a
    lower-is-better metric the lower scores win."""
    import copy

    from peftbench.reports.analysis import analyze

    gen = []
    for i, rec in enumerate(_by_method(records, "lora", r=8) + _by_method(records, "ia3")):
        r = copy.deepcopy(rec)
        r.update(task="summarization", main_metric=metric, run_id=f"gen-{i}")
        r["spec"]["task"] = "summarization"
        good = r["method"] == "lora"
        scores = [2.0 + sign * (0.1 if good else 0.0) + 0.01 * ((k * 7 + r["seed"]) % 5) for k in range(60)]
        r["metrics"] = {metric: sum(scores) / len(scores), "eval_loss": 1.0}
        r["predictions"] = {"scores": {key: scores}}
        r.pop("learning", None)  # the classification run's verdict does not apply to the made-up scores
        gen.append(r)
    analysis = analyze(gen)
    (pair,) = analysis.pairs["summarization"]
    assert pair["test"] == "paired_bootstrap" and len(pair["per_seed"]) == 3
    assert pair["significant"] and pair["better"].startswith("lora")
    best = [c.label for c in analysis.configs if c.best]
    assert len(best) == 1 and best[0].startswith("lora")


# ---- HTML -----------------------------------------------------------------------------------------


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.captions: list[str] = []
        self.text: list[str] = []
        self.external: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
            self.captions.append(a.get("alt") or "")
        if tag in ("script", "link") and (a.get("src") or a.get("href")):
            self.external.append(a.get("src") or a.get("href") or "")
        if tag == "table":
            self.tables += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_self_contained_and_images_decode(records: list[dict[str, Any]],
                                                  built: tuple[Path, dict[str, Any]]) -> None:
    from PIL import Image

    html_path, _ = built
    parser = _Collect()
    parser.feed(html_path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.external == [] and parser.tables >= 4
    # One figure per fact the records hold: the metric, costs, loss curves, the r=4 rank sweep, confusion
    # matrices, weight change; Pareto fronts only when a configuration learned (non-learners are left out),
    # learning vs forgetting only with retention data.
    shown = {c.split(" (")[0].split(" per configuration")[0] for c in parser.captions}
    assert shown >= {"accuracy", "Trainable parameters", "Training time", "Peak training memory", "Loss curves",
                     "Metric vs rank", "Confusion matrices", "Weight change per layer"}, shown
    assert ("Pareto fronts" in shown) is any((r.get("learning") or {}).get("learned") for r in records)
    assert ("Learning vs forgetting" in shown) is any(r.get("retention") for r in records)
    assert len(parser.captions) == len(set(parser.captions))  # no figure twice
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as img:
            img.load()
            assert img.width > 100 and img.height > 100
    text = " ".join(parser.text)
    for rec in records:
        assert rec["run_id"] in text
    assert "McNemar" in text and "Pareto" in text


def test_cli_report_and_errors(records: list[dict[str, Any]], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from peftbench.cli.app import cli

    runs = Path(records[0]["_path"]).parent
    result = CliRunner().invoke(cli, ["report", str(runs), "--out", str(tmp_path / "rep"), "--baseline", "lora",
                                      "--metric", "f1_macro", "--bootstrap-seeds"])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output and (tmp_path / "rep" / "report.html").is_file()
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Against the baseline: lora (r=" in md and "(metric: f1_macro)" in md and "boot [" in md
    analysis = json.loads((tmp_path / "rep" / "analysis.json").read_text())
    ia3 = next(c for c in analysis["tasks"]["classification"]["comparisons"] if c["label"] == "ia3")
    base = analysis["tasks"]["classification"]["baseline"]
    base_f1 = next(c for c in analysis["tasks"]["classification"]["configs"] if c["label"] == base)["stats"]["f1_macro"]
    f1 = [r["metrics"]["f1_macro"] for r in _by_method(records, "ia3")]
    assert ia3["deltas"]["f1_macro"]["abs"] == pytest.approx(sum(f1) / 3 - base_f1["mean"])
    missing = CliRunner().invoke(cli, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(cli, ["report", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "no result.json" in empty.output


@pytest.mark.parametrize("shift", [0.005, 0.006, 0.007, 0.008, 0.009, 0.010, 0.012])
def test_paired_bootstrap_p_is_two_sided_at_the_boundary(shift: float) -> None:
    """Shifts whose two-sided p-value lies around 0.05: the p-value is below 0.05 exactly when the
    95% percentile interval excludes zero, and swapping the two methods leaves it unchanged. A
    one-sided p-value (half as large here) breaks the first, one tail alone breaks the second."""
    import numpy as np

    from peftbench.reports.stats import ALPHA, paired_bootstrap

    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, 60)
    tuned = base + shift + rng.normal(0, 0.05, 60)
    forward, backward = paired_bootstrap(tuned, base), paired_bootstrap(base, tuned)
    assert (forward["pvalue"] < ALPHA) == (forward["ci_low"] > 0), forward
    assert backward["pvalue"] == pytest.approx(forward["pvalue"])
    assert (backward["ci_low"], backward["ci_high"]) == pytest.approx((-forward["ci_high"], -forward["ci_low"]))


@pytest.mark.parametrize("only_a,only_b,exact", [(17, 7, True), (18, 7, False)])
def test_mcnemar_is_exact_below_25_discordant_pairs_and_asymptotic_from_25(only_a: int, only_b: int,
                                                                            exact: bool) -> None:
    """The documented boundary (exact binomial test when b + c < 25), checked on both sides against
    statsmodels' two tests."""
    from statsmodels.stats.contingency_tables import mcnemar

    from peftbench.reports.stats import mcnemar_test

    gold = [1] * (30 + only_a + only_b)
    pred_a = [1] * 30 + [1] * only_a + [0] * only_b
    pred_b = [1] * 30 + [0] * only_a + [1] * only_b
    res = mcnemar_test(pred_a, pred_b, gold)
    ref = mcnemar([[30, only_a], [only_b, 0]], exact=exact, correction=True)
    other = mcnemar([[30, only_a], [only_b, 0]], exact=not exact, correction=True)
    assert res["exact"] is exact
    assert res["pvalue"] == pytest.approx(ref.pvalue) and res["pvalue"] != pytest.approx(other.pvalue)
