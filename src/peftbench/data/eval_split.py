"""The reported split of a saved classification run, read without its training file.

`peftbench eval` only evaluates: it needs the eval (test) file and the run's label set, column names
and seeded subsample, all of which the record holds. The eval split of a classification run is always
its own file (`data.eval`/`data.test`); only the validation split is ever carved from the training
file, and evaluation does not use it. The subsample is drawn as training drew it (`data.seed + 1`
over every row of the file), so the run's own eval set comes back row for row.

Records written before paths were stored absolute hold paths relative to the folder the run was
started from: `locate_data_file` tries the current folder, then the run folder's parents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftbench.data.batching import Encoded
from peftbench.data.classification import (
    TEXT_COLUMN_GUESSES,
    ClassificationData,
    encode_classification,
    label_values,
    require_column,
    text_values,
)
from peftbench.data.hub import looks_like_hub_id
from peftbench.data.readers import PRESETS, read_table
from peftbench.data.splits import stratified_subsample
from peftbench.errors import DataError

EVAL_SEED_OFFSET = 1  # the eval subsample's seed offset in data.classification's draw


def locate_data_file(path: str, run_dir: str | Path, role: str = "eval") -> str:
    """A data file named in a record: as stored (absolute, or relative to the current folder), else
    relative to one of the run folder's parents; hub ids as they are."""
    p = Path(path)
    if p.exists():
        return path
    if not p.is_absolute():
        for parent in Path(run_dir).resolve().parents:
            if (parent / p).exists():
                return str(parent / p)
        if looks_like_hub_id(path):
            return path
    where = "" if p.is_absolute() else " from the current folder or any parent of the run folder"
    raise DataError(f"the run's {role} file '{path}' is not found{where}",
                    hint="pass the file with --data-eval FILE")


def read_eval_split(spec_data: Any, record: dict[str, Any], path: str, n_eval: int | None) -> ClassificationData:
    """The eval rows of `path` as the run drew them: the run's columns and label ids, its seeded
    subsample of `n_eval` rows (all rows when None); no training data."""
    info = record.get("data") or {}
    names = [str(n) for n in info.get("label_names") or []]
    df = read_table(path)
    preset = PRESETS.get(spec_data.preset) if spec_data.preset else None
    text_col = info.get("text_column") or spec_data.text_column or (preset.text_column if preset else None) or \
        next((c for c in TEXT_COLUMN_GUESSES if c in df.columns), "text")
    label_col = info.get("label_column") or spec_data.label_column or (preset.label_column if preset else "label")
    pair_col = info.get("text_pair_column") or spec_data.text_pair_column
    for column, role in ((text_col, "text"), (label_col, "label"), (pair_col, "text_pair")):
        if column:
            require_column(df, column, path, role)
    labels = _label_ids(label_values(df, label_col, path), names, spec_data, preset, path)
    keep = stratified_subsample(labels, n_eval, spec_data.seed + EVAL_SEED_OFFSET)
    rows = df.iloc[keep]
    texts = text_values(rows, text_col, path)
    pairs = text_values(rows, pair_col, path) if pair_col else None
    return ClassificationData(
        train_texts=[], train_pairs=None, train_labels=[], eval_texts=texts, eval_pairs=pairs,
        eval_labels=[labels[i] for i in keep], label_names=names,
        info={"text_column": text_col, "label_column": label_col, "text_pair_column": pair_col,
              "eval_rows_in_file": len(df), "n_eval": len(keep), "label_names": names})


def _label_ids(values: list[Any], names: list[str], spec_data: Any, preset: Any, path: str) -> list[int]:
    """Class ids as training assigned them: integer labels are ids into a declared label list, or
    the recorded label names read as integers; string labels are looked up by name."""
    declared = spec_data.labels or (list(preset.labels) if preset and preset.labels else None)
    if values and isinstance(values[0], int):
        by_name = not declared and all(n.lstrip("-").isdigit() for n in names)
        index_of: dict[Any, int] = {int(n): i for i, n in enumerate(names)} if by_name else \
            {i: i for i in range(len(names))}
    else:
        index_of = {n: i for i, n in enumerate(names)}
    unknown = sorted({v for v in values if v not in index_of}, key=str)
    if unknown:
        raise DataError(f"eval file '{path}' has label {unknown[0]!r}, which is not among the run's labels {names}",
                        hint="evaluate on a file with the run's label set")
    return [index_of[v] for v in values]


def encode_eval_split(spec: Any, record: dict[str, Any], run_dir: str | Path, tokenizer: Any,
                      data_eval: str | None = None, n_eval: int | None = None) -> tuple[ClassificationData, Encoded, str]:
    """(eval data, its encoding, the file read) for `peftbench eval`: `data_eval` when given (all its
    rows unless `n_eval`), else the run's own eval file and subsample."""
    from peftbench.data.splits import test_file

    own = test_file(spec.data)
    if data_eval and not (own and Path(data_eval).resolve() == Path(own).resolve()):
        path, n = data_eval, n_eval
    elif not own:
        raise DataError("the run's spec names no eval file", hint="pass the file with --data-eval FILE")
    else:
        path, n = locate_data_file(own, run_dir), n_eval or spec.data.n_eval
    data = read_eval_split(spec.data, record, path, n)
    enc = encode_classification(tokenizer, data.eval_texts, data.eval_pairs, data.eval_labels, spec.data.max_length)
    return data, enc, path
