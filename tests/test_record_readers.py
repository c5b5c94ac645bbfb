"""One malformed record never stops `ls`, `report` or a sweep resume.

Every case runs the real commands on an output folder that also holds a real tiny success record
(a one-step LoRA run on the tiny BERT): the command exits 0, the bad file is reported once on
stderr and moved aside (`result.json.bad-<time>`, kept), the success record stays byte-for-byte
and the sweep summary still lists it. Output paths of the wrong kind end in a one-line error, exit 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from peftbench.cli.app import cli
from peftbench.records.io import RESULT_FILE
from sweep_helpers import tiny_sweep, write_yaml

pytestmark = pytest.mark.reliability

BAD_RECORDS = {
    "list": (b'[{"status": "success"}]', "holds a JSON list"),
    "string": (b'"success"', "holds a JSON string"),
    "not-utf8": (b'{"status": "succ\xe8s"}', "not valid UTF-8"),
    "truncated": (b'{"schema_version": 1, "status": "succ', "not valid JSON"),
    "unknown-version": (b'{"schema_version": 99, "status": "success", "run_id": "x"}', "unknown schema_version 99"),
}
CASES = [*BAD_RECORDS, "symlink-outside"]


def _cli(argv: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, argv, prog_name="peftbench")
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path,
                   sentiment_files: tuple[Path, Path]) -> dict:
    """A finished two-run sweep (lora r=2 and r=4, one step each): two success records."""
    root = tmp_path_factory.mktemp("finished")
    spec = write_yaml(root / "sweep.yaml", tiny_sweep(tiny_bert, sentiment_files, methods=["lora"],
                                                      grid={"method.r": [2, 4]}, seeds=[0]))
    code, _, err = _cli(["sweep", "--config", str(spec), "--out", str(root / "runs"), "--quiet"])
    assert code == 0, err
    summary = json.loads((root / "runs" / "sweep-summary.json").read_text())
    ids = [r["run_id"] for r in summary["runs"]]
    assert len(ids) == 2 and [r["status"] for r in summary["runs"]] == ["success", "success"]
    return {"spec": spec, "runs": root / "runs", "keep": ids[0], "spoil": ids[1]}


def _spoiled(finished: dict, case: str, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the finished sweep whose second run is replaced by the bad case; returns the
    output folder and the bad path (the file, or the symlinked run folder)."""
    out = tmp_path / "runs"
    shutil.copytree(finished["runs"], out, symlinks=True)
    run_dir = out / finished["spoil"]
    if case == "symlink-outside":
        outside = tmp_path / "elsewhere"
        shutil.move(str(run_dir), outside)  # a complete success record, but outside --out
        run_dir.symlink_to(outside, target_is_directory=True)
        return out, run_dir
    (run_dir / RESULT_FILE).write_bytes(BAD_RECORDS[case][0])
    return out, run_dir / RESULT_FILE


def _check_set_aside(bad: Path, stderr: str, case: str) -> None:
    warnings = [line for line in stderr.splitlines() if str(bad) in line]
    assert len(warnings) == 1, stderr
    reason = "symlinked run folder" if case == "symlink-outside" else BAD_RECORDS[case][1]
    assert reason in warnings[0] and "moved aside" in warnings[0], warnings[0]
    aside = list(bad.parent.glob(f"{bad.name}.bad-*"))
    assert len(aside) == 1
    if case == "symlink-outside":
        assert aside[0].is_symlink()
    else:
        assert aside[0].read_bytes() == BAD_RECORDS[case][0]


@pytest.mark.parametrize("case", CASES)
def test_ls_skips_a_bad_record(finished_sweep: dict, case: str, tmp_path: Path) -> None:
    out, bad = _spoiled(finished_sweep, case, tmp_path)
    keep = (out / finished_sweep["keep"] / RESULT_FILE).read_bytes()
    code, stdout, stderr = _cli(["ls", str(out)])
    assert code == 0, stderr
    assert finished_sweep["keep"] in stdout and finished_sweep["spoil"] not in stdout
    _check_set_aside(bad, stderr, case)
    assert not bad.exists() and not bad.is_symlink()
    assert (out / finished_sweep["keep"] / RESULT_FILE).read_bytes() == keep
    code, _, stderr = _cli(["ls", str(out)])  # reported once: a second listing is clean
    assert code == 0 and "warning" not in stderr


@pytest.mark.parametrize("case", CASES)
def test_report_skips_a_bad_record(finished_sweep: dict, case: str, tmp_path: Path) -> None:
    out, bad = _spoiled(finished_sweep, case, tmp_path)
    keep = (out / finished_sweep["keep"] / RESULT_FILE).read_bytes()
    code, _, stderr = _cli(["report", str(out), "--out", str(tmp_path / "report"), "--baseline", ""])
    assert code == 0, stderr
    _check_set_aside(bad, stderr, case)
    rows = json.loads((tmp_path / "report" / "analysis.json").read_text())
    assert finished_sweep["keep"] in json.dumps(rows) and finished_sweep["spoil"] not in json.dumps(rows)
    assert (out / finished_sweep["keep"] / RESULT_FILE).read_bytes() == keep


@pytest.mark.parametrize("case", CASES)
def test_sweep_resume_reruns_a_bad_record(finished_sweep: dict, case: str, tmp_path: Path) -> None:
    out, bad = _spoiled(finished_sweep, case, tmp_path)
    keep = (out / finished_sweep["keep"] / RESULT_FILE).read_bytes()
    outside = sorted((tmp_path / "elsewhere").rglob("*"))
    code, _, stderr = _cli(["sweep", "--config", str(finished_sweep["spec"]), "--out", str(out), "--quiet"])
    assert code == 0, stderr
    _check_set_aside(bad, stderr, case)
    assert (out / finished_sweep["keep"] / RESULT_FILE).read_bytes() == keep
    statuses = {r["run_id"]: r["status"] for r in json.loads((out / "sweep-summary.json").read_text())["runs"]}
    assert statuses == {finished_sweep["keep"]: "skipped-success", finished_sweep["spoil"]: "success"}
    rerun = out / finished_sweep["spoil"]
    assert not rerun.is_symlink() and json.loads((rerun / RESULT_FILE).read_text())["status"] == "success"
    assert sorted((tmp_path / "elsewhere").rglob("*")) == outside  # the folder outside is never written


def _one_error_line(stderr: str, *phrases: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("peftbench: error:"), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert all(p in lines[0] for p in phrases), lines[0]


def test_out_paths_of_the_wrong_kind(finished_sweep: dict, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    run_dir = finished_sweep["runs"] / finished_sweep["keep"]
    for argv in (["report", str(finished_sweep["runs"]), "--out", str(a_file)],
                 ["merge", str(run_dir), "--out", str(a_file)],
                 ["sweep", "--config", str(finished_sweep["spec"]), "--out", str(a_file)]):
        code, _, stderr = _cli(argv)
        assert code == 2, (argv, stderr)
        _one_error_line(stderr, f"--out '{a_file}' is a file, not a folder", "(fix:")
    assert a_file.read_text() == "not a folder\n"


@pytest.mark.parametrize("name", [".sweep.lock", "sweep-summary.json"])
def test_sweep_files_that_are_folders(finished_sweep: dict, name: str, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    shutil.copytree(finished_sweep["runs"], out)
    (out / name).unlink(missing_ok=True)
    (out / name).mkdir()
    code, _, stderr = _cli(["sweep", "--config", str(finished_sweep["spec"]), "--out", str(out)])
    assert code == 2
    _one_error_line(stderr, f"'{out / name}' is a folder, not a file", "(fix:")
    assert (out / name).is_dir()


def test_eval_names_the_malformed_record(finished_sweep: dict, tmp_path: Path) -> None:
    _, bad = _spoiled(finished_sweep, "list", tmp_path)
    code, _, stderr = _cli(["eval", str(bad.parent)])
    assert code == 2
    _one_error_line(stderr, "holds a JSON list")
    assert bad.read_bytes() == BAD_RECORDS["list"][0]
