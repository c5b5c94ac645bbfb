"""Inputs refused before loading or training, inputs that used to pass silently, and messages that name
the real problem (issue 28): lengths past the model's positions, integer labels that are not class ids,
training rows with one class, checkpoints that leave weights uninitialised, a full disk wherever it
shows, damaged saved adapters, and label, encoding and target-module messages.

Runs use the tiny random BERT from conftest through the real CLI.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from conftest import load_schema
from peftbench.cli.app import cli
from peftbench.config.spec import RunSpec
from peftbench.errors import DataError, DiskFull, ModelError, SpecError

pytestmark = pytest.mark.reliability


def _argv(model: Path, train: Path | str, eval_: Path | str, out: Path, *extra: str, method: str = "lora") -> list[str]:
    return ["run", "--model", str(model), "--data-train", str(train), "--data-eval", str(eval_), "--method", method,
            "--n-train", "64", "--n-eval", "32", "--out", str(out), "--quiet", "--set", "train.epochs=1",
            "--set", "train.batch_size=16", "--set", "data.max_length=32", "--set", "model.dtype=float32", *extra]


def _cli(argv: list[str]) -> tuple[int, str, list[str]]:
    """(exit code, stderr, the `peftbench:` lines of stderr)."""
    result = CliRunner().invoke(cli, argv, prog_name="peftbench")
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("peftbench:")]
    return result.exit_code, result.stderr, lines


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.rglob("result.json"))] if out.exists() else []


def _csv(path: Path, labels: list[object], texts: list[str] | None = None) -> Path:
    texts = texts or [f"{'good fine great' if i % 2 else 'bad dull awful'} text {i}" for i in range(len(labels))]
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels, strict=True)),
                    encoding="utf-8")
    return path


def _data_spec(train: Path, eval_: Path, **data: object) -> RunSpec:
    return RunSpec.from_dict({"data": {"train": str(train), "eval": str(eval_), "validation_fraction": 0, **data}})


# ---- 1. data.max_length past the model's positions --------------------------------------------


def test_max_length_past_the_position_table_is_refused_before_anything_runs(
        tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    code, _, lines = _cli(_argv(tiny_bert, *sentiment_files, tmp_path / "runs", "--set", "data.max_length=600"))
    assert code == 2
    assert len(lines) == 1
    assert "data.max_length=600 is longer than the 512 positions of model" in lines[0]
    assert "set data.max_length to at most 512" in lines[0]
    assert _records(tmp_path / "runs") == []  # refused before the run folder exists


def test_max_length_at_the_limit_passes_the_check(tiny_bert: Path, sentiment_files: tuple[Path, Path]) -> None:
    from peftbench.models.loading import check_max_length

    spec = RunSpec.from_dict({"model": {"name_or_path": str(tiny_bert)}, "data": {"max_length": 512}})
    check_max_length(spec)  # exactly the table's size is allowed
    with pytest.raises(SpecError, match=r"data\.max_length=513"):
        check_max_length(spec.model_copy(update={"data": spec.data.model_copy(update={"max_length": 513})}))


@pytest.mark.parametrize(("config", "limit"), [
    ({"model_type": "bert", "max_position_embeddings": 512}, 512),
    ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512),  # ids start after padding
    ({"model_type": "gpt2", "n_positions": 1024}, 1024),
    ({"model_type": "t5", "relative_attention_num_buckets": 32}, None),  # relative attention: no table
    ({"model_type": "encoder-decoder", "encoder": {"model_type": "bert", "max_position_embeddings": 256}}, 256),
])
def test_max_positions_per_layout(config: dict, limit: int | None) -> None:
    from peftbench.models.loading import max_positions

    assert max_positions(config) == limit


def test_seq2seq_target_length_checked_against_the_decoder_positions(tmp_path: Path) -> None:
    from peftbench.models.loading import check_max_length

    folder = tmp_path / "bart-like"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bart", "max_position_embeddings": 64,
                                                    "is_encoder_decoder": True}))
    spec = RunSpec.from_dict({"task": "summarization", "model": {"name_or_path": str(folder)},
                              "data": {"max_length": 64, "max_target_length": 100}})
    with pytest.raises(SpecError, match=r"data\.max_target_length=100 is longer than the 64 positions"):
        check_max_length(spec)


# ---- 2. integer labels that are not 0..K-1; too few classes or rows -----------------------------


@pytest.fixture(scope="module")
def remapped_run(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """A run on labels {0, 999}: (run folder, its stderr, the eval file)."""
    root = tmp_path_factory.mktemp("remap")
    train = _csv(root / "train.csv", [0, 999] * 40)
    eval_ = _csv(root / "eval.csv", [999, 0] * 16)
    code, stderr, _ = _cli(_argv(tiny_bert, train, eval_, root / "runs"))
    assert code == 0, stderr
    return next((root / "runs").rglob("result.json")).parent, stderr, eval_


def test_integer_labels_that_are_not_class_ids_are_remapped_and_recorded(remapped_run: tuple[Path, str, Path]) -> None:
    run_dir, stderr, _ = remapped_run
    record = json.loads((run_dir / "result.json").read_text())
    assert record["data"]["label_remap"] == {"0": 0, "999": 1}
    assert record["data"]["label_names"] == ["0", "999"]  # the classes keep the file's values as names
    assert record["metrics"]["labels"] == ["0", "999"]  # a 2-class head, not 1000 outputs
    assert "integer labels are not the class ids 0..1" in stderr and "0->0, 999->1" in stderr
    jsonschema.validate(record, load_schema("record"))
    with pytest.raises(jsonschema.ValidationError):  # the schema holds the field's shape
        jsonschema.validate({**record, "data": {**record["data"], "label_remap": {"999": -1}}}, load_schema("record"))
    # `peftbench eval` maps the eval file's 999 to the class the run trained it as.
    result = CliRunner().invoke(cli, ["eval", str(run_dir), "--json"], prog_name="peftbench")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["accuracy"] == pytest.approx(record["metrics"]["accuracy"])


def test_one_based_labels_are_remapped_and_class_ids_are_not(tmp_path: Path) -> None:
    from peftbench.data.classification import load_classification

    stars = load_classification(_data_spec(_csv(tmp_path / "s.csv", [1, 2, 3] * 6),
                                           _csv(tmp_path / "se.csv", [3, 2, 1] * 2)).data)
    assert stars.info["label_remap"] == {"1": 0, "2": 1, "3": 2}
    assert stars.label_names == ["1", "2", "3"]
    assert sorted(set(stars.train_labels)) == [0, 1, 2]
    plain = load_classification(_data_spec(_csv(tmp_path / "p.csv", [0, 1, 2] * 6),
                                           _csv(tmp_path / "pe.csv", [2, 1, 0] * 2)).data)
    assert "label_remap" not in plain.info


def test_n_train_one_is_refused_before_the_run(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    argv = _argv(tiny_bert, *sentiment_files, tmp_path / "runs")
    argv[argv.index("--n-train") + 1] = "1"
    code, _, lines = _cli(argv)
    assert code == 2 and len(lines) == 1
    assert "hold 1 example(s) of only one class" in lines[0] and "--n-train" in lines[0]
    assert _records(tmp_path / "runs") == []


def test_fewer_training_rows_than_classes_is_refused(tmp_path: Path) -> None:
    from peftbench.data.classification import load_classification

    spec = _data_spec(_csv(tmp_path / "t.csv", [0, 1, 2] * 10), _csv(tmp_path / "e.csv", [0, 1, 2]), n_train=2)
    with pytest.raises(DataError, match=r"hold 2 examples for 3 classes.*at least 3"):
        load_classification(spec.data)


# ---- 3. checkpoints that leave weights uninitialised ---------------------------------------------


def _deeper_model(tiny_bert: Path, target: Path) -> Path:
    """The tiny BERT with a config of two more layers than its weights."""
    shutil.copytree(tiny_bert, target)
    config = json.loads((target / "config.json").read_text())
    config["num_hidden_layers"] += 2
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_missing_weights_are_refused_with_the_keys(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    model = _deeper_model(tiny_bert, tmp_path / "deeper")
    code, _, lines = _cli(_argv(model, *sentiment_files, tmp_path / "runs"))
    assert code == 2 and len(lines) == 1
    assert "has no weights for 32 parameter(s)" in lines[0]
    assert "bert.encoder.layer.2." in lines[0] and "(32 in all)" in lines[0]
    assert "classifier" not in lines[0]  # the new head is fresh on purpose, not missing
    assert "model.allow_missing_weights=true" in lines[0]
    assert [(r["status"], r["error"]["type"]) for r in _records(tmp_path / "runs")] == [("failed", "model")]


def test_allow_missing_weights_trains_them(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                           tmp_path: Path) -> None:
    model = _deeper_model(tiny_bert, tmp_path / "deeper")
    code, stderr, _ = _cli(_argv(model, *sentiment_files, tmp_path / "runs", "--set",
                                 "model.allow_missing_weights=true"))
    assert code == 0, stderr
    [record] = _records(tmp_path / "runs")
    assert record["spec"]["model"]["allow_missing_weights"] is True


def test_allow_missing_weights_on_is_another_run(tiny_bert: Path, sentiment_files: tuple[Path, Path]) -> None:
    spec = {"model": {"name_or_path": str(tiny_bert)},
            "data": {"train": str(sentiment_files[0]), "eval": str(sentiment_files[1])}}
    on = RunSpec.from_dict({**spec, "model": {**spec["model"], "allow_missing_weights": True}})
    assert on.run_id() != RunSpec.from_dict(spec).run_id()


# ---- 4. a full disk wherever it shows ---------------------------------------------------------


def _safetensors_disk_full() -> Exception:
    """The error safetensors' writer raises on a full disk (its text as measured on a 64 KiB tmpfs)."""
    from safetensors import SafetensorError

    return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_os_failure_finds_a_full_disk_in_the_chain() -> None:
    from peftbench.records.failure import os_failure

    assert isinstance(os_failure(_safetensors_disk_full()), DiskFull)
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device", "/out/model.safetensors")
    found = os_failure(wrapped)
    assert isinstance(found, DiskFull) and "/out/model.safetensors" in str(found)
    context = ValueError("cleanup failed")
    context.__context__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert isinstance(os_failure(context), DiskFull)
    assert os_failure(OSError(errno.EACCES, "Permission denied", "/x")).reason == "io"
    assert os_failure(RuntimeError("shape mismatch")) is None
    assert os_failure(DataError("bad data")) is None  # already one clear error


def test_safetensors_disk_full_during_save_is_recorded_disk_full(
        tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import peft.peft_model

    def save_file(tensors, filename, metadata=None):  # type: ignore[no-untyped-def]
        raise _safetensors_disk_full()

    monkeypatch.setattr(peft.peft_model, "safe_save_file", save_file)
    code, _, lines = _cli(_argv(tiny_bert, *sentiment_files, tmp_path / "runs"))
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("peftbench: error: No space left on device") and "free disk space" in lines[0]
    assert [(r["status"], r["error"]["type"]) for r in _records(tmp_path / "runs")] == [("failed", "disk_full")]


def test_token_cache_disk_full_stops_the_run_but_other_cache_errors_do_not(
        tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer

    from peftbench.data import token_cache
    from peftbench.data.classification import encode_classification

    monkeypatch.setenv(token_cache.TOKEN_CACHE_ENV, str(tmp_path / "tokens"))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))

    def failing(code: int):  # type: ignore[no-untyped-def]
        def write(path, text):  # type: ignore[no-untyped-def]
            raise OSError(code, os.strerror(code), str(path))
        return write

    args = (None, [0], 16)
    monkeypatch.setattr(token_cache, "atomic_write_text", failing(errno.EACCES))
    assert token_cache.cached(encode_classification, tokenizer, ["a film"], *args).labels == [0]  # only costs time
    monkeypatch.setattr(token_cache, "atomic_write_text", failing(errno.ENOSPC))
    with pytest.raises(OSError) as info:
        token_cache.cached(encode_classification, tokenizer, ["another film"], *args)
    assert info.value.errno == errno.ENOSPC


def _mount_small_tmpfs(target: Path) -> bool:
    target.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(target)], capture_output=True)
    return done.returncode == 0


def test_a_real_full_disk_is_recorded_disk_full(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    """On a real 256 KiB file system the full model (4 MB) cannot be saved: safetensors' own ENOSPC."""
    small = tmp_path / "small"
    if not _mount_small_tmpfs(small):
        pytest.skip("needs root and mount to make a small file system")
    try:
        code, _, lines = _cli(_argv(tiny_bert, *sentiment_files, small / "runs", method="full"))
        records = _records(small / "runs")
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert code == 1 and len(lines) == 1 and "no space left on device" in lines[0].lower()
    assert [r["error"]["type"] for r in records] == ["disk_full"]


# ---- 5. truncated or corrupt saved adapters on eval / merge -------------------------------------


@pytest.fixture
def damaged_copy(remapped_run: tuple[Path, str, Path], tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(remapped_run[0], target)
    return target


@pytest.mark.parametrize("command", ["eval", "merge"])
def test_truncated_adapter_is_one_line_naming_the_file(damaged_copy: Path, tmp_path: Path, command: str) -> None:
    weights = damaged_copy / "adapter" / "adapter_model.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    argv = ["eval", str(damaged_copy)] if command == "eval" else [
        "merge", str(damaged_copy), "--out", str(tmp_path / "merged")]
    code, _, lines = _cli(argv)
    assert code == 2 and len(lines) == 1
    assert f"the saved adapter file '{weights}' is truncated or corrupt" in lines[0]
    assert "rerun the run with --force" in lines[0]


def test_corrupt_adapter_config_is_one_line(damaged_copy: Path) -> None:
    config = damaged_copy / "adapter" / "adapter_config.json"
    config.write_text('{"peft_type": "LORA",')
    code, _, lines = _cli(["eval", str(damaged_copy)])
    assert code == 2 and len(lines) == 1
    assert f"'{config}' is missing or not readable JSON" in lines[0]


def test_corrupt_saved_weights_are_refused_before_loading(tmp_path: Path) -> None:
    from peftbench.core.artifacts import check_artifact_files

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="holds no weights file"):
        check_artifact_files(folder, "model")
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ModelError, match=r"model\.safetensors' is truncated or corrupt"):
        check_artifact_files(folder, "model")


# ---- 6. messages that name the real problem ---------------------------------------------------


def _labels_of(tmp_path: Path, content: str, name: str = "t.csv") -> list[object]:
    from peftbench.data.classification import label_values
    from peftbench.data.readers import read_table

    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return label_values(read_table(str(path)), "label", str(path))


def test_fractional_label_is_called_fractional_not_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        _labels_of(tmp_path, "text,label\na,0\nb,1\nc,0.5\n")
    message = str(info.value)
    assert "label 0.5 in column 'label' (row 3), not a whole number" in message
    assert "empty" not in message


def test_nan_label_is_called_missing_not_mixed_types(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        _labels_of(tmp_path, "text,label\na,0\nb,1\nc,NaN\n")
    assert "has a missing label 'NaN' in column 'label' (row 3)" in str(info.value)
    assert "mixes" not in str(info.value)
    with pytest.raises(DataError, match=r"missing label nan .*\(row 2\)"):  # a JSON NaN
        _labels_of(tmp_path, '{"text": "a", "label": 0}\n{"text": "b", "label": NaN}\n', "t.jsonl")


def test_mixed_label_types_name_both_rows(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"mixes integer and string labels in column 'label' \(row 1: 0, row 3: 'pos'\)"):
        _labels_of(tmp_path, "text,label\na,0\nb,1\nc,pos\n")


def test_latin1_byte_reported_at_its_offset_in_the_file(tmp_path: Path) -> None:
    from peftbench.data.readers import read_table

    head = b"text,label\n" + b"".join(f"text number {i},{i % 2}\n".encode() for i in range(3000))
    path = tmp_path / "latin1.csv"
    path.write_bytes(head + b"caf\xe9 au lait,1\n")
    with pytest.raises(DataError) as info:
        read_table(str(path))
    line = head.count(b"\n") + 1
    assert f"byte 0xe9 at offset {len(head) + 3} (line {line}, column 4)" in str(info.value)


def test_target_modules_of_the_wrong_type_is_a_spec_error_not_the_architecture() -> None:
    with pytest.raises(SpecError) as info:
        RunSpec.from_dict({"method": {"name": "lora", "target_modules": 5}}).resolved()
    assert "invalid value for 'method.target_modules'" in str(info.value) and "(got 5)" in str(info.value)
    assert "architecture" not in str(info.value)
    resolved = RunSpec.from_dict({"method": {"name": "lora", "target_modules": ["query", "value"]}}).resolved()
    assert resolved.method.params["target_modules"] == ["query", "value"]
