"""A small typed registry with did-you-mean lookups, shared by methods, tasks and model families."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from peftbench.errors import SpecError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """'Did you mean: x?' text for an unknown name, or '' when nothing is close: at most three of the
    five closest names. Names with the same letters come first, so a swapped pair ('lroa') suggests
    'lora' before 'road'."""
    close = difflib.get_close_matches(name, list(choices), n=5, cutoff=0.5)
    close = sorted(close, key=lambda c: sorted(c) != sorted(name))[:3]
    if not close:
        lowered = {c.lower(): c for c in choices}
        if name.lower() in lowered:
            close = [lowered[name.lower()]]
    return f" Did you mean: {', '.join(close)}?" if close else ""


class Registry(Generic[T]):
    """Name → entry. Duplicate names are refused; unknown names get a did-you-mean."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        def deco(entry: T) -> T:
            return self.add(name, entry)

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            raise SpecError(
                f"Unknown {self.kind} '{name}'.{did_you_mean(name, known)}",
                hint=f"use one of: {', '.join(known)}",
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())
