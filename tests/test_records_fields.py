"""The small shared pieces every layer leans on: record accessors and labels, failure records, the device rule."""

from __future__ import annotations

import errno
import json
import math
import re
from pathlib import Path

import pytest

from peftbench.config.spec import RunSpec
from peftbench.errors import DataError, SpecError
from peftbench.records import failure
from peftbench.records.fields import fmt_bytes, model_label, number, status_label, value_at
from peftbench.records.io import RESULT_FILE, SCHEMA_VERSION
from peftbench.runtime import device

# ---- records.fields -------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (3, 3.0), (2.5, 2.5), (-1, -1.0), (0, 0.0),
    (True, None), (False, None), ("3", None), (None, None), ([1], None),
    (math.nan, None), (math.inf, None), (-math.inf, None),
])
def test_number_keeps_finite_numbers_only(value: object, expected: float | None) -> None:
    got = number(value)
    assert got == expected and (got is None or isinstance(got, float))


def test_value_at_walks_dicts_and_never_raises() -> None:
    record = {"train": {"memory": {"peak": 7}, "loss": [1, 2]}, "status": "success"}
    assert value_at(record, "train", "memory", "peak") == 7
    assert value_at(record, "status") == "success"
    assert value_at(record) is record
    assert value_at(record, "train", "absent") is None
    assert value_at(record, "absent", "deeper") is None
    assert value_at(record, "status", "deeper") is None  # a string on the way
    assert value_at(record, "train", "loss", "0") is None  # a list on the way


@pytest.mark.parametrize(("name", "label", "short"), [
    (None, "?", "?"), ("", "?", "?"),
    ("/models/minilm/", "minilm", "minilm"), ("./runs/tiny", "tiny", "tiny"), ("~/m/x", "x", "x"),
    ("org/model", "org/model", "model"), ("embedded", "embedded", "embedded"), ("/m/MAX/", "MAX", "MAX"),
])
def test_model_label_long_and_short(name: str | None, label: str, short: str) -> None:
    assert model_label(name) == label
    assert model_label(name, short=True) == short


@pytest.mark.parametrize(("record", "label"), [
    ({"status": "success", "error": {"type": "oom"}}, "success"),
    ({"status": "failed", "error": {"type": "oom"}}, "failed:oom"),
    ({"status": "canceled", "error": {"type": "canceled"}}, "canceled:canceled"),
    ({"status": "failed", "error": None}, "failed:?"),
    ({"status": "failed"}, "failed:?"),
    ({}, "?:?"),
])
def test_status_label(record: dict, label: str) -> None:
    assert status_label(record) == label
    assert status_label(record, "error") == label.replace(":?", ":error")


@pytest.mark.parametrize(("n", "text"), [
    (None, "-"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KB"), (1536, "1.5 KB"),
    (5 * 1024**2, "5.0 MB"), (1024**2 - 1, "1024.0 KB"), (1024**2, "1.0 MB"), (3 * 1024**3, "3.0 GB"), (2048 * 1024**3, "2048.0 GB"),
    (-2048, "-2.0 KB"),
])
def test_fmt_bytes(n: float | None, text: str) -> None:
    assert fmt_bytes(n) == text


# ---- records.failure ------------------------------------------------------------------------------


def test_failure_record_of_a_spec_names_the_run() -> None:
    spec = RunSpec.from_dict({"data": {"train": "a.csv", "eval": "b.csv"}, "method": {"name": "lora"},
                              "train": {"seed": 7}})
    rec = failure.failure_record("r1", "failed", "data", "no such file", spec=spec, started="t0",
                                 process={"exit_code": 1, "recorded_by": "sweep"})
    assert rec["schema_version"] == SCHEMA_VERSION and rec["run_id"] == "r1" and rec["status"] == "failed"
    assert rec["error"] == {"type": "data", "message": "no such file"}
    assert (rec["task"], rec["method"], rec["seed"]) == ("classification", "lora", 7)
    assert rec["model_name"] == spec.model.name_or_path and rec["spec"] == spec.to_dict()
    assert rec["timestamps"]["started"] == "t0" and rec["timestamps"]["finished"]
    assert rec["trust_remote_code"] is False and rec["process"]["exit_code"] == 1


def test_failure_record_of_a_raw_spec_keeps_it_as_given() -> None:
    raw = {"method": {"name": "nope"}}
    rec = failure.failure_record(None, "failed", "spec", "unknown method", spec=raw)
    assert rec["spec"] is raw and "schema_version" not in rec and "method" not in rec and "process" not in rec


def test_error_entry_and_message() -> None:
    assert failure.error_entry("oom", "x" * 5000)["message"] == "x" * failure.MESSAGE_LIMIT
    assert failure.error_message(DataError("bad column", hint="fix it")) == DataError("bad column", hint="fix it").one_line()
    assert failure.error_message(ValueError("boom")) == "ValueError: boom"


def test_write_failure_never_replaces_a_success(tmp_path: Path) -> None:
    failure.write_failure(tmp_path, {"status": "failed", "n": 1})
    assert json.loads((tmp_path / RESULT_FILE).read_text()) == {"status": "failed", "n": 1}
    failure.write_failure(tmp_path, {"status": "failed", "n": 2})  # a failure replaces a failure
    assert json.loads((tmp_path / RESULT_FILE).read_text())["n"] == 2
    (tmp_path / RESULT_FILE).write_text(json.dumps({"status": "success"}))
    failure.write_failure(tmp_path, {"status": "failed", "n": 3})
    assert json.loads((tmp_path / RESULT_FILE).read_text()) == {"status": "success"}
    beside = list(tmp_path.glob("failed-*.json"))
    assert len(beside) == 1 and json.loads(beside[0].read_text())["n"] == 3
    assert re.fullmatch(r"failed-\d{8}T\d{6}\.json", beside[0].name)  # sorts by time


def test_write_failure_on_a_full_disk_reports_or_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(failure, "atomic_write_json", full)
    failure.write_failure(tmp_path, {"status": "failed"})
    assert "could not write the failure record" in capsys.readouterr().err
    with pytest.raises(OSError):
        failure.write_failure(tmp_path, {"status": "failed"}, raise_os_errors=True)


# ---- runtime.device -------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "native"), [
    ("flags : fpu sse avx2 fma avx512f avx512_bf16 amx_tile\n", True),
    ("flags : fpu sse avx2 amx_bf16 amx_tile\n", True),
    ("flags : fpu sse avx2 fma f16c\n", False),
])
def test_native_bf16_from_cpu_flags(monkeypatch: pytest.MonkeyPatch, flags: str, native: bool) -> None:
    read: list[str] = []

    def read_text(self: Path) -> str:
        read.append(str(self))
        return flags

    monkeypatch.setattr(device.Path, "read_text", read_text)
    assert device.cpu_has_native_bf16() is native
    assert read == ["/proc/cpuinfo"]


def test_native_bf16_is_false_without_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(self: Path) -> str:
        raise OSError("no /proc")

    monkeypatch.setattr(device.Path, "read_text", missing)
    assert device.cpu_has_native_bf16() is False


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_on_the_cpu_follows_native_bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    assert device.resolve_dtype("auto", "cpu") == ("bfloat16" if native else "float32")
    assert device.resolve_dtype("float32", "cpu") == "float32"  # an explicit dtype is kept as given
    assert device.resolve_dtype("bfloat16", "cpu") == "bfloat16"


def test_torch_dtype_names() -> None:
    torch = pytest.importorskip("torch")
    assert device.torch_dtype("float32") is torch.float32
    assert device.torch_dtype("bfloat16") is torch.bfloat16
    assert device.torch_dtype("float16") is torch.float16


def test_autocast_casts_only_with_a_dtype() -> None:
    torch = pytest.importorskip("torch")
    a = torch.ones(4, 4)
    with device.autocast("cpu", None):
        assert (a @ a).dtype is torch.float32
    with device.autocast("cpu", torch.bfloat16):
        assert (a @ a).dtype is torch.bfloat16
    with device.autocast("cpu", torch.float16):  # the dtype given, not the device's default
        assert (a @ a).dtype is torch.float16


def test_pick_device() -> None:
    torch = pytest.importorskip("torch")
    assert device.pick_device("cpu") == "cpu"
    assert device.pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SpecError, match="no CUDA device") as err:
            device.pick_device("cuda")
        assert err.value.one_line() == ("train.device is 'cuda' but no CUDA device is available "
                                        "(fix: set train.device=auto or cpu)")


@pytest.mark.parametrize("bf16", [True, False])
def test_cuda_choices_follow_the_gpu(monkeypatch: pytest.MonkeyPatch, bf16: bool) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: not bf16)  # the CPU's flags do not count
    assert device.pick_device("auto") == "cuda"
    assert device.pick_device("cuda") == "cuda"
    assert device.resolve_dtype("auto", "cuda") == ("bfloat16" if bf16 else "float32")
