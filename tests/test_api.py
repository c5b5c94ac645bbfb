"""The Python API: the documented example runs as written (on a tiny model), and the callable
`sweep`/`report` modules behave as both modules and functions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import peftbench
from conftest import REPO, tiny_spec
from peftbench.errors import SpecError


def _example(doc: Path, section: str) -> str:
    text = doc.read_text(encoding="utf-8")
    body = text.split(f"## {section}", 1)[1]
    match = re.search(r"```python\n(.*?)```", body, re.S)
    assert match, f"no python example under '## {section}' in {doc}"
    return match.group(1)


def test_python_api_example_runs(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = _example(REPO / "docs" / "python_api.md", "Use from Python")
    assert 'MODEL = "embedded"' in code
    code = code.replace('MODEL = "embedded"', f"MODEL = {str(tiny_bert)!r}")  # seconds instead of minutes
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/python_api.md", "exec"), {"__name__": "__example__"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [["lora", "success"], ["ia3", "success"]]
    records = peftbench.load_records(tmp_path / "runs")
    assert {r["method"] for r in records} == {"lora", "ia3"}
    assert all(r["spec"]["train"]["seed"] == 1 for r in records)  # the overrides were applied
    assert all((Path(r["_path"]) / "adapter").is_dir() for r in records)


def test_run_accepts_a_yaml_path_and_rejects_other_things(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    import yaml

    spec = tiny_spec(tiny_bert, sentiment_files, "lora", device="cpu")
    spec["data"]["n_train"] = 32
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    loaded = peftbench.load_spec(path, ["method.r=4"])
    assert loaded.method.params["r"] == 4
    assert loaded.run_id() == peftbench.load_spec(spec, ["method.r=4"]).run_id()
    with pytest.raises(SpecError, match="a spec must be"):
        peftbench.load_spec(42)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="unknown key"):
        peftbench.run({**spec, "trian": {}}, tmp_path / "runs")


def test_report_entry_point(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    """Runs where the report module exists: `peftbench.report(records, out)` builds a report."""
    spec = tiny_spec(tiny_bert, sentiment_files, "lora", device="cpu")
    spec["data"]["n_train"] = 32
    record = peftbench.run(spec, tmp_path / "runs", progress=False, log=lambda _m: None)
    out = tmp_path / "report"
    peftbench.report([record], out)
    assert out.is_dir() and any(out.iterdir())
    assert (out / "report.html").is_file()


def test_sweep_entry_point(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    """`peftbench.sweep(spec, out)` runs a grid and returns its records in plan order."""
    spec = tiny_spec(tiny_bert, sentiment_files, "lora", device="cpu")
    spec["data"].update(n_train=32, n_eval=16)
    records = peftbench.sweep({"defaults": spec, "methods": ["lora", "ia3"]}, tmp_path / "runs")
    assert [r["method"] for r in records] == ["lora", "ia3"]
    assert all(r["status"] == "success" for r in records)
