"""Generated data files for the CLI fuzz harness (tests/test_fuzz_cli.py): CSV, TSV, JSON and JSONL
files, valid and invalid (odd encodings, missing columns, odd labels, empty files, huge fields)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from hypothesis import strategies as st

TEXTS = st.one_of(st.text(max_size=30), st.sampled_from(["", " ", "a\r\nb", "\u2028", "é" * 20, "\ufeffx"]),
                  st.just("x" * 200_000))
LABELS = st.one_of(st.sampled_from(["pos", "neg", "neu"]), st.integers(-1, 3),
                   st.sampled_from([0.5, float("nan"), 1e300, True, None, "", " ", "NaN", "999", "<b>x</b>"]),
                   st.text(max_size=4))
COLUMNS = st.sampled_from([("text", "label")] * 5 + [("text",), ("label",), ("sentence", "label"),
                                                     ("text", "label", "x"), ("", "label"), ("text", "text")])
# Label sets that look plausible: the validation must refuse or accept each with a clear outcome.
LABEL_SETS = st.sampled_from([["pos", "neg"], [0, 1], [0, 999], [0.5, 1.5], ["a"], [True, False], [1, "x"],
                              [float("nan"), 1], [-1, 0, 1], ["1", "2", "3"], ["pos", "neg", None], ["", "b"]])
WORDS_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
plausible_rows = st.tuples(st.lists(WORDS_TEXT, min_size=2, max_size=16), LABEL_SETS).map(
    lambda t: [(text, t[1][i % len(t[1])]) for i, text in enumerate(t[0])])
rows = st.one_of(st.lists(st.tuples(TEXTS, LABELS), max_size=20), plausible_rows, plausible_rows)
data_files = st.fixed_dictionaries({
    "format": st.sampled_from(["csv", "csv", "tsv", "jsonl", "jsonl", "json"]), "columns": COLUMNS, "rows": rows,
    "encoding": st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "utf-16", "latin-1", "garbage", "empty"]),
})


def data_bytes(spec: dict[str, Any]) -> bytes:
    """A data file's bytes: rows under the columns, in the format and encoding asked for."""
    cols, fmt = spec["columns"], spec["format"]
    records = [dict(zip(cols, row, strict=False)) for row in spec["rows"]]
    if fmt in ("csv", "tsv"):
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t" if fmt == "tsv" else ",")
        w.writerow(cols)
        w.writerows([[r.get(c) for c in cols] for r in records])
        text = buf.getvalue()
    elif fmt == "jsonl":
        text = "".join(json.dumps(r) + "\n" for r in records)
    else:
        text = json.dumps(records)
    if spec["encoding"] == "empty":
        return b""
    if spec["encoding"] == "garbage":
        return text.encode("utf-8", "surrogatepass")[:50] + b"\xff\xfe\x00\x80" + text.encode("utf-8", "surrogatepass")
    return text.encode(spec["encoding"], "replace")


VALID_ROWS = [("good film", "pos"), ("bad film", "neg")] * 4
