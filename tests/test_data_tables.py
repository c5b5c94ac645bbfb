"""Reading data tables (`peftbench.data.readers`): what each file format yields, and the exact one-line
error, naming the problem and the fix, for each way a file can be unreadable."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from peftbench.data.readers import read_table
from peftbench.errors import DataError


def _error(path: Path | str) -> DataError:
    with pytest.raises(DataError) as info:
        read_table(str(path))
    return info.value


def test_missing_markers_in_texts_stay_texts(tmp_path: Path) -> None:
    """'NA', 'null', 'None' are words in a text column, not missing values; a leading quote in a TSV is
    a character of the text (no CSV quoting in TSV files)."""
    csv = tmp_path / "t.csv"
    csv.write_text("text,label\nNA,1\nnull,0\nNone,1\n")
    assert read_table(str(csv))["text"].tolist() == ["NA", "null", "None"]
    tsv = tmp_path / "t.tsv"
    tsv.write_text('text\tlabel\n"great" film, really\t1\nNA\t0\n')
    assert read_table(str(tsv))["text"].tolist() == ['"great" film, really', "NA"]


def test_one_row_is_a_table_and_a_header_alone_is_refused(tmp_path: Path) -> None:
    one = tmp_path / "one.csv"
    one.write_text("text,label\nfine,1\n")
    assert read_table(str(one))["text"].tolist() == ["fine"]
    header = tmp_path / "header.csv"
    header.write_text("text,label\n")
    err = _error(header)
    assert (err.message, err.hint) == (f"data file '{header}' has no rows", "give a file with examples")


def test_json_layouts(tmp_path: Path) -> None:
    rows = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"version": 2, "data": rows}))
    assert read_table(str(wrapped)).to_dict("records") == rows
    lines = tmp_path / "lines.json"  # JSON lines under a .json name
    lines.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_table(str(lines)).to_dict("records") == rows
    for name, content in (("columns.json", {"text": ["good", "bad"], "label": [1, 0]}), ("scalar.json", 3),
                          ("empty.json", {"text": "good"})):
        path = tmp_path / name
        path.write_text(json.dumps(content))
        err = _error(path)
        assert (err.message, err.hint) == (f"JSON file '{path}' must hold a list of records",
                                           "write [{...}, {...}] or JSON lines"), name


@pytest.mark.parametrize("name, content, message, hint", [
    ("missing.csv", None, "data file '{p}' does not exist", "check the path (relative to the current folder)"),
    ("folder", "dir", "data path '{p}' is a folder, not a file", "point at a .csv/.tsv/.json/.jsonl/.parquet file"),
    ("empty.csv", "", "data file '{p}' is empty", "give a file with a header row and examples"),
    ("notes.txt", "text,label\na,1\n", "unsupported data file type '.txt' for '{p}'",
     "use one of: .csv, .tsv, .json, .jsonl, .parquet"),
])
def test_unreadable_files_are_one_line_errors(tmp_path: Path, name: str, content: str | None, message: str,
                                              hint: str) -> None:
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    err = _error(path)
    assert (err.message, err.hint) == (message.format(p=path), hint)


def test_non_utf8_file_names_the_byte_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9,1\n".encode("latin-1"))
    err = _error(path)
    assert err.message == f"data file '{path}' is not valid UTF-8: byte 0xe9 at offset 14 (line 2, column 4)"
    assert err.hint == "re-save the file as UTF-8 (it may be Latin-1 or Windows-1252)"


def test_parse_failure_quotes_the_first_line_of_the_reader_error_cut_at_160(tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not a parquet file")
    with pytest.raises(Exception) as reader:  # whatever pandas raises, quoted as it reads
        pd.read_parquet(path)
    first = str(reader.value).splitlines()[0]
    assert len(first) > 160
    err = _error(path)
    assert err.message == f"cannot parse data file '{path}': {first[:160]}"
    assert err.hint == "check the file's format matches its extension"


class _Hub:
    """Stands in for `datasets.load_dataset` (no network here): records the call, returns a real data set
    or raises the given error."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple] = []
        self.error = error

    def __call__(self, *args: object, **kwargs: object) -> object:
        import datasets

        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        return datasets.Dataset.from_dict({"text": ["good", "bad"], "label": [1, 0]})


def test_hub_ids_are_read_through_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    hub = _Hub()
    monkeypatch.setattr(datasets, "load_dataset", hub)
    df = read_table("nyu-mll/glue:sst2:validation@main")
    assert df.to_dict("records") == [{"text": "good", "label": 1}, {"text": "bad", "label": 0}]
    assert hub.calls == [(("nyu-mll/glue", "sst2"), {"split": "validation", "revision": "main"})]


def test_hub_failures_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", _Hub(ConnectionError("x" * 200 + "\nsecond line")))
    err = _error("org/name")
    assert err.message == f"cannot load data set 'org/name' from the hub: {'x' * 160}"
    assert err.hint == ("check the id (ID[:CONFIG]:SPLIT[@REVISION], e.g. nyu-mll/glue:sst2:train) and the network, "
                        "or give a local file")
    monkeypatch.setattr(datasets, "load_dataset", _Hub(FileNotFoundError("no such data set")))
    assert _error("org/name").message == "cannot load data set 'org/name' from the hub: no such data set"
    monkeypatch.setitem(sys.modules, "datasets", None)  # the package missing: importing it fails
    err = _error("org/name")
    assert (err.message, err.hint) == ("'org/name' is not a local file and the 'datasets' package is missing",
                                       "pip install datasets, or give a local file")
