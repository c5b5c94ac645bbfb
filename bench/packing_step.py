"""Padded against packed training steps on real SST-2 batches, side by side in one process.

The model is built as a run builds it (`step_time.build`: dtype policy, CPU ops); the batches are the
first `--batches` batches of 16 a run would draw from the first 2,000 SST-2 training sentences. Each
variant runs `--rounds` times, alternating, so that a noisy machine slows both alike; the script prints
milliseconds per step (best round) and the padded/packed ratio, with the tokens each variant computes.

    python bench/packing_step.py --method full
    python bench/packing_step.py --method lora --optimizer per-tensor
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_time import build
from vs_seed_recipe import DATA


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="lora")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--optimizer", choices=("fused", "per-tensor"), default="fused",
                    help="torch's fused AdamW (what a run uses) or the per-tensor loop")
    args = ap.parse_args()
    sst2 = DATA / "sst2" / "train.tsv"
    if not sst2.is_file():
        sys.exit(f"{sst2} not found (set PEFTBENCH_SHARED_DATA)")

    import torch

    from peftbench.data.batching import Encoded, collate, make_batches
    from peftbench.models.loading import quiet_libraries
    from peftbench.perf.packing import collate_packed_classification, packed_classification_loss

    quiet_libraries()
    torch.set_num_threads(args.threads)
    _, loaded, model, amp_dtype, _ = build("embedded", args.method, 128, args.threads)
    with sst2.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))[:2000]
    tok = loaded.tokenizer([r["sentence"] for r in rows], truncation=True, max_length=128)
    enc = Encoded(tok["input_ids"], [int(r["label"]) for r in rows], {"token_type_ids": tok["token_type_ids"]})
    batches = make_batches(enc.lengths(), 16, seed=1)[: args.batches]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=args.optimizer == "fused")
    model.train()

    def step(idx: list[int], packed: bool) -> int:
        batch = (collate_packed_classification if packed else collate)(enc, idx, 0, multiple=1)
        with torch.autocast("cpu", dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext():
            loss = packed_classification_loss(model, batch) if packed else model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return batch["input_ids"].numel()

    best = {False: float("inf"), True: float("inf")}
    computed = {False: 0, True: 0}
    for _ in range(args.rounds):
        for packed in (False, True):
            t0 = time.perf_counter()
            computed[packed] = sum(step(idx, packed) for idx in batches)
            best[packed] = min(best[packed], (time.perf_counter() - t0) / len(batches))
    real = sum(len(enc.input_ids[i]) for idx in batches for i in idx)
    print(f"{args.method}, {args.optimizer} AdamW, {args.threads} thread(s), {len(batches)} SST-2 batches of 16")
    for packed, name in ((False, "padded"), (True, "packed")):
        print(f"  {name}: {best[packed] * 1000:7.1f} ms/step   padding efficiency {real / computed[packed]:.3f}")
    print(f"  padded / packed: {best[False] / best[True]:.2f}x")


if __name__ == "__main__":
    main()
