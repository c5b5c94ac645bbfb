"""The CLI as a user meets it: instant help, listed methods, one-line errors with exit code 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_spec


def peftbench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real entry point in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "peftbench", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def peftbench_inproc(*args: str) -> subprocess.CompletedProcess:
    """The same CLI invoked in-process (no interpreter start-up): same exit codes and streams."""
    from click.testing import CliRunner

    from peftbench.cli.app import cli

    r = CliRunner().invoke(cli, list(args), prog_name="peftbench")
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


def test_help_does_not_import_torch_or_transformers():
    code = ("import sys; from peftbench.cli.app import cli; from click.testing import CliRunner; "
            "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_methods_lists_every_seed_method_with_its_learning_rate():
    out = peftbench("methods")
    assert out.returncode == 0, out.stderr
    for name, lr in (("full", "5e-5"), ("lora", "1e-3"), ("qlora", "1e-3"), ("ia3", "5e-3")):
        line = next(line for line in out.stdout.splitlines() if line.startswith(name + " "))
        assert lr in line
    for name in ("partial", "dora"):
        assert any(line.startswith(name + " ") for line in out.stdout.splitlines())


@pytest.fixture()
def files(sentiment_files):
    return [str(p) for p in sentiment_files]


@pytest.mark.parametrize("extra, phrase", [
    (["--method", "lroa"], "Did you mean: lora"),
    (["--method", "lora", "--set", "train.lr=0"], "train.lr"),
    (["--method", "lora", "--set", "method.r=-4"], "method.r"),
    (["--method", "lora", "--set", "train.lr"], "malformed --set"),
    (["--method", "lora", "--set", "data.label_column=stars"], "no label column 'stars'"),
])
def test_bad_input_gives_one_line_and_exit_2(extra, phrase, files, tiny_bert, tmp_path):
    out = peftbench_inproc("run", "--model", str(tiny_bert), "--data-train", files[0], "--data-eval", files[1],
                           *extra, "--out", str(tmp_path / "runs"))
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.strip().splitlines() if line.startswith("peftbench: error:")]
    assert len(lines) == 1 and phrase in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not list((tmp_path / "runs").rglob("result.json"))


def test_missing_data_file_and_unreadable_model(files, tiny_bert, tmp_path):
    out = peftbench("run", "--model", str(tiny_bert), "--data-train", str(tmp_path / "nope.csv"),
                    "--data-eval", files[1], "--method", "lora", "--out", str(tmp_path))
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr
    out = peftbench("run", "--model", str(tmp_path / "no-model"), "--data-train", files[0],
                    "--data-eval", files[1], "--method", "lora", "--out", str(tmp_path))
    assert out.returncode == 2 and "model path" in out.stderr and "Traceback" not in out.stderr


def test_debug_shows_the_traceback(files, tiny_bert, tmp_path):
    out = peftbench("--debug", "run", "--model", str(tiny_bert), "--data-train", files[0], "--data-eval", files[1],
                    "--method", "lroa", "--out", str(tmp_path))
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_run_from_yaml_config_with_set_override(files, tiny_bert, tmp_path):
    import yaml

    cfg = tmp_path / "spec.yaml"
    cfg.write_text(yaml.safe_dump(tiny_spec(tiny_bert, tuple(map(Path, files)), "ia3")))
    out = peftbench("run", "--config", str(cfg), "--set", "train.lr=0.01", "--quiet", "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    (rec_path,) = (tmp_path / "r").rglob("result.json")
    rec = json.loads(rec_path.read_text())
    assert rec["status"] == "success" and rec["method"] == "ia3" and rec["spec"]["train"]["lr"] == 0.01
    assert "ia3" in out.stdout and "accuracy" in out.stdout
