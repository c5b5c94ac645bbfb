"""The CPU-side parts of the CUDA suite (docs/gpu.md): the repacked wheels are valid wheels (RECORD matches
their files, the version is relabelled everywhere, bitsandbytes keeps only its CPU and CUDA 13.0 libraries),
the fp16 weights come back as fp32, and the results file judges each target from the steps' outputs."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wheels = bench_module("gpu_wheels")
report = bench_module("gpu_suite_report")


def fake_bnb(tmp_path: Path) -> Path:
    libs = ["cpu", "cuda118", "cuda128", "cuda130", "cuda132", "rocm64"]
    files = {f"bitsandbytes/libbitsandbytes_{lib}.so": lib.encode() * 10 for lib in libs}
    files["bitsandbytes/__init__.py"] = b"x = 1\n"
    files["bitsandbytes-0.50.2.dist-info/METADATA"] = b"Metadata-Version: 2.1\nName: bitsandbytes\nVersion: 0.50.2\n"
    files["bitsandbytes-0.50.2.dist-info/WHEEL"] = b"Wheel-Version: 1.0\nTag: py3-none-manylinux_2_24_x86_64\n"
    return wheels.write_wheel(tmp_path / "in", "bitsandbytes", "0.50.2", "py3-none-manylinux_2_24_x86_64", files)


def test_a_slim_bitsandbytes_wheel_keeps_cpu_and_cuda_13_0_and_a_matching_record(tmp_path: Path) -> None:
    path = wheels.slim_bnb(fake_bnb(tmp_path), tmp_path / "out")
    assert path.name == "bitsandbytes-0.50.2+cu13-py3-none-manylinux_2_24_x86_64.whl"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        libs = sorted(n.split("_", 1)[1] for n in names if n.endswith(".so"))
        assert libs == ["cpu.so", "cuda130.so"]
        info = "bitsandbytes-0.50.2+cu13.dist-info/"
        assert b"\nVersion: 0.50.2+cu13\n" in zf.read(info + "METADATA")
        record = zf.read(info + "RECORD").decode().splitlines()
        assert {line.split(",")[0] for line in record} == names
        for line in record:
            name, digest, size = line.split(",")
            if name == info + "RECORD":
                assert digest == size == ""
                continue
            data = zf.read(name)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert int(size) == len(data)


def test_a_bitsandbytes_wheel_without_cuda_13_0_is_refused(tmp_path: Path) -> None:
    files = {"bitsandbytes/libbitsandbytes_cuda128.so": b"x", "bitsandbytes-0.45.0.dist-info/METADATA": b"Version: 0.45.0\n"}
    old = wheels.write_wheel(tmp_path, "bitsandbytes", "0.45.0", "py3-none-any", files)
    with pytest.raises(SystemExit, match=r"no CUDA 13\.0 library"):
        wheels.slim_bnb(old, tmp_path / "out")


def test_weights_stored_in_fp16_come_back_in_fp32() -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load, save

    weights = {"w": torch.tensor([0.1, -3.25, 511.0]), "ids": torch.tensor([1, 2, 3])}

    half = load(wheels.safetensors_as(save(weights), "float16"))
    assert half["w"].dtype == torch.float16 and half["ids"].dtype == torch.int64
    back = load(wheels.safetensors_as(wheels.safetensors_as(save(weights), "float16"), "float32"))
    assert back["w"].dtype == torch.float32
    torch.testing.assert_close(back["w"], weights["w"], rtol=1e-3, atol=0)
    assert back["ids"].tolist() == [1, 2, 3]


def work_folder(tmp_path: Path, lora_mfu: float, full_mfu: float, ratios: dict[str, float],
                statuses: list[str]) -> Path:
    tmp_path.mkdir()
    (tmp_path / "steps.tsv").write_text("env\tok\t0\t2.5\t60\t\ngpu-check\tok\t0\t80\t240\t\n"
                                        "demo\ttimeout\t124\t240\t240\tstopped at its limit of 240s\n")
    rows = [{"method": "lora", "mfu": lora_mfu, "device": "NVIDIA H100 80GB HBM3"},
            {"method": "full", "mfu": full_mfu, "device": "NVIDIA H100 80GB HBM3"}]
    (tmp_path / "gpu-check.log").write_text("loading\n" + "\n".join(json.dumps(r) for r in rows) + "\nmethod ...\n")
    failure = '<failure message="off"/>'
    cases = "".join(
        f'<testcase classname="tests.test_cuda" name="test_memory[{m}]" time="1.5"><properties>'
        f'<property name="method" value="{m}"/><property name="by_kind_over_allocated" value="{r}"/>'
        f"</properties>{'' if abs(r - 1) <= 0.1 else failure}</testcase>"
        for m, r in ratios.items())
    (tmp_path / "cuda-tests.xml").write_text(f'<testsuites><testsuite name="pytest">{cases}'
                                             '<testcase classname="tests.test_cuda" name="test_sdpa">'
                                             '<skipped message="no bf16"/></testcase></testsuite></testsuites>')
    for i, status in enumerate(statuses):
        run = tmp_path / "demo" / f"demo-{i}"
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({"method": f"m{i}", "status": status,
                                                     "metrics": {"accuracy": 0.8}, "train": {}}))
    return tmp_path


def test_the_results_file_judges_each_target_from_the_steps_outputs(tmp_path: Path) -> None:
    met = report.build(work_folder(tmp_path / "a", 0.47, 0.41, {"full": 1.04, "lora": 0.93}, ["success"] * 6))
    assert {k: t["met"] for k, t in met["targets"].items()} == dict.fromkeys(met["targets"], True)
    assert met["targets"]["memory_by_kind_within_10pct"]["value"] == {"full": 1.04, "lora": 0.93}
    assert met["cuda_tests"]["counts"] == {"passed": 2, "failed": 0, "error": 0, "skipped": 1}
    assert [(s["name"], s["status"], s["rc"]) for s in met["steps"]] == [
        ("env", "ok", 0), ("gpu-check", "ok", 0), ("demo", "timeout", 124)]
    missed = report.build(work_folder(tmp_path / "b", 0.449, 0.39, {"full": 1.11}, ["success"] * 5 + ["failed"]))
    assert {k: t["met"] for k, t in missed["targets"].items()} == dict.fromkeys(missed["targets"], False)
    assert missed["targets"]["demo_six_methods_succeed"]["value"] == "5/6"
    assert missed["cuda_tests"]["counts"]["failed"] == 1


def test_targets_not_measured_are_said_so_not_failed(tmp_path: Path) -> None:
    (tmp_path / "gpu-check.log").write_text('{"method": "lora", "mfu": 0.9, "device": "cpu (TINY smoke test)"}\n')
    result = report.build(tmp_path)
    assert {k: t["met"] for k, t in result["targets"].items()} == dict.fromkeys(result["targets"], None)
    assert "not measured" in report.summary(result)
