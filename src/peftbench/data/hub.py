"""Hub data sets named in a spec: a data set path with an optional configuration, split and revision.

A spec names one either as a mapping or as one string, and the mapping is stored as the string:

    data.train: {hub: nyu-mll/glue, config: sst2, split: train, revision: main}
    data.train: "nyu-mll/glue:sst2:train@main"      # ID[:CONFIG]:SPLIT[@REVISION]
    data.train: "stanfordnlp/imdb:test"             # ID:SPLIT (no configuration)

`ID` alone reads the `train` split. The parts go to `datasets.load_dataset(path, name=config,
split=split, revision=revision)`. Hub ids, configuration and split names hold no ':' and no '@', and
git refs hold no ':', so the string form is unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftbench.errors import SpecError

HUB_KEYS = ("hub", "config", "split", "revision")
LOCAL_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
SYNTAX = "ID[:CONFIG]:SPLIT[@REVISION], e.g. nyu-mll/glue:sst2:train"


@dataclass(frozen=True)
class HubSource:
    """What `datasets.load_dataset` is called with."""

    path: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None

    def text(self) -> str:
        """The string form (what a spec and a record hold)."""
        core = ":".join(p for p in (self.path, self.config, self.split) if p)
        return f"{core}@{self.revision}" if self.revision else core


def parse_hub_id(text: str) -> HubSource:
    """`ID[:CONFIG]:SPLIT[@REVISION]` (or `ID`) as its parts; a SpecError for any other shape."""
    core, at, revision = text.partition("@")
    parts = core.split(":")
    if (at and not revision) or len(parts) > 3 or not all(p.strip() for p in parts):
        raise SpecError(f"hub data set '{text}' is not of the form {SYNTAX}",
                        hint="or write a mapping: {hub: ID, config: NAME, split: SPLIT, revision: REV}")
    if len(parts) == 3:
        return HubSource(parts[0], parts[1], parts[2], revision or None)
    return HubSource(parts[0], None, parts[1] if len(parts) == 2 else "train", revision or None)


def hub_text_from_mapping(value: dict[str, Any]) -> str:
    """`{hub: ID, config: ..., split: ..., revision: ...}` as the string form; a SpecError for
    unknown keys or parts that are not plain names."""
    unknown = [str(k) for k in value if k not in HUB_KEYS]
    if unknown or not value.get("hub"):
        what = f"unknown key '{unknown[0]}'" if unknown else "no 'hub' key"
        raise SpecError(f"a hub data set mapping has {what}",
                        hint=f"write {{hub: ID, config: NAME, split: SPLIT, revision: REV}} (keys: {', '.join(HUB_KEYS)})")
    parts = {k: value.get(k) for k in HUB_KEYS}
    for key, part in parts.items():
        if part is None:
            continue
        if not isinstance(part, str | int) or isinstance(part, bool) or not str(part).strip() or \
                any(c in str(part) for c in ":@"):
            raise SpecError(f"a hub data set's {key} {part!r} is not a plain name (no ':' or '@')",
                            hint="write e.g. {hub: nyu-mll/glue, config: sst2, split: train}")
    source = HubSource(str(parts["hub"]), _text(parts["config"]), str(parts["split"] or "train"),
                       _text(parts["revision"]))
    return source.text()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def looks_like_hub_id(text: str) -> bool:
    """A name that is no local path: no data-file suffix, not starting with '.' or '/', and an
    organisation ('org/name') or a split (':') in it."""
    lowered = text.lower()
    if lowered.endswith(LOCAL_SUFFIXES) or text.startswith((".", "/", "~")):
        return False
    return "/" in text or ":" in text
