"""Loading, checking, subsampling and tokenizing local (or hub) data sets.

Local CSV/TSV/JSON/JSONL/parquet files always work; a hub id goes through
`datasets.load_dataset` when online. Every problem found here is a `DataError` raised before
any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.data.batching import Encoded
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

SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


def read_table(path: str) -> Any:
    """A pandas DataFrame from a local file, or from a hub data set id when online."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        if p.suffix.lower() in SUFFIXES or "/" not in path or path.startswith((".", "/")):
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
    except UnicodeDecodeError as err:
        raise DataError(f"data file '{path}' is not valid UTF-8 (byte {err.start})",
                        hint="re-save the file as UTF-8") from None
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"cannot parse data file '{path}': {str(err).splitlines()[0][:160]}",
                        hint="check the file's format matches its extension") from None
    if len(df) == 0:
        raise DataError(f"data file '{path}' has no rows", hint="give a file with examples")
    return df


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
    ds_name, _, split = name.partition(":")
    try:
        ds = datasets.load_dataset(ds_name, split=split or "train")
    except Exception as err:
        raise DataError(f"cannot load data set '{name}' from the hub: {str(err).splitlines()[0][:160]}",
                        hint="check the id (NAME:SPLIT) and the network, or give a local file") from None
    return ds.to_pandas()


# ---- classification data ------------------------------------------------------------------


@dataclass
class ClassificationData:
    train_texts: list[str]
    train_pairs: list[str] | None
    train_labels: list[int]
    eval_texts: list[str]
    eval_pairs: list[str] | None
    eval_labels: list[int]
    label_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    validation_texts: list[str] | None = None  # None: no validation split (data.validation_fraction 0)
    validation_pairs: list[str] | None = None
    validation_labels: list[int] | None = None


TEXT_COLUMN_GUESSES = ("text", "sentence", "review", "content", "document")


def _columns(spec_data: Any, df: Any = None) -> tuple[str, str, str | None, list[str] | None]:
    preset = PRESETS.get(spec_data.preset) if spec_data.preset else None
    text = spec_data.text_column or (preset.text_column if preset else None)
    if text is None:  # no column named: take the first usual text column the file has
        found = [c for c in TEXT_COLUMN_GUESSES if df is not None and c in df.columns]
        text = found[0] if found else "text"
    label = spec_data.label_column or (preset.label_column if preset else "label")
    pair = spec_data.text_pair_column or (preset.text_pair_column if preset else None)
    labels = spec_data.labels or (list(preset.labels) if preset and preset.labels else None)
    return text, label, pair, labels


def require_column(df: Any, column: str, path: str, role: str) -> None:
    if column not in df.columns:
        cols = ", ".join(map(str, df.columns))
        raise DataError(f"data file '{path}' has no {role} column '{column}' (columns: {cols})",
                        hint=f"set data.{role}_column to one of the columns")


def text_values(df: Any, column: str, path: str) -> list[str]:
    values = df[column].tolist()
    out = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and v != v) or not str(v).strip():
            raise DataError(f"data file '{path}' has an empty text in column '{column}' (row {i + 1})",
                            hint="remove or fill rows with empty texts")
        out.append(str(v))
    return out


def label_values(df: Any, column: str, path: str) -> list[Any]:
    raw = df[column].tolist()
    kinds = set()
    values = []
    for v in raw:
        if isinstance(v, (bool, int)) or (isinstance(v, float) and float(v).is_integer()):
            kinds.add("int")
            values.append(int(v))
        elif isinstance(v, str) and v.strip().lstrip("-").isdigit():
            kinds.add("int")
            values.append(int(v.strip()))
        elif isinstance(v, str) and v.strip():
            kinds.add("str")
            values.append(v.strip())
        else:
            raise DataError(f"data file '{path}' has an empty or non-text label {v!r} in column '{column}'",
                            hint="every row needs a label")
    if len(kinds) > 1:
        raise DataError(f"data file '{path}' mixes integer and string labels in column '{column}'",
                        hint="use one label type throughout (all names or all integer ids)")
    return values


def stratified_subsample(labels: list[int], n: int | None, seed: int) -> list[int]:
    """Indices of a class-stratified random subset of size n (all indices when n is None or larger)."""
    import numpy as np

    idx = np.arange(len(labels))
    if n is None or n >= len(labels):
        return idx.tolist()
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    classes, counts = np.unique(labels_arr, return_counts=True)
    quota = np.floor(counts / counts.sum() * n).astype(int)
    # Hand out what rounding left over to the classes with the largest remainders.
    rest = n - quota.sum()
    order = np.argsort(-(counts / counts.sum() * n - quota))
    for k in order[:rest]:
        quota[k] += 1
    chosen = []
    for c, q in zip(classes, quota, strict=True):
        members = idx[labels_arr == c]
        chosen.extend(rng.choice(members, size=min(q, len(members)), replace=False).tolist())
    rng.shuffle(chosen)
    return [int(i) for i in chosen]


def load_classification(spec_data: Any) -> ClassificationData:
    from peftbench.core.protocol import test_file

    test_path = test_file(spec_data)
    if not spec_data.train or not test_path:
        raise DataError("classification needs data.train and data.eval files",
                        hint="pass --data-train FILE --data-eval FILE (or set data.train / data.eval)")
    frames = {}
    roles = [("train", spec_data.train), ("eval", test_path)]
    if spec_data.validation:
        roles.append(("validation", spec_data.validation))
    for role, path in roles:
        df = read_table(path)
        if role == "train":
            text_col, label_col, pair_col, declared = _columns(spec_data, df)
        require_column(df, text_col, path, "text")
        require_column(df, label_col, path, "label")
        if pair_col:
            require_column(df, pair_col, path, "text_pair")
        frames[role] = (df, path)

    values = {role: label_values(df, label_col, path) for role, (df, path) in frames.items()}
    kinds = {type(v[0]).__name__ for v in values.values()}
    if len(kinds) > 1:
        raise DataError("train and eval files use different label types (names in one, integers in the other)",
                        hint="use the same label type in both files")
    is_int = kinds == {"int"}
    train_classes = sorted(set(values["train"]))

    if declared:
        names = list(declared)
        index_of = {i: i for i in range(len(names))} if is_int else {n: i for i, n in enumerate(names)}
        for role in frames:
            bad = sorted({v for v in values[role] if v not in index_of}, key=str)
            if bad:
                raise DataError(f"{role} file '{frames[role][1]}' has label {bad[0]!r}, which is not in the "
                                f"declared label set {names}",
                                hint="fix the labels or set data.labels to the full label list")
    else:
        if is_int:
            top = max(train_classes)
            names = [str(i) for i in range(top + 1)] if min(train_classes) >= 0 and top < 1000 else [
                str(c) for c in train_classes]
            index_of = {int(n): i for i, n in enumerate(names)}
        else:
            names = [str(c) for c in train_classes]
            index_of = {n: i for i, n in enumerate(names)}
        for role in [r for r in frames if r != "train"]:
            absent = sorted(set(values[role]) - set(train_classes), key=str)
            if absent:
                raise DataError(f"{role} file '{frames[role][1]}' has class {absent[0]!r} that never occurs in train",
                                hint="use a train file covering every class, or set data.labels explicitly")
    if len(set(values["train"])) < 2:
        raise DataError(f"train file '{frames['train'][1]}' has only one class ({values['train'][0]!r})",
                        hint="classification needs at least two classes in the training data")

    from peftbench.core.protocol import carve_validation

    out: dict[str, Any] = {}
    labels_of = {role: [index_of[v] for v in values[role]] for role in frames}
    pools = {role: None for role in frames}  # row positions a role may draw from (None: all)
    carved = None
    if "validation" not in frames and spec_data.validation_fraction > 0:
        carved = carve_validation(labels_of["train"], spec_data)
    if carved:
        pools["validation"], pools["train"] = carved
        frames["validation"], labels_of["validation"] = frames["train"], labels_of["train"]
    sizes = {"train": spec_data.n_train, "eval": spec_data.n_eval, "validation": spec_data.n_validation}
    for role, seed_off in (("train", 0), ("eval", 1), ("validation", 2)):
        if role not in frames:
            continue
        df, path = frames[role]
        labels = labels_of[role]
        pool = pools[role] if pools[role] is not None else list(range(len(labels)))
        n = sizes[role] if role != "validation" or spec_data.validation else None
        keep = [pool[i] for i in stratified_subsample([labels[j] for j in pool], n, spec_data.seed + seed_off)]
        texts = text_values(df.iloc[keep], text_col, path)
        pairs = text_values(df.iloc[keep], pair_col, path) if pair_col else None
        out[role] = (texts, pairs, [labels[i] for i in keep], len(df))
    val = out.get("validation", (None, None, None, 0))
    return ClassificationData(
        train_texts=out["train"][0], train_pairs=out["train"][1], train_labels=out["train"][2],
        eval_texts=out["eval"][0], eval_pairs=out["eval"][1], eval_labels=out["eval"][2],
        label_names=names,
        info={"text_column": text_col, "label_column": label_col, "text_pair_column": pair_col,
              "train_rows_in_file": out["train"][3], "eval_rows_in_file": out["eval"][3],
              "n_train": len(out["train"][0]), "n_eval": len(out["eval"][0]),
              "n_validation": len(val[0]) if val[0] is not None else 0},
        validation_texts=val[0], validation_pairs=val[1], validation_labels=val[2],
    )


# ---- tokenization ---------------------------------------------------------------------------


def encode_classification(tokenizer: Any, texts: list[str], pairs: list[str] | None, labels: list[int],
                          max_length: int) -> Encoded:
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False)
    extra = {}
    if "token_type_ids" in enc:
        extra["token_type_ids"] = enc["token_type_ids"]
    return Encoded(input_ids=enc["input_ids"], labels=list(labels), extra=extra)
