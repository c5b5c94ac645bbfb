"""The batch-size probe: real training steps in separate processes, a limit that bites, JSON + table."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from peftbench.cli.app import cli
from peftbench.errors import SpecError
from peftbench.profiling.probe import parse_bytes, probe


def test_parse_bytes() -> None:
    assert parse_bytes("2GB") == 2 * 1024**3
    assert parse_bytes("512 MiB") == 512 * 1024**2
    assert parse_bytes("1000") == 1000
    for bad in ("", "-1GB", "lots", "2XB"):
        with pytest.raises(SpecError):
            parse_bytes(bad)


def test_probe_doubles_until_the_limit(tiny_bert, tmp_path) -> None:
    result = probe(str(tiny_bert), ["lora"], 32, max_batch=4, dtype="float32", device="cpu")
    (lora,) = result["methods"]
    assert [t["batch_size"] for t in lora["trials"]] == [1, 2, 4]
    assert lora["largest_batch_size"] == 4 and all(t["ok"] for t in lora["trials"])
    assert all(t["peak_bytes"] >= t["baseline_bytes"] > 0 for t in lora["trials"])
    # A limit below what even batch size 1 needs: nothing fits, and the trial says why.
    tight = probe(str(tiny_bert), ["lora"], 32, max_batch=4, dtype="float32", device="cpu",
                  memory_limit=lora["trials"][0]["peak_bytes"] // 2)
    (t_lora,) = tight["methods"]
    assert t_lora["largest_batch_size"] is None
    assert [t["error"] for t in t_lora["trials"]] == ["over the memory limit"]


def test_probe_cli_writes_json_and_table(tiny_bert, tmp_path) -> None:
    out = tmp_path / "probe.json"
    result = CliRunner().invoke(cli, ["probe", "--model", str(tiny_bert), "--methods", "full,lora", "--max-length",
                                      "16", "--max-batch", "2", "--device", "cpu", "--dtype", "float32",
                                      "--memory-limit", "64GB", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [m["method"] for m in data["methods"]] == ["full", "lora"]
    assert data["memory_limit_bytes"] == 64 * 1024**3 and data["memory_kind"] == "cpu_peak_rss"
    lines = [line for line in result.stdout.splitlines() if line.startswith(("full", "lora"))]
    assert len(lines) == 2 and all(line.split()[1] == "2" for line in lines)


def test_probe_peak_refreshes_and_shows_the_cache(tmp_path, monkeypatch) -> None:
    from peftbench.perf import peak

    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    key = peak.machine_key("float32", 1)
    other = "0123456789ab-t4-torch0-bfloat16"
    peak.write_cache({key: {"flops": 6.5e9, "measured": "long ago"},  # stale, from before the load fields
                      other: {"flops": 1e12, "measured": "elsewhere"}})
    monkeypatch.setattr(peak, "busy_reason", lambda load, threads: None)  # judged quiet: the probe is cached
    result = CliRunner().invoke(cli, ["probe", "--peak", "--dtype", "float32", "--threads", "1"])
    assert result.exit_code == 0, result.output
    cache = peak.read_cache()
    fresh = cache[key]
    assert fresh["flops"] > 6.5e9 and fresh["measured"] != "long ago" and fresh["threads"] == 1
    assert cache[other]["flops"] == 1e12  # other machines' entries stay
    rows = {line.split()[-1]: line for line in result.stdout.splitlines() if line.endswith(("float32", "bfloat16"))}
    assert f"{fresh['flops'] / 1e12:.4g}" in rows[key]
    assert rows[other].split()[3:8] == ["elsewhere", "-", "-", "-", "-"]  # an entry without load fields


def test_probe_peak_on_a_busy_machine_keeps_the_cache(tmp_path, monkeypatch) -> None:
    from peftbench.perf import peak

    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(peak, "busy_reason", lambda load, threads: "1.9 of 2 cores busy with other work")
    result = CliRunner().invoke(cli, ["probe", "--peak", "--dtype", "float32", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "not cached: 1.9 of 2 cores busy with other work" in result.output
    assert peak.read_cache() == {}


def test_probe_needs_model_or_peak() -> None:
    result = CliRunner().invoke(cli, ["probe"])
    assert result.exit_code == 2 and "--model" in result.output and "--peak" in result.output
    bad = CliRunner().invoke(cli, ["probe", "--peak", "--threads", "0"])
    assert bad.exit_code == 2 and "invalid --threads '0'" in bad.output
