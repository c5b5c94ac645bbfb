"""Tiny random stand-ins for real architectures, built from a config (no download).

They let tests and `--model-override tiny` exercise every family offline in seconds. Each uses
the bundled MiniLM tokenizer (a WordPiece vocabulary of 30,522 tokens), so any text works.
Folders are cached under `~/.cache/peftbench/tiny` (or $PEFTBENCH_CACHE) and rebuilt when absent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from peftbench.registry import Registry

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


# The MiniLM WordPiece vocabulary has no BOS/EOS: [CLS] (101) and [SEP] (102) play those parts.
_PAD, _BOS, _EOS = 0, 101, 102


def _t5_config(vocab: int) -> Any:
    from transformers import T5Config

    d = TINY_DIMS
    return T5Config(vocab_size=vocab, d_model=d["hidden"], d_kv=d["hidden"] // d["heads"], d_ff=d["ffn"],
                    num_layers=d["layers"], num_decoder_layers=d["layers"], num_heads=d["heads"],
                    relative_attention_num_buckets=8, pad_token_id=_PAD, eos_token_id=_EOS,
                    decoder_start_token_id=_PAD)


def _bart_config(vocab: int) -> Any:
    from transformers import BartConfig

    d = TINY_DIMS
    return BartConfig(vocab_size=vocab, d_model=d["hidden"], encoder_layers=d["layers"], decoder_layers=d["layers"],
                      encoder_attention_heads=d["heads"], decoder_attention_heads=d["heads"],
                      encoder_ffn_dim=d["ffn"], decoder_ffn_dim=d["ffn"], max_position_embeddings=512,
                      pad_token_id=_PAD, bos_token_id=_BOS, eos_token_id=_EOS, decoder_start_token_id=_EOS,
                      forced_eos_token_id=None)


def _gpt2_config(vocab: int) -> Any:
    from transformers import GPT2Config

    d = TINY_DIMS
    return GPT2Config(vocab_size=vocab, n_embd=d["hidden"], n_layer=d["layers"], n_head=d["heads"],
                      n_inner=d["ffn"], n_positions=512, bos_token_id=_BOS, eos_token_id=_EOS, pad_token_id=_PAD)


def _gpt_neox_config(vocab: int) -> Any:
    from transformers import GPTNeoXConfig

    d = TINY_DIMS
    return GPTNeoXConfig(vocab_size=vocab, hidden_size=d["hidden"], num_hidden_layers=d["layers"],
                         num_attention_heads=d["heads"], intermediate_size=d["ffn"], max_position_embeddings=512,
                         bos_token_id=_BOS, eos_token_id=_EOS, pad_token_id=_PAD)


def _llama_config(vocab: int) -> Any:
    from transformers import LlamaConfig

    d = TINY_DIMS
    return LlamaConfig(vocab_size=vocab, hidden_size=d["hidden"], num_hidden_layers=d["layers"],
                       num_attention_heads=d["heads"], num_key_value_heads=d["heads"], intermediate_size=d["ffn"],
                       max_position_embeddings=512, bos_token_id=_BOS, eos_token_id=_EOS, pad_token_id=_PAD)


# family name -> config builder; other families add one entry each.
TINY_CONFIGS: Registry[Any] = Registry("tiny model family")
TINY_CONFIGS.add("bert", _bert_config)
TINY_CONFIGS.add("roberta", _roberta_config)
TINY_CONFIGS.add("distilbert", _distilbert_config)
TINY_CONFIGS.add("t5", _t5_config)
TINY_CONFIGS.add("bart", _bart_config)
TINY_CONFIGS.add("gpt2", _gpt2_config)
TINY_CONFIGS.add("gpt_neox", _gpt_neox_config)
TINY_CONFIGS.add("llama", _llama_config)


def _auto_class(config: Any) -> Any:
    """Generative families are saved with their LM head, so every weight a task loads exists."""
    import transformers

    if getattr(config, "is_encoder_decoder", False):
        return transformers.AutoModelForSeq2SeqLM
    if config.model_type in ("gpt2", "gpt_neox", "llama"):
        return transformers.AutoModelForCausalLM
    return transformers.AutoModel


def tiny_model_path(family: str = "bert", seed: int = 0) -> Path:
    """Folder with a tiny random `family` model (base weights, config, tokenizer), built once."""
    import torch
    from transformers import AutoTokenizer

    from peftbench.models.embedded import embedded_model_path

    builder = TINY_CONFIGS.get(family)
    target = cache_dir() / f"{family}-s{seed}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    tok = AutoTokenizer.from_pretrained(str(embedded_model_path()))
    config = builder(len(tok))
    torch.manual_seed(seed)
    model = _auto_class(config).from_config(config)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    try:
        os.replace(tmp, target)
    except OSError:  # another process built it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target
