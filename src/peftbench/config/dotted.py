"""Spec documents as plain mappings: reading a YAML spec file, `--set a.b=c` overrides addressed by
dotted key, and the deep merge that layers partial specs (sweep defaults, models, methods).

Every helper works on dicts before validation, so that a sweep or a multi-run file can combine
fragments first and validate each finished run spec once (`peftbench.config.spec.RunSpec`).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from peftbench.config.yaml_safe import clip, load_text, safe_load
from peftbench.errors import SpecError


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping a spec file holds (safe loader: no alias bombs, no duplicate keys)."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file '{path}' does not exist", hint="check the path given to --config")
    try:
        data = load_text(p.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError:
        raise SpecError(f"spec file '{path}' is not UTF-8 text", hint="save it as UTF-8") from None
    if data is None:
        raise SpecError(f"spec file '{path}' is empty", hint="add at least a 'method:' section")
    if not isinstance(data, dict):
        raise SpecError(f"spec file '{path}' must hold a mapping, got {type(data).__name__}",
                        hint="write 'key: value' lines at the top level")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.lr=2e-4' → (['train', 'lr'], 0.0002). Values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise SpecError(f"malformed --set '{clip(item)}': expected KEY=VALUE", hint="write e.g. --set train.lr=2e-4")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise SpecError(f"malformed --set '{clip(item)}': empty key", hint="write e.g. --set method.r=16")
    try:
        value = safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise SpecError(f"malformed --set '{clip(item)}': value is not valid YAML",
                        hint="quote strings, e.g. --set model.name_or_path='my/model'") from None
    if isinstance(value, str):
        value = _maybe_number(value)
    return key.split("."), value


def parse_overrides(items: list[str]) -> list[tuple[list[str], Any]]:
    """Every `--set` item parsed; all malformed items are reported in one error."""
    parsed, problems = [], []
    for item in items:
        try:
            parsed.append(parse_override(item))
        except SpecError as err:
            problems.append(err)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise SpecError(f"{len(problems)} malformed --set items: " + "; ".join(e.one_line() for e in problems))
    return parsed


def _maybe_number(text: str) -> Any:
    # YAML 1.1 reads '2e-4' as a string; users mean a number.
    try:
        return float(text) if re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", text) else text
    except ValueError:
        return text


def set_dotted(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"cannot set '{'.'.join(path)}': '{part}' is not a section",
                            hint="check the dotted key")
        node = child
    node[path[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for path, value in parse_overrides(overrides):
        set_dotted(out, path, value)
    return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested keys override only themselves (a shallow merge would drop sibling keys)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
