"""Record fidelity across code changes: run fixed-seed runs, keep their records, compare two such sets.

A change that should not alter behaviour (a refactor, a cleanup) must leave every record field equal
except those that measure the machine or the moment: timestamps, timings, throughput, memory, load,
MFU and the environment block. This script produces a normalised snapshot of the records of

- the LoRA-vs-IA3 study (`examples/studies/lora_vs_ia3.yaml`) on tiny random models (`--model-override tiny`):
  classification (DistilBERT), summarization (T5) and instruction tuning (GPT-NeoX), LoRA at five ranks and
  IA3, at two learning rates, fixed seeds;
- optionally the offline demo (`--demo`, about three minutes): the six seed methods on MiniLM;

and compares two snapshots field by field.

    python bench/records_equal.py capture --out /tmp/before.json [--demo]
    # ... change the code ...
    python bench/records_equal.py capture --out /tmp/after.json [--demo]
    python bench/records_equal.py compare /tmp/before.json /tmp/after.json

`compare` prints every differing field and exits 1 when any differs beyond a relative 1e-4.
The tiny runs use one thread, so their floats are equal to the last digit kept (6 decimals).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Fields that measure the machine, the moment or the process, not the computation.
VOLATILE = re.compile(
    r"(^|\.)("
    r"created|finished|started|timestamp|time_s|.*_time_s|.*_s$|wall.*|.*per_s|throughput.*|tokens_per_s|"
    r"samples_per_s|.*memory.*|.*mem.*|peak.*|.*rss.*|mfu.*|.*flops_per_s|.*gflops.*|environment|env|"
    r"overhead.*|load.*|hostname|git_commit|pid|duration.*|elapsed.*|cpu_heap|gemm_peak.*|peak_tflops.*|"
    r"harness_overhead.*|eval_time.*|train_time.*|step_times.*|.*_seconds|time|threads|num_threads|.*tflops.*"
    r")$"
)
# Two threads may sum in another order from run to run (the demo picks its own thread count): floats
# this close are listed apart and do not fail the comparison.
REL_TOL = 1e-4
# Paths that hold the temporary folder the runs were written to.
TMP = re.compile(r"/tmp/[^\"']*?records_equal[^/\"']*")


def _normalise(value: Any, path: str = "") -> Any:
    if path.endswith("target_modules") and isinstance(value, list):
        return sorted(value)  # peft keeps them as a set: their order differs between processes
    if isinstance(value, dict):
        return {k: _normalise(v, f"{path}.{k}" if path else k) for k, v in sorted(value.items())
                if not VOLATILE.search(f"{path}.{k}" if path else k)}
    if isinstance(value, list):
        return [_normalise(v, path) for v in value]
    if isinstance(value, str):
        return TMP.sub("<tmp>", value)
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 6)
    return value


def _records(folder: Path) -> dict[str, Any]:
    out = {}
    for path in sorted(folder.rglob("result.json")):
        record = json.loads(path.read_text())
        key = f"{record.get('spec', {}).get('name', '')}|{record.get('run_id')}"
        out[key] = _normalise(record)
    return out


def _peftbench(*args: str, cwd: Path) -> None:
    cmd = [sys.executable, "-m", "peftbench", *args]
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def capture(out: Path, demo: bool) -> None:
    # One fixed folder: data paths, and so run ids (which hash the spec), are the same in every capture.
    tmp_path = Path(tempfile.gettempdir()) / "records_equal_work"
    shutil.rmtree(tmp_path, ignore_errors=True)
    tmp_path.mkdir(parents=True)
    try:
        # One thread: the same reductions in the same order in every capture, whatever the load.
        _peftbench("--debug", "sweep", "--config", str(ROOT / "examples" / "studies" / "lora_vs_ia3.yaml"),
                   "--model-override", "tiny", "--set", "train.num_threads=1", "--out", str(tmp_path / "lora_vs_ia3"),
                   cwd=ROOT)
        snapshot = {"lora_vs_ia3_tiny": _records(tmp_path / "lora_vs_ia3")}
        if demo:
            _peftbench("demo", "--out", str(tmp_path / "demo"), "--quiet", cwd=tmp_path)
            snapshot["demo"] = _records(tmp_path / "demo")
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
    out.write_text(json.dumps(snapshot, indent=1, sort_keys=True))
    print(f"{sum(len(v) for v in snapshot.values())} records -> {out}")


def _diff(a: Any, b: Any, path: str, found: list[str], close: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                found.append(f"{path}.{key}: only in {'after' if key not in a else 'before'}")
            else:
                _diff(a[key], b[key], f"{path}.{key}", found, close)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{path}[{i}]", found, close)
    elif a == b:
        return
    elif isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9):
        close.append(f"{path}: {a} ~ {b}")
    else:
        found.append(f"{path}: {json.dumps(a)[:120]} != {json.dumps(b)[:120]}")


def compare(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    found: list[str] = []
    close: list[str] = []
    _diff(a, b, "", found, close)
    n = sum(len(v) for v in a.values())
    fields = sum(len(json.dumps(r)) for v in a.values() for r in v.values())
    for line in close:
        print(f"close: {line}")
    for line in found:
        print(f"DIFFERENT: {line}")
    print(f"{n} records compared ({fields:,} characters of normalised fields): "
          f"{len(found)} different, {len(close)} equal only within a relative {REL_TOL:g}")
    return 1 if found else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("capture")
    cap.add_argument("--out", type=Path, required=True)
    cap.add_argument("--demo", action="store_true", help="Also run the offline demo (about three minutes).")
    cmp = sub.add_parser("compare")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "capture":
        capture(args.out, args.demo)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
