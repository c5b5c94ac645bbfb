"""Spec problems reported together: every pydantic error, every unknown method key and every
cross-section check of a spec in one line, so that one run of a command shows all there is to fix.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from peftbench.errors import SpecError
from peftbench.registry import did_you_mean


def method_problems(name: str, params: dict[str, Any]) -> list[SpecError]:
    """Every problem with a method name and its keys (each unknown key its own problem)."""
    from peftbench.methods.base import METHODS

    try:
        method = METHODS.get(name)
    except SpecError as err:
        return [err]
    problems = []
    for key, value in params.items():
        try:
            method.check_params({key: value})
        except SpecError as err:
            problems.append(err)
    return problems


def raise_problems(problems: list[SpecError]) -> None:
    """Nothing when there are no problems; one problem as it is; several in one line, then each
    distinct fix once (three unknown keys of one method list its valid keys once, not three times)."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        fixes = list(dict.fromkeys(" ".join(p.hint.split()) for p in problems if p.hint))
        raise SpecError(f"{len(problems)} problems in the spec: " + "; ".join(" ".join(p.message.split())
                                                                              for p in problems),
                        hint="; ".join(fixes) or None)


def _model_for(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    model: Any = root
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        found = [t for t in (field.annotation, *get_args(field.annotation)) if isinstance(t, type)
                 and issubclass(t, BaseModel)] if field is not None else []
        if not found:
            return None
        model = found[0]
    return model


def validation_problems(err: ValidationError, root: type[BaseModel]) -> list[str]:
    """One message per problem pydantic found, with a did-you-mean for unknown keys (a section's
    valid keys listed once, at its first unknown key)."""
    parts = []
    listed: set[Any] = set()
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(x) for x in loc)
        if e["type"] == "extra_forbidden":
            owner = _model_for(loc, root)
            known = list(owner.model_fields) if owner else []
            hint = did_you_mean(str(loc[-1]), known)
            valid = f" Valid keys: {', '.join(known)}." if known and owner not in listed else ""
            listed.add(owner)
            parts.append(f"unknown key '{key}'.{hint}{valid}")
        elif e["type"] == "model_type" or e["type"] == "dict_type":
            parts.append(f"'{key or 'spec'}' must be a mapping of keys, got {e.get('input')!r}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"invalid value for '{key}': {msg} (got {e.get('input')!r})")
    return parts
