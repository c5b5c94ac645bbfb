"""Imported once by the run fork server so that each run process starts with the heavy libraries loaded.

Only imports: no computation, no CUDA initialisation (forked children must start clean).
"""

from __future__ import annotations

import contextlib

with contextlib.suppress(ImportError):
    import accelerate  # noqa: F401
    import peft  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import torch  # noqa: F401
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

from . import runner  # noqa: F401
