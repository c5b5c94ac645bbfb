"""Cheap checks before any data or weights are loaded: does the method apply to the model's
family? They read only the model folder's config.json, so a mismatch fails in milliseconds with a
clear message instead of after the data is read and the weights are loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftbench.errors import ModelError


def model_type_of(path: str) -> str | None:
    """`model_type` from a local model folder's config.json; None for hub ids."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"model config '{cfg}' is not readable JSON: {str(err).splitlines()[0][:120]}",
                         hint="re-save the model with save_pretrained") from None
    if not isinstance(data, dict):
        raise ModelError(f"model config '{cfg}' must hold a JSON object", hint="re-save the model with save_pretrained")
    value = data.get("model_type")
    return str(value) if value else None


def preflight(spec: Any, method: Any) -> None:
    """Refuse a method that cannot apply to the model's family (local models only), before any data
    or weights are read. (Tasks check their model family themselves when they load the model.)"""
    from peftbench.models.families import family_for
    from peftbench.models.loading import resolve_model_path

    path = resolve_model_path(spec.model.name_or_path)
    model_type = model_type_of(path)
    if model_type is None and spec.model.family == "auto":
        return
    family = family_for(model_type or "", spec.model.family)
    if family.kind == "unknown":
        return
    if family.kind not in method.families:  # same wording as peft_methods.check_family, which runs later
        raise ModelError(f"method '{method.name}' does not apply to {family.kind} models ({family.name})",
                         hint=f"it supports: {', '.join(method.families)}; see `peftbench methods`")
