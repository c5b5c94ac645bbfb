"""Gathers what bench/gpu_suite.sh's steps left in its work folder into one results file, and prints a summary.

Run after every step (so a suite stopped at its time limit still leaves a complete file for the steps
done), with the standard library only (so it works before anything is installed). The file holds the
machine, each step's status, time and log, the figures each step measured, and the issue's targets:

- LoRA MFU >= 45 % and full fine-tuning MFU >= 40 % on the ~1B Llama-shaped model (bench/gpu_check.sh);
- memory counted by kind within 10 % of `torch.cuda.max_memory_allocated` (tests/test_cuda.py, whose
  memory test records its figures as JUnit properties);
- the demo's six methods all succeed on CUDA.

    python bench/gpu_suite_report.py WORK_DIR RESULTS_FILE [--summary]
"""

from __future__ import annotations

import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

LOG_CHARS = 20_000  # the end of each step's log kept in the file
TARGETS = {"lora_mfu": 0.45, "full_mfu": 0.40, "memory_tolerance": 0.10}
DEMO_METHODS = 6


def read_steps(work: Path) -> list[dict[str, Any]]:
    steps = []
    path = work / "steps.tsv"
    for line in path.read_text().splitlines() if path.is_file() else []:
        name, status, rc, seconds, limit, note = (line.split("\t") + [""] * 6)[:6]
        log = work / f"{name}.log"
        text = log.read_text(errors="replace") if log.is_file() else ""
        steps.append({"name": name, "status": status, "rc": int(rc) if rc.lstrip("-").isdigit() else None,
                      "seconds": float(seconds or 0), "limit_s": float(limit or 0), "note": note or None,
                      "log_tail": text[-LOG_CHARS:]})
    return steps


def json_rows(work: Path, step: str) -> list[dict[str, Any]]:
    """The JSON objects a step printed one per line (bench/gpu_check.sh prints one per method)."""
    log = work / f"{step}.log"
    rows = []
    for line in log.read_text(errors="replace").splitlines() if log.is_file() else []:
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def junit(path: Path) -> dict[str, Any] | None:
    """Counts and cases of a pytest --junitxml file: outcome, message and recorded properties of each."""
    if not path.is_file():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        return {"error": f"unreadable JUnit file: {err}"}
    cases, counts = [], {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for case in root.iter("testcase"):
        outcome, message = "passed", None
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = "failed" if kind == "failure" else kind
                message = (node.get("message") or node.text or "")[:2000]
                break
        counts[outcome] += 1
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message, "properties": props or None})
    return {"counts": counts, "cases": cases}


def demo_records(work: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted((work / "demo").rglob("result.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        train = r.get("train") or {}
        rows.append({"method": r.get("method"), "status": r.get("status"),
                     "accuracy": (r.get("metrics") or {}).get("accuracy"),
                     "device": (r.get("environment") or {}).get("gpu") or "cpu",
                     "compute_dtype": (r.get("precision") or {}).get("compute_dtype"),
                     "train_time_s": train.get("time_s"), "tokens_per_s": train.get("tokens_per_s"),
                     "mfu": train.get("mfu"), "peak_allocated_bytes": train.get("peak_memory_bytes"),
                     "by_kind_peak_bytes": (train.get("memory_by_kind") or {}).get("peak_bytes"),
                     "error": (r.get("error") or {}).get("message") if isinstance(r.get("error"), dict)
                     else r.get("error")})
    return rows


def verdict(value: float | None, ok: bool) -> dict[str, Any]:
    return {"value": value, "met": None if value is None else ok}


def targets(result: dict[str, Any]) -> dict[str, Any]:
    mfu = {r.get("method"): r.get("mfu") for r in result["gpu_check"] if not str(r.get("device", "")).startswith("cpu")}
    out: dict[str, Any] = {
        "lora_mfu_at_least_0.45": verdict(mfu.get("lora"), (mfu.get("lora") or 0) >= TARGETS["lora_mfu"]),
        "full_mfu_at_least_0.40": verdict(mfu.get("full"), (mfu.get("full") or 0) >= TARGETS["full_mfu"]),
    }
    ratios = {}
    for case in (result.get("cuda_tests") or {}).get("cases", []):
        props = case.get("properties") or {}
        if "by_kind_over_allocated" in props:
            ratios[props.get("method")] = float(props["by_kind_over_allocated"])
    out["memory_by_kind_within_10pct"] = {
        "value": ratios or None,
        "met": None if not ratios else all(abs(r - 1) <= TARGETS["memory_tolerance"] for r in ratios.values())}
    demo = result["demo"]
    ok = [r for r in demo if r.get("status") == "success"]
    out["demo_six_methods_succeed"] = {"value": f"{len(ok)}/{DEMO_METHODS}" if demo else None,
                                       "met": None if not demo else len(ok) == DEMO_METHODS}
    return out


def build(work: Path) -> dict[str, Any]:
    env = work / "env.json"
    result: dict[str, Any] = {
        "suite": "bench/gpu_suite.sh", "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": json.loads(env.read_text()) if env.is_file() else None,
        "steps": read_steps(work),
        "gpu_check": json_rows(work, "gpu-check"),
        "gpu_check_compiled": json_rows(work, "gpu-check-compiled"),
        "cuda_tests": junit(work / "cuda-tests.xml"),
        "tiny_tests_on_gpu": junit(work / "tiny-tests.xml"),
        "demo": demo_records(work),
    }
    result["targets"] = targets(result)
    return result


def summary(result: dict[str, Any]) -> str:
    machine = result.get("machine") or {}
    lines = [f"gpu_suite: {machine.get('gpu') or 'no CUDA device'}; torch {machine.get('torch')}, "
             f"transformers {machine.get('transformers')}, peft {machine.get('peft')}"]
    for s in result["steps"]:
        lines.append(f"  {s['name']:<20} {s['status']:<8} {s['seconds']:6.0f} s" + (f"  ({s['note']})" if s["note"] else ""))
    for label, rows in (("gpu_check", result["gpu_check"]), ("gpu_check compiled", result["gpu_check_compiled"])):
        for r in rows:
            lines.append(f"  {label}: {r.get('method')}: {r.get('tokens_per_s')} tokens/s, "
                         f"{r.get('achieved_tflops')} TFLOP/s, MFU {r.get('mfu')}, peak {r.get('peak_memory_gib')} GiB")
    for name in ("cuda_tests", "tiny_tests_on_gpu"):
        if result.get(name) and "counts" in result[name]:
            lines.append(f"  {name}: " + ", ".join(f"{v} {k}" for k, v in result[name]["counts"].items() if v))
            lines += [f"    {c['outcome']}: {c['test']}: {(c['message'] or '').splitlines()[0][:160] if c['message'] else ''}"
                      for c in result[name]["cases"] if c["outcome"] in ("failed", "error")]
    for r in result["demo"]:
        lines.append(f"  demo {r['method']}: {r['status']}, accuracy {r['accuracy']}, {r['device']}")
    for name, t in result["targets"].items():
        mark = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        lines.append(f"  target {name}: {mark} ({t['value']})")
    return "\n".join(lines)


def main() -> None:
    work, dest = Path(sys.argv[1]), Path(sys.argv[2])
    result = build(work)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
    os.replace(tmp, dest)
    if "--summary" in sys.argv[3:]:
        print(summary(result))


if __name__ == "__main__":
    main()
