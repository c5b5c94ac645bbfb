"""Is an accuracy gap between peftbench and the seed recipe larger than the spread over seeds?

One benchmark pair gives one accuracy per side, and fine-tuning accuracy moves by a point or more
from seed to seed. This script trains the same spec as `vs_seed_recipe.py` over several seeds with
each variant and prints the mean, standard deviation and a Welch t-test of every variant against the
seed recipe. Timing is not the point here, so variants may run in parallel processes (one thread
each): pass `--variants` to split them, then `--summarize` the JSON files together.

    python bench/accuracy_spread.py --dataset sst2 --method full --seeds 3,7,11,42
    python bench/accuracy_spread.py --variants seed --out a.json & \\
        python bench/accuracy_spread.py --variants peftbench,trainer_dynamic --out b.json; wait
    python bench/accuracy_spread.py --summarize a.json b.json

Variants: `seed` (HF Trainer, padding to max_length, fp32: the seed studies' recipe), `trainer_dynamic`
(the same Trainer with dynamic padding), `peftbench` (a peftbench run as `vs_seed_recipe.py` runs it),
`peftbench_grouped` / `peftbench_ungrouped` (the same with / without length-grouped batches, neither
packed; with `--length-group-batches N` the grouped variant sorts within mega-batches of N batches and is
named `peftbench_grouped_N`), `peftbench_packed` (not grouped, packed: `train.packing`),
`peftbench_fp32` (the same in fp32 without length grouping or the CPU ops: the seed recipe's arithmetic
with peftbench's loop).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_seed_recipe import DATA, REPO, SIZES, make_spec, run_peftbench, run_seed_recipe

VARIANTS = ("seed", "trainer_dynamic", "peftbench", "peftbench_grouped", "peftbench_ungrouped", "peftbench_packed",
            "peftbench_fp32")


def run_variant(variant: str, spec: Any, runs: str, threads: int, group_batches: int | None = None) -> dict[str, Any]:
    if variant == "seed":
        return run_seed_recipe(spec, threads)
    if variant == "trainer_dynamic":
        return run_seed_recipe(spec, threads, padding="longest")
    if variant == "peftbench_fp32":
        spec = spec.model_copy(update={
            "model": spec.model.model_copy(update={"dtype": "float32"}),
            "train": spec.train.model_copy(update={"group_by_length": False, "cpu_ops": False, "packing": False,
                                                   "num_threads": threads})})
    else:
        group = variant == "peftbench_grouped" or (variant == "peftbench" and spec.train.group_by_length)
        packing = variant == "peftbench_packed" or (variant == "peftbench" and spec.train.packing)
        update = {"num_threads": threads, "group_by_length": group, "packing": packing}
        if group and group_batches:
            update["length_group_batches"] = group_batches
        spec = spec.model_copy(update={"train": spec.train.model_copy(update=update)})
    return run_peftbench(spec, runs)


def summarize(results: list[dict[str, Any]], reference: str = "seed") -> dict[str, Any]:
    """Per variant: peftbench's seed summary (mean, sd, 95 % t-interval) and Welch's test against `reference`."""
    from peftbench.reports.stats import seed_summary, welch_test

    by: dict[str, dict[int, float]] = {}
    for r in results:
        by.setdefault(r["variant"], {})[r["seed"]] = r["accuracy"]
    ref = list(by.get(reference, {}).values())
    out: dict[str, Any] = {}
    for variant, accs in by.items():
        vals = list(accs.values())
        row = {**seed_summary(vals), "by_seed": dict(sorted(accs.items()))}
        test = welch_test(vals, ref) if variant != reference else None
        if test is not None:
            row["delta_points"] = 100 * (row["mean"] - statistics.fmean(ref))
            row["welch_p"] = test["pvalue"]
        out[variant] = row
    return out


def print_summary(summary: dict[str, Any], reference: str = "seed") -> None:
    print(f"{'variant':22} {'n':>2} {'mean':>6} {'sd':>6} {'95% CI':>13} {'Δ pts':>6} {'p':>6}  by seed   "
          f"(Δ and Welch p vs {reference})")
    for variant, r in summary.items():
        sd = f"{r['std']:.3f}" if r["std"] is not None else "-"
        ci = f"{r['ci_low']:.3f}–{r['ci_high']:.3f}" if r["ci_low"] is not None else "-"
        d = f"{r['delta_points']:+.1f}" if "delta_points" in r else "-"
        p = f"{r['welch_p']:.3f}" if "welch_p" in r else "-"
        seeds = " ".join(f"{s}:{a:.3f}" for s, a in r["by_seed"].items())
        print(f"{variant:22} {r['n']:2d} {r['mean']:6.3f} {sd:>6} {ci:>13} {d:>6} {p:>6}  {seeds}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="sst2", choices=("sst2", "imdb"))
    ap.add_argument("--method", default="full", choices=("full", "lora"))
    ap.add_argument("--seeds", default="3,7,11,42")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--length-group-batches", type=int, default=None,
                    help="batches per length-sorted mega-batch for the grouped variants (peftbench's default: 50)")
    ap.add_argument("--out", default=None, help="JSON file (default: bench/results/accuracy_spread-<time>.json)")
    ap.add_argument("--summarize", nargs="+", metavar="JSON", help="print the summary of earlier outputs")
    ap.add_argument("--reference", default="seed", choices=VARIANTS, help="the variant the others are tested against")
    args = ap.parse_args()
    if args.summarize:
        results = [r for f in args.summarize for r in json.loads(Path(f).read_text())["results"]]
        print_summary(summarize(results, args.reference), args.reference)
        return
    if not DATA.is_dir():
        sys.exit(f"data folder {DATA} not found (set PEFTBENCH_SHARED_DATA)")
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")

    from peftbench.models.loading import quiet_libraries
    from peftbench.records.io import atomic_write_json, environment

    quiet_libraries()
    n_train, n_eval = SIZES["full"][args.dataset]
    out = Path(args.out or REPO / "bench" / "results" / f"accuracy_spread-{time.strftime('%Y%m%dT%H%M%S')}.json")
    report: dict[str, Any] = {"settings": {**vars(args), "n_train": n_train, "n_eval": n_eval},
                              "environment": environment(), "results": []}
    with tempfile.TemporaryDirectory() as runs:
        for seed in (int(s) for s in args.seeds.split(",")):
            spec = make_spec(args.dataset, args.method, n_train, n_eval, args.epochs, 16, seed)
            for variant in variants:
                print(f"[spread] seed {seed}: {variant} ...", file=sys.stderr, flush=True)
                r = run_variant(variant, spec, runs, args.threads, args.length_group_batches)
                name = (f"{variant}_{args.length_group_batches}" if args.length_group_batches
                        and variant == "peftbench_grouped" else variant)
                report["results"].append({"variant": name, "seed": seed, "accuracy": r["accuracy"],
                                          "train_loss": r["train_loss"], "train_time_s": r["train_time_s"],
                                          "steps": r["steps"]})
                print(f"[spread] seed {seed}: {variant} accuracy {r['accuracy']:.4f}", file=sys.stderr, flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(out, report)
    print_summary(summarize(report["results"], args.reference), args.reference)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
