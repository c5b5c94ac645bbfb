"""Model loading: resolving a name to a folder, checking its weights, loading tokenizer, config and
model with one-line errors; parameter counting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.errors import ModelError
from peftbench.models.embedded import EMBEDDED_ALIASES, embedded_model_path
from peftbench.models.families import Family, family_for

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
        try:
            from safetensors import safe_open

            with safe_open(str(s), framework="pt") as fh:
                fh.keys()
        except Exception as err:
            raise ModelError(f"corrupt weights file '{s}': {str(err).splitlines()[0][:120]}",
                             hint="re-save or re-download the model") from None


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
    import logging
    import warnings

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
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


def from_pretrained(auto_cls: Any, path: str, **kwargs: Any) -> Any:
    """`auto_cls.from_pretrained` with load failures turned into one-line ModelErrors."""
    try:
        return auto_cls.from_pretrained(path, **kwargs)
    except ImportError as err:
        raise ModelError(f"cannot load '{path}': {str(err).splitlines()[0][:200]}",
                         hint="install the missing package (e.g. pip install bitsandbytes)") from None
    except Exception as err:
        raise ModelError(f"cannot load model '{path}': {str(err).splitlines()[0][:200]}",
                         hint="check that the folder holds a complete model") from None


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
    model = from_pretrained(AutoModelForSequenceClassification, path, **kwargs)
    if getattr(model.config, "pad_token_id", None) is None or family.kind == "decoder":
        # Decoder heads pool the last token that is not `pad_token_id`: it must be the id batches pad with.
        model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model, tokenizer, family, path, config.model_type)
