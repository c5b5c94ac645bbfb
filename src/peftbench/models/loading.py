"""Model loading: resolving a name to a folder, checking its weights, loading tokenizer, config and
model with one-line errors; parameter counting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.errors import ModelError, SpecError
from peftbench.models.embedded import EMBEDDED_ALIASES, embedded_model_path
from peftbench.models.families import Family, family_for
from peftbench.runtime.device import quiet_kernel_notices

if TYPE_CHECKING:
    import torch


def resolve_model_path(name_or_path: str) -> str:
    if name_or_path in EMBEDDED_ALIASES:
        return str(embedded_model_path())
    p = Path(name_or_path).expanduser()
    looks_local = p.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local:
        if not p.is_dir():
            raise ModelError(f"model path '{name_or_path}' does not exist or is not a folder",
                             hint="give a folder with config.json and weights, or a hub id like 'bert-base-uncased'")
        if not (p / "config.json").is_file():
            raise ModelError(f"model folder '{name_or_path}' has no config.json",
                             hint="point --model at a folder saved with save_pretrained")
        return str(p)
    return name_or_path


def check_weights(path: str, allow_pickle: bool) -> None:
    """Refuse a local folder without weights, or with pickle-only weights unless allowed."""
    p = Path(path)
    if not p.is_dir():
        return
    safes = list(p.glob("*.safetensors"))
    pickles = list(p.glob("*.bin")) + list(p.glob("*.pt")) + list(p.glob("*.pth"))
    if not safes and not pickles:
        raise ModelError(f"model folder '{path}' holds no weights (*.safetensors)",
                         hint="save the model with save_pretrained(safe_serialization=True)")
    if not safes and pickles and not allow_pickle:
        raise ModelError(f"model folder '{path}' has only pickle weights ({pickles[0].name}); "
                         "pickle files can run code when loaded",
                         hint="convert to safetensors, or set model.allow_pickle=true if you trust the file")
    for s in safes:
        problem = safetensors_problem(s)
        if problem:
            raise ModelError(f"corrupt weights file '{s}': {problem}", hint="re-save or re-download the model")


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be read (truncated, a damaged header), or None. Opening it checks
    that the header parses and that the tensors it lists cover the file exactly."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            fh.keys()
    except Exception as err:
        return str(err).splitlines()[0][:160] if str(err) else type(err).__name__
    return None


# ---- lengths ---------------------------------------------------------------------------

# Models whose position ids start after the padding index (RoBERTa's layout): that many fewer positions.
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "roberta-prelayernorm",
                    "longformer", "mpnet", "ibert")


def max_positions(config: Any) -> int | None:
    """The longest input the model's position table holds; None without one (T5's relative attention).
    `config` is a transformers config or the dict of a config.json."""
    def get(obj: Any, key: str) -> Any:
        return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)

    cfg = get(config, "encoder") or config  # an EncoderDecoderConfig: its encoder's
    limit = get(cfg, "max_position_embeddings") or get(cfg, "n_positions")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        return None
    if get(cfg, "model_type") in OFFSET_POSITIONS:
        limit -= (get(cfg, "pad_token_id") or 0) + 1
    return limit


def check_max_length(spec: Any) -> None:
    """Refuse `data.max_length` (and a seq2seq model's `data.max_target_length`) longer than the
    position table of a local model folder, from its config.json alone: past it, the first long batch
    fails mid-run on tensor sizes. Hub ids and folders without a readable config are left to loading."""
    import json

    cfg_path = Path(resolve_model_path(spec.model.name_or_path)) / "config.json"
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    limit = max_positions(config) if isinstance(config, dict) else None
    if limit is None:
        return
    lengths = [("data.max_length", spec.data.max_length)]
    if config.get("is_encoder_decoder") and spec.task != "classification":
        lengths.append(("data.max_target_length", spec.data.max_target_length))
    for key, value in lengths:
        if value > limit:
            raise SpecError(f"{key}={value} is longer than the {limit} positions of model "
                            f"'{spec.model.name_or_path}'", hint=f"set {key} to at most {limit}")


# ---- inspection ------------------------------------------------------------------------


def transformers_model(model: Any) -> Any:
    """The transformers model under a peft wrapper (adapter layers injected), or `model` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total), counting 4-bit packed weights by their logical element count."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        quant_state = getattr(p, "quant_state", None)
        if quant_state is not None and getattr(quant_state, "shape", None) is not None:
            n = int(numel_of(quant_state.shape))
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def numel_of(shape: Any) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


# ---- loading --------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    family: Family
    path: str
    model_type: str


def quiet_libraries() -> None:
    """Silence load reports and optional-kernel notices that bury peftbench's own output."""
    import warnings

    quiet_kernel_notices()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_tokenizer(path: str, spec_model: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=spec_model.trust_remote_code,
                                            revision=spec_model.revision)
    except Exception as err:
        raise ModelError(f"cannot load the tokenizer of '{path}': {str(err).splitlines()[0][:160]}",
                         hint="check the model path or hub id (no network here: use a local folder)") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def load_config(path: str, spec_model: Any) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=spec_model.trust_remote_code,
                                          revision=spec_model.revision)
    except Exception as err:
        if "trust_remote_code" in str(err) or "custom code" in str(err):
            raise ModelError(f"model '{path}' needs its own Python code to load, and model.trust_remote_code "
                             "is false", hint="set model.trust_remote_code=true only if you trust that code") from None
        raise ModelError(f"cannot load model '{path}': {str(err).splitlines()[0][:160]}",
                         hint="check the model path or hub id (no network here: use a local folder)") from None


def from_pretrained(auto_cls: Any, path: str, *, allow_missing_weights: bool = False, **kwargs: Any) -> Any:
    """`auto_cls.from_pretrained` with load failures turned into one-line ModelErrors, and weights the
    checkpoint lacks refused (see `check_missing_weights`)."""
    try:
        model, info = auto_cls.from_pretrained(path, output_loading_info=True, **kwargs)
    except ImportError as err:
        raise ModelError(f"cannot load '{path}': {str(err).splitlines()[0][:200]}",
                         hint="install the missing package (e.g. pip install bitsandbytes)") from None
    except Exception as err:
        raise ModelError(f"cannot load model '{path}': {str(err).splitlines()[0][:200]}",
                         hint="check that the folder holds a complete model") from None
    if not allow_missing_weights:
        check_missing_weights(model, info.get("missing_keys") or [], path)
    return model


def check_missing_weights(model: Any, missing_keys: list[str], path: str) -> None:
    """Refuse a checkpoint that leaves parameters of the base model at their random initialisation (a
    config with more layers than the weights, a renamed module): the run would train random layers.
    The task head outside the base model (a new classification head) is fresh on purpose."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    has_base = bool(prefix) and getattr(model, prefix, None) is not None
    missing = sorted(k for k in missing_keys if not has_base or k.startswith(prefix + "."))
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise ModelError(f"model '{path}' has no weights for {len(missing)} parameter(s), which would train from "
                         f"random values: {shown}",
                         hint="use a checkpoint that matches its config.json, or set "
                              "model.allow_missing_weights=true to train them from scratch")


def load_classifier(spec_model: Any, num_labels: int, label_names: list[str],
                    extra_kwargs: dict[str, Any] | None = None) -> LoadedModel:
    """A sequence-classification model with a fresh head of `num_labels` outputs."""
    from transformers import AutoModelForSequenceClassification

    path = resolve_model_path(spec_model.name_or_path)
    check_weights(path, spec_model.allow_pickle)
    config = load_config(path, spec_model)
    family = family_for(config.model_type, spec_model.family)
    tokenizer = load_tokenizer(path, spec_model)
    kwargs: dict[str, Any] = dict(
        num_labels=num_labels,
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
        trust_remote_code=spec_model.trust_remote_code,
        revision=spec_model.revision,
        use_safetensors=not spec_model.allow_pickle,
    )
    kwargs.update(extra_kwargs or {})
    model = from_pretrained(AutoModelForSequenceClassification, path,
                            allow_missing_weights=spec_model.allow_missing_weights, **kwargs)
    if getattr(model.config, "pad_token_id", None) is None or family.kind == "decoder":
        # Decoder heads pool the last token that is not `pad_token_id`: it must be the id batches pad with.
        model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model, tokenizer, family, path, config.model_type)
