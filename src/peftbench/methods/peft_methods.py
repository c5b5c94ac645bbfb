"""More `peft` methods in the registry: each is its peft config class plus defaults that fit.

Every key in a spec's method section goes through to the config class unchanged, so any field
of e.g. `LoHaConfig` can be set from a spec (`--set method.rank_dropout=0.1`). `target_modules:
auto` means the family's attention projections (all linear layers for unknown architectures).
"""

from __future__ import annotations

from typing import Any

from peftbench.errors import ModelError, SpecError
from peftbench.methods.base import METHODS, Method, MethodContext, make_config, resolve_targets, wrap_peft
from peftbench.methods.seed import LORA_DEFAULTS, LORA_KEYS, prepare_ia3, prepare_lora

ALL_KINDS = ("encoder", "seq2seq", "decoder")
PROMPT_LEARNING = ("prefix_tuning", "prompt_tuning", "p_tuning", "multitask_prompt_tuning", "cartridge")
KV_PREFIX = ("prefix_tuning", "cartridge")  # peft feeds them to the model as a key/value cache


def check_family(method: Method, ctx: MethodContext) -> None:
    kind = ctx.family.kind
    if kind != "unknown" and kind not in method.families:
        raise ModelError(f"method '{method.name}' does not apply to {kind} models ({ctx.family.name})",
                         hint=f"it supports: {', '.join(method.families)}; see `peftbench methods`")


def norm_module_names(model: Any) -> list[str]:
    """Leaf names of every normalization layer (LayerNorm, RMSNorm...): what LN tuning trains."""
    names = {n.split(".")[-1] for n, m in model.named_modules() if n and "norm" in type(m).__name__.lower()}
    return sorted(names)


def prepare_peft(method: Method, params: dict[str, Any], ctx: MethodContext) -> Any:
    """Any peft tuner: the spec's method keys become its config's keyword arguments."""
    check_family(method, ctx)
    required = REQUIRED.get(method.name)
    if required and not params.get(required[0]):
        raise SpecError(f"method '{method.name}' needs method.{required[0]}: {required[1]}",
                        hint=f"set it in the method section, e.g. --set 'method.{required[0]}=[101, 102]'")
    kwargs = dict(params)
    if kwargs.get("adapter_layers") == "all":  # adaption prompt: every layer of the model
        kwargs["adapter_layers"] = getattr(ctx.model.config, "num_hidden_layers", None)
    if "target_modules" in kwargs:
        if method.name == "ln_tuning" and kwargs["target_modules"] in (None, "auto"):
            kwargs["target_modules"] = norm_module_names(ctx.model)
        else:
            kwargs["target_modules"] = resolve_targets(kwargs["target_modules"], ctx.family.lora_targets, ctx)
    if method.name in PROMPT_LEARNING:
        kwargs = {**prompt_dims(ctx.model.config), **kwargs}
    if method.name in KV_PREFIX and ctx.peft_task_type == "SEQ_CLS":
        accept_past_key_values(ctx.model)
    model = wrap_peft(make_config(method.peft_config or "", ctx, kwargs), ctx)
    if method.name in PROMPT_LEARNING:
        probe_forward(model, method, ctx)
    return model


def forward_with_cache(self: Any, *args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
    """The model's own forward, taking its key/value cache under the name `past_key_values`."""
    if past_key_values is not None:
        kwargs["cache"] = past_key_values
    return type(self).forward(self, *args, **kwargs)


def accept_past_key_values(model: Any) -> None:
    """Let peft's prefix tuning for sequence classification pass its prefixes to `model`.

    peft hands the prefixes to a classifier whose `forward` has a `past_key_values` parameter (it
    inspects the signature), and otherwise to the backbone under the same name. transformers 5 calls
    that parameter `cache` (GPT-2, Llama...), so peft finds neither and refuses ("Model does not
    support past key values"). The model gets a forward with a `past_key_values` parameter that
    passes it on as `cache`; models that already take `past_key_values`, or take no cache, keep theirs."""
    import inspect
    import types

    params = inspect.signature(model.forward).parameters
    if "past_key_values" not in params and "cache" in params:
        model.forward = types.MethodType(forward_with_cache, model)  # bound: a deep copy binds to the copy


def prompt_dims(config: Any) -> dict[str, Any]:
    """Sizes peft looks up under `hidden_size`-style names in the config dict, for configs that
    store them under other names (DistilBERT's `dim`, `n_heads`, `n_layers`)."""
    stored = config.to_dict()
    out = {}
    for key, peft_names, ours in (
        ("token_dim", ("hidden_size", "n_embd", "d_model"), ("dim",)),
        ("num_attention_heads", ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"),
         ("n_heads",)),
        ("num_layers", ("num_hidden_layers", "num_layers", "n_layer"), ("n_layers",)),
    ):
        if not any(stored.get(n) is not None for n in peft_names):
            value = next((stored[n] for n in ours if stored.get(n) is not None), None)
            if value is not None:
                out[key] = value
    return out


def probe_forward(model: Any, method: Method, ctx: MethodContext) -> None:
    """One two-token forward pass: prompt-learning methods fail only when the model runs (e.g.
    a model without a key/value cache for prefix tuning); turn that into a clear error now."""
    import torch

    ids = torch.tensor([[101, 102]], device=next(model.parameters()).device)
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if ctx.peft_task_type != "SEQ_CLS":
        batch["labels"] = ids.clone()
    try:
        with torch.no_grad():
            model(**batch)
    except Exception as err:
        raise ModelError(f"method '{method.name}' cannot run on this {ctx.family.kind} model "
                         f"({ctx.family.name}): {type(err).__name__}: {str(err).splitlines()[0][:200]}",
                         hint="use an adapter method such as lora or ia3 for this architecture") from None


def prepare_ia3_attention(method: Method, params: dict[str, Any], ctx: MethodContext) -> Any:
    """(IA)3 on attention keys/values only, no feed-forward scaling."""
    ff = set(ctx.family.ia3_feedforward or ())
    if params.get("target_modules") in (None, "auto"):
        targets = [t for t in (ctx.family.ia3_targets or ()) if t not in ff] or None
        params = {**params, "target_modules": targets}
    return prepare_ia3(method, {**params, "feedforward_modules": []}, ctx)


def lora_variant(**fixed: Any) -> Any:
    """A LoRA flavour that differs only in fixed LoraConfig settings (rsLoRA, PiSSA...)."""

    def prepare(method: Method, params: dict[str, Any], ctx: MethodContext) -> Any:
        return prepare_lora(method, {**fixed, **params}, ctx)

    return prepare


def _peft(name: str, summary: str, lr: float, config: str, defaults: dict[str, Any],
          families: tuple[str, ...] = ALL_KINDS) -> Method:
    return Method(name, summary, lr, defaults, prepare_peft, config, families=families)


EXTRA_METHODS = (
    Method("rslora", "LoRA with rank-stabilized scaling alpha/sqrt(r) (use_rslora)", 1e-3, dict(LORA_DEFAULTS),
           lora_variant(use_rslora=True), "LoraConfig", LORA_KEYS),
    Method("pissa", "LoRA initialized from the weights' principal singular vectors (init_lora_weights=pissa)",
           1e-3, dict(LORA_DEFAULTS), lora_variant(init_lora_weights="pissa"), "LoraConfig", LORA_KEYS),
    Method("ia3_attention", "(IA)3 on attention keys and values only (no feed-forward scaling)", 5e-3,
           {"target_modules": "auto", "feedforward_modules": []}, prepare_ia3_attention, "IA3Config"),
    _peft("adalora", "LoRA in SVD form with orthogonality regularization (AdaLoraConfig; "
          "ranks are not reallocated: the loop does not call update_and_allocate)", 1e-3, "AdaLoraConfig",
          {"target_modules": "auto", "init_r": 12, "target_r": 8, "total_step": 1000}),
    _peft("loha", "low-rank Hadamard product adapters (LoHaConfig; not on GPT-2 Conv1D)", 1e-3, "LoHaConfig",
          {"r": 8, "alpha": 8, "target_modules": "auto"}),
    _peft("lokr", "low-rank Kronecker product adapters (LoKrConfig; not on GPT-2 Conv1D)", 1e-3, "LoKrConfig",
          {"r": 8, "alpha": 8, "target_modules": "auto"}),
    _peft("vera", "frozen shared random low-rank matrices, trained scaling vectors (VeraConfig)", 5e-3,
          "VeraConfig", {"r": 256, "target_modules": "auto"}),
    _peft("fourierft", "trained spectral coefficients of the weight update (FourierFTConfig)", 5e-3,
          "FourierFTConfig", {"n_frequency": 1000, "scaling": 150.0, "target_modules": "auto"}),
    _peft("hra", "Householder reflection adaptation (HRAConfig; not on GPT-2 Conv1D)", 1e-3, "HRAConfig",
          {"r": 8, "target_modules": "auto"}),
    _peft("oft", "orthogonal fine-tuning, block-diagonal rotations (OFTConfig; not on GPT-2 Conv1D)", 1e-3, "OFTConfig",
          {"oft_block_size": 32, "target_modules": "auto"}),
    _peft("boft", "butterfly orthogonal fine-tuning (BOFTConfig; not on GPT-2 Conv1D)", 1e-3, "BOFTConfig",
          {"boft_block_size": 4, "boft_n_butterfly_factor": 1, "target_modules": "auto"}),
    _peft("ln_tuning", "only the normalization layers train (LNTuningConfig)", 1e-3, "LNTuningConfig",
          {"target_modules": "auto"}),
    _peft("prefix_tuning", "trained key/value prefixes in every layer (PrefixTuningConfig; needs a KV cache)",
          1e-2, "PrefixTuningConfig", {"num_virtual_tokens": 8}, families=("seq2seq", "decoder")),
    _peft("prompt_tuning", "trained soft prompt embeddings (PromptTuningConfig)", 3e-2, "PromptTuningConfig",
          {"num_virtual_tokens": 8}),
    _peft("p_tuning", "soft prompts produced by a small trained encoder (PromptEncoderConfig)", 1e-2,
          "PromptEncoderConfig", {"num_virtual_tokens": 8, "encoder_hidden_size": 128}),
)

for _m in EXTRA_METHODS:
    METHODS.add(_m.name, _m)

GENERIC_LR = 1e-3  # learning rate of a peft method peftbench has no tuned default for
# Methods whose `target_modules` are not linear projections: their config's own default stays.
OWN_TARGETS = ("adaption_prompt", "trainable_tokens")
# Defaults a peft config leaves unset although the method cannot run without them.
KNOWN_DEFAULTS: dict[str, dict[str, Any]] = {"cartridge": {"num_virtual_tokens": 8},
                                             "multitask_prompt_tuning": {"num_virtual_tokens": 8},
                                             "adaption_prompt": {"adapter_len": 10, "adapter_layers": "all"}}
# Settings with no sensible default: the spec must give them.
REQUIRED = {"trainable_tokens": ("token_indices", "the token ids whose embeddings train"),
            "cpt": ("cpt_token_ids", "the token ids of the context (prompt and examples) CPT trains")}


def peft_type_configs() -> dict[str, str]:
    """Every `PeftType` of the installed peft: its lower-case name -> its config class name."""
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return {t.value.lower(): PEFT_TYPE_TO_CONFIG_MAPPING[t.value].__name__ for t in PeftType
            if t.value in PEFT_TYPE_TO_CONFIG_MAPPING}


def generic_method(name: str, config: str) -> Method:
    """A peft method peftbench knows only by its config class: the config's own defaults, except that
    `target_modules` (where the config has it) means the family's attention projections."""
    import dataclasses

    import peft

    fields = {f.name for f in dataclasses.fields(getattr(peft, config))}
    auto = "target_modules" in fields and name not in OWN_TARGETS
    defaults: dict[str, Any] = {**({"target_modules": "auto"} if auto else {}), **KNOWN_DEFAULTS.get(name, {})}
    return Method(name, f"peft {name.upper()} ({config}, its own defaults; lr {GENERIC_LR:g} is a generic "
                        "adapter rate)", GENERIC_LR, defaults, prepare_peft, config)


def register_peft_types(registry: Any) -> None:
    """Add every PeftType of the installed peft that has no entry of its own."""
    import peft

    known = set(registry.registered())
    for name, config in peft_type_configs().items():
        if name not in known and hasattr(peft, config):
            registry.add(name, generic_method(name, config))


METHODS.loaders.append(register_peft_types)
