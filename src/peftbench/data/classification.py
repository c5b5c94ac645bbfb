"""Classification data: loading, checking and subsampling labelled texts, and tokenizing them."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from peftbench.data.batching import Encoded
from peftbench.data.readers import PRESETS, read_table
from peftbench.data.splits import carve_validation, stratified_subsample, test_file
from peftbench.errors import DataError


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


MISSING_MARKERS = ("", "nan", "na", "n/a", "null", "none")  # how a missing value reads in a file of integer ids


def label_values(df: Any, column: str, path: str) -> list[Any]:
    """The labels of `column`: all integer class ids or all class names, else a DataError naming the
    first row that is neither (a missing value, a fractional number) or that breaks the single type."""
    values: list[Any] = []
    first_of: dict[str, tuple[int, Any]] = {}  # kind -> (row, value) where it first occurs
    for row, v in enumerate(df[column].tolist(), 1):
        value = label_value(v, row, column, path)
        kind = "str" if isinstance(value, str) else "int"
        first_of.setdefault(kind, (row, value))
        values.append(value)
    if len(first_of) > 1:
        row, v = first_of["str"]
        if str(v).strip().lower() in MISSING_MARKERS:
            raise DataError(f"data file '{path}' has a missing label {v!r} in column '{column}' (row {row})",
                            hint="fill in or remove the rows without a label")
        int_row, int_v = first_of["int"]
        raise DataError(f"data file '{path}' mixes integer and string labels in column '{column}' "
                        f"(row {int_row}: {int_v!r}, row {row}: {v!r})",
                        hint="use one label type throughout (all names or all integer ids)")
    return values


def label_value(v: Any, row: int, column: str, path: str) -> Any:
    """One label as an integer id or a stripped name; a missing or fractional label is a DataError."""
    if isinstance(v, (bool, int)) or (isinstance(v, float) and v.is_integer()):
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v.strip())
    if isinstance(v, str) and v.strip():
        return v.strip()
    if v is None or isinstance(v, str) or (isinstance(v, float) and v != v):
        raise DataError(f"data file '{path}' has a missing label {v!r} in column '{column}' (row {row})",
                        hint="fill in or remove the rows without a label")
    what = "not a whole number" if isinstance(v, float) else f"a {type(v).__name__}"
    raise DataError(f"data file '{path}' has label {v!r} in column '{column}' (row {row}), {what}: "
                    "classification labels are class names or integer class ids",
                    hint="use integer ids (0, 1, ...) or names for the classes; peftbench has no regression task")


def load_classification(spec_data: Any) -> ClassificationData:
    frames, (text_col, label_col, pair_col, declared) = _read_frames(spec_data)
    values = {role: label_values(df, label_col, path) for role, (df, path) in frames.items()}
    names, index_of = _label_index(values, frames, declared)
    remap = label_remap(index_of)
    labels_of = {role: [index_of[v] for v in values[role]] for role in frames}
    out = _draw_rows(frames, labels_of, spec_data, text_col, pair_col)
    check_training_classes(out["train"][2], names, frames["train"][1])
    val = out.get("validation", (None, None, None, 0))
    return ClassificationData(
        train_texts=out["train"][0], train_pairs=out["train"][1], train_labels=out["train"][2],
        eval_texts=out["eval"][0], eval_pairs=out["eval"][1], eval_labels=out["eval"][2],
        label_names=names,
        info={"text_column": text_col, "label_column": label_col, "text_pair_column": pair_col,
              "train_rows_in_file": out["train"][3], "eval_rows_in_file": out["eval"][3],
              "n_train": len(out["train"][0]), "n_eval": len(out["eval"][0]),
              "n_validation": len(val[0]) if val[0] is not None else 0,
              **({"label_remap": remap} if remap else {})},
        validation_texts=val[0], validation_pairs=val[1], validation_labels=val[2],
    )


Frames = dict[str, tuple[Any, str]]  # role -> (table, file path)


def label_remap(index_of: dict[Any, int]) -> dict[str, int] | None:
    """Integer labels that are not the class ids 0..K-1 ({0, 999}, 1-based stars, {-1, 1}): the id each
    one trains as, else None; said on stderr and recorded as `data.label_remap`.

    Remapped rather than refused: integer labels name their classes unambiguously and in order, so the
    classes keep their file values as names (reports show 999, not 1), the eval file maps alike, and a
    correct file needs no rewrite; a head sized by the largest value would hold classes no row has
    (1000 outputs for {0, 999}). The note makes a typo (999 for 9) visible."""
    if not all(isinstance(v, int) for v in index_of) or all(v == i for v, i in index_of.items()):
        return None
    remap = {str(v): i for v, i in index_of.items()}
    shown = ", ".join(f"{v}->{i}" for v, i in list(remap.items())[:8]) + (", ..." if len(remap) > 8 else "")
    print(f"[peftbench] note: integer labels are not the class ids 0..{len(remap) - 1}; training with them "
          f"remapped in sorted order ({shown}), recorded as data.label_remap", file=sys.stderr)
    return remap


def check_training_classes(labels: list[int], names: list[str], path: str) -> None:
    """Refuse training rows (after n_train and the validation carve) that hold one class, or fewer rows
    than the model has classes: the head would learn nothing about the classes no row shows."""
    present = sorted(set(labels))
    if len(present) < 2:
        raise DataError(f"the training rows drawn from '{path}' hold {len(labels)} example(s) of only one class "
                        f"({names[present[0]]!r})",
                        hint="give data.n_train (--n-train) at least 2 per class, or a train file with two classes")
    if len(labels) < len(names):
        raise DataError(f"the training rows drawn from '{path}' hold {len(labels)} examples for {len(names)} classes",
                        hint=f"set data.n_train (--n-train) to at least {len(names)}, better a few per class")


def _read_frames(spec_data: Any) -> tuple[Frames, tuple[str, str, str | None, list[str] | None]]:
    """Each role's table, checked for the columns the train table's layout names."""
    test_path = test_file(spec_data)
    if not spec_data.train or not test_path:
        raise DataError("classification needs data.train and data.eval files",
                        hint="pass --data-train FILE --data-eval FILE (or set data.train / data.eval)")
    frames: Frames = {}
    roles = [("train", spec_data.train), ("eval", test_path)]
    if spec_data.validation:
        roles.append(("validation", spec_data.validation))
    for role, path in roles:
        df = read_table(path)
        if role == "train":
            columns = _columns(spec_data, df)
            text_col, label_col, pair_col, _ = columns
        require_column(df, text_col, path, "text")
        require_column(df, label_col, path, "label")
        if pair_col:
            require_column(df, pair_col, path, "text_pair")
        frames[role] = (df, path)
    return frames, columns


def _label_index(values: dict[str, list[Any]], frames: Frames,
                 declared: list[str] | None) -> tuple[list[str], dict[Any, int]]:
    """(label names, raw label value -> class id): the declared label set, else the train classes."""
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
        names = [str(c) for c in train_classes]
        index_of = {c: i for i, c in enumerate(train_classes)}
        for role in [r for r in frames if r != "train"]:
            absent = sorted(set(values[role]) - set(train_classes), key=str)
            if absent:
                raise DataError(f"{role} file '{frames[role][1]}' has class {absent[0]!r} that never occurs in train",
                                hint="use a train file covering every class, or set data.labels explicitly")
    if len(set(values["train"])) < 2:
        raise DataError(f"train file '{frames['train'][1]}' has only one class ({values['train'][0]!r})",
                        hint="classification needs at least two classes in the training data")
    return names, index_of


def _draw_rows(frames: Frames, labels_of: dict[str, list[int]], spec_data: Any, text_col: str,
               pair_col: str | None) -> dict[str, tuple[list[str], list[str] | None, list[int], int]]:
    """Per role: (texts, pairs, class ids, rows in its file) of the rows kept, after the validation
    carve (when there is no validation file) and the stratified subsamples of n_train/n_eval."""
    frames, labels_of = dict(frames), dict(labels_of)
    pools: dict[str, list[int] | None] = {role: None for role in frames}  # rows a role may draw from (None: all)
    carved = None
    if "validation" not in frames and spec_data.validation_fraction > 0:
        carved = carve_validation(labels_of["train"], spec_data)
    if carved:
        pools["validation"], pools["train"] = carved
        frames["validation"], labels_of["validation"] = frames["train"], labels_of["train"]
    sizes = {"train": spec_data.n_train, "eval": spec_data.n_eval, "validation": spec_data.n_validation}
    out = {}
    for role, seed_off in (("train", 0), ("eval", 1), ("validation", 2)):
        if role not in frames:
            continue
        df, path = frames[role]
        labels = labels_of[role]
        pool = pools[role]
        if pool is None:
            pool = list(range(len(labels)))
        n = sizes[role] if role != "validation" or spec_data.validation else None
        keep = [pool[i] for i in stratified_subsample([labels[j] for j in pool], n, spec_data.seed + seed_off)]
        texts = text_values(df.iloc[keep], text_col, path)
        pairs = text_values(df.iloc[keep], pair_col, path) if pair_col else None
        out[role] = (texts, pairs, [labels[i] for i in keep], len(df))
    return out


# ---- tokenization ---------------------------------------------------------------------------


def encode_classification(tokenizer: Any, texts: list[str], pairs: list[str] | None, labels: list[int],
                          max_length: int) -> Encoded:
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False)
    extra = {}
    if "token_type_ids" in enc:
        extra["token_type_ids"] = enc["token_type_ids"]
    return Encoded(input_ids=enc["input_ids"], labels=list(labels), extra=extra)
