"""peftbench against the seed studies' recipe, side by side in one process, on the same data.

The reference ("seed recipe") is what the seed studies ran: the Hugging Face `Trainer`, every example
padded to `max_length` (256 for IMDB, 128 for SST-2), fp32, a fixed batch. peftbench runs the same
model, data subset, method configuration, learning rate, epochs, batch size, warm-up, weight decay,
clipping and seed, with its defaults: dynamic padding, length-grouped batches (IMDB only), packed
batches (SST-2 only: `train.packing`, the same batches in fewer rows), the dtype policy
(bf16 where the CPU has native bf16), SDPA attention, and on the CPU the faster dropout /
attention-with-dropout of `peftbench.perf.cpu_ops` (same dropout probabilities). Both sides train for the
same number of optimizer steps. Only training wall time is compared (evaluation is timed apart on both sides).

The machine may be shared: the two sides of a pair run one after the other, with the order
alternating between pairs; read the ratios, not the absolute times. Each side records the load it trained
under (`peftbench.perf.load`: cores busy with other work, CPU steal, the 1-minute load average); a pair
whose two sides trained under clearly different load gets no ratio unless `--allow-load-mismatch`, and
the script then ends with exit code 2 and a line naming the pair (the results are saved first). Each side runs in a fresh process
(spawned), so that neither inherits what the other left behind: the heap (a peftbench run keeps
freed blocks while it trains, `peftbench.perf.cpu_heap`), caches, thread pools.

    python bench/vs_seed_recipe.py            # IMDB 2,000/1,000 and SST-2 2,000/872, LoRA and full, 2 epochs
    python bench/vs_seed_recipe.py --quick    # small subsets, 1 epoch: minutes, not hours
    python bench/vs_seed_recipe.py --threads 1   # both sides pinned to one thread, leaving other cores free

Results: printed as a table and saved to bench/results/vs_seed_recipe-<time>.json after each pair.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def _find_data() -> Path:
    """$PEFTBENCH_SHARED_DATA, else the first `shared/data` beside the repository or above it."""
    if os.environ.get("PEFTBENCH_SHARED_DATA"):
        return Path(os.environ["PEFTBENCH_SHARED_DATA"])
    for parent in REPO.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return REPO.parent / "shared" / "data"


DATA = _find_data()

# Length grouping only where it pays: IMDB reviews are long and varied (most reach the 256-token cut).
# On SST-2 grouped batches cost full fine-tuning about a point of accuracy (0.824 vs 0.833 over 8 seeds;
# bench/accuracy_spread.py, results in bench/results/accuracy_spread-*), and dynamic padding alone
# leaves SST-2's batches 0.38 real tokens: packing keeps the batches and removes the padding.
DATASETS = {
    "imdb": {"preset": "imdb", "train": "imdb/train_5k.csv", "eval": "imdb/test_2500.csv", "max_length": 256,
             "group_by_length": True, "packing": False},
    "sst2": {"preset": "sst2", "train": "sst2/train.tsv", "eval": "sst2/dev.tsv", "max_length": 128,
             "group_by_length": False, "packing": True},
}
# Hyper-parameters under which both recipes learn (well above chance) on these subsets.
METHOD_HP = {"lora": {"lr": 2e-3}, "full": {"lr": 1e-4}}
SIZES = {"full": {"imdb": (2000, 1000), "sst2": (2000, 872)}, "quick": {"imdb": (480, 250), "sst2": (960, 400)}}


def make_spec(dataset: str, method: str, n_train: int, n_eval: int, epochs: int, batch: int, seed: int) -> Any:
    from peftbench.config.spec import RunSpec

    d = DATASETS[dataset]
    return RunSpec.from_dict({
        "name": f"bench-{dataset}-{method}", "save": "none",
        "model": {"name_or_path": "embedded"},
        "data": {"preset": d["preset"], "train": str(DATA / d["train"]), "eval": str(DATA / d["eval"]),
                 "n_train": n_train, "n_eval": n_eval, "max_length": d["max_length"]},
        "method": {"name": method},
        "train": {"epochs": epochs, "batch_size": batch, "lr": METHOD_HP[method]["lr"], "seed": seed,
                  "group_by_length": d["group_by_length"], "packing": d["packing"], "log_every": 10},
    }).resolved()


# ---- the seed recipe ---------------------------------------------------------------------------


def run_seed_recipe(spec: Any, threads: int | None, padding: str = "max_length") -> dict[str, Any]:
    """HF Trainer, padding='max_length', fp32; same model, method config, data and hyper-parameters.

    `threads`: intra-op threads (None: torch's default, one per core, as the seed studies ran).
    `padding="longest"`: the same Trainer with dynamic padding (a diagnostic variant, not the seeds' recipe)."""
    import numpy as np
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from peftbench.perf.load import sampled_load

    if threads:
        torch.set_num_threads(threads)

    from peftbench.methods.base import METHODS, MethodContext
    from peftbench.tasks.base import TASKS

    task = TASKS.get(spec.task)
    method = METHODS.get(spec.method.name)
    prepared = task.load_data(spec)
    set_seed(spec.train.seed)
    loaded = task.load_model(spec, prepared, {})
    model = method.prepare(method, spec.method.params, MethodContext(loaded.model, loaded.family, task.peft_task_type))
    tok = loaded.tokenizer
    d, ml = prepared.data, spec.data.max_length

    def encode(texts: list[str], labels: list[int]) -> list[dict[str, Any]]:
        enc = tok(texts, truncation=True, max_length=ml, padding="max_length" if padding == "max_length" else False)
        return [{**{k: enc[k][i] for k in enc}, "labels": labels[i]} for i in range(len(texts))]

    train_ds, eval_ds = encode(d.train_texts, d.train_labels), encode(d.eval_texts, d.eval_labels)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=spec.train.batch_size,
            per_device_eval_batch_size=spec.train.batch_size, learning_rate=spec.train.lr,
            num_train_epochs=spec.train.epochs, warmup_steps=int(spec.train.warmup_ratio * _steps(spec)),
            weight_decay=spec.train.weight_decay, max_grad_norm=spec.train.max_grad_norm or 0.0,
            lr_scheduler_type="linear", seed=spec.train.seed, use_cpu=True, report_to=[],
            save_strategy="no", eval_strategy="no", logging_steps=50, disable_tqdm=True,
            dataloader_num_workers=0,
        )
        collator = DataCollatorWithPadding(tok, pad_to_multiple_of=8) if padding == "longest" else None
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          data_collator=collator)
        with sampled_load() as load:  # the machine's load while this side trained, as a run records it
            t0 = time.perf_counter()
            out = trainer.train()
            train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = trainer.predict(eval_ds)
        eval_s = time.perf_counter() - t0
    acc = float((np.argmax(pred.predictions, -1) == np.array(d.eval_labels)).mean())
    del trainer, model
    return {"train_time_s": train_s, "eval_time_s": eval_s, "accuracy": acc, "steps": out.global_step,
            "train_loss": out.training_loss, "padding_efficiency": _seed_padding(d.train_texts, tok, ml),
            "load": load}


def _steps(spec: Any) -> int:
    import math

    return math.ceil(spec.data.n_train / spec.train.batch_size) * spec.train.epochs


def _seed_padding(texts: list[str], tok: Any, ml: int) -> float:
    lengths = [len(x) for x in tok(texts, truncation=True, max_length=ml)["input_ids"]]
    return sum(lengths) / (len(lengths) * ml)


# ---- peftbench ---------------------------------------------------------------------------------


def run_peftbench(spec: Any, out_dir: str) -> dict[str, Any]:
    from peftbench.core.runner import run

    rec = run(spec, out_dir, progress=False, force=True, log=lambda m: None)
    t = rec["train"]
    return {"train_time_s": t["time_s"], "eval_time_s": rec["eval"]["time_s"],
            "accuracy": rec["metrics"]["accuracy"], "steps": t["steps"], "train_loss": t["final_loss"],
            "padding_efficiency": t["padding_efficiency"], "overhead_share": t["overhead_share"],
            "tokens_per_s": t["tokens_per_s"], "samples_per_s": t["samples_per_s"],
            "flops": t["flops"], "achieved_tflops": t["achieved_tflops"], "mfu_cached_peak": t["mfu"],
            "load": t.get("load"),
            "precision": rec["precision"], "threads": t["threads"], "head_token": t.get("head_token")}


def _side(side: str, spec: Any, seed_threads: int | None, runs: str) -> dict[str, Any]:
    """One side of a pair, in the process it was spawned for; with the threads it ran on."""
    import torch

    from peftbench.models.loading import quiet_libraries

    quiet_libraries()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    res = run_seed_recipe(spec, seed_threads) if side == "seed" else run_peftbench(spec, runs)
    res["threads"] = torch.get_num_threads()
    return res


def _end_with_driver() -> None:
    """Side processes get SIGTERM when the driver ends (Linux), so a stopped benchmark leaves no side
    training on, competing for the core with the next run."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG


def run_side(side: str, spec: Any, seed_threads: int | None, runs: str) -> dict[str, Any]:
    """`_side` in a fresh process: the seed recipe must not train on a heap that peftbench's run shaped."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_end_with_driver) as pool:
        return pool.submit(_side, side, spec, seed_threads, runs).result()


# ---- driver ------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small subsets and 1 epoch")
    ap.add_argument("--datasets", default="sst2,imdb")
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--n-train", type=int, default=None, help="override the train subset size (all data sets)")
    ap.add_argument("--n-eval", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--seed-threads", choices=("same", "default"), default="same",
                    help="threads of the seed recipe: the count pinned for peftbench's side (isolates padding and dtype), "
                         "or torch's default of one per core (the seeds' setting; slow on a loaded machine)")
    ap.add_argument("--allow-load-mismatch", action="store_true",
                    help="report a pair's ratio even when its two sides trained under clearly different load "
                         "(marked in the table and the JSON); by default such a ratio is withheld")
    ap.add_argument("--threads", type=int, default=None,
                    help="intra-op threads for every pair (default: peftbench's rule, one per idle core, read at each "
                         "pair's start); pin it to keep a core free for other work during a long run")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"data folder {DATA} not found (set PEFTBENCH_SHARED_DATA)")

    import torch

    from peftbench.models.loading import quiet_libraries
    from peftbench.perf.flops import configure_threads
    from peftbench.perf.peak import cpu_peak_flops, gemm_probe, mfu_fields
    from peftbench.records.io import atomic_write_json, environment
    from peftbench.runtime.device import cpu_has_native_bf16, resolve_dtype

    quiet_libraries()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    epochs = args.epochs or (1 if args.quick else 2)
    sizes = SIZES["quick" if args.quick else "full"]
    dtype = resolve_dtype("auto", "cpu")
    out_path = Path(args.out) / f"vs_seed_recipe-{time.strftime('%Y%m%dT%H%M%S')}.json"
    report: dict[str, Any] = {
        "machine": {"cpu_native_bf16": cpu_has_native_bf16(), "torch_cpu_capability":
                    torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                    "load_avg_start": os.getloadavg(), **environment()},
        "settings": {"quick": args.quick, "epochs": epochs, "batch_size": args.batch_size, "seed": args.seed,
                     "threads": args.threads, "isolation": "a fresh process per side",
                     "hyper_parameters": METHOD_HP, "peftbench_dtype": dtype},
        "pairs": [],
    }
    pairs = [(ds, m) for m in args.methods.split(",") for ds in args.datasets.split(",")]
    with tempfile.TemporaryDirectory() as runs:
        for k, (ds, method) in enumerate(pairs):
            n_train, n_eval = sizes[ds]
            spec = make_spec(ds, method, args.n_train or n_train, args.n_eval or n_eval, epochs,
                             args.batch_size, args.seed)
            sides = ("seed", "peftbench") if k % 2 == 0 else ("peftbench", "seed")
            res: dict[str, Any] = {}
            default_threads = torch.get_num_threads()
            pb_threads = configure_threads(args.threads, "cpu")  # --threads, else what a run would pick now
            # Pinned for the pair: picked again when its side starts, the count would follow the load the
            # other side left behind (an idle start gave the first side 2 threads and the second 1).
            spec = spec.model_copy(update={"train": spec.train.model_copy(update={"num_threads": pb_threads})})
            # Probe the peak right next to the run, with its threads: a cached peak may be stale here.
            peak_before = gemm_probe(dtype)
            torch.set_num_threads(default_threads)
            seed_threads = pb_threads if args.seed_threads == "same" else None
            for side in sides:
                print(f"[bench] {ds} {method}: {side} ...", file=sys.stderr, flush=True)
                res[side] = run_side(side, spec, seed_threads, runs)
                res[side]["load_avg_after"] = os.getloadavg()[0]
            torch.set_num_threads(pb_threads)
            peak = max(peak_before, gemm_probe(dtype))
            torch.set_num_threads(default_threads)
            pb, seed = res["peftbench"], res["seed"]
            pb["peak_tflops_probe"] = peak / 1e12
            pb.update(mfu_fields(pb["flops"] / pb["train_time_s"], peak, "GEMM probed next to the run"))
            row = {"dataset": ds, "method": method, "n_train": spec.data.n_train, "n_eval": spec.data.n_eval,
                   "max_length": spec.data.max_length, "lr": spec.train.lr, "order": list(sides),
                   "group_by_length": spec.train.group_by_length, "packing": spec.train.packing,
                   "seed_recipe": seed, "peftbench": pb,
                   **pair_ratio(seed, pb, args.allow_load_mismatch),
                   "accuracy_delta_points": 100 * (pb["accuracy"] - seed["accuracy"])}
            report["pairs"].append(row)
            report["machine"]["cached_peak_tflops"] = cpu_peak_flops(dtype)[0] / 1e12
            report["machine"]["load_avg_end"] = os.getloadavg()
            out_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out_path, report)
            print_row(row)
    print_table(report["pairs"])
    print(f"saved {out_path}")
    withheld = [row for row in report["pairs"] if row.get("ratio_withheld")]
    if withheld:
        print(f"vs_seed_recipe: {len(withheld)} ratio(s) withheld, their two sides trained under different load "
              f"({withheld[0]['ratio_withheld']}); rerun on a quieter machine, or pass --allow-load-mismatch",
              file=sys.stderr)
        sys.exit(2)


def pair_ratio(seed: dict[str, Any], pb: dict[str, Any], allow_mismatch: bool) -> dict[str, Any]:
    """The pair's time ratio (seed / peftbench), withheld (None, with why) when the two sides trained
    under clearly different load, unless `allow_mismatch`; `load_differs` says why either way."""
    from peftbench.perf.load import load_differs

    why = load_differs(seed.get("load"), pb.get("load"))
    ratio = seed["train_time_s"] / pb["train_time_s"]
    return {"ratio": None if why and not allow_mismatch else ratio, "load_differs": why,
            "ratio_withheld": why if why and not allow_mismatch else None}


HEADER = (f"{'data':6} {'method':6} {'seed s':>8} {'pb s':>8} {'ratio':>6} {'acc seed':>8} {'acc pb':>7} "
          f"{'pad eff':>7} {'ovh':>6} {'MFU':>6} {'others':>9}")


def _others(side: dict[str, Any]) -> str:
    busy = (side.get("load") or {}).get("other_busy_cores")
    return f"{busy:.1f}" if isinstance(busy, int | float) else "-"


def _or_dash(x: Any, spec: str) -> str:
    return format(x, spec) if isinstance(x, int | float) else "-"


def _fmt(row: dict[str, Any]) -> str:
    s, p = row["seed_recipe"], row["peftbench"]
    return (f"{row['dataset']:6} {row['method']:6} {s['train_time_s']:8.1f} {p['train_time_s']:8.1f} "
            f"{_or_dash(row['ratio'], '6.2f'):>6} {s['accuracy']:8.3f} {p['accuracy']:7.3f} "
            f"{p['padding_efficiency']:7.3f} {p['overhead_share']:6.3f} {_or_dash(p['mfu'], '6.2f'):>6} "
            f"{_others(s) + '/' + _others(p):>9}" + (f"  ⚠ load differs: {row['load_differs']}"
                                                     if row.get("load_differs") else ""))


def print_row(row: dict[str, Any]) -> None:
    print(HEADER, file=sys.stderr)
    print(_fmt(row), file=sys.stderr, flush=True)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(HEADER)
    for row in rows:
        print(_fmt(row))
    print("MFU: estimated training FLOPs / train time / bf16-or-fp32 GEMM peak probed next to the run "
          "(peftbench side; '-' when above 1: the peak was wrong). others: cores busy with other work while "
          "each side trained (seed/peftbench); a ratio is '-' when the two sides' loads differ (see "
          "--allow-load-mismatch). json: " + json.dumps({"pairs": len(rows)}))


if __name__ == "__main__":
    main()
