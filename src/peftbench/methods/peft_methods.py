"""More `peft` methods in the registry: each is its peft config class plus defaults that fit.

Every key in a spec's method section goes through to the config class unchanged, so any field
of e.g. `LoHaConfig` can be set from a spec (`--set method.rank_dropout=0.1`). `target_modules:
auto` means the family's attention projections (all linear layers for unknown architectures).
"""

from __future__ import annotations

from typing import Any

from peftbench.errors import ModelError
from peftbench.methods.base import METHODS, Method, MethodContext, make_config, resolve_targets, wrap_peft
from peftbench.methods.seed import LORA_DEFAULTS, LORA_KEYS, prepare_ia3, prepare_lora

ALL_KINDS = ("encoder", "seq2seq", "decoder")
PROMPT_LEARNING = ("prefix_tuning", "prompt_tuning", "p_tuning")


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
    kwargs = dict(params)
    if "target_modules" in kwargs:
        if method.name == "ln_tuning" and kwargs["target_modules"] in (None, "auto"):
            kwargs["target_modules"] = norm_module_names(ctx.model)
        else:
            kwargs["target_modules"] = resolve_targets(kwargs["target_modules"], ctx.family.lora_targets, ctx)
    if method.name in PROMPT_LEARNING:
        kwargs = {**prompt_dims(ctx.model.config), **kwargs}
    model = wrap_peft(make_config(method.peft_config or "", ctx, kwargs), ctx)
    if method.name in PROMPT_LEARNING:
        probe_forward(model, method, ctx)
    return model


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
