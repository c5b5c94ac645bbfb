"""Which methods were verified on which tiny model family and task: data next to the registry.

`verified.json` holds, for every method and each target (`family/task`) of a kind the method claims,
what `tests/test_all_methods.py` saw when it trained the method there for one step on the tiny model:
`verified` (the loss is finite, the adapter changed the output, the recorded loss is the task loss)
or the reason peft (or the method's missing settings) refused it. The test fails when what it sees
differs from the table, and rewrites the table with `PEFTBENCH_WRITE_VERIFIED=1`, so the table stays
true. `settings` are the sizes the test sets for the 32-wide tiny models where a method's defaults
exceed them (e.g. VB-LoRA's vector length 256); on real models the method's own defaults apply.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

TABLE = Path(__file__).with_name("verified.json")
VERIFIED = "verified"


@functools.cache
def table() -> dict[str, Any]:
    """The verification table (empty where the file is absent)."""
    if not TABLE.is_file():
        return {"targets": [], "methods": {}, "settings": {}}
    return json.loads(TABLE.read_text(encoding="utf-8"))


def outcomes(method: str) -> dict[str, str]:
    """target (`family/task`) -> `verified` or the refusal reason, for one method."""
    return dict(table()["methods"].get(method, {}))


def verified_on(method: str) -> str:
    """The targets a method was verified on, for `peftbench methods`: 'bert/classification, ...',
    'none' when every target it was tried on refused it, 'not tested' for a method the table lacks."""
    seen = outcomes(method)
    if not seen:
        return "not tested"
    good = [t for t, outcome in seen.items() if outcome == VERIFIED]
    return ", ".join(good) if good else "none"
