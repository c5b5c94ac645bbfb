"""The results board of report.html: its data and Plotly's bundle are inlined (no external URL), record
strings cannot break out of its <script> element, and in headless Chromium it loads without console
errors, filters, recomputes the Pareto front when the axes change, sorts, compares runs and exports CSV.

The browser tests skip where Chromium and chromedriver are not installed (`apt-get install chromium
chromium-driver`; .ci/run installs them), and fail instead on CI. One of them opens the report built from
the demo's records: a short demo it runs itself, or the runs of a finished `peftbench demo` named by
PEFTBENCH_BOARD_RUNS. With PEFTBENCH_SAVE_SCREENSHOT=1 it writes the first screen to
docs/img/report-board.png, the picture the README and docs/report.md show:

    .venv/bin/peftbench demo
    PEFTBENCH_BOARD_RUNS=demo_runs PEFTBENCH_SAVE_SCREENSHOT=1 .venv/bin/python -m pytest tests/test_report_board.py -k demo
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, on_ci, tiny_spec
from peftbench.errors import SpecError

METHODS = ("full", "lora", "ia3")
BREAKOUT = "</script><script>document.title='pwned'</script><!--<img src=x onerror=alert(1)><b>b</b>\u2028"
FORMULA = "=HYPERLINK(\"http://x\",\"y\")"
SCREENSHOT = REPO / "docs" / "img" / "report-board.png"


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path,
            sentiment_files: tuple[Path, Path]) -> list[dict[str, Any]]:
    """Real tiny runs: full, lora and ia3 (one seed each) and one failed run."""
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run
    from peftbench.records.io import load_records

    out = tmp_path_factory.mktemp("board-runs")
    quiet = {"progress": False, "log": lambda _msg: None}
    short = {"max_steps": 4, "num_threads": 1, "seed": 1}
    for method in METHODS:
        run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, method, **short)), out, **quiet)
    bad = tiny_spec(tiny_bert, sentiment_files, "partial", **short)
    bad["method"]["layers"] = 99
    with pytest.raises(SpecError):
        run(RunSpec.from_dict(bad), out, **quiet)
    recs = load_records(out)
    assert sorted(r["status"] for r in recs) == ["failed", "success", "success", "success"]
    return recs


@pytest.fixture(scope="module")
def report(records: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from peftbench.reports.build import build_report

    return build_report(records, tmp_path_factory.mktemp("board-report"))


class Page(HTMLParser):
    """Start tags with their attributes, and each script element's text with its attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append((dict(attrs), ""))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)


def _parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def _blob(page: Page) -> dict[str, Any]:
    blobs = [text for attrs, text in page.scripts if attrs.get("id") == "board-data"]
    assert len(blobs) == 1 and page.scripts[0][0] == {"type": "application/json", "id": "board-data"}
    return json.loads(blobs[0])


def test_report_inlines_board_data_and_plotly_without_external_urls(records: list[dict[str, Any]],
                                                                    report: Path) -> None:
    from peftbench.reports.board import BOARD_JS, plotly_bundle

    html = report.read_text()
    page = _parse(html)
    urls = [v for _, attrs in page.tags for k, v in attrs.items() if k in ("src", "href") and v]
    assert not [u for u in urls if "//" in u.split("#")[0] and not u.startswith("data:")], urls
    assert not [t for t, a in page.tags if t in ("script", "link", "iframe") and (a.get("src") or a.get("href"))]
    bodies = [text for _, text in page.scripts]
    assert plotly_bundle() in bodies and BOARD_JS.read_text() in bodies
    assert len(plotly_bundle()) > 1_000_000  # the whole bundle, not a loader
    data = _blob(page)
    assert [r["id"] for r in data["runs"]] == [r["run_id"] for r in records]
    assert data["columns"] == next(csv.reader(io.StringIO((report.parent / "report.csv").read_text())))
    axes = {a["key"]: a for a in data["axes"]}
    assert axes["accuracy"]["up"] and axes["accuracy"]["kind"] == "quality" and not axes["eval_loss"]["up"]
    for key in ("trainable_params", "train_time_s", "peak_memory_bytes", "artifact_bytes", "memory_activations_bytes"):
        assert axes[key]["kind"] == "cost" and not axes[key]["up"], key
    assert (data["x"], data["y"]) == ("trainable_params", "accuracy")
    lora = next(r for r, rec in zip(data["runs"], records, strict=True) if rec["method"] == "lora")
    rec = next(r for r in records if r["method"] == "lora")
    assert lora["v"]["accuracy"] == rec["metrics"]["accuracy"]
    assert lora["v"]["memory_optimizer_state_bytes"] == rec["train"]["memory_by_kind"]["at_peak"]["optimizer_state"]
    assert lora["pc"]["1"]["f1"] == rec["metrics"]["per_class"]["1"]["f1"]
    assert lora["loss"] == [[p["step"], p["loss"]] for p in rec["train"]["loss_curve"]]
    assert "id=\"board\" hidden" in html and "@media print{#board{display:none}}" in html  # static report for print


def test_record_strings_cannot_break_out_of_the_data_script(records: list[dict[str, Any]]) -> None:
    """A run id, method, class label and metric name holding `</script>`, `<!--` and U+2028 stay data:
    the page still has exactly its three scripts, and the blob parses back to the same strings."""
    from peftbench.reports.board import board_data, board_parts
    from peftbench.reports.build import flat_row

    rec = copy.deepcopy(next(r for r in records if r["method"] == "lora"))
    rec["run_id"], rec["method"] = BREAKOUT, BREAKOUT
    rec["metrics"]["per_class"] = {BREAKOUT: {"f1": 0.5}}
    rec["metrics"][BREAKOUT] = 0.25
    rows = [flat_row(rec, {})]
    section, scripts = board_parts([rec], rows)
    page = _parse(f"<body>{section}{scripts}</body>")
    assert len(page.scripts) == 3 and scripts.lower().count("</script") == 3  # the three closing tags only
    data = _blob(page)
    assert data == json.loads(json.dumps(board_data([rec], rows)))
    run = data["runs"][0]
    assert run["id"] == run["method"] == BREAKOUT and run["pc"] == {BREAKOUT: {"f1": 0.5}}
    assert run["v"][BREAKOUT] == 0.25 and data["rows"][0][data["columns"].index("run_id")] == BREAKOUT


# ---- in a browser -------------------------------------------------------------------------------------


def _chromium() -> tuple[str, str]:
    """Paths of Chromium and chromedriver; skips (fails on CI) where either, or selenium, is missing."""
    binary = next((p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None)
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    missing = [name for name, path in (("chromium", binary), ("chromedriver", driver)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if missing:
        reason = (f"no headless browser for the report board test: {', '.join(missing)} not found "
                  "(apt-get install chromium chromium-driver; .ci/run installs them)")
        if on_ci():
            pytest.fail(f"{reason}; CI=true, so the browser test must run", pytrace=False)
        pytest.skip(reason)
    return str(binary), str(driver)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    profile = tempfile.mkdtemp(prefix="peftbench-chromium-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,900", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_script_timeout(60)
    try:
        yield chrome
    finally:
        chrome.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(browser: Any, path: Path) -> dict[str, float]:
    """Load the page and wait for the board's first draw; its timings in ms from navigation start."""
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(path.as_uri())
    return browser.execute_async_script(
        "const done = arguments[0], nav = performance.getEntriesByType('navigation')[0];"
        "peftbenchBoard.ready.then(ms => done({dom: nav.domContentLoadedEventEnd, load: nav.loadEventEnd, board: ms}));")


def _network_requests(browser: Any) -> int:
    """How many http(s) resources the page fetched (an offline report fetches none)."""
    return browser.execute_script(
        "return performance.getEntriesByType('resource').filter(e => /^https?:/.test(e.name)).length")


def _severe(browser: Any) -> list[dict[str, Any]]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _choose(browser: Any, select_id: str, value: str) -> None:
    """Pick an option as a user does, then wait for the plot to show the new state."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, select_id)).select_by_value(value)
    browser.execute_async_script("peftbenchBoard.state.drawn.then(() => arguments[0]());")


def _table_runs(browser: Any) -> list[tuple[str, str]]:
    """(run id, method) of each row of the board's run table, top to bottom."""
    return [tuple(r) for r in browser.execute_script(
        "return [...document.querySelectorAll('#board-runs tbody tr')].map(r => [r.dataset.run, r.dataset.method]);")]


def _plotted_front(browser: Any) -> list[int]:
    """Indices of the runs the plot draws on its front (read from Plotly's data on the page)."""
    return sorted(browser.execute_script(
        "return document.getElementById('board-plot').data.find(t => t.name === 'Pareto front').customdata;"))


def _learned(record: dict[str, Any]) -> bool | None:
    from peftbench.reports.learning import run_learning

    judged = run_learning(record)
    return judged["learning"]["learned"] if judged else None


def _front(records: list[dict[str, Any]], x: str, y: str) -> list[int]:
    """The front as Python computes it (`stats.pareto_front`) over the same values; runs known not to
    have learned take no place on it."""
    from peftbench.reports.board import run_values
    from peftbench.reports.stats import pareto_front
    from peftbench.tasks.metrics import higher_is_better

    pts = [(i, v[x], v[y]) for i, (r, v) in enumerate(zip(records, map(run_values, records), strict=True))
           if r["status"] == "success" and x in v and y in v and _learned(r) is not False]
    mask = pareto_front([(a, b) for _, a, b in pts], [higher_is_better(x), higher_is_better(y)])
    return sorted(i for (i, _, _), on in zip(pts, mask, strict=True) if on)


def test_board_in_chromium_filters_recomputes_the_front_compares_and_exports(
        browser: Any, records: list[dict[str, Any]], report: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    _open(browser, report)
    assert _severe(browser) == []
    assert _network_requests(browser) == 0
    assert len(_table_runs(browser)) == len(records)

    _choose(browser, "board-method", "lora")
    lora = [r["run_id"] for r in records if r["method"] == "lora"]
    assert _table_runs(browser) == [(rid, "lora") for rid in lora]
    shown = browser.execute_script("return document.getElementById('board-plot').data.flatMap(t => t.customdata || []);")
    assert [records[i]["run_id"] for i in shown] == lora
    exported = list(csv.DictReader(io.StringIO(browser.execute_script("return peftbenchBoard.csv();"))))
    assert [r["run_id"] for r in exported] == lora and exported[0]["method"] == "lora"
    _choose(browser, "board-method", "")

    # Four optimizer steps teach the tiny model nothing: no run takes a place on the front.
    assert [_learned(r) for r in records if r["status"] == "success"] == [False] * 3
    assert _plotted_front(browser) == [] == _front(records, "trainable_params", "accuracy")
    assert sorted(browser.execute_script(
        "return document.getElementById('board-plot').data.find(t => t.name === 'did not learn').customdata;"
    )) == [i for i, r in enumerate(records) if r["status"] == "success"]

    browser.find_element(By.CSS_SELECTOR, "#board-runs th[data-key='trainable_params']").click()
    by_params = sorted((r for r in records if r["status"] == "success"), key=lambda r: r["params"]["trainable"])
    assert [rid for rid, _ in _table_runs(browser)][:3] == [r["run_id"] for r in by_params]

    boxes = browser.find_elements(By.CSS_SELECTOR, "#board-runs tbody input[type=checkbox]")
    boxes[0].click()
    browser.find_elements(By.CSS_SELECTOR, "#board-runs tbody input[type=checkbox]")[1].click()
    heads = browser.execute_script(
        "return [...document.querySelectorAll('#board-compare table')].map(t => [...t.rows[0].cells].map(c => c.textContent));")
    picked = [by_params[0]["run_id"], by_params[1]["run_id"]]
    assert len(heads) == 2 and all([c.split(" (")[0] for c in h[1:]] == picked for h in heads), heads
    assert browser.execute_script("return document.getElementById('board-loss').data.length;") >= 2
    assert _severe(browser) == []


def _unjudged(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the records with no learning verdict and no predictions to judge one from: whether
    they learned is unknown, so every run may take a place on the front."""
    out = copy.deepcopy(records)
    for rec in out:
        rec.pop("_path", None)
        rec.pop("learning", None)
        rec.pop("predictions", None)
    return out


def test_board_recomputes_the_front_when_the_axes_change(browser: Any, records: list[dict[str, Any]],
                                                          tmp_path: Path) -> None:
    from peftbench.reports.build import build_report

    unjudged = _unjudged(records)
    _open(browser, build_report(unjudged, tmp_path / "report"))
    costs = ["trainable_params", "train_time_s", "peak_memory_bytes", "artifact_bytes"]
    quality = ["accuracy", "f1_macro", "eval_loss"]
    default = _front(unjudged, "trainable_params", "accuracy")
    assert default and _plotted_front(browser) == default
    other = next(((x, y) for x in costs for y in quality if _front(unjudged, x, y) != default), None)
    assert other, "every axis pair gives the same front: the runs cannot show a change"
    _choose(browser, "board-x", other[0])
    _choose(browser, "board-y", other[1])
    assert _plotted_front(browser) == _front(unjudged, *other) != default
    assert _severe(browser) == []


def _synthetic(records: list[dict[str, Any]], n: int = 100) -> list[dict[str, Any]]:
    """`n` records made from the real successful ones: ten configurations (method x learning rate) with
    varied metrics and costs, one of them carrying a run id and class label that try to break out."""
    rng = random.Random(0)
    real = [r for r in records if r["status"] == "success"]
    out = []
    for i in range(n):
        rec = copy.deepcopy(real[i % len(real)])
        rec.pop("_path", None)
        rec["run_id"], rec["seed"] = f"{rec['method']}-{i:03d}", i // 10
        rec["spec"]["train"].update(seed=i // 10, lr=(1e-3, 3e-4, 1e-4, 5e-5)[i % 10 // 3])
        rec["metrics"].update(accuracy=rng.uniform(0.5, 0.95), f1_macro=rng.uniform(0.3, 0.95))
        rec["train"]["time_s"] *= rng.uniform(0.5, 3)
        rec["params"]["trainable"] = int(rec["params"]["trainable"] * rng.uniform(0.5, 2))
        out.append(rec)
    out[7]["run_id"] = BREAKOUT
    out[8]["run_id"] = FORMULA
    out[7]["metrics"]["per_class"][BREAKOUT] = out[7]["metrics"]["per_class"].pop("1")
    return out


def test_board_with_100_records_loads_and_filters_in_chromium(browser: Any, records: list[dict[str, Any]],
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Measures (prints, does not assert) the load and filter times of a 100-run report; the run id that
    tries to close the data script shows as text and runs nothing."""
    from peftbench.reports.build import build_report

    many = _synthetic(records)
    page = build_report(many, tmp_path / "report")
    times = _open(browser, page)
    assert _severe(browser) == []
    assert browser.title == "peftbench report"
    assert len(_table_runs(browser)) == len(many)
    cell = browser.execute_script(
        "const r = [...document.querySelectorAll('#board-runs tbody tr')].find(r => r.dataset.run === arguments[0]);"
        "return r && r.cells[1].textContent;", BREAKOUT)
    assert cell == BREAKOUT
    for run in (BREAKOUT, many[0]["run_id"]):  # compare it with another run: its class label shows as text too
        browser.execute_script("[...document.querySelectorAll('#board-runs tbody tr')]"
                               ".find(r => r.dataset.run === arguments[0]).querySelector('input').click();", run)
    labels = browser.execute_script(
        "return [...document.querySelectorAll('#board-compare tr')].map(r => r.cells[0].textContent);")
    assert f"{BREAKOUT} · f1" in labels and browser.title == "peftbench report" and _severe(browser) == []
    legend = browser.execute_script("return [...document.querySelectorAll('#board-loss .legendtext')].map(e => e.textContent);")
    assert f"{BREAKOUT} train" in legend  # Plotly reads labels as HTML: the board gives it entities
    exported = {r["run_id"] for r in csv.DictReader(io.StringIO(browser.execute_script("return peftbenchBoard.csv();")))}
    assert "'" + FORMULA in exported and FORMULA not in exported  # shown as text in a spreadsheet, as report.csv does
    with (page.parent / "report.csv").open(newline="") as f:
        assert "'" + FORMULA in {r["run_id"] for r in csv.DictReader(f)}
    filter_ms = browser.execute_async_script(
        "const done = arguments[0], s = document.getElementById('board-method'), t0 = performance.now();"
        "s.value = 'lora'; s.dispatchEvent(new Event('change'));"
        "peftbenchBoard.state.drawn.then(() => done(performance.now() - t0));")
    assert {m for _, m in _table_runs(browser)} == {"lora"}
    with capsys.disabled():
        print(f"\nreport board, {len(many)} records: report.html {page.stat().st_size / 2**20:.2f} MiB; "
              f"DOMContentLoaded {times['dom']:.0f} ms, load {times['load']:.0f} ms, board drawn "
              f"{times['board']:.0f} ms after navigation start; filter to one method {filter_ms:.0f} ms")


# ---- the demo's own records ---------------------------------------------------------------------------

DEMO_METHODS = ("full", "lora", "ia3", "partial")


@pytest.fixture(scope="module")
def demo_records(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The records of `peftbench demo`: those under PEFTBENCH_BOARD_RUNS when set (a finished demo), else
    a shorter demo of four methods run here (400 generated examples, three epochs: about 35 s)."""
    from peftbench.demo import run_demo
    from peftbench.records.io import load_records

    folder = os.environ.get("PEFTBENCH_BOARD_RUNS")
    if not folder:
        folder = str(tmp_path_factory.mktemp("demo"))
        run_demo(folder, list(DEMO_METHODS), n_train=400, epochs=3, progress=False)
    records = load_records(folder)
    assert records and all(r["status"] == "success" for r in records), folder
    return records


def test_board_on_the_demos_records_in_chromium(browser: Any, demo_records: list[dict[str, Any]],
                                                tmp_path: Path) -> None:
    """The report the demo writes, opened as a user opens it: no console errors and no network, a
    picture of the first screen, each method's filter leaves only its rows, the plotted front is the one
    Python computes (runs that did not learn drawn apart), and other axes give another front."""
    from peftbench.reports.build import build_report

    records = demo_records
    _open(browser, build_report(records, tmp_path / "report"))
    assert _severe(browser) == []
    assert _network_requests(browser) == 0
    shot = SCREENSHOT if os.environ.get("PEFTBENCH_SAVE_SCREENSHOT") == "1" else tmp_path / "board.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(_table_runs(browser)) == sorted((r["run_id"], r["method"]) for r in records)

    for method in sorted({r["method"] for r in records}):
        _choose(browser, "board-method", method)
        assert _table_runs(browser) == [(r["run_id"], method) for r in records if r["method"] == method]
    _choose(browser, "board-method", "")

    learned = [_learned(r) for r in records]
    assert True in learned, "no demo run learned: the front would be empty"
    apart = browser.execute_script(
        "const t = document.getElementById('board-plot').data.find(t => t.name === 'did not learn');"
        "return t ? t.customdata : [];")
    assert sorted(apart) == [i for i, judged in enumerate(learned) if judged is False]
    default = _front(records, "trainable_params", "accuracy")
    assert default and _plotted_front(browser) == default

    axes = [a["key"] for a in browser.execute_script(
        "return JSON.parse(document.getElementById('board-data').textContent).axes;")]
    other = next(((x, y) for x in axes for y in axes if x != y and _front(records, x, y) not in ([], default)), None)
    assert other, f"every pair of axes gives the front {default}: the demo's runs cannot show a change"
    _choose(browser, "board-x", other[0])
    _choose(browser, "board-y", other[1])
    assert _plotted_front(browser) == _front(records, *other) != default
    assert _severe(browser) == []
