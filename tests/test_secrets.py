"""`${NAME}` in spec files never lets a credential into records, adapter configs, trackers or reports.

Unit tests of the rule (config/multirun.py: allowed, not listed, credential-like name or value),
then real tiny runs: secrets planted in the environment and named in spec files, a multi-run file
and a grid sweep run on the tiny BERT, a report built, and every file under the output folders
scanned for the secret values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import tiny_spec
from peftbench.cli.app import cli
from peftbench.config.multirun import expand, load_runs, looks_like_secret_name, looks_like_secret_value
from peftbench.errors import SpecError
from sweep_helpers import tiny_sweep, write_yaml

SECRETS = {  # planted in the environment; none of these values may appear in any output file
    "HF_TOKEN": "hf_PlantedTokenAbc123Xyz789Qrs",
    "WANDB_API_KEY": "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c0b2d4f6e",
    "DB_PASSWORD": "correct-horse-battery-staple-41",
    "INNOCENT_LOOKING": "sk-proj-PlantedKey7Qw3Er5Ty",
}


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RUN_TAG", "tag7")
    monkeypatch.delenv("UNSET_XYZ_42", raising=False)
    return SECRETS


def _data(doc: dict) -> dict:
    return expand(doc)[0]["data"]


# ---- the rule ---------------------------------------------------------------------------------

def test_allowed_variables_are_substituted(planted: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFTBENCH_SHARED_DATA", "/data/here")
    doc = {"env": ["RUN_TAG"], "defaults": {"data": {"train": "${PEFTBENCH_SHARED_DATA}/x.csv",
                                                     "eval": "${RUN_TAG}/y.csv"}}}
    assert _data(doc) == {"train": "/data/here/x.csv", "eval": "tag7/y.csv"}
    assert "env" not in expand(doc)[0]
    # A single-run document: `env` is a key of the file, not of the run spec.
    single = expand({"env": ["RUN_TAG"], "data": {"train": "${RUN_TAG}.csv"}})[0]
    assert single == {"data": {"train": "tag7.csv"}}


def test_variable_not_listed_is_refused(planted: dict[str, str]) -> None:
    with pytest.raises(SpecError) as err:
        expand({"defaults": {"data": {"train": "${RUN_TAG}/x.csv"}}})
    line = err.value.one_line()
    assert "${RUN_TAG}" in line and "env: [RUN_TAG]" in line and "tag7" not in line
    assert "\n" not in line
    # Unset and not listed: nothing from the environment enters, the text stays as written.
    assert _data({"defaults": {"data": {"train": "${UNSET_XYZ_42}/x"}}}) == {"train": "${UNSET_XYZ_42}/x"}


@pytest.mark.parametrize("name", ["HF_TOKEN", "WANDB_API_KEY", "DB_PASSWORD", "AWS_SECRET_ACCESS_KEY", "OPENAI_KEY",
                                  "GITHUB_TOKEN"])
def test_credential_like_name_is_refused_even_when_listed(planted: dict[str, str], name: str) -> None:
    doc = {"env": [name], "defaults": {"model": {"name_or_path": "org/m", "revision": f"x-${{{name}}}"}}}
    with pytest.raises(SpecError, match=f"\\${{{name}}}.*looks like a credential") as err:
        expand(doc)
    assert not any(v in err.value.one_line() for v in SECRETS.values())


@pytest.mark.parametrize("value", ["hf_abcdefghijklmnopqrstu", "sk-proj-abc123def456ghi", "ghp_" + "a1B2" * 9,
                                   "xoxb-123456789012-abcdef", "AKIAIOSFODNN7EXAMPLE", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ",
                                   "0123456789abcdef0123456789abcdef01234567"])
def test_credential_like_value_is_refused_even_when_listed(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SUFFIX", value)
    doc = {"env": ["SUFFIX"], "defaults": {"method": {"name": "lora", "exclude_modules": ["m-${SUFFIX}"]}}}
    with pytest.raises(SpecError, match="SUFFIX holds what looks like a credential") as err:
        expand(doc)
    assert value not in err.value.one_line()


@pytest.mark.parametrize("value", ["/work/shared/data", "../shared/data", "google-t5/t5-small", "main", "v1.2.0",
                                   "Llama2_7B_Finetune_Run2024_v1", "/tmp/pytest-of-root/pytest-12/sentiment0"])
def test_ordinary_values_pass(value: str) -> None:
    assert not looks_like_secret_value(value)


@pytest.mark.parametrize(("name", "secret"), [("HF_TOKEN", True), ("MY_API_KEY", True), ("CLIENT_SECRET", True),
                                              ("PGPASSWORD", True), ("SSH_KEY", True), ("PEFTBENCH_SHARED_DATA", False),
                                              ("DATA_DIR", False), ("MODEL_NAME", False)])
def test_secret_names(name: str, secret: bool) -> None:
    assert looks_like_secret_name(name) is secret


def test_env_key_must_list_names() -> None:
    with pytest.raises(SpecError, match="'env' must be a list of environment variable names"):
        expand({"env": "RUN_TAG", "defaults": {}})


def test_set_values_are_never_expanded(planted: dict[str, str], tmp_path: Path) -> None:
    spec = write_yaml(tmp_path / "multi.yaml", {"defaults": {"task": "classification"},
                                                "methods": [{"method": {"name": "lora"}}]})
    runs = load_runs(str(spec), overrides=["method.exclude_modules=['${HF_TOKEN}']", "model.revision=${HF_TOKEN}"])
    dumped = json.dumps(runs[0].model_dump(), default=str)
    assert dumped.count("${HF_TOKEN}") == 2  # both --set values, as written
    assert SECRETS["HF_TOKEN"] not in dumped


# ---- real runs: nothing secret in any output file -------------------------------------------

def _multi_run_file(path: Path, model: Path, files: tuple[Path, Path], exclude: str, env: list[str]) -> Path:
    base = tiny_spec(model, files, max_steps=2, num_threads=1)
    base["data"].update(n_train=32, n_eval=16)
    base["report_to"] = ["tensorboard"]
    method = {"name": "lora", "r": 2, "exclude_modules": [exclude]}
    return write_yaml(path, {"env": env, "defaults": {k: v for k, v in base.items() if k != "method"},
                             "methods": [{"method": method}]})


@pytest.mark.parametrize(("exclude", "env", "named"), [
    ("x-${HF_TOKEN}", [], "HF_TOKEN"),
    ("x-${WANDB_API_KEY}", ["WANDB_API_KEY"], "WANDB_API_KEY"),
    ("x-${INNOCENT_LOOKING}", ["INNOCENT_LOOKING"], "INNOCENT_LOOKING"),
    ("x-${INNOCENT_LOOKING}", [], "INNOCENT_LOOKING"),
])
def test_cli_refuses_secret_in_one_line(planted: dict[str, str], tiny_bert: Path,
                                        sentiment_files: tuple[Path, Path], tmp_path: Path,
                                        exclude: str, env: list[str], named: str) -> None:
    spec = _multi_run_file(tmp_path / "multi.yaml", tiny_bert, sentiment_files, exclude, env)
    result = CliRunner().invoke(cli, ["run", "--config", str(spec), "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("peftbench: error:")]
    assert len(lines) == 1 and named in lines[0] and "(fix:" in lines[0], result.output
    assert not any(v in result.output for v in SECRETS.values())
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("result.json"))


def test_tiny_run_sweep_and_report_hold_no_secret(planted: dict[str, str], tiny_bert: Path,
                                                  sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    spec = _multi_run_file(tmp_path / "multi.yaml", tiny_bert, sentiment_files, "nothing-${RUN_TAG}", ["RUN_TAG"])
    result = runner.invoke(cli, ["run", "--config", str(spec), "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output

    sweep = tiny_sweep(tiny_bert, sentiment_files, methods=["lora"], grid={"method.r": [2]}, seeds=[0])
    sweep["defaults"]["method"] = {"exclude_modules": ["x-${HF_TOKEN}", "y-${WANDB_API_KEY}"]}  # never expanded
    sweep_file = write_yaml(tmp_path / "sweep.yaml", sweep)
    result = runner.invoke(cli, ["sweep", "--config", str(sweep_file), "--out", str(tmp_path / "sweep_runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    for runs in ("runs", "sweep_runs"):
        result = runner.invoke(cli, ["report", str(tmp_path / runs), "--out", str(tmp_path / f"report_{runs}")])
        assert result.exit_code == 0, result.output

    records = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*runs/*/result.json"))]
    assert [r["status"] for r in records] == ["success", "success"]
    excluded = sorted(str(r["spec"]["method"].get("exclude_modules")) for r in records)
    assert excluded == ["['nothing-tag7']", "['x-${HF_TOKEN}', 'y-${WANDB_API_KEY}']"]
    scanned = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".yaml" and "sentiment" not in p.parts]
    names = {p.name for p in scanned}
    assert {"result.json", "adapter_config.json", "report.md"} <= names, names
    assert any(p.name.startswith("events.out.tfevents") for p in scanned), names  # the tracker's files
    assert any(b"nothing-tag7" in p.read_bytes() for p in scanned if p.name == "adapter_config.json")
    leaks = [(p.relative_to(tmp_path), name) for p in scanned for name, v in SECRETS.items()
             if v.encode() in p.read_bytes()]
    assert leaks == []


def test_secret_refusal_is_a_spec_error_for_yaml_text(planted: dict[str, str], tmp_path: Path) -> None:
    """The refusal happens while the file is expanded, before any run spec is validated or built."""
    path = tmp_path / "multi.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"data": {"train": "${DB_PASSWORD}.csv"}},
                                    "methods": [{"method": {"name": "no-such-method"}}]}))
    with pytest.raises(SpecError, match="DB_PASSWORD"):
        load_runs(str(path))
