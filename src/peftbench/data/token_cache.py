"""A token-id cache shared by the runs of a sweep, so that 20 runs do not tokenize 20 times.

Active when `$PEFTBENCH_TOKEN_CACHE` names a folder (the sweep sets `<out>/.cache/tokens` for its
run processes). An entry is keyed by the encoding function, the tokenizer (its class, and its full
serialized vocabulary and rules), the texts, pairs and labels after subsampling (the data files'
content) and every other argument such as the maximum length. Entries are written atomically, so
concurrent or killed runs never leave a half entry behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peftbench.data.batching import Encoded
from peftbench.records.io import atomic_write_text

TOKEN_CACHE_ENV = "PEFTBENCH_TOKEN_CACHE"


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what decides token ids: the tokenizer's class and its serialized state."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Truncation and padding settings are per-call state the tokenizer keeps from its last call.
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        h.update(json.dumps(state, sort_keys=True).encode())
    else:
        h.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    h.update(json.dumps({k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}).encode())
    h.update(f"{getattr(tokenizer, 'padding_side', '')}|{getattr(tokenizer, 'truncation_side', '')}".encode())
    return h.hexdigest()


def cache_key(fn: Callable[..., Any], tokenizer: Any, args: tuple[Any, ...]) -> str:
    h = hashlib.sha256(f"{fn.__module__}.{fn.__qualname__}".encode())
    h.update(tokenizer_fingerprint(tokenizer).encode())
    h.update(json.dumps(args, default=str, separators=(",", ":")).encode())
    return h.hexdigest()[:32]


def cached(fn: Callable[..., Encoded], tokenizer: Any, *args: Any) -> Encoded:
    """`fn(tokenizer, *args)`, read from the cache folder when an identical call was made before."""
    root = os.environ.get(TOKEN_CACHE_ENV)
    if not root:
        return fn(tokenizer, *args)
    path = Path(root) / f"{cache_key(fn, tokenizer, args)}.json"
    try:
        blob = json.loads(path.read_text(encoding="utf-8"))
        return Encoded(input_ids=blob["input_ids"], labels=blob["labels"], extra=blob["extra"])
    except (OSError, ValueError, KeyError):
        pass
    enc = fn(tokenizer, *args)
    try:
        atomic_write_text(path, json.dumps({"input_ids": enc.input_ids, "labels": enc.labels, "extra": enc.extra},
                                           separators=(",", ":")))
    except OSError as err:  # a cache that cannot be written only costs time; a full disk (the run's) stops the run
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
    return enc
