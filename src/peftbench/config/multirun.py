"""Expand a multi-run spec file (defaults, models, methods, axes) into plain run specs.

    defaults: {train: {epochs: 3}}              # under every run
    models:                                     # one entry per model (a partial spec each)
      - {name: t5-samsum, task: summarization, model: {name_or_path: google-t5/t5-small},
         tiny: {family: t5}}                    # what `--model-override tiny` uses for it
    methods:                                    # one entry per method (a partial spec + own axes)
      - {method: {name: lora}, axes: {method.r: [8, 16]}}
      - {method: {name: ia3}}
    axes: {train.seed: [1, 2]}                  # dotted key -> values, crossed with everything
    tiny: {train: {max_steps: 2}}               # merged over every run with --model-override tiny

Runs are models × methods × the product of all axes that apply (global, the model's and the
method's own). Each run gets a readable name (model-method-r8-seed1). `${NAME}` in strings is
replaced from the environment; `${PEFTBENCH_SHARED_DATA}` defaults to `../shared/data`.
A plain single-run spec is the one-model, one-method case. Running the runs is
`peftbench.sweeps.engine.run_spec_file`'s job; a grid sweep file is `peftbench.config.sweep`'s format.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

from peftbench.config.spec import RunSpec, apply_overrides, deep_merge, load_yaml, set_dotted
from peftbench.errors import SpecError

# The top-level keys that make a document a multi-run spec (`name` and `tiny` may top a single run too).
MULTI_RUN_KEYS = ("defaults", "models", "methods", "axes")
ENV_DEFAULTS = {"PEFTBENCH_SHARED_DATA": "../shared/data"}


def is_multi_run(doc: dict[str, Any]) -> bool:
    return any(k in doc for k in MULTI_RUN_KEYS)


def is_run_list(doc: dict[str, Any]) -> bool:
    """True for this module's layout (models/methods as partial run specs, `axes`, `tiny`), as
    opposed to a grid sweep file (`grid`, `seeds`, models/methods as names or sections)."""
    if "axes" in doc or "tiny" in doc:
        return True
    model_keys = {"model", "data", "task", "train", "tiny", "axes", "generation"}
    method_keys = {"method", "axes", "train"}
    for key, marks in (("models", model_keys), ("methods", method_keys)):
        entries = doc.get(key)
        if isinstance(entries, list) and any(isinstance(e, dict) and marks & set(e) for e in entries):
            return True
    return False


def substitute_env(value: Any) -> Any:
    """`${NAME}` in every string leaf, from the environment (unknown names stay as written)."""
    if isinstance(value, dict):
        return {k: substitute_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v) for v in value]
    if isinstance(value, str):
        env = {**ENV_DEFAULTS, **os.environ}
        return re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), m.group(0)), value)
    return value


def _entries(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    entries = doc.get(key) or [{}]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SpecError(f"'{key}' must be a list of mappings (partial specs)",
                        hint=f"write '{key}:' followed by '- {{...}}' items")
    return entries


def _axes(*sources: dict[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for src in sources:
        axes = src.get("axes") or {}
        if not isinstance(axes, dict):
            raise SpecError("'axes' must map dotted keys to lists of values", hint="e.g. axes: {method.r: [8, 16]}")
        for key, values in axes.items():
            if not isinstance(values, list) or not values:
                raise SpecError(f"axis '{key}' must be a non-empty list of values", hint=f"e.g. {key}: [8, 16]")
            out[key] = values
    return out


def _run_name(parts: list[str]) -> str:
    name = "-".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "run"


def _short(key: str, value: Any) -> str:
    return f"{key.split('.')[-1]}{value}"


def expand(doc: dict[str, Any], model_override: str | None = None) -> list[dict[str, Any]]:
    """The plain run specs (dicts) a multi-run or single-run document describes."""
    if not isinstance(doc, dict):
        raise SpecError("a spec file must hold a mapping", hint="see examples/ for the layout")
    multi = is_multi_run(doc)
    if not multi:
        doc = {"defaults": {k: v for k, v in doc.items() if k != "tiny"}, "tiny": doc.get("tiny") or {}}
    base = doc.get("defaults") or {}
    runs = []
    for model_entry in _entries(doc, "models"):
        for method_entry in _entries(doc, "methods"):
            axes = _axes(doc, model_entry, method_entry)
            for combo in itertools.product(*axes.values()):
                spec = deep_merge(base, _strip(model_entry))
                spec = deep_merge(spec, _strip(method_entry))
                for key, value in zip(axes, combo, strict=True):
                    set_dotted(spec, key.split("."), value)
                if model_override:
                    spec = _override_model(spec, model_override, doc.get("tiny") or {}, model_entry)
                if multi:
                    method_name = (spec.get("method") or {}).get("name", "lora")
                    tags = [_short(k, v) for k, v in zip(axes, combo, strict=True) if k != "method.name"]
                    spec["name"] = _run_name([model_entry.get("name") or doc.get("name", ""), method_name, *tags])
                runs.append(substitute_env(spec))
    return runs


def _strip(entry: dict[str, Any]) -> dict[str, Any]:
    """A model or method entry as a partial spec: without its own axes and tiny profile."""
    return {k: v for k, v in entry.items() if k not in ("axes", "tiny")}


def _override_model(spec: dict[str, Any], override: str, doc_tiny: dict[str, Any],
                    model_entry: dict[str, Any]) -> dict[str, Any]:
    """Another model for every run; 'tiny' picks each model's tiny random stand-in and profile."""
    if override != "tiny":
        set_dotted(spec, ["model", "name_or_path"], override)
        return spec
    doc_tiny = dict(doc_tiny)
    entry_tiny = dict(model_entry.get("tiny") or {})
    entry_family, doc_family = entry_tiny.pop("family", None), doc_tiny.pop("family", None)
    family = entry_family or doc_family or (spec.get("model") or {}).get("family")
    if not family or family == "auto":
        who = model_entry.get("name") or (spec.get("model") or {}).get("name_or_path", "the model")
        raise SpecError(f"--model-override tiny: no tiny family given for '{who}'",
                        hint="add 'tiny: {family: gpt2}' (or model.family) to its entry")
    from peftbench.models.tiny import TINY_CONFIGS, tiny_model_path

    TINY_CONFIGS.get(family)  # did-you-mean error for an unknown family, before building anything
    spec = deep_merge(deep_merge(spec, doc_tiny), entry_tiny)
    set_dotted(spec, ["model", "name_or_path"], str(tiny_model_path(family)))
    set_dotted(spec, ["model", "family"], "auto")
    return spec


def load_runs(config: str, model_override: str | None = None, overrides: list[str] | None = None) -> list[RunSpec]:
    """Validated RunSpecs of a spec file, `--set` overrides applied to each run (all checked first)."""
    return [RunSpec.from_dict(apply_overrides(d, overrides or [])) for d in expand(load_yaml(config), model_override)]
