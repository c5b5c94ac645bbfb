"""ROUGE of the warm-started MiniLM encoder-decoder (`embedded-seq2seq`) on SAMSum, before and
after one epoch of LoRA. Writes a JSON summary; the run's record goes under --out.

    PYTHONPATH=src python scripts/measure_embedded_seq2seq.py --n-train 2000 --n-eval 100 --out runs-measure
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("PEFTBENCH_SHARED_DATA", "../shared/data"))
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--max-target-length", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-repeat-ngram", type=int, default=3)
    ap.add_argument("--out", default="runs-measure")
    args = ap.parse_args()

    import torch

    from peftbench.config.spec import RunSpec
    from peftbench.core.runner import run
    from peftbench.models.loading import quiet_libraries
    from peftbench.tasks.base import evaluate_untrained

    quiet_libraries()
    torch.set_num_threads(args.threads)
    samsum = Path(args.data) / "samsum"
    spec = RunSpec.from_dict({
        "name": "embedded-seq2seq-samsum", "task": "summarization",
        "model": {"name_or_path": "embedded-seq2seq", "dtype": "float32"},
        "data": {"preset": "samsum", "train": str(samsum / "train.json"), "eval": str(samsum / "val.json"),
                 "n_train": args.n_train, "n_eval": args.n_eval, "max_length": args.max_length,
                 "max_target_length": args.max_target_length},
        "method": {"name": "lora", "r": args.r, "alpha": 2 * args.r},
        "train": {"epochs": 1, "batch_size": args.batch_size, "lr": args.lr, "num_threads": args.threads,
                  "log_every": 5},
        "generation": {"num_beams": 1, "max_new_tokens": args.max_target_length,
                       "no_repeat_ngram_size": args.no_repeat_ngram},
        "save": "none",
    }).resolved()

    # Before: the same model, data and decoding, untrained.
    t0 = time.perf_counter()
    before = evaluate_untrained(spec)
    print(f"before: rougeL={before['rougeL']:.4f} eval_loss={before['eval_loss']:.3f} "
          f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    record = run(spec, args.out, progress=True, force=True)
    after = record["metrics"]
    keys = ("rouge1", "rouge2", "rougeL", "rougeLsum", "eval_loss", "gen_len")
    summary = {
        "spec": spec.to_dict(), "run_id": record["run_id"],
        "before": {k: before[k] for k in keys}, "after": {k: after[k] for k in keys},
        "train_time_s": record["train"]["time_s"], "steps": record["train"]["steps"],
        "examples_before": before["predictions"]["pred"][:5],
        "examples_after": record["predictions"]["pred"][:5], "references": record["predictions"]["gold"][:5],
        "device": "cpu", "threads": args.threads,
    }
    from peftbench.records.io import atomic_write_json

    atomic_write_json(Path(args.out) / "embedded_seq2seq_rouge.json", summary)
    for k in keys:
        print(f"{k:10s} before {before[k]:.4f}  after {after[k]:.4f}")


if __name__ == "__main__":
    main()
