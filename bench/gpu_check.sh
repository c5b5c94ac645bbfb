#!/usr/bin/env bash
# Throughput, peak memory and MFU of LoRA and full fine-tuning on a CUDA GPU.
#
# A randomly initialised Llama-shaped model of ~1.1B parameters (TinyLlama's shape, built from a
# config: no download) trains on random tokens, bf16 weights, SDPA attention, for STEPS optimizer
# steps after WARMUP untimed ones. FLOPs and MFU come from peftbench.perf.flops (6·N·T for full FT,
# 4·N·T + adapter terms for LoRA, plus attention), against the GPU's table peak (or PEAK_TFLOPS).
# Target: LoRA MFU >= 45% on an H100 in bf16. Runs in about 2-4 minutes on an H100.
#
#   bash bench/gpu_check.sh                  # on a CUDA machine
#   SEQ=4096 BATCH=2 bash bench/gpu_check.sh # other shapes
#   TINY=1 bash bench/gpu_check.sh           # smoke test of the script itself on the CPU (tiny model)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export STEPS=${STEPS:-100} WARMUP=${WARMUP:-5} SEQ=${SEQ:-2048} BATCH=${BATCH:-4} TINY=${TINY:-0}
export PEAK_TFLOPS=${PEAK_TFLOPS:-} COMPILE=${COMPILE:-0}
exec "$PY" - <<'EOF'
import json, os, time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from peftbench.perf.flops import training_flops
from peftbench.perf.peak import peak_flops

tiny = os.environ["TINY"] == "1"
steps, warmup = int(os.environ["STEPS"]), int(os.environ["WARMUP"])
seq, batch = int(os.environ["SEQ"]), int(os.environ["BATCH"])
if tiny:
    steps, warmup, seq, batch = min(steps, 3), 1, 64, 2
device = "cpu" if tiny else "cuda"
if not tiny and not torch.cuda.is_available():
    raise SystemExit("no CUDA device: this check needs a GPU (TINY=1 smoke-tests the script on the CPU)")
dims = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        if tiny else
        dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
             num_key_value_heads=4))
cfg = LlamaConfig(vocab_size=32000, max_position_embeddings=max(seq, 2048), use_cache=False,
                  attn_implementation="sdpa", **dims)
peak_tflops = float(os.environ["PEAK_TFLOPS"]) if os.environ["PEAK_TFLOPS"] else None
results = []
for method in ("lora", "full"):
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                 "gate_proj", "up_proj", "down_proj"]))
        for p in model.parameters():  # adapters in fp32, frozen base in bf16
            if p.requires_grad:
                p.data = p.data.float()
    if os.environ["COMPILE"] == "1":
        model.compile()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device == "cuda")
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tokens = steps * batch * seq
    est = training_flops(model, tokens, steps * batch * seq * seq)
    peak, source = peak_flops(device, "bfloat16", peak_tflops)
    row = {"method": method, "params": sum(p.numel() for p in model.parameters()),
           "trainable": sum(p.numel() for p in params), "steps": steps, "batch": batch, "seq": seq,
           "time_s": round(dt, 2), "tokens_per_s": round(tokens / dt, 1),
           "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
           "achieved_tflops": round(est["flops"] / dt / 1e12, 2), "peak_tflops": peak / 1e12 if peak else None,
           "peak_source": source, "mfu": round(est["flops"] / dt / peak, 4) if peak else None,
           "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (TINY smoke test)"}
    print(json.dumps(row), flush=True)
    results.append(row)
    del model, opt
    if device == "cuda":
        torch.cuda.empty_cache()
print(f"{'method':6} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>9}")
for r in results:
    mem = f"{r['peak_memory_gib']:9.2f}" if r["peak_memory_gib"] is not None else f"{'-':>9}"
    mfu = f"{r['mfu']:6.1%}" if r["mfu"] is not None else f"{'-':>6}"
    print(f"{r['method']:6} {r['tokens_per_s']:10.0f} {r['achieved_tflops']:8.2f} {mfu} {mem}")
EOF
