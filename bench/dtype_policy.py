"""Is bf16 faster than fp32 for MiniLM training on this CPU? One train step per policy, interleaved.

Policies: LoRA (r8, query/value) in fp32; LoRA with the frozen base held in bf16 under autocast
(peftbench's default on CPUs with native bf16); LoRA under autocast over an fp32 base; full FT in
fp32; full FT with fp32 master weights under bf16 autocast (peftbench's default); full FT in pure bf16.
Prints the median seconds per step of each over `--reps` interleaved rounds (random tokens).

    python bench/dtype_policy.py --length 256 --batch 16 --reps 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

POLICIES = {"lora": ("fp32", "frozen_bf16", "autocast"), "full": ("fp32", "autocast", "pure_bf16")}


def build(method: str, policy: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from peftbench.models.embedded import embedded_model_path

    m = AutoModelForSequenceClassification.from_pretrained(str(embedded_model_path()), num_labels=2)
    if method == "lora":
        m = get_peft_model(m, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS"))
    if policy == "frozen_bf16":
        for p in m.parameters():
            p.data = p.data.to(torch.float32 if p.requires_grad else torch.bfloat16)
    if policy == "pure_bf16":
        m = m.to(torch.bfloat16)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
    return m.train(), opt, policy in ("frozen_bf16", "autocast")


def main() -> None:
    import torch

    from peftbench.models.loading import quiet_libraries

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args()
    quiet_libraries()
    torch.manual_seed(0)
    ids = torch.randint(1000, 20000, (args.batch, args.length))
    labels = torch.randint(0, 2, (args.batch,))

    def step(model, opt, amp) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    for method, policies in POLICIES.items():
        built = {p: build(method, p) for p in policies}
        for b in built.values():
            step(*b)  # warm-up (kernel selection, allocations)
        times: dict[str, list[float]] = {p: [] for p in policies}
        for _ in range(args.reps):
            for p in policies:
                t0 = time.perf_counter()
                step(*built[p])
                times[p].append(time.perf_counter() - t0)
        base = statistics.median(times["fp32"])
        for p in policies:
            med = statistics.median(times[p])
            print(f"{method:5} {p:12} {args.batch}x{args.length}  {med:7.3f} s/step  speed-up vs fp32 {base / med:4.2f}x")


if __name__ == "__main__":
    main()
