"""Base vs tuned on the shipped lm-eval task: the embedded causal stand-in, instruction-tuned on SST-2.

Training pairs come from SST-2's train file ("Review: <sentence>\\nSentiment:" → "positive"/"negative", the
prompt the shipped task `peftbench_sst2` scores), written into the output folder; the run's own eval
set is a slice of SST-2's train file too (the dev set stays for lm-eval). Each method's record holds
lm-eval's accuracy on SST-2 dev for the untrained and the tuned model, with standard errors, and
McNemar's test of the two on the same items is printed. Results as JSON to --json.

    PYTHONPATH=src python scripts/measure_lm_eval.py --methods full,lora --out runs-lm-eval
    PYTHONPATH=src python scripts/measure_lm_eval.py --methods lora --epochs 2 --lr 1e-3 \
        --set method.r=16 --set 'method.target_modules=[query,key,value,dense]' --out runs-lm-eval
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

PROMPT = "Review: {sentence}\nSentiment:"


def instruction_pairs(sst2_train: Path, out: Path, start: int, n: int) -> Path:
    """Rows start..start+n of SST-2 train as prompt/completion pairs (JSON)."""
    with sst2_train.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[start:start + n]
    pairs = [{"prompt": PROMPT.format(sentence=r["sentence"].strip()),
              "completion": "positive" if r["label"] == "1" else "negative"} for r in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(pairs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("PEFTBENCH_SHARED_DATA", "../shared/data"))
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: each method's own)")
    ap.add_argument("--limit", type=int, default=None, help="lm-eval items (default: all 872 dev sentences)")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                    help="a spec override for every run, e.g. --set method.r=16 (repeatable)")
    ap.add_argument("--out", default="runs-lm-eval")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from importlib.metadata import version

    from peftbench import run
    from peftbench.records.io import environment
    from peftbench.reports.lm_eval_tables import paired_item_test

    data, out = Path(args.data).resolve(), Path(args.out)
    os.environ["PEFTBENCH_SHARED_DATA"] = str(data)
    train = instruction_pairs(data / "sst2" / "train.tsv", out / "data" / "train.json", 0, args.n_train)
    evalf = instruction_pairs(data / "sst2" / "train.tsv", out / "data" / "eval.json", args.n_train, 200)
    results = []
    for method in args.methods.split(","):
        t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        rec = run({"task": "instruction", "model": {"name_or_path": "embedded-causal"},
                   "data": {"train": str(train), "eval": str(evalf), "max_length": 96, "max_target_length": 4},
                   "method": {"name": method}, "train": {"epochs": args.epochs, "batch_size": 16, "lr": args.lr},
                   "evaluation": {"lm_eval": {"tasks": ["peftbench_sst2"], "limit": args.limit, "batch_size": 32}},
                   "save": "none"}, out, overrides=args.overrides, progress=False)
        task = (rec.get("lm_eval") or {}).get("tasks", {}).get("peftbench_sst2")
        if rec["status"] != "success" or task is None:
            print(method, rec["status"], rec.get("error"))
            continue
        test = paired_item_test(task["items"]["tuned"], task["items"]["base"])
        row = {"method": method, "run_id": rec["run_id"], "lr": rec["spec"]["train"]["lr"],
               "method_spec": rec["spec"]["method"], "epochs": rec["spec"]["train"]["epochs"], "n": task["n"],
               "base": task["base"], "tuned": task["tuned"], "delta": task["delta"], "mcnemar_tuned_vs_base": {k: test[k] for k in ("pvalue", "only_a", "only_b")},
               "perplexity": rec["metrics"]["perplexity"], "train_time_s": rec["train"]["time_s"],
               "lm_eval_time_s": rec["lm_eval"]["time_s"], "wall_s": time.perf_counter() - t0,
               "record_reused": rec["timestamps"]["finished"] < started,
               "adapter_check": rec["preflight"]["checks"]["lm_eval_adapter_active"]["max_abs_change"]}
        results.append(row)
        print(f"{method:5s} peftbench_sst2 acc base {task['base']['value']:.4f} ± {task['base']['stderr']:.4f} -> "
              f"tuned {task['tuned']['value']:.4f} ± {task['tuned']['stderr']:.4f} (n={task['n']}, "
              f"McNemar p={test['pvalue']:.3g}); train {row['train_time_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "what": "embedded-causal instruction-tuned on SST-2 train pairs, scored by lm-eval on peftbench_sst2 "
                    "(SST-2 dev, 2-way multiple choice, acc)",
            "n_train": args.n_train, "overrides": args.overrides,
            "machine": {k: v for k, v in environment().items() if k != "packages"},
            "lm_eval_version": version("lm_eval"), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
