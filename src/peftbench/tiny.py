"""Tiny random stand-ins for real architectures, built from a config (no download).

They let tests and `--model-override tiny` exercise every family offline in seconds. Each uses
the bundled MiniLM tokenizer (a WordPiece vocabulary of 30,522 tokens), so any text works.
Folders are cached under `~/.cache/peftbench/tiny` (or $PEFTBENCH_CACHE) and rebuilt when absent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .registry import Registry

TINY_DIMS = {"hidden": 32, "layers": 2, "heads": 2, "ffn": 64}


def cache_dir() -> Path:
    root = os.environ.get("PEFTBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "peftbench")
    return Path(root) / "tiny"


def _bert_config(vocab: int) -> Any:
    from transformers import BertConfig

    d = TINY_DIMS
    return BertConfig(vocab_size=vocab, hidden_size=d["hidden"], num_hidden_layers=d["layers"],
                      num_attention_heads=d["heads"], intermediate_size=d["ffn"], max_position_embeddings=512)


def _roberta_config(vocab: int) -> Any:
    from transformers import RobertaConfig

    d = TINY_DIMS
    return RobertaConfig(vocab_size=vocab, hidden_size=d["hidden"], num_hidden_layers=d["layers"],
                         num_attention_heads=d["heads"], intermediate_size=d["ffn"], max_position_embeddings=520,
                         pad_token_id=0, bos_token_id=101, eos_token_id=102)


def _distilbert_config(vocab: int) -> Any:
    from transformers import DistilBertConfig

    d = TINY_DIMS
    return DistilBertConfig(vocab_size=vocab, dim=d["hidden"], n_layers=d["layers"], n_heads=d["heads"],
                            hidden_dim=d["ffn"], max_position_embeddings=512)


# family name -> config builder; other families add one entry each.
TINY_CONFIGS: Registry[Any] = Registry("tiny model family")
TINY_CONFIGS.add("bert", _bert_config)
TINY_CONFIGS.add("roberta", _roberta_config)
TINY_CONFIGS.add("distilbert", _distilbert_config)


def tiny_model_path(family: str = "bert", seed: int = 0) -> Path:
    """Folder with a tiny random `family` model (base weights, config, tokenizer), built once."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from .models import embedded_model_path

    builder = TINY_CONFIGS.get(family)
    target = cache_dir() / f"{family}-s{seed}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    tok = AutoTokenizer.from_pretrained(str(embedded_model_path()))
    config = builder(len(tok))
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    try:
        os.replace(tmp, target)
    except OSError:  # another process built it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target
