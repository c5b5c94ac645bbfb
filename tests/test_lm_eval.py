"""lm-evaluation-harness evaluation of tuned decoders (`evaluation.lm_eval`, `retention.lm_eval_tasks`).

Real tiny runs: a random GPT-2 instruction-tuned on generated sentiment prompts (LoRA and full
fine-tuning), scored by lm-eval on local task YAML files over generated data; the record's base and
tuned scores with standard errors and per-item results, the base cache, the adapter check (and its
failure with the adapter disabled on purpose), the report's tables and the missing extra.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from conftest import SHARED_DATA, load_schema, require_data
from peftbench.cli.app import cli
from peftbench.config.spec import RunSpec
from peftbench.core.runner import run
from peftbench.errors import DataError, SpecError
from peftbench.models.tiny import tiny_model_path

torch = pytest.importorskip("torch")
# The tests that score with lm-eval need the extra; the spec checks and the missing-extra error do not.
needs_lm_eval = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                   reason="lm-eval is not installed (pip install 'peftbench[lmeval]')")

TASK_YAML = """task: {name}
dataset_path: csv
dataset_kwargs:
  data_files: {{test: "{path}"}}
test_split: test
output_type: multiple_choice
doc_to_text: "{prompt}{{{{text}}}}\\nSentiment:"
doc_to_choice: ["negative", "positive"]
doc_to_target: label
metric_list: [{{metric: acc, aggregation: mean, higher_is_better: true}}]
metadata: {{version: 1.0}}
"""


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """lm-eval reads local files through `datasets`, which caches what it reads: here, in a temporary folder."""
    if importlib.util.find_spec("datasets") is not None:
        import datasets

        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf-datasets")


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Generated sentiment data: instruction pairs to train on, and two lm-eval task YAML files over
    generated eval rows (one scored as the run's result, one as a retention task)."""
    from peftbench.data.synthetic import generate, write_csv

    root = tmp_path_factory.mktemp("lm-eval-data")
    train, eval_ = generate(48, 24, seed=5)
    pairs = [{"prompt": f"Review: {t}\nSentiment:", "completion": "positive" if y else "negative"} for t, y in train]
    (root / "pairs.json").write_text(json.dumps(pairs))
    write_csv(eval_, root / "eval.csv")
    for name, prompt in (("toy_sentiment", "Review: "), ("toy_retention", "Text: ")):
        (root / f"{name}.yaml").write_text(TASK_YAML.format(name=name, path=root / "eval.csv", prompt=prompt))
    return {"pairs": str(root / "pairs.json"), "eval": str(root / "eval.csv"),
            "task": str(root / "toy_sentiment.yaml"), "retention": str(root / "toy_retention.yaml")}


def _spec(data: dict[str, str], method: str, **extra: object) -> RunSpec:
    return RunSpec.from_dict({
        "task": "instruction", "model": {"name_or_path": str(tiny_model_path("gpt2")), "dtype": "float32"},
        "data": {"train": data["pairs"], "eval": data["pairs"], "n_train": 16, "n_eval": 8, "max_length": 48,
                 "max_target_length": 8},
        "method": {"name": method},
        "train": {"max_steps": 2, "batch_size": 8, "lr": 5e-3, "num_threads": 1, "cpu_ops": False},
        "evaluation": {"lm_eval": {"tasks": [data["task"]], "batch_size": 8}},
        "retention": {"lm_eval_tasks": [data["retention"]]},
        "save": "none", **extra})


def _check_task(task: dict, items: int) -> None:
    """Base and tuned scores with standard errors, and per-item scores that give those means."""
    for side in ("base", "tuned"):
        value, stderr = task[side]["value"], task[side]["stderr"]
        scores = task["items"][side]
        assert len(scores) == items and set(scores) <= {0.0, 1.0}
        assert value == pytest.approx(sum(scores) / items)
        # lm-eval's standard error of a mean: the sample standard deviation over sqrt(n).
        sd = (sum((s - value) ** 2 for s in scores) / (items - 1)) ** 0.5
        assert stderr == pytest.approx(sd / items ** 0.5)
    assert task["delta"] == pytest.approx(task["tuned"]["value"] - task["base"]["value"])
    assert task["forgetting"] == pytest.approx(-task["delta"])
    assert task["items"]["doc_id"] == list(range(items))


@needs_lm_eval
def test_lora_and_full_runs_are_scored_by_lm_eval_base_and_tuned(tmp_path: Path, sentiment: dict[str, str]) -> None:
    out = tmp_path / "runs"
    lora = run(_spec(sentiment, "lora"), out, progress=False)
    assert lora["status"] == "success", lora.get("error")
    section = lora["lm_eval"]
    assert section["version"] == importlib.metadata.version("lm_eval") and section["base_cached"] is False
    tasks = section["tasks"]
    assert set(tasks) == {"toy_sentiment", "toy_retention"}
    assert tasks["toy_sentiment"]["role"] == "evaluation" and tasks["toy_retention"]["role"] == "retention"
    assert tasks["toy_sentiment"]["metric"] == "acc" and tasks["toy_sentiment"]["n"] == 24
    for task in tasks.values():
        _check_task(task, 24)
    assert section["retention_forgetting"] == pytest.approx(tasks["toy_retention"]["forgetting"])
    check = lora["preflight"]["checks"]["lm_eval_adapter_active"]
    assert check["passed"] and check["max_abs_change"] > check["threshold"]
    jsonschema.validate(lora, load_schema("record"))
    documented = (Path(__file__).resolve().parents[1] / "docs" / "records.md").read_text()
    keys = {"lm_eval", *section, *tasks["toy_sentiment"]}
    assert not {k for k in keys if f"`{k}`" not in documented}, "lm_eval keys missing from docs/records.md"

    # Full fine-tuning of the same model on the same tasks: the base model's lm-eval scores come from the cache.
    full = run(_spec(sentiment, "full"), out, progress=False)
    assert full["status"] == "success", full.get("error")
    assert full["lm_eval"]["base_cached"] is True
    for name, task in full["lm_eval"]["tasks"].items():
        assert task["base"] == tasks[name]["base"] and task["items"]["base"] == tasks[name]["items"]["base"]
        _check_task(task, 24)
    assert full["preflight"]["checks"]["lm_eval_adapter_active"]["passed"]
    assert len(list((out / ".cache" / "base").glob("lm_eval-*.json"))) == 1
    jsonschema.validate(full, load_schema("record"))

    _check_report([lora, full], tmp_path)


def _check_report(records: list[dict], tmp_path: Path) -> None:
    """The report's lm-eval tables: scores with standard errors beside the task metric, and a paired test
    between the two methods on the same items (McNemar on per-item correctness)."""
    from peftbench.reports.analysis import analyze
    from peftbench.reports.lm_eval_tables import lm_eval_pair_rows, lm_eval_rows
    from peftbench.reports.plots import forgetting_pareto
    from peftbench.reports.stats import mcnemar_test
    from peftbench.reports.trust import forgetting_points

    analysis = analyze(records, baseline="full")
    rows = lm_eval_rows(analysis, "instruction", role="evaluation")
    assert len(rows) == 2 and {r["lm-eval task"].text for r in rows} == {"toy_sentiment"}
    lora = next(r for r in rows if r["config"].text.startswith("lora"))
    task = records[0]["lm_eval"]["tasks"]["toy_sentiment"]
    assert lora["tuned"].text == f"{task['tuned']['value']:.4f} ± {task['tuned']['stderr']:.4f}"
    assert lora["perplexity"].sort == pytest.approx(records[0]["metrics"]["perplexity"])
    base_vs_tuned = mcnemar_test([int(x) for x in task["items"]["tuned"]], [int(x) for x in task["items"]["base"]],
                                 [1] * task["n"])
    assert lora["p (base vs tuned)"].sort == pytest.approx(base_vs_tuned["pvalue"])
    pairs = lm_eval_pair_rows(analysis, "instruction")
    (pair,) = [p for p in pairs if p["lm-eval task"].text == "toy_sentiment"]
    a, b = (next(r for r in records if pair[side].text.startswith(r["method"])) for side in ("A", "B"))
    items_a, items_b = (r["lm_eval"]["tasks"]["toy_sentiment"]["items"]["tuned"] for r in (a, b))
    expected = mcnemar_test([int(x) for x in items_a], [int(x) for x in items_b], [1] * len(items_a))
    assert pair["test"].text == "mcnemar" and pair["p"].sort == pytest.approx(expected["pvalue"])
    retention = lm_eval_rows(analysis, "instruction", role="retention")
    assert {r["lm-eval task"].text for r in retention} == {"toy_retention"}
    # The learning-vs-forgetting figure gets a panel of the lm-eval drop.
    points = [p for p in forgetting_points(analysis.task_configs("instruction")) if p["forgetting_metric"] == "lm_eval_drop"]
    assert sorted(p["forgetting"] for p in points) == sorted(r["lm_eval"]["retention_forgetting"] for r in records)
    assert forgetting_pareto(analysis.task_configs("instruction"), tmp_path / "f.png", title="t").is_file()


@needs_lm_eval
def test_the_adapter_check_fails_when_the_adapter_is_disabled(sentiment: dict[str, str]) -> None:
    """lm-eval's wrapper around a LoRA model: its probe moves once the adapter's weights moved, and stays
    the base model's when the adapter is disabled on purpose."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftbench.evaluation import harness
    from peftbench.trust.preflight import PreflightError

    path = tiny_model_path("gpt2")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path), LoraConfig(r=4, target_modules=["c_attn"]))
    tok = AutoTokenizer.from_pretrained(path)
    lm = harness.make_lm(model, tok, batch_size=4)
    base = harness.probe(lm)  # a fresh LoRA adapter (B = 0) is the identity: these are the base model's numbers
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # what training does to B
    check = harness.adapter_check(base, harness.probe(lm))
    assert check["passed"] and check["message"] is None
    harness.raise_if_failed(check)

    with model.disable_adapter():
        off = harness.adapter_check(base, harness.probe(lm))
    assert not off["passed"] and off["max_abs_change"] <= off["threshold"]
    with pytest.raises(PreflightError, match="lm-eval would score the base model"):
        harness.raise_if_failed(off)


@needs_lm_eval
def test_lm_eval_scores_a_continuation_as_training_encodes_it() -> None:
    """The wrapper's log-likelihood of a continuation is the model's, on the tokens peftbench trains on
    (`encode_causal`: [CLS] + prompt + response with this WordPiece vocabulary, no [SEP] inside)."""
    from lm_eval.api.instance import Instance
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftbench.data.batching import IGNORE_INDEX
    from peftbench.data.text_pairs import encode_causal
    from peftbench.evaluation import harness

    path = tiny_model_path("gpt2")
    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    context, continuation = "Review: a warm, funny film.\nSentiment:", " positive"
    enc = encode_causal(tok, [context], [continuation.strip()], 64, 8)
    ids, labels = torch.tensor([enc.input_ids[0]]), enc.extra["labels"][0]
    assert ids[0, 0].item() == tok.cls_token_id and ids[0, -1].item() == tok.sep_token_id
    with torch.no_grad():
        logp = model(ids).logits.log_softmax(-1)[0]
    response = [i for i, label in enumerate(labels) if label != IGNORE_INDEX][:-1]  # without the closing [SEP]
    expected = sum(logp[i - 1, ids[0, i]].item() for i in response)
    lm = harness.make_lm(model, tok, batch_size=2)
    request = Instance(request_type="loglikelihood", doc={}, arguments=(context, continuation), idx=0)
    assert lm.loglikelihood([request], disable_tqdm=True)[0][0] == pytest.approx(expected, abs=1e-4)


@needs_lm_eval
def test_a_generation_task_scores_exact_match_per_item(sentiment: dict[str, str], tmp_path: Path) -> None:
    """`generate_until` tasks go through lm-eval's generation (batched, left-padded, stopped at the token a
    trained response ends with: [SEP] for this vocabulary, which has no EOS)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftbench.evaluation import harness
    from peftbench.evaluation.plan import plan

    yaml_text = Path(sentiment["task"]).read_text().replace("toy_sentiment", "toy_generation")
    yaml_text = yaml_text.replace("output_type: multiple_choice", "output_type: generate_until\n"
                                  "generation_kwargs: {until: [\"\\n\"], max_gen_toks: 2, do_sample: false}")
    yaml_text = yaml_text.replace('doc_to_choice: ["negative", "positive"]\n', "").replace(
        "doc_to_target: label", 'doc_to_target: "{{label}}"').replace("metric: acc,", "metric: exact_match,")
    (tmp_path / "generation.yaml").write_text(yaml_text)
    p = plan(RunSpec.from_dict({"task": "instruction", "evaluation": {"lm_eval": {
        "tasks": [str(tmp_path / "generation.yaml")], "limit": 6}}}))
    path = tiny_model_path("gpt2")
    lm = harness.make_lm(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path), batch_size=4)
    assert lm.eot_token_id == lm.tokenizer.sep_token_id
    scores = harness.evaluate(lm, p)["toy_generation"]
    assert scores["metric"] == "exact_match" and scores["n"] == 6
    assert scores["items"]["doc_id"] == list(range(6)) and set(scores["items"]["score"]) <= {0.0, 1.0}


def test_the_run_id_counts_lm_eval_tasks_only_when_asked(sentiment: dict[str, str]) -> None:
    with_tasks = _spec(sentiment, "lora")
    without = with_tasks.with_overrides(["evaluation.lm_eval=null", "retention=null"])
    assert with_tasks.run_id() != without.run_id()
    assert without.run_id() == without.with_overrides(["evaluation={}"]).run_id()
    other = with_tasks.with_overrides([f"retention.lm_eval_tasks=[{sentiment['task']}]",
                                       f"evaluation.lm_eval.tasks=[{sentiment['retention']}]"])
    assert other.run_id() != with_tasks.run_id()  # roles swapped: another run


@needs_lm_eval
def test_a_run_that_changed_nothing_fails_the_adapter_check(tmp_path: Path, sentiment: dict[str, str]) -> None:
    """LoRA at a negligible learning rate stays the identity: lm-eval would score the base model, so the
    run stops with a failed record holding the failed check."""
    from peftbench.trust.preflight import PreflightError

    spec = _spec(sentiment, "lora").with_overrides(["train.lr=1e-12", "retention=null"])
    with pytest.raises(PreflightError, match="lm-eval would score the base model"):
        run(spec, tmp_path / "runs", progress=False)
    (failed,) = (tmp_path / "runs").glob("*/result.json")
    record = json.loads(failed.read_text())
    assert record["status"] == "failed" and record["error"]["type"] == "preflight"
    assert record["preflight"]["checks"]["lm_eval_adapter_active"]["passed"] is False
    assert record["preflight"]["passed"] is False


def test_without_the_extra_the_run_stops_with_one_line(tmp_path: Path, sentiment: dict[str, str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now raises ImportError
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(_spec(sentiment, "lora").to_dict()))
    result = CliRunner().invoke(cli, ["run", "--config", str(spec), "--out", str(tmp_path / "runs"), "--quiet"],
                                prog_name="peftbench")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("peftbench:")]
    assert lines == ["peftbench: error: evaluation.lm_eval and retention.lm_eval_tasks need the lm-eval package, "
                     "which is not installed (fix: pip install 'peftbench[lmeval]')"]
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("change", "message"), [
    ({"task": "classification"}, "evaluation.lm_eval scores causal LMs, not task 'classification'"),
    ({"retention": {"n": 10}}, "the retention section names neither a file nor lm_eval_tasks"),
    ({"evaluation": {"lm_eval": {"tasks": ["x.yaml"], "limit": 0}}}, "'evaluation.lm_eval.limit'"),
])
def test_spec_checks(sentiment: dict[str, str], change: dict, message: str) -> None:
    data = {**_spec(sentiment, "lora").to_dict(), **change}
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        RunSpec.from_dict(data)


@needs_lm_eval
def test_bad_task_entries_fail_before_the_model_loads(sentiment: dict[str, str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from peftbench.evaluation.plan import plan

    def spec(tasks: list[str]) -> RunSpec:
        return _spec(sentiment, "lora").with_overrides([f"evaluation.lm_eval.tasks={json.dumps(tasks)}",
                                                        "retention=null"])

    with pytest.raises(DataError, match=r"lm-eval task file '.*nope\.yaml' does not exist"):
        plan(spec([str(tmp_path / "nope.yaml")]))
    broken = tmp_path / "broken.yaml"
    broken.write_text(Path(sentiment["task"]).read_text().replace(sentiment["eval"], str(tmp_path / "gone.csv")))
    with pytest.raises(DataError, match="lm-eval cannot load task"):
        plan(spec([str(broken)]))
    with pytest.raises(SpecError, match="listed twice"):
        plan(spec([sentiment["task"], sentiment["task"]]))
    monkeypatch.setenv("PEFTBENCH_SHARED_DATA", str(tmp_path / "no-data"))
    with pytest.raises(DataError, match="set PEFTBENCH_SHARED_DATA"):
        plan(spec(["peftbench_sst2"]))


@needs_lm_eval
def test_the_shipped_task_reads_the_shared_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`peftbench_sst2` names its files through ${PEFTBENCH_SHARED_DATA}: here a folder of generated rows in
    SST-2's layout, scored on an untrained tiny GPT-2."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftbench.data.synthetic import generate
    from peftbench.evaluation import harness
    from peftbench.evaluation.plan import plan

    train, eval_ = generate(8, 10, seed=2)
    (tmp_path / "sst2").mkdir()
    for name, rows in (("train.tsv", train), ("dev.tsv", eval_)):
        (tmp_path / "sst2" / name).write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PEFTBENCH_SHARED_DATA", ".")  # relative, as the default ../shared/data: made absolute
    spec = RunSpec.from_dict({"task": "instruction", "evaluation": {"lm_eval": {"tasks": ["peftbench_sst2"],
                                                                                 "num_fewshot": 1}}})
    p = plan(spec)
    assert p is not None and p.refs[0].source == "shipped" and p.refs[0].names == ("peftbench_sst2",)
    assert p.refs[0].spec["dataset_kwargs"]["data_files"]["test"] == str(tmp_path / "sst2" / "dev.tsv")
    path = tiny_model_path("gpt2")
    lm = harness.make_lm(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path), batch_size=4)
    rng = torch.get_rng_state()
    scores = harness.evaluate(lm, p)["peftbench_sst2"]
    assert torch.equal(torch.get_rng_state(), rng)  # lm-eval seeds torch; the run's random state is kept
    assert scores["n"] == 10 and scores["num_fewshot"] == 1 and scores["stderr"] > 0
    assert scores["value"] == pytest.approx(sum(scores["items"]["score"]) / 10)


@needs_lm_eval
@pytest.mark.realdata
def test_the_shipped_task_over_the_real_sst2_dev_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from peftbench.evaluation.plan import plan

    monkeypatch.setenv("PEFTBENCH_SHARED_DATA", str(require_data(SHARED_DATA)))
    p = plan(RunSpec.from_dict({"task": "instruction", "evaluation": {"lm_eval": {"tasks": ["peftbench_sst2"]}}}))
    task = p.manager.load([p.refs[0].spec])["tasks"]["peftbench_sst2"]
    docs = list(task.test_docs())
    assert len(docs) == 872 and {d["label"] for d in docs} == {0, 1}  # every dev row, none merged by quotes


@needs_lm_eval
@pytest.mark.slow
def test_an_unknown_lm_eval_task_name() -> None:
    """A name neither shipped nor a file is looked up in lm-eval's registry (indexing it takes ~10 s)."""
    from peftbench.evaluation.plan import plan

    with pytest.raises(SpecError, match=r"unknown lm-eval task 'hellaswg'\. Did you mean: hellaswag"):
        plan(RunSpec.from_dict({"task": "instruction", "evaluation": {"lm_eval": {"tasks": ["hellaswg"]}}}))


@needs_lm_eval
@pytest.mark.slow
@pytest.mark.realdata
def test_the_embedded_causal_stand_in_learns_the_shipped_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`embedded-causal` fully fine-tuned on SST-2 train sentences in the shipped task's prompt: lm-eval's
    accuracy on SST-2 dev (`peftbench_sst2`) rises significantly above the untrained model's
    (docs/lm_eval.md gives the full measurement, scripts/measure_lm_eval.py)."""
    import csv

    from peftbench.reports.lm_eval_tables import paired_item_test

    data = require_data(SHARED_DATA)
    monkeypatch.setenv("PEFTBENCH_SHARED_DATA", str(data))
    with (data / "sst2" / "train.tsv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[:1000]
    pairs = [{"prompt": f"Review: {r['sentence'].strip()}\nSentiment:",
              "completion": "positive" if r["label"] == "1" else "negative"} for r in rows]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    rec = run(RunSpec.from_dict({
        "task": "instruction", "model": {"name_or_path": "embedded-causal"},
        "data": {"train": str(tmp_path / "pairs.json"), "eval": str(tmp_path / "pairs.json"), "n_eval": 64,
                 "max_length": 96, "max_target_length": 4},
        "method": {"name": "full"}, "train": {"epochs": 1, "batch_size": 16},
        "evaluation": {"lm_eval": {"tasks": ["peftbench_sst2"], "limit": 400, "batch_size": 32}},
        "save": "none"}), tmp_path / "runs", progress=False)
    task = rec["lm_eval"]["tasks"]["peftbench_sst2"]
    assert task["n"] == 400 and task["tuned"]["value"] > task["base"]["value"] + 0.05, task
    assert paired_item_test(task["items"]["tuned"], task["items"]["base"])["pvalue"] < 0.01
