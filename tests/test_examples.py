"""The study examples in examples/studies/: each states its study's settings, runs offline with
`--model-override tiny` as a sweep, and its report has the tables the study reported (docs/studies.md)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from peftbench.cli.app import cli
from peftbench.config.multirun import load_runs
from peftbench.records.fields import fmt_bytes

STUDIES_DIR = Path(__file__).resolve().parents[1] / "examples" / "studies"
STUDIES = sorted(STUDIES_DIR.glob("*.yaml"))
EXPECTED_RUNS = {"lora_vs_ia3": 36, "partial_vs_lora_llama": 2, "roberta_imdb": 4, "roberta_imdb_r16": 8,
                 "gpt2_sst2": 4}
# The report tables (section titles, before ': <model>') each study's report must show.
STUDY_TABLES = {
    "lora_vs_ia3": ["Rank sweep"],
    "partial_vs_lora_llama": ["Partial fine-tuning against the adapters"],
    "roberta_imdb": ["Accuracy, parameters, time and memory against full fine-tuning",
                     "Model footprint: full against 4-bit"],
    "roberta_imdb_r16": ["Accuracy, parameters, time and memory against full fine-tuning",
                         "Model footprint: full against 4-bit"],
    "gpt2_sst2": ["Model footprint: full against 4-bit",
                  "Accuracy, parameters, time and memory against full fine-tuning"],
}
# Sweeps of these studies take over a minute on two cores: they run with `make test-slow`.
SLOW = {"lora_vs_ia3", "roberta_imdb", "roberta_imdb_r16"}


def by(specs: list[Any], **where: Any) -> list[Any]:
    """The specs whose dotted fields (method.name, train.lr, ...) equal the given values."""
    def get(spec: Any, dotted: str) -> Any:
        value = spec.to_dict()
        for part in dotted.split("__"):
            value = value.get(part) if isinstance(value, dict) else None
        return value
    return [s for s in specs if all(get(s, k) == v for k, v in where.items())]


def test_studies_are_the_expected_files_and_name_real_models() -> None:
    assert {p.stem for p in STUDIES} == set(EXPECTED_RUNS) == set(STUDY_TABLES)
    for path in STUDIES:
        specs = load_runs(str(path))
        assert len(specs) == EXPECTED_RUNS[path.stem]
        assert all("/" in s.model.name_or_path for s in specs)  # hub ids, not tiny stand-ins
        assert path.read_text().startswith("# Study "), "each file opens with a comment naming its study"


def test_lora_vs_ia3_states_the_studys_models_rates_and_ranks() -> None:
    specs = [s.resolved() for s in load_runs(str(STUDIES_DIR / "lora_vs_ia3.yaml"))]
    models = {s.model.name_or_path for s in specs}
    assert models == {"distilbert/distilbert-base-uncased", "google-t5/t5-small", "EleutherAI/pythia-2.8b"}
    shared = {"distilbert/distilbert-base-uncased": 2e-5, "google-t5/t5-small": 5e-4, "EleutherAI/pythia-2.8b": 5e-4}
    for model, lr in shared.items():
        runs = by(specs, model__name_or_path=model)
        assert sorted(s.method.params["r"] for s in by(runs, method__name="lora", train__lr=lr)) == [8, 16, 32, 64, 128]
        assert len(by(runs, method__name="ia3", train__lr=lr)) == 1
        # the fairness axis: each method at its own default rate too
        assert len(by(runs, method__name="lora", train__lr=1e-3)) == 5 and by(runs, method__name="ia3", train__lr=5e-3)


def test_partial_vs_lora_states_frozen_layers_batch_and_lora_shape() -> None:
    specs = {s.method.name: s for s in load_runs(str(STUDIES_DIR / "partial_vs_lora_llama.yaml"))}
    assert specs["partial"].method.params == {"frozen_layers": 12}
    assert (specs["lora"].method.params["r"], specs["lora"].method.params["alpha"]) == (16, 32)
    for spec in specs.values():
        assert spec.model.name_or_path == "meta-llama/Llama-3.2-1B"
        assert (spec.train.batch_size, spec.train.epochs, spec.data.max_length) == (16, 2, 256)
    tiny = {s.method.name: s for s in load_runs(str(STUDIES_DIR / "partial_vs_lora_llama.yaml"), "tiny")}
    assert tiny["partial"].method.params == {"frozen_layers": 1} and "frozen_layers" not in tiny["lora"].method.params


def test_roberta_r16_study_shares_2e5_and_adds_each_methods_own_rate() -> None:
    specs = [s.resolved() for s in load_runs(str(STUDIES_DIR / "roberta_imdb_r16.yaml"))]
    assert {s.method.name for s in by(specs, train__lr=2e-5)} == {"full", "lora", "qlora", "ia3"}
    for s in specs:
        if s.method.name in ("lora", "qlora"):
            assert (s.method.params["r"], s.method.params["alpha"]) == (16, 32)
    own = {s.method.name: s.train.lr for s in specs if s.train.lr != 2e-5}
    assert own == {"full": 5e-5, "lora": 1e-3, "qlora": 1e-3, "ia3": 5e-3}


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_study_expands_offline(path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFTBENCH_SHARED_DATA", str(shared_data))
    result = CliRunner().invoke(cli, ["sweep", "--config", str(path), "--model-override", "tiny", "--dry-run"])
    assert result.exit_code == 0, result.output
    ids = [line.split()[0] for line in result.output.splitlines() if "  " in line]
    assert len(set(ids)) == EXPECTED_RUNS[path.stem]


def sweep_and_report(path: Path, tmp_path: Path) -> tuple[list[dict[str, Any]], str]:
    """Run a study file as a tiny sweep, then `peftbench report`: (records, report.md)."""
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["sweep", "--config", str(path), "--model-override", "tiny", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    records = [json.loads(p.read_text()) for p in out.glob("*/result.json")]
    assert records and all(r["status"] == "success" for r in records), [r.get("error") for r in records]
    result = CliRunner().invoke(cli, ["report", str(out), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    return records, (tmp_path / "report" / "report.md").read_text()


def table(report: str, title: str) -> list[dict[str, str]]:
    """The rows of the report's first markdown table under a '### <title>' heading, as dicts."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"### {title}"))
    body = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("| "):
            body.append([cell.strip() for cell in line.strip("|").split(" | ")])
    header, rows = body[0], body[1:]  # the |---| rule does not start with "| "
    return [dict(zip(header, row, strict=True)) for row in rows]


def check_study_tables(stem: str, records: list[dict[str, Any]], report: str) -> None:
    for title in STUDY_TABLES[stem]:
        assert f"### {title}: " in report, f"{stem}: no '{title}' table"
    if "Model footprint: full against 4-bit" in STUDY_TABLES[stem]:
        check_footprint(records, report)
    if "Partial fine-tuning against the adapters" in STUDY_TABLES[stem]:
        (row,) = table(report, "Partial fine-tuning against the adapters")
        assert row["adapter"] == "lora" and row["partial"] == "partial" and row["verdict"]
        assert {"accuracy adapter", "accuracy partial", "Δ", "p", "trainable ×", "time ×"} <= set(row)
    if "Accuracy, parameters, time and memory against full fine-tuning" in STUDY_TABLES[stem]:
        rows = table(report, "Accuracy, parameters, time and memory against full fine-tuning")
        assert len(rows) == len({r["spec"]["method"]["name"] + str(r["spec"]["train"]["lr"]) for r in records})
        assert {"accuracy", "trainable", "train s", "peak mem", "eval − train loss"} <= set(rows[0])


def check_footprint(records: list[dict[str, Any]], report: str) -> None:
    """Both footprints as the records state them, and full ÷ QLoRA computed from the records."""
    full = next(r for r in records if r["method"] == "full")["model"]["footprint"]
    qlora = next(r for r in records if r["method"] == "qlora")["model"]["footprint"]
    assert qlora["four_bit_bytes"] > 0 == full["four_bit_bytes"]
    rows = {row["config"].split(" ")[0]: row for row in table(report, "Model footprint: full against 4-bit")}
    assert rows["full"]["model mem"] == fmt_bytes(full["bytes"]) and rows["qlora"]["model mem"] == fmt_bytes(qlora["bytes"])
    assert rows["qlora"]["full ÷ this"] == f"{full['bytes'] / qlora['bytes']:.2f}×"
    # The quantized layers alone shrink several-fold (4-bit plus block scales) even where the whole
    # tiny model barely does (its unquantized embedding dominates).
    assert float(rows["qlora"]["quantized layers: full ÷ 4-bit"].rstrip("×")) > 2


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.stem in SLOW else [])
                                  for p in STUDIES])
def test_study_sweep_report_has_the_studys_tables(path: Path, tmp_path: Path, shared_data: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFTBENCH_SHARED_DATA", str(shared_data))
    records, report = sweep_and_report(path, tmp_path)
    assert len(records) == EXPECTED_RUNS[path.stem]
    check_study_tables(path.stem, records, report)
    if path.stem == "gpt2_sst2":  # records from before the footprint and the overfitting gap: no footprint table
        from peftbench.reports.analysis import analyze
        from peftbench.reports.study_tables import study_tables

        old = copy.deepcopy(records)
        for r in old:
            del r["model"]["footprint"], r["overfit_gap"]
        (title, rows, _), = study_tables(analyze(old), "classification")
        assert title.startswith("Accuracy, parameters, time and memory") and rows[0]["eval − train loss"].text == "-"
    if path.stem == "lora_vs_ia3":
        assert {r["model"]["family"] for r in records} == {"distilbert", "t5", "gpt_neox"}
        for model in ("distilbert-s0", "t5-s0", "gpt_neox-s0"):
            rows = table(report, f"Rank sweep: {model}")
            assert sorted(int(r["r"]) for r in rows if r["method"] == "lora") == sorted([8, 16, 32, 64, 128] * 2)
            assert [r["r"] for r in rows if r["method"] == "ia3"] == ["", ""]


def test_trimmed_lora_vs_ia3_gives_a_rank_table(tmp_path: Path, shared_data: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The rank table in the default test run: the study's DistilBERT entry, two ranks, each method's own rate."""
    monkeypatch.setenv("PEFTBENCH_SHARED_DATA", str(shared_data))
    doc = yaml.safe_load((STUDIES_DIR / "lora_vs_ia3.yaml").read_text())
    doc["models"] = [{**doc["models"][0], "axes": {"train.lr": [None]}}]
    doc["methods"][0]["axes"] = {"method.r": [8, 16]}
    path = tmp_path / "trimmed.yaml"
    path.write_text(yaml.safe_dump(doc))
    records, report = sweep_and_report(path, tmp_path)
    rows = table(report, "Rank sweep: distilbert-s0")
    assert [(r["method"], r["r"]) for r in rows] == [("ia3", ""), ("lora", "8"), ("lora", "16")]
    trainable = {int(r["spec"]["method"].get("r") or 0): r["params"]["trainable"] for r in records}
    assert trainable[8] < trainable[16]
    assert {"accuracy", "learned", "trainable", "lr"} <= set(rows[0])
    assert "Partial fine-tuning" not in report and "against full fine-tuning" not in report  # chosen by the data


@pytest.mark.parametrize(("params", "trained"), [({"frozen_layers": 1}, [False, True]),
                                                 ({"frozen_layers": 0}, [True, True]),
                                                 ({"frozen_layers": 2}, [False, False]),
                                                 ({"layers": 1}, [False, True])])
def test_partial_frozen_layers_counts_from_the_bottom(params: dict[str, int], trained: list[bool]) -> None:
    """`frozen_layers: N` freezes the bottom N blocks and trains the rest (as the Llama study states it)."""
    import transformers

    from peftbench.methods.base import METHODS, MethodContext
    from peftbench.models.families import family_for
    from peftbench.models.tiny import tiny_model_path

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_path("llama"))
    method = METHODS.get("partial")
    method.prepare(method, method.resolve_params(params), MethodContext(model, family_for("llama"), "CAUSAL_LM"))
    blocks = [all(p.requires_grad for p in block.parameters()) for block in model.model.layers]
    assert blocks == trained


@pytest.mark.parametrize(("params", "message"), [({"frozen_layers": 3}, "frozen_layers=3 but the model has 2 layers"),
                                                  ({"frozen_layers": 1, "layers": 1}, "are both set")],
                         ids=["too-many", "both-set"])
def test_partial_frozen_layers_refuses_what_cannot_apply(params: dict[str, int], message: str) -> None:
    import transformers

    from peftbench.errors import SpecError
    from peftbench.methods.base import METHODS, MethodContext
    from peftbench.models.families import family_for
    from peftbench.models.tiny import tiny_model_path

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_path("llama"))
    method = METHODS.get("partial")
    with pytest.raises(SpecError, match=message):
        method.prepare(method, method.resolve_params(params), MethodContext(model, family_for("llama"), "CAUSAL_LM"))
