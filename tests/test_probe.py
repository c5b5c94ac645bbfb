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
