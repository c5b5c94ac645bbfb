"""Forgetting and weight change of real runs: MiniLM on SST-2 with AG News as retention data.

Each method trains on SST-2 and saves its weights; before and after training, a linear probe on
the model's features is scored on AG News topics (the retention data), and ΔW is measured per
layer. Ends with `peftbench report`, whose forgetting and per-layer sections plot the result.

    PYTHONPATH=src python scripts/measure_forgetting.py --methods lora,full,ia3 --out runs-forgetting
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path


def retention_file(ag_news: Path, out: Path, n: int) -> Path:
    """AG News ships without a header row (label, title, description): write text,label."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with ag_news.open(newline="", encoding="utf-8") as src, out.open("w", newline="", encoding="utf-8") as dst:
        writer = csv.writer(dst)
        writer.writerow(["text", "label"])
        for i, row in enumerate(csv.reader(src)):
            if i >= n:
                break
            writer.writerow([f"{row[1]}. {row[2]}", row[0]])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("PEFTBENCH_SHARED_DATA", "../shared/data"))
    ap.add_argument("--methods", default="lora,full,ia3")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-retention", type=int, default=800)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", default="runs-forgetting")
    args = ap.parse_args()

    from peftbench import report, sweep

    data, out = Path(args.data), Path(args.out)
    ret = retention_file(data / "ag_news" / "test.csv", out / "retention-ag_news.csv", 4 * args.n_retention)
    records = sweep({
        "name": "forgetting",
        "defaults": {
            "model": {"name_or_path": "embedded"},
            "data": {"preset": "sst2", "train": str(data / "sst2" / "train.tsv"), "eval": str(data / "sst2" / "dev.tsv"),
                     "n_train": args.n_train, "max_length": 128},
            "train": {"epochs": args.epochs, "batch_size": 16, "group_by_length": True},
            "retention": {"file": str(ret), "text_column": "text", "label_column": "label", "n": args.n_retention},
            "save": "adapter",
        },
        "methods": args.methods.split(","),
    }, out)
    for r in records:
        ret_ = r.get("retention") or {}
        probe = ret_.get("probe") or {}
        summary = (r.get("diagnostics") or {}).get("summary") or {}
        print(f"{r['method']:6s} {r['status']:8s} acc={r.get('metrics', {}).get('accuracy')} "
              f"forgetting={ret_.get('forgetting')} probe {probe.get('before_accuracy')} -> {probe.get('after_accuracy')} "
              f"drift={ret_.get('drift')} mean_rel_dW={summary.get('mean_rel_norm')} "
              f"eff_rank={summary.get('mean_effective_rank')} intruders={summary.get('intruders_total')}")
    print("report:", report(records, out / "report"))


if __name__ == "__main__":
    main()
