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
method's own). Each run gets a readable name (model-method-r8-seed1). A `models:` entry must name a
model (`model.name_or_path`, here or in `defaults`) unless `--model-override` gives one: without it the
run would quietly train the default model under the entry's name. `max_runs`, `timeout_s`,
`cpus_per_run` and `gpus_per_run` mean what they mean in a grid sweep file (`peftbench.config.sweep`),
whose layout `sweep_layout` tells apart from this one.

`${NAME}` in strings is replaced from the environment only for allowed variables: `PEFTBENCH_SHARED_DATA`
(default `../shared/data`) and those the file lists under a top-level `env: [NAME, ...]`. A spec's
values end up in records, adapter configs and trackers, so a variable named like a credential
(HF_TOKEN, *_API_KEY, *SECRET*, ...) or holding a value that looks like one (`hf_...`, `sk-...`, a long
random string) is refused even when listed, and so is a set variable the file does not list; an
unset, unlisted `${NAME}` stays as written. `--set` values are applied after this and never expanded.
A plain single-run spec is the one-model, one-method case. Running the runs is
`peftbench.sweeps.engine.run_spec_file`'s job; a grid sweep file is `peftbench.config.sweep`'s format.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from typing import Any

from peftbench.config.dotted import deep_merge, load_yaml, parse_overrides, set_dotted
from peftbench.config.spec import RunSpec
from peftbench.errors import SpecError
from peftbench.models.embedded import EMBEDDED_MODEL
from peftbench.registry import did_you_mean

# The top-level keys that make a document a multi-run spec (`name` and `tiny` may top a single run too).
MULTI_RUN_KEYS = ("defaults", "models", "methods", "axes")
# Keys of the file itself, never part of a run spec: `tiny` (the --model-override tiny profile) and `env`
# (the environment variables `${NAME}` may read, see substitute_env).
FILE_ONLY_KEYS = ("tiny", "env")
LIMIT_KEYS = ("max_runs", "timeout_s", "cpus_per_run", "gpus_per_run")  # read by SweepSpec for both layouts
RUN_LIST_KEYS = (*MULTI_RUN_KEYS, *FILE_ONLY_KEYS, *LIMIT_KEYS, "name")
# Keys only a grid sweep file has (see peftbench.config.sweep).
GRID_ONLY_KEYS = ("grid", "seeds", "tasks", "per_model", "per_method")
ENV_DEFAULTS = {"PEFTBENCH_SHARED_DATA": "../shared/data"}
ALLOWED_ENV = ("PEFTBENCH_SHARED_DATA",)  # `${NAME}` a spec file may use without listing it under `env:`
ENV_REF = re.compile(r"\$\{(\w+)\}")
SECRET_NAME_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "API_KEY", "APIKEY", "CREDENTIAL", "PRIVATE_KEY")
SECRET_PREFIXES = ("hf_", "sk-", "sk_", "ghp_", "gho_", "ghs_", "ghu_", "github_pat_", "glpat-", "xox", "AKIA",
                   "ASIA", "AIza")


def is_multi_run(doc: dict[str, Any]) -> bool:
    return any(k in doc for k in MULTI_RUN_KEYS)


def sweep_layout(doc: dict[str, Any]) -> str:
    """'runs' for this module's layout (models/methods as partial run specs, `axes`) and for a plain
    single-run spec; 'grid' for a grid sweep file (`grid`, `seeds`, `tasks`, `per_*`, models/methods
    as names or sections). A file that mixes the two is refused: its meaning would be a guess."""
    model_keys = {"model", "data", "task", "train", "tiny", "axes", "generation"}
    method_keys = {"method", "axes", "train"}
    run_marks = ["axes"] if "axes" in doc else []
    grid_marks = [k for k in GRID_ONLY_KEYS if k in doc]
    for key, marks in (("models", model_keys), ("methods", method_keys)):
        entries = doc.get(key)
        if isinstance(entries, list):
            run_marks += [f"{key} entries with {', '.join(sorted(marks & set(e)))}" for e in entries
                          if isinstance(e, dict) and marks & set(e)][:1]
            grid_marks += [f"{key} given by name ({e})" for e in entries if isinstance(e, str)][:1]
    if run_marks and grid_marks:
        raise SpecError(f"the file mixes the grid layout ({grid_marks[0]}) and the run-list layout ({run_marks[0]})",
                        hint="use one layout: docs/sweeps.md shows both and how each maps to the other")
    if run_marks or ("tiny" in doc and not grid_marks):
        return "runs"
    return "grid" if grid_marks or any(k in doc for k in ("defaults", "models", "methods")) else "runs"


def substitute_env(value: Any, allowed: tuple[str, ...] = ()) -> Any:
    """`${NAME}` in every string leaf, from the environment, for the allowed names only (see the module
    docstring); `allowed` adds to `ALLOWED_ENV`."""
    if isinstance(value, dict):
        return {k: substitute_env(v, allowed) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, allowed) for v in value]
    if isinstance(value, str):
        return ENV_REF.sub(lambda m: env_value(m.group(1), (*ALLOWED_ENV, *allowed), m.group(0)), value)
    return value


def env_value(name: str, allowed: tuple[str, ...], written: str) -> str:
    """The value `${name}` stands for, or `written` when it is unset; raises SpecError where the rule
    refuses it (the message names the variable, never its value)."""
    fix = f"write the value itself in the spec file or pass it with --set, not ${{{name}}}"
    if looks_like_secret_name(name):
        raise SpecError(f"spec file refers to ${{{name}}}, which looks like a credential; its value would be "
                        "written into records, adapter configs and trackers", hint=f"remove it ({fix})")
    value = os.environ.get(name, ENV_DEFAULTS.get(name))
    if value is None:
        return written
    if name not in allowed:
        raise SpecError(f"spec file refers to ${{{name}}}, which is not an allowed environment variable",
                        hint=f"list it under a top-level 'env: [{name}]' in the spec file, or {fix}")
    if looks_like_secret_value(value):
        raise SpecError(f"environment variable {name} holds what looks like a credential (a token or key), "
                        "refused for ${" + name + "} in the spec file", hint=fix)
    return value


def looks_like_secret_name(name: str) -> bool:
    """HF_TOKEN, WANDB_API_KEY, AWS_SECRET_ACCESS_KEY, DB_PASSWORD, ... (any *TOKEN*, *SECRET*, *PASSWORD*,
    *_KEY, *CREDENTIAL*)."""
    upper = name.upper()
    return any(word in upper for word in SECRET_NAME_WORDS) or upper.endswith("_KEY") or upper == "KEY"


def looks_like_secret_value(value: str) -> bool:
    """A known token prefix (`hf_`, `sk-`, `ghp_`, `xox`, `AKIA`, ...) or a long random-looking run of
    letters and digits (20+ mixing upper case, lower case and digits, or 32+ hex digits)."""
    for word in re.split(r"[\s/\\:;,.@]+", value.strip()):
        if word.startswith(SECRET_PREFIXES) and len(word) >= 12:
            return True
    for run in re.findall(r"[A-Za-z0-9]{20,}", value):
        if re.fullmatch(r"[0-9a-fA-F]{32,}", run) and re.search(r"\d", run) and re.search("[a-fA-F]", run):
            return True
        if all(re.search(c, run) for c in ("[a-z]", "[A-Z]", "[0-9]")) and _entropy(run) >= 3.7:
            return True
    return False


def _entropy(word: str) -> float:
    counts = [word.count(c) for c in set(word)]
    return -sum(n / len(word) * math.log2(n / len(word)) for n in counts)


def allowed_env(doc: dict[str, Any]) -> tuple[str, ...]:
    """The variables a file lists under `env:` (see the module docstring)."""
    names = doc.get("env") or []
    if not isinstance(names, list) or not all(isinstance(n, str) and re.fullmatch(r"\w+", n) for n in names):
        raise SpecError("'env' must be a list of environment variable names",
                        hint="e.g. env: [MY_DATA_DIR]; then write ${MY_DATA_DIR} in the spec")
    return tuple(names)


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


def expand(doc: dict[str, Any], model_override: str | None = None,
           overrides: list[str] | None = None) -> list[dict[str, Any]]:
    """The plain run specs (dicts) a multi-run or single-run document describes, `--set` overrides
    applied last (after `${NAME}` substitution, so they are never expanded)."""
    if not isinstance(doc, dict):
        raise SpecError("a spec file must hold a mapping", hint="see examples/ for the layout")
    multi = is_multi_run(doc)
    allowed = allowed_env(doc)
    sets = parse_overrides(overrides or [])
    if multi:
        check_run_list_keys(doc)
    if not multi:
        doc = {"defaults": {k: v for k, v in doc.items() if k not in FILE_ONLY_KEYS}, "tiny": doc.get("tiny") or {}}
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
                    spec = override_model(spec, model_override, doc.get("tiny") or {}, model_entry)
                if multi:
                    method_name = section(spec, "method").get("name", "lora")
                    tags = [_short(k, v) for k, v in zip(axes, combo, strict=True) if k != "method.name"]
                    spec["name"] = _run_name([model_entry.get("name") or doc.get("name", ""), method_name, *tags])
                spec = substitute_env(spec, allowed)
                for path, value in sets:
                    set_dotted(spec, path, value)
                if "models" in doc:
                    require_model(spec, model_entry.get("name"))
                runs.append(spec)
    return runs


def check_run_list_keys(doc: dict[str, Any]) -> None:
    """A misspelt top-level key of a run-list file is an error, not a silently ignored section."""
    unknown = [str(k) for k in doc if k not in RUN_LIST_KEYS]
    if unknown:
        raise SpecError(f"unknown top-level key '{unknown[0]}' in a multi-run spec file."
                        f"{did_you_mean(unknown[0], RUN_LIST_KEYS)}", hint=f"valid keys: {', '.join(RUN_LIST_KEYS)}")


def require_model(spec: dict[str, Any], entry: Any) -> None:
    """A `models:` entry that names no model would train the default model under its own name."""
    model = spec.get("model")
    if isinstance(model, dict) and model.get("name_or_path"):
        return
    who = f"models entry '{entry}'" if entry else "a models entry"
    raise SpecError(f"{who} names no model (no model.name_or_path): it would train the default model "
                    f"({EMBEDDED_MODEL}) under that name",
                    hint="add 'model: {name_or_path: ...}' to the entry (or to defaults), or pass --model-override "
                         "tiny (or a model)")


def section(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """A spec section when it is a mapping, else empty (RunSpec then names the wrong type)."""
    value = spec.get(name)
    return value if isinstance(value, dict) else {}


def _strip(entry: dict[str, Any]) -> dict[str, Any]:
    """A model or method entry as a partial spec: without its own axes and tiny profile."""
    return {k: v for k, v in entry.items() if k not in ("axes", "tiny")}


def override_model(spec: dict[str, Any], override: str, doc_tiny: dict[str, Any],
                   model_entry: dict[str, Any]) -> dict[str, Any]:
    """Another model for every run; 'tiny' picks each model's tiny random stand-in and profile (the
    family from the entry's `tiny`, the file's `tiny` or `model.family`, in that order)."""
    if override != "tiny":
        set_dotted(spec, ["model", "name_or_path"], override)
        return spec
    doc_tiny = dict(doc_tiny)
    entry_tiny = dict(model_entry.get("tiny") or {})
    entry_family, doc_family = entry_tiny.pop("family", None), doc_tiny.pop("family", None)
    family = entry_family or doc_family or section(spec, "model").get("family")
    if not family or family == "auto":
        who = model_entry.get("name") or section(spec, "model").get("name_or_path", "the model")
        raise SpecError(f"--model-override tiny: no tiny family given for '{who}'",
                        hint="add 'tiny: {family: gpt2}' (or model.family) to its entry")
    from peftbench.models.tiny import TINY_CONFIGS, tiny_model_path

    TINY_CONFIGS.get(family)  # did-you-mean error for an unknown family, before building anything
    spec = deep_merge(deep_merge(spec, doc_tiny), entry_tiny)
    set_dotted(spec, ["model", "name_or_path"], str(tiny_model_path(family)))
    set_dotted(spec, ["model", "family"], "auto")
    return spec


def load_runs(config: str, model_override: str | None = None, overrides: list[str] | None = None) -> list[RunSpec]:
    """Validated RunSpecs of a spec file, `--set` overrides applied to each run (all checked first).
    A grid sweep file is expanded by `SweepSpec` (its runs come resolved)."""
    doc = load_yaml(config)
    if sweep_layout(doc) == "grid":
        from peftbench.config.sweep import SweepSpec  # sweep imports this module

        return [p.spec for p in SweepSpec.from_yaml(config, model_override, overrides).expand()]
    return [RunSpec.from_dict(d) for d in expand(doc, model_override, overrides)]
