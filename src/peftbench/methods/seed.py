"""The six methods of the seed studies: full and partial fine-tuning, LoRA, QLoRA, (IA)3, DoRA."""

from __future__ import annotations

from typing import Any

from peftbench.errors import ModelError, SpecError
from peftbench.methods.base import METHODS, Method, MethodContext, make_config, resolve_targets, wrap_peft
from peftbench.models.heads import HEAD_NAMES, is_head

LORA_DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": "auto", "bias": "none"}
LORA_KEYS = {"alpha": "lora_alpha", "dropout": "lora_dropout"}  # our key -> LoraConfig key


def _split(method: Method, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    ours = {k: v for k, v in params.items() if k in method.defaults}
    passthrough = {k: v for k, v in params.items() if k not in method.defaults}
    return ours, passthrough


def prepare_full(method: Method, params: dict[str, Any], ctx: MethodContext) -> Any:
    for p in ctx.model.parameters():
        p.requires_grad_(True)
    return ctx.model


def trained_layer_count(params: dict[str, Any], n_layers: int) -> int:
    """How many of the top layers `partial` trains: `layers` (trained), `frozen_layers` (frozen from the
    bottom, as studies often state it) or `fraction` of them."""
    layers, frozen = params.get("layers"), params.get("frozen_layers")
    if frozen is not None:
        if layers is not None:
            raise SpecError("partial: method.layers and method.frozen_layers are both set",
                            hint="set one of them (layers counts trained layers, frozen_layers frozen ones)")
        if not isinstance(frozen, int) or isinstance(frozen, bool) or not 0 <= frozen <= n_layers:
            raise SpecError(f"partial: method.frozen_layers={frozen!r} but the model has {n_layers} layers",
                            hint=f"set method.frozen_layers to an integer between 0 and {n_layers}")
        layers = n_layers - frozen
    if layers is None:
        fraction = params.get("fraction", 0.5)
        if not isinstance(fraction, int | float) or not 0 < fraction <= 1:
            raise SpecError(f"method.fraction must be in (0, 1], got {fraction!r}", hint="e.g. --set method.fraction=0.5")
        layers = max(1, round(n_layers * fraction))
    if not isinstance(layers, int) or layers < 0:
        raise SpecError(f"method.layers must be a non-negative integer, got {layers!r}", hint="e.g. --set method.layers=2")
    if layers > n_layers:
        raise SpecError(f"partial: method.layers={layers} but the model has only {n_layers} layers",
                        hint=f"set method.layers between 0 and {n_layers}")
    return layers


def prepare_partial(method: Method, params: dict[str, Any], ctx: MethodContext) -> Any:
    from peftbench.models.families import find_layer_lists

    model = ctx.model
    lists = find_layer_lists(model, ctx.family)
    if not lists:
        raise ModelError("partial fine-tuning found no transformer layer list in this model",
                         hint="use method 'full' or an adapter method")
    blocks = [(f"{name}.{i}", block) for name, ml in lists for i, block in enumerate(ml)]
    n_layers = len(blocks)
    layers = trained_layer_count(params, n_layers)
    for p in model.parameters():
        p.requires_grad_(False)
    block_names = {name for name, _ in blocks}
    for _, block in blocks[n_layers - layers:]:
        for p in block.parameters():
            p.requires_grad_(True)
    # Everything above the blocks (final norms, pooler, head) trains; embeddings stay frozen.
    for name, p in model.named_parameters():
        in_block = any(name.startswith(b + ".") for b in block_names)
        if (not in_block and "embed" not in name and "wte" not in name and "wpe" not in name
                and "shared" not in name.split(".")):  # T5/BART keep their embedding table in `shared`
            p.requires_grad_(True)
    return model


def prepare_lora(method: Method, params: dict[str, Any], ctx: MethodContext) -> Any:
    ours, extra = _split(method, params)
    kwargs = dict(
        r=ours["r"], lora_alpha=ours["alpha"], lora_dropout=ours["dropout"], bias=ours["bias"],
        target_modules=resolve_targets(ours["target_modules"], ctx.family.lora_targets, ctx),
    )
    if method.name in ("dora",):
        kwargs["use_dora"] = True
    kwargs.update(extra)
    return wrap_peft(make_config("LoraConfig", ctx, kwargs), ctx)


def prepare_qlora(method: Method, params: dict[str, Any], ctx: MethodContext) -> Any:
    from peft import prepare_model_for_kbit_training

    # Gradient checkpointing costs speed and buys memory; off unless asked, and recorded.
    ctx.model = prepare_model_for_kbit_training(
        ctx.model, use_gradient_checkpointing=bool(params.get("gradient_checkpointing", False)))
    # bitsandbytes repacks 4-bit weights for AVX512-BF16 inference the first time a layer runs in
    # eval mode, and that layout has no backward: training after a mid-run evaluation would fail.
    for module in ctx.model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    p = {k: v for k, v in params.items() if k not in ("quant_type", "double_quant", "gradient_checkpointing")}
    return prepare_lora(method, p, ctx)


def qlora_load_kwargs(params: dict[str, Any], compute_dtype: str) -> dict[str, Any]:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError("method 'qlora' needs the bitsandbytes package, which is not installed",
                         hint="pip install bitsandbytes (or: pip install 'peftbench[qlora]')") from None
    import torch
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=params.get("quant_type", "nf4"),
        bnb_4bit_use_double_quant=bool(params.get("double_quant", True)),
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
        llm_int8_skip_modules=list(HEAD_NAMES),  # the head stays unquantized and trainable
    )}


def prepare_ia3(method: Method, params: dict[str, Any], ctx: MethodContext) -> Any:
    ours, extra = _split(method, params)
    targets = resolve_targets(ours["target_modules"], ctx.family.ia3_targets, ctx)
    ff = ours["feedforward_modules"]
    if ff in (None, "auto"):
        default_ff = ctx.family.ia3_feedforward
        ff = [t for t in targets if default_ff and any(t == d or t.endswith(d) for d in default_ff)]
        if not default_ff:
            ff = [t for t in targets if any(s in t for s in ("fc2", "down", "dense_4h", "wo", "output"))]
    kwargs = dict(target_modules=targets, feedforward_modules=ff)
    kwargs.update(extra)
    return wrap_peft(make_config("IA3Config", ctx, kwargs), ctx)


for _m in (
    Method("full", "all weights trained", 5e-5, {}, prepare_full),
    Method("partial", "embeddings and lower layers frozen; top N layers + head trained", 1e-4,
           {"layers": None, "frozen_layers": None, "fraction": 0.5}, prepare_partial),
    Method("lora", "low-rank adapters on attention projections (peft LoraConfig)", 1e-3,
           dict(LORA_DEFAULTS), prepare_lora, "LoraConfig", LORA_KEYS),
    Method("qlora", "LoRA on a 4-bit NF4 base (bitsandbytes, double quant); head unquantized", 1e-3,
           {**LORA_DEFAULTS, "quant_type": "nf4", "double_quant": True, "gradient_checkpointing": False},
           prepare_qlora, "LoraConfig", LORA_KEYS, quantized=True),
    Method("ia3", "learned rescaling vectors on keys, values and feed-forward (peft IA3Config)", 5e-3,
           {"target_modules": "auto", "feedforward_modules": "auto"}, prepare_ia3, "IA3Config"),
    Method("dora", "LoRA with weight decomposition (use_dora)", 1e-3, dict(LORA_DEFAULTS), prepare_lora,
           "LoraConfig", LORA_KEYS),
):
    METHODS.add(_m.name, _m)


def method_load_kwargs(method: Method, params: dict[str, Any], compute_dtype: str) -> dict[str, Any]:
    """Extra `from_pretrained` arguments a method needs (a quantization config for QLoRA)."""
    if method.quantized:
        return qlora_load_kwargs(params, compute_dtype)
    return {}


def quantization_summary(model: Any, params: dict[str, Any]) -> dict[str, Any]:
    """What really is 4-bit after loading: counted from the modules, not taken from the config."""
    four_bit = [n for n, m in model.named_modules() if type(m).__name__ == "Linear4bit"]
    return {
        "bits": 4, "quant_type": params.get("quant_type", "nf4"), "double_quant": bool(params.get("double_quant", True)),
        "layers_4bit": len(four_bit),
        "head_quantized": any(is_head(n) for n in four_bit),
    }
