"""`peftbench profile` on tiny models: real training steps and forwards in their own processes,
token counts, merged vs unmerged outputs, failures as rows, plots, report section, bad input."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import REPO, load_schema, tiny_spec
from peftbench.cli.app import cli

BATCH, LENGTHS, STEPS = 4, (16, 32), 2


@pytest.fixture(scope="module")
def profiled(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """full and lora × two lengths × one batch size, through the CLI: (out folder, profile.json, stdout)."""
    out = tmp_path_factory.mktemp("profile")
    result = CliRunner().invoke(cli, [
        "profile", "--model", str(tiny_bert), "--methods", "full,lora", "--lengths", ",".join(map(str, LENGTHS)),
        "--batch-sizes", str(BATCH), "--steps", str(STEPS), "--warmup", "1", "--latency-calls", "3",
        "--dtype", "float32", "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "profile.json").read_text()), result.stdout


def _rows(data: dict[str, Any], method: str) -> list[dict[str, Any]]:
    return [r for r in data["rows"] if r["method"] == method]


def test_every_configuration_trains_the_counted_tokens(profiled: tuple[Path, dict[str, Any], str]) -> None:
    _, data, stdout = profiled
    assert [(r["method"], r["length"], r["batch_size"]) for r in data["rows"]] == [
        ("full", 16, BATCH), ("full", 32, BATCH), ("lora", 16, BATCH), ("lora", 32, BATCH)]
    for r in data["rows"]:
        assert r["status"] == "ok" and r["error"] is None, r
        # Counted by the training loop itself: exactly batch × length per step, no padding.
        assert r["tokens_per_step"] == BATCH * r["length"] and r["padding_free"] is True
        assert r["tokens"] == BATCH * r["length"] * STEPS and r["steps"] == STEPS and r["warmup_steps"] == 1
        assert len(r["step_times_s"]) == STEPS and r["time_s"] == pytest.approx(sum(r["step_times_s"]))
        assert r["tokens_per_s"] > 0 and r["tokens_per_s"] == pytest.approx(r["tokens"] / r["time_s"])
        assert r["samples_per_s"] == pytest.approx(BATCH * STEPS / r["time_s"])
        assert r["memory"]["kind"] == "cpu_rss_growth" and r["peak_memory_bytes"] == r["memory"]["peak_bytes"] >= 0
        assert r["threads"] == 1 and r["compute_dtype"] == "float32"
    for method in ("full", "lora"):
        short, long_ = _rows(data, method)
        assert long_["tokens_per_step"] == 2 * short["tokens_per_step"]
    full, lora = _rows(data, "full")[0], _rows(data, "lora")[0]
    assert full["trainable_params"] == full["total_params"] > lora["trainable_params"] > 0
    # The printed table: one line per row, the throughput as measured.
    lines = [ln.split() for ln in stdout.splitlines() if ln.startswith(("full ", "lora "))]
    assert [(ln[0], int(ln[1]), ln[3]) for ln in lines] == [(r["method"], r["length"], "ok") for r in data["rows"]]
    assert [float(ln[4].replace(",", "")) for ln in lines] == pytest.approx(
        [round(r["tokens_per_s"]) for r in data["rows"]])


def test_merged_outputs_equal_unmerged_and_full_has_nothing_to_merge(
        profiled: tuple[Path, dict[str, Any], str]) -> None:
    _, data, _ = profiled
    for r in _rows(data, "lora"):
        assert r["merge"] == "merged" and r["latency_unmerged_ms"] > 0 and r["latency_merged_ms"] > 0
        # The trained adapter moves the outputs, and the merged model gives the same outputs.
        assert r["adapter_max_abs_effect"] > 1e-4
        assert r["merge_max_abs_diff"] < 1e-5 and r["merge_max_abs_diff"] < r["adapter_max_abs_effect"] / 100
    for r in _rows(data, "full"):
        assert r["merge"] == "n/a" and r["latency_unmerged_ms"] > 0
        assert r["latency_merged_ms"] is None and r["merge_max_abs_diff"] is None


def test_json_is_valid_documented_and_plots_decode(profiled: tuple[Path, dict[str, Any], str]) -> None:
    import jsonschema
    from PIL import Image

    out, data, _ = profiled
    jsonschema.validate(data, load_schema("profile"))
    assert data["kind"] == "peftbench-profile" and data["environment"]["packages"]["torch"]
    assert data["settings"]["lengths"] == list(LENGTHS) and data["timestamps"]["finished"]
    doc = (REPO / "docs" / "profile.md").read_text()
    documented = {name for cell in re.findall(r"^\| (.+?) \|", doc, flags=re.M)
                  for name in re.findall(r"`([a-z_0-9]+)`", cell)}
    keys = set(data) | set(data["settings"]) | {k for r in data["rows"] for k in r}
    assert not keys - documented, sorted(keys - documented)
    md = (out / "profile.md").read_text()
    for name in ("throughput", "memory", "latency"):
        png = out / "plots" / f"profile-{name}.png"
        assert f"](plots/profile-{name}.png)" in md
        with Image.open(png) as img:
            assert img.format == "PNG" and img.width > 100 and img.height > 100


def test_instruction_task_on_a_tiny_causal_lm(tmp_path: Path) -> None:
    from peftbench.profiling.profile import profile

    data = profile("tiny:gpt2", ["lora"], [16], [2], task="instruction", steps=1, latency_calls=2, dtype="float32",
                   num_threads=1, out_dir=tmp_path)
    (row,) = data["rows"]
    assert row["status"] == "ok", row
    assert row["tokens"] == 2 * 16 and row["padding_free"] and row["tokens_per_s"] > 0
    assert row["merge"] == "merged" and row["merge_max_abs_diff"] < 1e-4 < row["adapter_max_abs_effect"]


def test_a_failed_configuration_is_a_row_not_a_crash(tiny_bert: Path, tmp_path: Path) -> None:
    from peftbench.profiling.profile import profile
    from peftbench.reports.cost_curves import write_profile_report

    # Real processes stopped by the per-configuration timeout (loading alone takes longer).
    data = profile(str(tiny_bert), ["lora"], [16, 32], [2], steps=1, dtype="float32", num_threads=1,
                   out_dir=tmp_path, timeout_s=0.01)
    write_profile_report(data, tmp_path)
    assert [(r["length"], r["status"]) for r in data["rows"]] == [(16, "timeout"), (32, "timeout")]
    assert json.loads((tmp_path / "profile.json").read_text())["rows"] == data["rows"]
    assert "timeout" in (tmp_path / "profile.md").read_text()


def test_a_measurement_is_a_timeout_when_its_value_arrives_after_the_deadline() -> None:
    import math
    import time

    from peftbench.core.isolate import call_isolated

    assert call_isolated(math.sqrt, (4.0,), name="peftbench-test-sqrt", timeout_s=60).value == 2.0
    # The value comes 0.1 s after the start, past a 0.05 s deadline (inside one 0.2 s wait): a timeout.
    late = call_isolated(time.sleep, (0.1,), name="peftbench-test-sleep", timeout_s=0.05)
    assert (late.reason, late.message, late.value) == ("timeout", "timeout after 0.05s", None)


def test_longer_lengths_are_skipped_after_running_out_of_memory(tiny_bert: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from peftbench.core import isolate
    from peftbench.profiling.profile import measure, profile

    calls = []

    def out_of_memory(target: Any, args: tuple[Any, ...], **_kw: Any) -> isolate.Returned:
        if target is not measure:  # the worker process's start
            return isolate.Returned(value=0)
        calls.append(args[1:3])
        return isolate.Returned(reason="oom", message="out of memory during training")

    monkeypatch.setattr(isolate, "call_isolated", out_of_memory)
    data = profile(str(tiny_bert), ["full", "lora"], [16, 32, 64], [2], out_dir=tmp_path)
    assert calls == [(16, 2), (16, 2)]  # one measured length per method; the longer ones are not tried
    assert [(r["method"], r["length"], r["status"]) for r in data["rows"]] == [
        ("full", 16, "oom"), ("full", 32, "skipped"), ("full", 64, "skipped"),
        ("lora", 16, "oom"), ("lora", 32, "skipped"), ("lora", 64, "skipped")]
    assert data["rows"][1]["error"] == "out of memory at length 16"


def test_report_adds_a_cost_curves_section(profiled: tuple[Path, dict[str, Any], str], tiny_bert: Path,
                                           sentiment_files: tuple[Path, Path], tmp_path: Path) -> None:
    from PIL import Image

    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run

    runs = tmp_path / "runs"
    run(RunSpec.from_dict(tiny_spec(tiny_bert, sentiment_files, "lora", max_steps=2, num_threads=1)), runs,
        progress=False, log=lambda _m: None)
    (runs / "profile").mkdir()
    (runs / "profile" / "profile.json").write_text((profiled[0] / "profile.json").read_text())
    (runs / "profile-notes.json").write_text('{"kind": "something else"}')  # not a profile: ignored
    result = CliRunner().invoke(cli, ["report", str(runs), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.count("## Cost curves") == 1 and "](plots/cost-curves-1-latency.png)" in md
    page = (tmp_path / "rep" / "report.html").read_text()
    section = page[page.index("<section id='cost-curves'>"):]
    section = section[:section.index("</section>")]
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', section)
    assert len(images) == 3 and section.count("<tr>") == 1 + 4  # header + one row per configuration
    for b64 in images:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as img:
            assert img.format == "PNG"


def test_profile_prints_a_line_as_each_configuration_starts_and_ends(tiny_bert: Path, tmp_path: Path) -> None:
    """The reported case: the default methods on a tiny BERT at lengths 16,32 (smallest steps) finish,
    with the worker start and every configuration's start and end on stderr, in order."""
    from peftbench.methods.base import SEED_METHODS

    result = CliRunner().invoke(cli, [
        "profile", "--model", str(tiny_bert), "--lengths", "16,32", "--batch-sizes", "2", "--steps", "1",
        "--warmup", "1", "--latency-calls", "1", "--dtype", "float32", "--threads", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    configs = [(m, n) for m in SEED_METHODS for n in (16, 32)]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("[profile]")]
    assert lines[0] == f"[profile] {len(configs)} configurations, each in its own process, at most 300 s each"
    assert "starting the worker process" in lines[1] and "worker process ready after" in lines[2]
    expected = []
    for k, (method, length) in enumerate(configs, start=1):
        head = f"[profile] {k}/{len(configs)} {method} length {length} batch 2: "
        expected += [head + "started", head + "ok"]
    got = [ln if ln.endswith("started") else ln.split(": ")[0] + ": ok" * (" tokens/s" in ln) for ln in lines[3:]]
    assert got == expected
    rows = json.loads((tmp_path / "profile.json").read_text())["rows"]
    assert [(r["method"], r["length"], r["status"]) for r in rows] == [(m, n, "ok") for m, n in configs]


def test_a_spent_budget_skips_the_configurations_left(tiny_bert: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [
        "profile", "--model", str(tiny_bert), "--methods", "lora,ia3", "--lengths", "16,32", "--steps", "1",
        "--budget", "0.001", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output  # nothing measured
    data = json.loads((tmp_path / "profile.json").read_text())
    assert data["settings"]["budget_s"] == 0.001 and data["settings"]["timeout_s"] == 300
    assert [(r["status"], r["error"]) for r in data["rows"]] == [("skipped", "time budget of 0.001 s spent")] * 4
    ends = [ln for ln in result.stderr.splitlines() if "skipped: time budget" in ln]
    assert [ln.split(":")[0] for ln in ends] == [f"[profile] {k}/4 {m} length {n} batch 8"
                                                 for k, (m, n) in enumerate(
                                                     [("lora", 16), ("lora", 32), ("ia3", 16), ("ia3", 32)], 1)]


@pytest.mark.parametrize(("args", "expected"), [
    (["--methods", "full,lroa"], "Unknown method 'lroa'. Did you mean: "),
    (["--methods", ","], "--methods names no method"),
    (["--lengths", "64,abc"], "invalid --lengths '64,abc'"),
    (["--lengths", "0,64"], "invalid --lengths '0,64'"),
    (["--batch-sizes", "8;16"], "invalid --batch-sizes '8;16'"),
    (["--lengths", "64,1024"], "--lengths 1024 is longer than the 512 positions"),
    (["--task", "summarise"], "Did you mean: summarization?"),
    (["--task", "summarization"], "task 'summarization' cannot run on a encoder model"),
    (["--model", "tiny:brt"], "Unknown tiny model family 'brt'. Did you mean: bert"),
    (["--model", "embedded-causal"], "task 'classification' cannot run on 'embedded-causal'"),
    (["--steps", "0"], "0 is not in the range x>=1"),
    (["--warmup", "11"], "11 is not in the range 1<=x<=10"),
    (["--timeout", "0"], "0 is not in the range x>0"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_bert: Path, tmp_path: Path, args: list[str], expected: str) -> None:
    base = {"--model": str(tiny_bert), "--methods": "lora", "--lengths": "16", "--out": str(tmp_path / "out")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    result = CliRunner().invoke(cli, ["profile", *[x for kv in base.items() for x in kv]])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("peftbench: error:") and expected in lines[0], result.output
    assert not (tmp_path / "out").exists()  # refused before anything is written or measured
