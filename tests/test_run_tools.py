"""`peftbench ls`, `disagreements` and the token cache, on real run records of the tiny model."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from conftest import tiny_spec
from peftbench.cli.app import cli
from peftbench.config.spec import RunSpec
from peftbench.core.runner import run
from peftbench.data.classification import encode_classification, load_classification
from peftbench.records.io import atomic_write_json, read_record


@pytest.fixture(scope="module")
def runs_dir(tiny_bert, sentiment_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("tool-runs")
    spec = tiny_spec(tiny_bert, sentiment_files, "lora", max_steps=1)
    spec["data"].update(n_train=16, n_eval=24)
    spec["method"]["r"] = 4
    record = run(RunSpec.from_dict(spec), out, progress=False, log=lambda _m: None)
    # A failure record as the sweep writes it for a killed run.
    failed = {**record, "run_id": "dora-0000000000", "method": "dora", "status": "failed",
              "error": {"type": "oom", "message": "killed"}, "metrics": None, "train": None}
    failed["spec"] = {**record["spec"], "method": {"name": "dora", "r": 16}}
    atomic_write_json(out / "dora-0000000000" / "result.json", failed)
    return out, record


def test_ls_lists_runs_with_key_hparams(runs_dir) -> None:
    out, record = runs_dir
    result = CliRunner().invoke(cli, ["ls", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["run_id", "model", "task", "method", "hparams", "status", "metric", "time_s"]
    ok = next(line for line in lines if line.startswith(record["run_id"]))
    assert "r=4" in ok and "lr=1e-3" in ok and "seed=42" in ok and "success" in ok
    assert f"accuracy={record['metrics']['accuracy']:.4f}" in ok
    bad = next(line for line in lines if line.startswith("dora-0000000000"))
    assert "failed:oom" in bad and "r=16" in bad
    only_failed = CliRunner().invoke(cli, ["ls", str(out), "--status", "failed"])
    assert record["run_id"] not in only_failed.output and "dora-0000000000" in only_failed.output
    missing = CliRunner().invoke(cli, ["ls", str(out / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_disagreements_show_texts_gold_and_each_runs_prediction(runs_dir, tmp_path) -> None:
    out, record = runs_dir
    a = out / record["run_id"]
    b = tmp_path / "other-run"
    shutil.copytree(a, b)
    rec_b = read_record(b)
    rec_b["run_id"] = "other-run"
    flipped = [0, 5, 7]
    for i in flipped:
        rec_b["predictions"]["pred"][i] = 1 - rec_b["predictions"]["pred"][i]
    atomic_write_json(b / "result.json", rec_b)
    csv_path = tmp_path / "dis.csv"
    result = CliRunner().invoke(cli, ["disagreements", str(a), str(b), "--csv", str(csv_path), "--max-text", "500"])
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if line.startswith("| ") and "index" not in line]
    assert [int(line.split("|")[1]) for line in table] == flipped
    texts = load_classification(RunSpec.from_dict(record["spec"]).data).eval_texts
    labels = record["data"]["label_names"]
    for line, i in zip(table, flipped, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == texts[i]
        assert cells[2] == labels[record["predictions"]["gold"][i]]
        assert {cells[3].rstrip(" ✗"), cells[4].rstrip(" ✗")} == set(labels)  # the two runs differ
    assert csv_path.read_text().count("\n") == len(flipped) + 1
    same = CliRunner().invoke(cli, ["disagreements", str(a), str(a)])
    assert same.exit_code == 0 and "(none)" in same.output
    rec_b["predictions"]["gold"] = rec_b["predictions"]["gold"][:-1]
    atomic_write_json(b / "result.json", rec_b)
    mismatch = CliRunner().invoke(cli, ["disagreements", str(a), str(b)])
    assert mismatch.exit_code == 2 and "different eval sets" in mismatch.output


def test_token_cache_is_shared_and_exact(tiny_bert, sentiment_files, tmp_path, monkeypatch) -> None:
    from transformers import AutoTokenizer

    from peftbench.data import token_cache as tokcache

    spec = RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files))
    data = load_classification(spec.data)
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    calls = []

    def counting(*args):
        calls.append(1)
        return encode_classification(*args)

    monkeypatch.setenv(tokcache.TOKEN_CACHE_ENV, str(tmp_path / "tokens"))
    args = (data.train_texts, data.train_pairs, data.train_labels, 32)
    first = tokcache.cached(counting, tok, *args)
    second = tokcache.cached(counting, tok, *args)
    assert len(calls) == 1  # the second call is a cache hit
    direct = encode_classification(tok, *args)
    assert second.input_ids == first.input_ids == direct.input_ids and second.labels == direct.labels
    assert second.extra == direct.extra
    tokcache.cached(counting, tok, *args[:3], 16)  # another max length is another entry
    changed = [data.train_texts[0] + " extra words", *data.train_texts[1:]]
    tokcache.cached(counting, tok, changed, *args[1:])  # other data content too
    assert len(calls) == 3 and len(list((tmp_path / "tokens").glob("*.json"))) == 3
    monkeypatch.delenv(tokcache.TOKEN_CACHE_ENV)
    tokcache.cached(counting, tok, *args)
    assert len(calls) == 4  # no cache folder, no cache


def test_sweep_runs_share_one_token_cache(tiny_bert, sentiment_files, tmp_path) -> None:
    from peftbench.config.sweep import SweepSpec
    from peftbench.sweeps.engine import run_sweep
    from sweep_helpers import tiny_sweep

    sweep = SweepSpec.from_dict(tiny_sweep(tiny_bert, sentiment_files, methods=["lora"], seeds=[0, 1],
                                           grid={"method.r": [2]}))
    out = tmp_path / "runs"
    result = run_sweep(sweep, out, progress=False)
    assert list(result.statuses.values()) == ["success", "success"]
    entries = sorted((out / ".cache" / "tokens").glob("*.json"))
    assert len(entries) == 2  # train and eval, tokenized once for both runs
    assert all(json.loads(e.read_text())["input_ids"] for e in entries)


def test_free_text_tables_are_inert_in_markdown_and_csv() -> None:
    """Eval texts, prompts and generations are user text: in the markdown table a `|` or a newline
    cannot forge a cell or a row and HTML stays text; in the CSV a formula stays text."""
    import csv
    import io

    from peftbench.reports.text_tables import csv_rows, markdown_rows

    rows = [{"index": "0", "text": "a | b\n| forged | row |", "gold": "<img src=x onerror=alert(1)>", "lora": "=1+1"},
            {"index": "1", "text": "x" * 100, "gold": "pos", "lora": "neg ✗"}]
    lines = markdown_rows(rows, max_text=20).splitlines()
    assert len(lines) == 4  # header, rule, two rows: the newline forged no row
    cells = [c.strip() for c in lines[2].removeprefix("| ").removesuffix(" |").split(" | ")]
    assert cells == ["0", "a \\| b \\| forged \\| ro…", "&lt;img src=x onerror=alert(1)&gt;", "=1+1"]
    assert lines[3].split(" | ")[1] == "x" * 19 + "…"
    back = list(csv.DictReader(io.StringIO(csv_rows(rows), newline="")))
    assert back[0]["text"] == rows[0]["text"] and back[0]["lora"] == "'=1+1" and back[1]["text"] == "x" * 100
