"""How close a training step comes to the GEMM peak, and how close it could come.

MFU (model FLOPs utilization) is the step's estimated FLOPs over its time and the GEMM peak. This
script measures, for one model, method and batch shape:

- `peak`: the square-GEMM probe of `peftbench.perf.flops` (what records divide by), in the step's dtype;
- `step`: a real training step (`runner.prepare_model` + `train.train`, through `profile.measure`:
  no padding, warm-up steps not timed), and its MFU with the records' FLOP formula;
- `gemm only`: the same step's matmuls and nothing else — every linear layer's forward, activation
  gradient and (for trainable weights) weight gradient at the step's exact shapes, plus the
  attention matmuls (QKᵀ, AV and their gradients) — timed back to back. Its MFU is the ceiling
  that no amount of work on softmax, dropout, normalization, the optimizer or the harness can pass
  on this machine, because those only add time.

    python bench/mfu_ceiling.py                              # MiniLM LoRA, 16 x 256, bf16 where native
    python bench/mfu_ceiling.py --dtype float32 --method full

Results are printed and saved to bench/results/mfu_ceiling-<time>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def gemm_only_step(model: Any, batch: int, length: int, dtype: Any, reps: int) -> dict[str, tuple[float, float]]:
    """{part: (median seconds, FLOPs)} of the step's matmuls alone, at the step's shapes and dtype;
    parts: 'linear' (weights), 'attention' (QKᵀ, AV) and 'all'."""
    import torch

    from peftbench.perf.flops import attention_dims, linear_flop_terms, runs_per_sequence
    from peftbench.perf.head_token import installed

    per_sequence = runs_per_sequence(model)  # the last layer's head-token-only weights: one row per sequence
    ops: list[tuple[Any, Any, Any]] = []  # (a, b, out) for torch.matmul(a, b, out=out)
    flops = 0.0
    for name, n, per_token in linear_flop_terms(model):
        tokens = batch if per_sequence(name) else batch * length
        w = model.get_submodule(name).weight
        d_out, d_in = w.shape if w.numel() == n else (w.quant_state.shape[0], w.quant_state.shape[1])
        c = per_token // n
        x = torch.randn(tokens, d_in, dtype=dtype)
        wt = torch.randn(d_in, d_out, dtype=dtype)
        dy = torch.randn(tokens, d_out, dtype=dtype)
        ops.append((x, wt, torch.empty(tokens, d_out, dtype=dtype)))  # forward
        if c >= 4:
            ops.append((dy, wt.t(), torch.empty(tokens, d_in, dtype=dtype)))  # activation gradient
        if c >= 6:
            ops.append((dy.t(), x, torch.empty(d_out, d_in, dtype=dtype)))  # weight gradient
        flops += per_token * tokens
    linear_ops, linear_flops = ops, flops
    ops = []
    layers, hidden = attention_dims(model)
    heads = model.config.num_attention_heads
    dh = hidden // heads
    bh = batch * heads
    q = torch.randn(bh, length, dh, dtype=dtype)
    kt = torch.randn(bh, dh, length, dtype=dtype)
    p = torch.randn(bh, length, length, dtype=dtype)
    full_layers = layers - 1 if installed(model) else layers  # the head-token-only layer: one query row
    for rows in [length] * full_layers + [1] * (layers - full_layers):
        # forward: S = Q Kᵀ, O = P V; backward: dP = dO Vᵀ, dV = Pᵀ dO, dQ = dS K, dK = dSᵀ Q
        qr, pr = q[:, :rows], p[:, :rows]
        ops.append((qr, kt, torch.empty(bh, rows, length, dtype=dtype)))
        ops.append((pr, q, torch.empty(bh, rows, dh, dtype=dtype)))
        ops.append((qr, kt, torch.empty(bh, rows, length, dtype=dtype)))
        ops.append((pr.transpose(1, 2), qr, torch.empty(bh, length, dh, dtype=dtype)))
        ops.append((pr, q, torch.empty(bh, rows, dh, dtype=dtype)))
        ops.append((pr.transpose(1, 2), qr, torch.empty(bh, length, dh, dtype=dtype)))
    attention_flops = 12 * hidden * batch * length * (full_layers * length + (layers - full_layers))

    def timed(todo: list[tuple[Any, Any, Any]]) -> float:
        def once() -> float:
            t0 = time.perf_counter()
            for a, b, out in todo:
                torch.matmul(a, b, out=out)
            return time.perf_counter() - t0

        once()
        return statistics.median(once() for _ in range(reps))

    return {"linear": (timed(linear_ops), linear_flops), "attention": (timed(ops), attention_flops),
            "all": (timed(linear_ops + ops), linear_flops + attention_flops)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()

    import torch
    from step_time import build

    from peftbench.models.loading import quiet_libraries
    from peftbench.perf.flops import training_flops
    from peftbench.perf.peak import gemm_probe
    from peftbench.profiling.profile import measure
    from peftbench.records.io import atomic_write_json, environment
    from peftbench.runtime.device import resolve_dtype

    quiet_libraries()
    torch.set_num_threads(args.threads)
    dtype_name = resolve_dtype(args.dtype, "cpu")
    dtype = getattr(torch, dtype_name)
    spec, _, model, *_ = build(args.model, args.method, args.length, args.threads, dtype_name)
    peak_before = gemm_probe(dtype_name)
    row = measure(spec.to_dict(), args.length, args.batch_size, args.steps, warmup=2, latency_calls=1)
    tokens = args.batch_size * args.length
    step_flops = training_flops(model, tokens, args.batch_size * args.length**2, args.batch_size)["flops"]
    with torch.no_grad():
        parts = gemm_only_step(model, args.batch_size, args.length, dtype, reps=5)
    gemm_s, gemm_flops = parts["all"]
    peak = max(peak_before, gemm_probe(dtype_name))
    step_s = row["step_time_s"]
    result = {
        "settings": vars(args), "dtype": dtype_name, "environment": environment(),
        "peak_tflops": peak / 1e12, "step_time_s": step_s, "step_flops": step_flops,
        "step_mfu": step_flops / step_s / peak, "gemm_only_time_s": gemm_s, "gemm_only_flops": gemm_flops,
        "gemm_only_mfu": gemm_flops / gemm_s / peak, "gemm_share_of_step": gemm_s / step_s,
        "gemm_parts": {k: {"time_s": t, "flops": f, "mfu": f / t / peak} for k, (t, f) in parts.items()},
        "step_times_s": row["step_times_s"], "cpu_ops": row["cpu_ops"], "precision": row["precision"],
    }
    print(f"{args.method} on {args.model}, {args.batch_size} x {args.length} tokens, {dtype_name}, "
          f"{args.threads} thread(s); GEMM peak {peak / 1e12:.3f} TFLOP/s")
    print(f"  training step : {step_s:7.3f} s  MFU {result['step_mfu']:6.1%}")
    print(f"  its GEMMs only: {gemm_s:7.3f} s  MFU {result['gemm_only_mfu']:6.1%}  "
          f"({result['gemm_share_of_step']:.0%} of the step)")
    for part in ("linear", "attention"):
        t, f = parts[part]
        print(f"    {part:9}   : {t:7.3f} s  MFU {f / t / peak:6.1%}  ({f / gemm_flops:.0%} of the FLOPs)")
    out = Path(args.out) / f"mfu_ceiling-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
