"""Reading data tables: local CSV/TSV/JSON/JSONL/parquet files, or a hub data set when online;
and the column layouts of known data sets (presets).

Every problem found here is a `DataError` raised before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.data.hub import SYNTAX, looks_like_hub_id, parse_hub_id
from peftbench.errors import DataError
from peftbench.registry import Registry


@dataclass(frozen=True)
class Preset:
    """Column layout of a known data set (the files in shared data folders follow these)."""

    name: str
    text_column: str
    label_column: str | None
    labels: tuple[str, ...] | None = None
    text_pair_column: str | None = None


PRESETS: Registry[Preset] = Registry("data preset")
PRESETS.add("sst2", Preset("sst2", "sentence", "label", ("negative", "positive")))
PRESETS.add("imdb", Preset("imdb", "text", "label", ("negative", "positive")))
PRESETS.add("synthetic", Preset("synthetic", "text", "label", ("negative", "positive")))
PRESETS.add("samsum", Preset("samsum", "dialogue", "summary"))

SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


def read_table(path: str) -> Any:
    """A pandas DataFrame from a local file, or from a hub data set id when online."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        if not looks_like_hub_id(path):
            raise DataError(f"data file '{path}' does not exist", hint="check the path (relative to the current folder)")
        return _read_hub(path)
    if p.is_dir():
        raise DataError(f"data path '{path}' is a folder, not a file", hint="point at a .csv/.tsv/.json/.jsonl/.parquet file")
    suffix = p.suffix.lower()
    if p.stat().st_size == 0:
        raise DataError(f"data file '{path}' is empty", hint="give a file with a header row and examples")
    try:
        if suffix == ".csv":
            df = pd.read_csv(p, encoding="utf-8", keep_default_na=False)
        elif suffix == ".tsv":
            df = pd.read_csv(p, sep="\t", encoding="utf-8", keep_default_na=False, quoting=3)
        elif suffix == ".jsonl":
            df = pd.read_json(p, lines=True, encoding="utf-8")
        elif suffix == ".json":
            df = _read_json(p)
        elif suffix == ".parquet":
            df = pd.read_parquet(p)
        else:
            raise DataError(f"unsupported data file type '{suffix}' for '{path}'",
                            hint=f"use one of: {', '.join(SUFFIXES)}")
    except UnicodeDecodeError:
        raise DataError(f"data file '{path}' is not valid UTF-8{first_bad_byte(p)}",
                        hint="re-save the file as UTF-8 (it may be Latin-1 or Windows-1252)") from None
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"cannot parse data file '{path}': {str(err).splitlines()[0][:160]}",
                        hint="check the file's format matches its extension") from None
    if len(df) == 0:
        raise DataError(f"data file '{path}' has no rows", hint="give a file with examples")
    return df


def first_bad_byte(p: Path) -> str:
    """Where a file's first byte that is not UTF-8 is, as ': byte 0xe9 at offset N (line L, column C)'.

    The offset the decoder reports inside pandas counts from the start of its read buffer, not of the
    file; decoding line by line is exact, because a line break never occurs inside a UTF-8 sequence."""
    offset = 0
    with p.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return (f": byte 0x{raw[err.start]:02x} at offset {offset + err.start} "
                        f"(line {line_no}, column {err.start + 1})")
            offset += len(raw)
    return ""


def _read_json(p: Path) -> Any:
    import json

    import pandas as pd

    text = p.read_text(encoding="utf-8")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return pd.read_json(p, lines=True, encoding="utf-8")  # JSON lines under a .json name
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        obj = lists[0] if len(lists) == 1 else obj
    if not isinstance(obj, list):
        raise DataError(f"JSON file '{p}' must hold a list of records", hint="write [{...}, {...}] or JSON lines")
    return pd.DataFrame(obj)


def _read_hub(name: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise DataError(f"'{name}' is not a local file and the 'datasets' package is missing",
                        hint="pip install datasets, or give a local file") from None
    source = parse_hub_id(name)
    try:
        ds = datasets.load_dataset(source.path, source.config, split=source.split, revision=source.revision)
    except Exception as err:
        raise DataError(f"cannot load data set '{name}' from the hub: {str(err).splitlines()[0][:160]}",
                        hint=f"check the id ({SYNTAX}) and the network, or give a local file") from None
    return ds.to_pandas()
