"""Hostile names through every report output: a model folder, a method, class labels, a run id and an
error message carrying HTML, markdown and terminal markup reach report.md, report.html, the figures and
the terminal tables as inert text that still reads as written."""

from __future__ import annotations

import csv
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import tiny_spec
from peftbench.errors import SpecError

MODEL = "<img src=x onerror=alert(1)>"
LABELS = {"1": "<script>alert(1)</script>", "0": "a|b `c` $\\frac{x}$ *d* [l](javascript:x)"}
METHOD = "lora<svg onload=alert(2)>|x"
RUN_ID = "<b>run</b>|`id`\x1b[2J"
MESSAGE = "\x1b[31mbad <iframe src=javascript:alert(3)>\n| forged | row |\n`code`"
HOSTILE = [MODEL, *LABELS.values(), METHOD, "<b>run</b>|`id`", "bad <iframe src=javascript:alert(3)>"]


def _relabel(src: Path, dst: Path) -> Path:
    with src.open(newline="") as f:
        rows = list(csv.DictReader(f))
    with dst.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows({"text": r["text"], "label": LABELS.get(r["label"], r["label"])} for r in rows)
    return dst


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, sentiment_files: tuple[Path, Path]) -> Path:
    """Real tiny runs (full and lora on a hostile model folder, lora on the plain one, one failed run)
    with hostile class labels; then a hostile method, run id and error message written into copies."""
    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run
    from peftbench.records.io import load_records

    root = tmp_path_factory.mktemp("hostile")
    model = root / MODEL
    shutil.copytree(tiny_bert, model)
    files = (_relabel(sentiment_files[0], root / "train.csv"), _relabel(sentiment_files[1], root / "eval.csv"))
    out = root / "runs"
    quiet = {"progress": False, "log": lambda _msg: None}
    short = {"max_steps": 2, "num_threads": 1, "seed": 1}
    for m, method in ((model, "full"), (model, "lora"), (tiny_bert, "lora")):
        run(RunSpec.from_dict(tiny_spec(m, files, method, **short)), out, **quiet)
    bad = tiny_spec(model, files, "partial", **short)
    bad["method"]["layers"] = 99
    with pytest.raises(SpecError):
        run(RunSpec.from_dict(bad), out, **quiet)
    records = load_records(out)
    assert len(records) == 4
    hostile = root / "records"
    for i, rec in enumerate(records):
        rec.pop("_path", None)
        if rec["status"] != "success":
            rec["error"]["message"] = MESSAGE
        elif rec["method"] == "lora" and MODEL in rec["model_name"]:
            rec["method"], rec["run_id"] = METHOD, RUN_ID
        (hostile / f"run{i}").mkdir(parents=True)
        (hostile / f"run{i}" / "result.json").write_text(json.dumps(rec))
    return hostile


@pytest.fixture(scope="module")
def report(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    from click.testing import CliRunner

    from peftbench.cli.app import cli

    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(cli, ["report", str(runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output, CliRunner().invoke(cli, ["ls", str(runs)]).output


class Tags(HTMLParser):
    """Every start tag with its attributes, the text of each element, the script bodies and the
    number of cells in each table row."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self.row_cells: list[int] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if tag == "tr":
            self.row_cells.append(0)
        elif tag in ("td", "th"):
            self.row_cells[-1] += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.scripts if self._in_script else self.text).append(data)


def _check_tags(page: Tags, allowed: set[str], img_src: str) -> None:
    assert {t for t, _ in page.tags} <= allowed, {t for t, _ in page.tags} - allowed
    for tag, attrs in page.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "img":
            assert str(attrs["src"]).startswith(img_src), attrs


def _check_tables(page: Tags, html: str) -> None:
    """Each table's rows have as many cells as its header row: no forged columns or rows."""
    parts = html.split("<table")[1:]
    assert parts
    for part in parts:
        t = Tags()
        t.feed("<table" + part.split("</table>")[0])
        assert len(set(t.row_cells)) == 1, t.row_cells


def test_markdown_report_has_no_live_markup_and_reads_as_written(report: tuple[Path, str, str]) -> None:
    markdown_it = pytest.importorskip("markdown_it")
    md = (report[0] / "report.md").read_text()
    for name in (MODEL, LABELS["1"], "<svg", "<iframe", "[l](javascript", "\x1b"):
        assert name not in md
    # Rendered as GitHub does (raw HTML allowed, tables): only the report's own structure is markup.
    rendered = markdown_it.MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(md)
    page = Tags()
    page.feed(rendered)
    _check_tags(page, {"h1", "h2", "h3", "h4", "p", "blockquote", "table", "thead", "tbody", "tr", "th", "td",
                       "ul", "li", "strong", "img"}, img_src="plots/")
    _check_tables(page, rendered)
    text = "".join(page.text)
    for name in HOSTILE:
        assert name in text, name
    assert "bad <iframe src=javascript:alert(3)> | forged | row | `code`" in text  # one line, one cell


def test_html_report_has_no_live_markup_and_reads_as_written(report: tuple[Path, str, str]) -> None:
    from peftbench.reports.board import BOARD_JS, plotly_bundle
    from peftbench.reports.html import JS

    html = (report[0] / "report.html").read_text()
    page = Tags()
    page.feed(html)
    _check_tags(page, {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p", "section",
                       "nav", "a", "div", "table", "thead", "tbody", "tr", "th", "td", "ul", "li", "b", "figure",
                       "img", "figcaption", "script"}, img_src="data:image/png;base64,")
    # The results board's data (hostile strings stay JSON string data), Plotly, the board and the sorter.
    assert page.scripts[1:] == [plotly_bundle(), BOARD_JS.read_text(), JS]
    blob = json.dumps(json.loads(page.scripts[0]), ensure_ascii=False)
    for name in (MODEL, METHOD, "<b>run</b>|`id`", *LABELS.values()):
        assert json.dumps(name, ensure_ascii=False)[1:-1] in blob, name
    _check_tables(page, html)
    text = "".join(page.text)
    for name in HOSTILE:
        assert name in text, name
    for tag, attrs in page.tags:  # figure captions are alt text: attribute values stay inside their quotes
        assert set(attrs) <= {"lang", "charset", "class", "id", "href", "data-v", "alt", "src", "hidden", "type"}, (tag, attrs)


def test_terminal_outputs_show_control_characters_instead_of_acting_on_them(report: tuple[Path, str, str]) -> None:
    _, report_out, ls_out = report
    assert "\x1b" not in report_out + ls_out
    assert "\\x1b[31mbad <iframe" in report_out and "\\x1b[2J" in ls_out
    assert METHOD in ls_out and "<b>run</b>|`id`" in ls_out


def test_figures_draw_labels_that_look_like_mathtext(report: tuple[Path, str, str]) -> None:
    """A `$\\frac{x}$` class label reaches the confusion matrices (matplotlib would parse it as math)."""
    assert (report[0] / "plots" / "classification-confusion.png").stat().st_size > 0


def test_escapers_keep_text_and_neutralise_markup() -> None:
    from peftbench.reports.escape import html_text, md_text, terminal_text

    assert md_text("f1_macro") == "f1_macro"  # inside a word `_` is no emphasis
    assert md_text("_x_ *y* ~~z~~ `c` a|b [t](u) <i>&") == (
        "\\_x\\_ \\*y\\* \\~\\~z\\~\\~ \\`c\\` a\\|b [t\\](u) &lt;i&gt;&amp;")
    assert md_text("a\r\nb\nc\u2028d") == "a b c d"
    assert md_text("\\") == "\\\\"
    assert html_text("<a href='x'>&\"") == "&lt;a href=&#x27;x&#x27;&gt;&amp;&quot;"
    assert terminal_text("a\x1b[31mb\tc\nd\x9b") == "a\\x1b[31mb c d\\x9b"


def test_csv_exports_show_formulas_as_text_and_keep_numbers(tmp_path: Path) -> None:
    """A label such as `=HYPERLINK(...)` would run as a formula when report.csv is opened in a
    spreadsheet: it gets a leading `'`; numbers, negative ones and numeric strings included, stay."""
    from peftbench.reports.build import write_exports
    from peftbench.reports.escape import csv_cell

    hostile = ["=HYPERLINK(\"http://x\",\"y\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\r=1"]
    assert [csv_cell(v) for v in hostile] == ["'" + v for v in hostile]
    assert [csv_cell(v) for v in ("-0.5", "+3", "-1e-3", ".5", "lora", "a=b", -2.5, None, True)] == [
        "-0.5", "+3", "-1e-3", ".5", "lora", "a=b", -2.5, None, True]
    write_exports([{"run_id": v, "accuracy": -0.25, "config": "r=8"} for v in hostile], tmp_path)
    with (tmp_path / "report.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run_id"] for r in rows] == ["'" + v for v in hostile]
    assert {r["accuracy"] for r in rows} == {"-0.25"} and {r["config"] for r in rows} == {"r=8"}
    assert [r["run_id"] for r in json.loads((tmp_path / "report.json").read_text())] == hostile  # JSON keeps data
