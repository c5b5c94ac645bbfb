"""peftbench's training loop against the HF Trainer with everything shared but the loop.

Per seed: one model load (so both sides start from the same weights, classifier head included), the
batches of peftbench's sampler in the same order on both sides (the Trainer gets them through its
sampler), fp32, torch's own dropout on both sides (no CPU ops, no length grouping), and the same
evaluation function. What is left to differ is the loop itself — schedule, optimizer, clipping, loss
— and the dropout masks, which each side draws from its own random stream. Prints test accuracy per
seed and the mean difference. (`tests/test_train_vs_trainer.py` checks the loop without dropout,
weight by weight.)

    python bench/loop_vs_trainer.py --seeds 1,2,3 --out a.json & python bench/loop_vs_trainer.py --seeds 5,7,42 --out b.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_seed_recipe import DATA, SIZES, make_spec


def one_seed(dataset: str, method_name: str, seed: int, epochs: int) -> dict[str, Any]:
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from peftbench.core.train import train
    from peftbench.data.batching import make_batches
    from peftbench.methods.base import METHODS, MethodContext
    from peftbench.tasks.base import TASKS

    n_train, n_eval = SIZES["full"][dataset]
    spec = make_spec(dataset, method_name, n_train, n_eval, epochs, 16, seed)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"group_by_length": False, "cpu_ops": False})})
    task, method = TASKS.get(spec.task), METHODS.get(method_name)
    prepared = task.load_data(spec)
    set_seed(seed)
    loaded = task.load_model(spec, prepared, {})
    model = method.prepare(method, spec.method.params, MethodContext(loaded.model, loaded.family, task.peft_task_type))
    start = copy.deepcopy(model.state_dict())
    tok = loaded.tokenizer
    train_enc, eval_enc = task.encode(loaded, prepared, spec)

    def accuracy() -> float:
        return task.evaluate(model, eval_enc, prepared, batch_size=64, device="cpu", autocast_dtype=None,
                             pad_id=tok.pad_token_id)["accuracy"]

    set_seed(seed + 1000)  # the dropout stream of this side
    train(model, train_enc, lambda _m: {}, spec.train, device="cpu", autocast_dtype=None, pad_id=tok.pad_token_id,
          progress=False, collate_fn=task.collate)
    ours = accuracy()

    model.load_state_dict(start)
    rows = [{"input_ids": train_enc.input_ids[i], "labels": train_enc.labels[i],
             **{k: v[i] for k, v in train_enc.extra.items()}} for i in range(len(train_enc))]
    epochs_done = []

    class SameOrder(torch.utils.data.Sampler):
        def __iter__(self):
            epoch = len(epochs_done)
            epochs_done.append(epoch)
            return iter([i for b in make_batches(train_enc.lengths(), 16, seed + epoch, True, False) for i in b])

        def __len__(self) -> int:
            return len(rows)

    class SameBatches(Trainer):
        def _get_train_sampler(self, *args: object, **kwargs: object) -> SameOrder:
            return SameOrder()

    with tempfile.TemporaryDirectory() as tmp:
        steps = len(make_batches(train_enc.lengths(), 16, seed, True, False)) * epochs
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=16, learning_rate=spec.train.lr, num_train_epochs=epochs,
            warmup_steps=int(spec.train.warmup_ratio * steps), weight_decay=spec.train.weight_decay,
            max_grad_norm=spec.train.max_grad_norm, lr_scheduler_type="linear", seed=seed + 2000, use_cpu=True,
            report_to=[], save_strategy="no", logging_steps=10_000, disable_tqdm=True, dataloader_num_workers=0)
        SameBatches(model=model, args=args, train_dataset=rows,
                    data_collator=DataCollatorWithPadding(tok, pad_to_multiple_of=8)).train()
    return {"seed": seed, "peftbench_loop": ours, "trainer": accuracy(), "trainer_epochs": len(epochs_done)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="sst2", choices=("sst2", "imdb"))
    ap.add_argument("--method", default="full", choices=("full", "lora"))
    ap.add_argument("--seeds", default="1,2,3,5,7,42")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="JSON file for the results (required unless --summarize)")
    ap.add_argument("--summarize", nargs="+", metavar="JSON")
    args = ap.parse_args()
    if args.summarize:
        results = [r for f in args.summarize for r in json.loads(Path(f).read_text())["results"]]
    else:
        if not args.out:
            ap.error("--out is required unless --summarize is given")
        if not DATA.is_dir():
            sys.exit(f"data folder {DATA} not found (set PEFTBENCH_SHARED_DATA)")
        import torch

        from peftbench.models.loading import quiet_libraries

        quiet_libraries()
        torch.set_num_threads(args.threads)
        results = []
        for seed in (int(s) for s in args.seeds.split(",")):
            results.append(one_seed(args.dataset, args.method, seed, args.epochs))
            print(results[-1], file=sys.stderr, flush=True)
            Path(args.out).write_text(json.dumps({"settings": vars(args), "results": results}, indent=1))
    diffs = [100 * (r["peftbench_loop"] - r["trainer"]) for r in results]
    for r in results:
        print(f"seed {r['seed']:>4}: peftbench loop {r['peftbench_loop']:.4f}  Trainer {r['trainer']:.4f}")
    print(f"mean peftbench loop {statistics.fmean(r['peftbench_loop'] for r in results):.4f}, "
          f"Trainer {statistics.fmean(r['trainer'] for r in results):.4f}; "
          f"difference {statistics.fmean(diffs):+.2f} points (sd {statistics.stdev(diffs) if len(diffs) > 1 else 0:.2f})")


if __name__ == "__main__":
    main()
