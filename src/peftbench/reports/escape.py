"""Escaping for every text a report writes: user-controlled strings (model folder names, method names,
config labels, run ids, class labels, metric names, error messages) become inert text in each format.

One function per format, used by every writer: `md_text` for report.md (table cells, headings,
lines) and `md_link` for its link targets, `html_text` for report.html (elements and attribute
values) and `script_json` for the data it embeds in a <script> element, `terminal_text` for tables
printed to a terminal, `csv_cell` for CSV exports (report.csv, the board's export, the qualitative
tables), and `plain_plot_text` for figure text (matplotlib would otherwise parse `$...$` as math).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Line breaks of any kind end a table row or a markdown block: shown as one space.
_LINE_BREAKS = re.compile(r"\r\n|[\n\r\v\f\x85\u2028\u2029]")
# Other control characters (C0, DEL, C1) could move a terminal's cursor or recolour it.
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
# Markdown punctuation that can start markup anywhere in a line: code spans, emphasis,
# strikethrough, the end of a link or image text, table cell borders, and the escape itself.
_MD_ALWAYS = re.compile(r"([\\`*~\]|])")
# `_` opens or closes emphasis only at a word's edge; inside a word (f1_macro) it stays as is.
_MD_EDGE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def md_text(text: Any) -> str:
    """`text` as inert markdown on one line: HTML's `&`, `<`, `>` as entities (no raw HTML survives),
    markup punctuation backslash-escaped, line breaks as spaces. Renders as the text it was."""
    s = _LINE_BREAKS.sub(" ", str(text))
    s = _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", s)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_ALWAYS.sub(r"\\\1", s)
    return _MD_EDGE_UNDERSCORE.sub(r"\\_", s)


def md_link(target: str) -> str:
    """A relative link target (a figure's path) with every character that could end or break the
    link percent-encoded."""
    from urllib.parse import quote

    return quote(target, safe="/-_.~")


def html_text(text: Any) -> str:
    """`text` as HTML text or a quoted attribute value: `&`, `<`, `>`, `"` and `'` as entities."""
    return html.escape(str(text), quote=True)


# In a <script> element only `</script` (or `<!--`) ends or changes the element: escaped as JSON's `\u003c`,
# so no string can close it; `>` and `&` follow for symmetry, U+2028/U+2029 because older JavaScript
# parsers read them as line ends inside string literals.
_SCRIPT_UNSAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                                "\u2029": "\\u2029"})


def script_json(value: Any) -> str:
    """`value` as JSON text that is safe inside a <script> element (`type="application/json"`, read with
    `JSON.parse`): `<`, `>`, `&` and the two Unicode line separators as `\\uXXXX` escapes, which parse
    back to the same characters; NaN and infinities as null (JSON has none)."""
    import json
    import math

    def finite(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): finite(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [finite(x) for x in v]
        return v

    text = json.dumps(finite(value), ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False)
    return text.translate(_SCRIPT_UNSAFE)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A decimal number as CSV readers take one (the same pattern as board.js's export).
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as the text it is: a string that starts like a formula (`=`,
    `+`, `-`, `@`, tab, carriage return) and is not a number gets a leading `'` (OWASP's rule
    against formula injection); numbers and other values pass unchanged."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START) or _NUMBER.fullmatch(value):
        return value
    return "'" + value


def terminal_text(text: Any) -> str:
    """`text` on one terminal line: line breaks as spaces, other control characters (escape
    sequences included) shown as `\\xNN` instead of acted on."""
    s = _LINE_BREAKS.sub(" ", str(text)).replace("\t", " ")
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


@contextmanager
def plain_plot_text() -> Iterator[None]:
    """Figures drawn inside show every string as written: no mathtext (`$\\frac$` in a label would
    otherwise fail the whole report) and no LaTeX."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        yield
