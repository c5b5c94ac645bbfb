"""The method registry: each fine-tuning method is one entry.

An entry names its own defaults, learning rate included (adapter methods need 10-100x the
learning rate of full fine-tuning; one shared learning rate is the classic unfair comparison),
and a `prepare` function that turns a loaded model into the model to train. Keys in the spec's
method section that are not ours go through unchanged to the method's `peft` config class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from peftbench.errors import ModelError, SpecError
from peftbench.registry import Registry, did_you_mean


@dataclass
class MethodContext:
    """What a method needs to adapt a model."""

    model: Any
    family: Any  # models.Family
    task: str
    compute_dtype: str = "float32"


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    default_lr: float
    defaults: dict[str, Any]
    prepare: Callable[[Method, dict[str, Any], MethodContext], Any]
    peft_config: str | None = None  # peft config class whose fields may be passed through
    key_map: dict[str, str] = field(default_factory=dict)  # our key -> peft config key
    quantized: bool = False
    families: tuple[str, ...] = ("encoder", "seq2seq", "decoder")

    def peft_fields(self) -> list[str]:
        if not self.peft_config:
            return []
        import peft

        cls = getattr(peft, self.peft_config)
        internal = {"peft_type", "task_type", "base_model_name_or_path", "revision", "auto_mapping",
                    "inference_mode"}
        return [f.name for f in dataclasses.fields(cls) if f.name not in internal]

    def valid_keys(self) -> list[str]:
        return sorted(set(self.defaults) | set(self.peft_fields()))

    def check_params(self, params: dict[str, Any]) -> None:
        unknown = [k for k in params if k not in self.defaults]
        if not unknown:
            return
        valid = self.valid_keys()
        bad = [k for k in unknown if k not in valid]
        if bad:
            key = bad[0]
            raise SpecError(
                f"unknown key 'method.{key}' for method '{self.name}'.{did_you_mean(key, valid)}",
                hint=f"valid keys: {', '.join(valid)}",
            )

    def resolve_params(self, params: dict[str, Any]) -> dict[str, Any]:
        self.check_params(params)
        out = dict(self.defaults)
        out.update(params)
        for key in ("r", "alpha"):
            if key in out and out[key] is not None and (not isinstance(out[key], int | float) or out[key] <= 0):
                raise SpecError(f"invalid value for 'method.{key}': must be a positive number (got {out[key]!r})",
                                hint=f"set e.g. --set method.{key}=8")
        check_param_values(out)
        return out


METHODS: Registry[Method] = Registry("method")

# The six methods of the seed studies, in the order tables and the demo show them.
SEED_METHODS = ("full", "partial", "lora", "qlora", "ia3", "dora")


def check_param_values(params: dict[str, Any]) -> None:
    """Shared adapter keys, checked when the spec is resolved rather than deep inside peft."""
    import math

    def bad(key: str, need: str, example: str) -> SpecError:
        return SpecError(f"invalid value for 'method.{key}': must be {need} (got {params[key]!r})",
                         hint=f"set e.g. --set method.{key}={example}")

    r = params.get("r")
    if r is not None and (isinstance(r, bool) or not isinstance(r, int)):
        raise bad("r", "a positive integer", "8")
    alpha = params.get("alpha")
    if alpha is not None and (isinstance(alpha, bool) or not math.isfinite(alpha)):
        raise bad("alpha", "a positive finite number", "16")
    dropout = params.get("dropout")
    if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, int | float)
                                or not 0 <= dropout < 1):
        raise bad("dropout", "a number in [0, 1)", "0.1")


# ---- helpers shared by the adapter methods ----------------------------------------------------


def _peft_task_type(task: str) -> str:
    return {"classification": "SEQ_CLS", "summarization": "SEQ_2_SEQ_LM", "instruction": "CAUSAL_LM"}[task]


def resolve_targets(value: Any, default: tuple[str, ...] | None, ctx: MethodContext) -> Any:
    from peftbench.models.loading import linear_module_names

    if value in (None, "auto"):
        return list(default) if default else linear_module_names(ctx.model)
    if value == "all-linear":
        return linear_module_names(ctx.model)
    return value


def wrap_peft(config: Any, ctx: MethodContext) -> Any:
    from peft import get_peft_model

    try:
        return get_peft_model(ctx.model, config)
    except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError) as err:
        msg = str(err).splitlines()[0][:300]
        if "not found in the base model" in msg or "Target modules" in msg or "No modules were targeted" in msg:
            raise ModelError(f"target modules matched nothing in the model: {msg}",
                             hint="set method.target_modules to module names that exist, or 'auto'") from None
        raise ModelError(f"method cannot apply to this model: {msg}",
                         hint="pick a method that supports this architecture (peftbench methods)") from None


def _split(method: Method, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    ours = {k: v for k, v in params.items() if k in method.defaults}
    passthrough = {k: v for k, v in params.items() if k not in method.defaults}
    return ours, passthrough


def make_config(cls_name: str, ctx: MethodContext, kwargs: dict[str, Any]) -> Any:
    import peft

    cls = getattr(peft, cls_name)
    try:
        return cls(task_type=_peft_task_type(ctx.task), **kwargs)
    except (TypeError, ValueError) as err:
        raise SpecError(f"invalid {cls_name} settings: {str(err).splitlines()[0][:300]}",
                        hint="check the method section of the spec") from None


# ---- the seed methods ---------------------------------------------------------------------


def prepare_full(method: Method, params: dict[str, Any], ctx: MethodContext) -> Any:
    for p in ctx.model.parameters():
        p.requires_grad_(True)
    return ctx.model


def prepare_partial(method: Method, params: dict[str, Any], ctx: MethodContext) -> Any:
    from peftbench.models.loading import find_layer_lists

    model = ctx.model
    lists = find_layer_lists(model, ctx.family)
    if not lists:
        raise ModelError("partial fine-tuning found no transformer layer list in this model",
                         hint="use method 'full' or an adapter method")
    blocks = [(f"{name}.{i}", block) for name, ml in lists for i, block in enumerate(ml)]
    n_layers = len(blocks)
    layers = params.get("layers")
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

    from peftbench.models.loading import HEAD_NAMES

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


_LORA_DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": "auto", "bias": "none"}
_LORA_KEYS = {"alpha": "lora_alpha", "dropout": "lora_dropout"}

for _m in (
    Method("full", "all weights trained", 5e-5, {}, prepare_full),
    Method("partial", "embeddings and lower layers frozen; top N layers + head trained", 1e-4,
           {"layers": None, "fraction": 0.5}, prepare_partial),
    Method("lora", "low-rank adapters on attention projections (peft LoraConfig)", 1e-3,
           dict(_LORA_DEFAULTS), prepare_lora, "LoraConfig", _LORA_KEYS),
    Method("qlora", "LoRA on a 4-bit NF4 base (bitsandbytes, double quant); head unquantized", 1e-3,
           {**_LORA_DEFAULTS, "quant_type": "nf4", "double_quant": True, "gradient_checkpointing": False},
           prepare_qlora, "LoraConfig", _LORA_KEYS, quantized=True),
    Method("ia3", "learned rescaling vectors on keys, values and feed-forward (peft IA3Config)", 5e-3,
           {"target_modules": "auto", "feedforward_modules": "auto"}, prepare_ia3, "IA3Config"),
    Method("dora", "LoRA with weight decomposition (use_dora)", 1e-3, dict(_LORA_DEFAULTS), prepare_lora,
           "LoraConfig", _LORA_KEYS),
):
    METHODS.add(_m.name, _m)


def method_load_kwargs(method: Method, params: dict[str, Any], compute_dtype: str) -> dict[str, Any]:
    """Extra `from_pretrained` arguments a method needs (a quantization config for QLoRA)."""
    if method.quantized:
        return qlora_load_kwargs(params, compute_dtype)
    return {}


def quantization_summary(model: Any, params: dict[str, Any]) -> dict[str, Any]:
    """What really is 4-bit after loading: counted from the modules, not taken from the config."""
    from peftbench.models.loading import HEAD_NAMES

    four_bit = [n for n, m in model.named_modules() if type(m).__name__ == "Linear4bit"]
    return {
        "bits": 4, "quant_type": params.get("quant_type", "nf4"), "double_quant": bool(params.get("double_quant", True)),
        "layers_4bit": len(four_bit),
        "head_quantized": any(part in HEAD_NAMES for n in four_bit for part in n.split(".")),
    }


# More peft methods (LoHa, LoKr, VeRA, prompt learning...) register themselves from their own module.
from peftbench.methods import peft_methods  # noqa: E402, F401
