"""Loading classification data (`peftbench.data.classification`): which columns are read, which rows
each split draws (against the seeded carve and subsample they are defined by), what `info` records, how
labels become class ids, how texts are tokenized, and the exact one-line error for each bad file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from peftbench.config.spec import DataSpec
from peftbench.data.classification import (
    check_training_classes,
    encode_classification,
    label_value,
    label_values,
    load_classification,
    text_values,
)
from peftbench.data.readers import read_table
from peftbench.data.splits import carve_validation, stratified_subsample
from peftbench.errors import DataError


def _csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _error(call: object, *args: object) -> DataError:
    with pytest.raises(DataError) as info:
        call(*args)
    return info.value


def _load_error(**data: object) -> DataError:
    return _error(load_classification, DataSpec(**data))


# ---- columns ---------------------------------------------------------------------------------


def test_text_column_is_the_first_usual_name_the_file_has(tmp_path: Path) -> None:
    f = _csv(tmp_path / "r.csv", "id,review,sentence,label", "1,a fine film,s1,pos", "2,a dull film,s2,neg")
    d = load_classification(DataSpec(train=str(f), eval=str(f), validation_fraction=0))
    assert d.info["text_column"] == "sentence" and d.train_texts == ["s1", "s2"]
    g = _csv(tmp_path / "g.csv", "id,review,label", "1,a fine film,pos", "2,a dull film,neg")
    assert load_classification(DataSpec(train=str(g), eval=str(g))).train_texts == ["a fine film", "a dull film"]
    h = _csv(tmp_path / "h.csv", "body,label", "a,pos", "b,neg")
    err = _load_error(train=str(h), eval=str(h))
    assert err.message == f"data file '{h}' has no text column 'text' (columns: body, label)"
    assert err.hint == "set data.text_column to one of the columns"


def test_a_preset_names_the_columns(tmp_path: Path) -> None:
    f = _csv(tmp_path / "s.csv", "text,sentence,label", "t1,nice film,1", "t2,dull film,0")
    d = load_classification(DataSpec(preset="sst2", train=str(f), eval=str(f), validation_fraction=0))
    assert d.train_texts == ["nice film", "dull film"]  # the preset's column, not the first usual name
    g = _csv(tmp_path / "d.csv", "dialogue,summary", "hello there,greeting", "see you,farewell")
    d = load_classification(DataSpec(preset="samsum", train=str(g), eval=str(g), validation_fraction=0))
    assert (d.info["text_column"], d.info["label_column"]) == ("dialogue", "summary")
    assert d.label_names == ["farewell", "greeting"]


def test_missing_columns_name_the_file_the_column_and_the_key(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", "premise,hypothesis,label", "a,b,0", "c,d,1")
    no_text = _csv(tmp_path / "e1.csv", "sentence,hypothesis,label", "a,b,0")
    err = _load_error(train=str(train), eval=str(no_text), text_column="premise", text_pair_column="hypothesis")
    assert err.message == f"data file '{no_text}' has no text column 'premise' (columns: sentence, hypothesis, label)"
    no_label = _csv(tmp_path / "e2.csv", "premise,hypothesis,stars", "a,b,0")
    err = _load_error(train=str(train), eval=str(no_label), text_column="premise", text_pair_column="hypothesis")
    assert err.message == f"data file '{no_label}' has no label column 'label' (columns: premise, hypothesis, stars)"
    assert err.hint == "set data.label_column to one of the columns"
    no_pair = _csv(tmp_path / "e3.csv", "premise,claim,label", "a,b,0")
    err = _load_error(train=str(train), eval=str(no_pair), text_column="premise", text_pair_column="hypothesis")
    assert err.message == f"data file '{no_pair}' has no text_pair column 'hypothesis' (columns: premise, claim, label)"
    assert err.hint == "set data.text_pair_column to one of the columns"


def test_text_pairs_are_read_for_every_split(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", "premise,hypothesis,label", "p1,h1,0", "p2,h2,1", "p3,h3,0", "p4,h4,1")
    eval_ = _csv(tmp_path / "eval.csv", "premise,hypothesis,label", "q1,g1,1", "q2,g2,0")
    val = _csv(tmp_path / "val.csv", "premise,hypothesis,label", "v1,w1,0", "v2,w2,1")
    d = load_classification(DataSpec(train=str(train), eval=str(eval_), validation=str(val), text_column="premise",
                                     text_pair_column="hypothesis"))
    assert (d.train_texts, d.train_pairs, d.train_labels) == (["p1", "p2", "p3", "p4"], ["h1", "h2", "h3", "h4"],
                                                             [0, 1, 0, 1])
    assert (d.eval_texts, d.eval_pairs, d.eval_labels) == (["q1", "q2"], ["g1", "g2"], [1, 0])
    assert (d.validation_texts, d.validation_pairs, d.validation_labels) == (["v1", "v2"], ["w1", "w2"], [0, 1])
    assert d.info["text_pair_column"] == "hypothesis" and d.info["n_validation"] == 2
    no_pairs = load_classification(DataSpec(train=str(train), eval=str(eval_), text_column="premise",
                                            validation_fraction=0))
    assert no_pairs.train_pairs is None and no_pairs.eval_pairs is None


def test_empty_texts_and_pairs_name_the_file_column_and_row(tmp_path: Path) -> None:
    f = _csv(tmp_path / "t.csv", "text,other,label", "a,x,0", "b, ,1", " ,y,0")
    err = _load_error(train=str(f), eval=str(f), validation_fraction=0)
    assert err.message == f"data file '{f}' has an empty text in column 'text' (row 3)"
    assert err.hint == "remove or fill rows with empty texts"
    g = _csv(tmp_path / "p.csv", "text,other,label", "a,x,0", "b, ,1")
    err = _load_error(train=str(g), eval=str(g), validation_fraction=0, text_pair_column="other")
    assert err.message == f"data file '{g}' has an empty text in column 'other' (row 2)"


def test_text_values_of_other_types(tmp_path: Path) -> None:
    """JSON texts may be numbers (kept as their text) or null/NaN (an empty text)."""
    f = tmp_path / "t.jsonl"
    f.write_text('{"text": 3.5, "label": 0}\n{"text": 7, "label": 1}\n')
    assert text_values(read_table(str(f)), "text", "t.jsonl") == ["3.5", "7.0"]
    for bad in ("null", "NaN"):
        f.write_text(f'{{"text": "fine", "label": 0}}\n{{"text": {bad}, "label": 1}}\n')
        err = _error(text_values, read_table(str(f)), "text", "t.jsonl")
        assert err.message == "data file 't.jsonl' has an empty text in column 'text' (row 2)", bad


# ---- which rows each split draws ----------------------------------------------------------------


def _numbered(path: Path, labels: list[int]) -> Path:
    return _csv(path, "text,label", *(f"{path.stem} {i},{v}" for i, v in enumerate(labels)))


def test_rows_drawn_follow_the_seeded_carve_and_subsamples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_labels, eval_labels = [1, 2, 2, 1] * 10, [2, 1, 1] * 4
    train, eval_ = _numbered(tmp_path / "tr.csv", train_labels), _numbered(tmp_path / "ev.csv", eval_labels)
    spec = DataSpec(train=str(train), eval=str(eval_), n_train=12, n_eval=6, validation_fraction=0.25, seed=5)
    d = load_classification(spec)
    ids = {1: 0, 2: 1}
    train_ids = [ids[v] for v in train_labels]
    val_rows, rest = carve_validation(train_ids, spec)
    train_rows = [rest[i] for i in stratified_subsample([train_ids[j] for j in rest], 12, 5)]
    eval_rows = stratified_subsample([ids[v] for v in eval_labels], 6, 6)
    assert d.train_texts == [f"tr {i}" for i in train_rows]
    assert d.train_labels == [train_ids[i] for i in train_rows]
    assert d.validation_texts == [f"tr {i}" for i in val_rows]
    assert d.validation_labels == [train_ids[i] for i in val_rows] and d.validation_pairs is None
    assert d.eval_texts == [f"ev {i}" for i in eval_rows]
    assert d.eval_labels == [ids[eval_labels[i]] for i in eval_rows] and d.eval_pairs is None
    assert d.label_names == ["1", "2"]
    assert d.info == {"text_column": "text", "label_column": "label", "text_pair_column": None,
                      "train_rows_in_file": 40, "eval_rows_in_file": 12, "n_train": 12, "n_eval": 6,
                      "n_validation": 3, "label_remap": {"1": 0, "2": 1}}
    assert "integer labels are not the class ids 0..1" in capsys.readouterr().err


def test_a_validation_file_is_subsampled_with_its_own_seed(tmp_path: Path) -> None:
    labels = [0, 1] * 10
    train, eval_ = _numbered(tmp_path / "tr.csv", labels), _numbered(tmp_path / "ev.csv", labels)
    val = _numbered(tmp_path / "va.csv", labels)
    d = load_classification(DataSpec(train=str(train), eval=str(eval_), validation=str(val), n_validation=6,
                                     seed=5))
    assert d.validation_texts == [f"va {i}" for i in stratified_subsample(labels, 6, 7)]
    assert d.train_texts == [f"tr {i}" for i in range(20)]  # nothing carved from train
    assert d.info["n_validation"] == 6 and d.info["n_train"] == 20 and "label_remap" not in d.info


def test_no_validation_split_is_recorded_as_zero_rows(tmp_path: Path) -> None:
    f = _numbered(tmp_path / "tr.csv", [0, 1] * 5)
    d = load_classification(DataSpec(train=str(f), eval=str(f), validation_fraction=0))
    assert (d.validation_texts, d.validation_pairs, d.validation_labels) == (None, None, None)
    assert d.info["n_validation"] == 0 and d.info["n_train"] == 10 and d.info["eval_rows_in_file"] == 10


# ---- labels -------------------------------------------------------------------------------------


def test_declared_labels_give_the_class_ids_in_their_order(tmp_path: Path) -> None:
    f = _csv(tmp_path / "t.csv", "text,label", "a,pos", "b,neg", "c,pos")
    d = load_classification(DataSpec(train=str(f), eval=str(f), labels=["pos", "neg"], validation_fraction=0))
    assert d.label_names == ["pos", "neg"] and d.train_labels == [0, 1, 0]
    g = _csv(tmp_path / "g.csv", "text,label", "a,pos", "b,meh")
    err = _load_error(train=str(f), eval=str(g), labels=["neg", "pos"])
    assert err.message == f"eval file '{g}' has label 'meh', which is not in the declared label set ['neg', 'pos']"
    assert err.hint == "fix the labels or set data.labels to the full label list"


def test_label_set_problems_are_one_line_errors(tmp_path: Path) -> None:
    names = _csv(tmp_path / "names.csv", "text,label", "a,pos", "b,neg")
    ints = _csv(tmp_path / "ints.csv", "text,label", "a,1", "b,0")
    err = _load_error(train=str(names), eval=str(ints))
    assert err.message == "train and eval files use different label types (names in one, integers in the other)"
    assert err.hint == "use the same label type in both files"
    other = _csv(tmp_path / "other.csv", "text,label", "a,pos", "b,zzz")
    err = _load_error(train=str(names), eval=str(other))
    assert err.message == f"eval file '{other}' has class 'zzz' that never occurs in train"
    assert err.hint == "use a train file covering every class, or set data.labels explicitly"
    single = _csv(tmp_path / "single.csv", "text,label", "a,pos")
    err = _load_error(train=str(single), eval=str(single))
    assert err.message == f"train file '{single}' has only one class ('pos')"
    assert err.hint == "classification needs at least two classes in the training data"
    one_eval_row = load_classification(DataSpec(train=str(names), eval=str(single), validation_fraction=0))
    assert one_eval_row.eval_labels == [1]


def test_train_and_eval_files_are_both_required(tmp_path: Path) -> None:
    f = _csv(tmp_path / "t.csv", "text,label", "a,0", "b,1")
    for data in ({"eval": str(f)}, {"train": str(f)}, {}):
        err = _load_error(**data)
        assert err.message == "classification needs data.train and data.eval files", data
        assert err.hint == "pass --data-train FILE --data-eval FILE (or set data.train / data.eval)"


@pytest.mark.parametrize("raw, value", [(" -1 ", -1), ("7", 7), (" pos ", "pos"), ("X1", "X1"), ("-x", "-x"),
                                         (True, 1), (3, 3), (2.0, 2)])
def test_label_value_reads_ids_and_names(raw: object, value: object) -> None:
    got = label_value(raw, 4, "label", "f.csv")
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("raw", [None, "", "  ", math.nan])
def test_missing_label_value(raw: object) -> None:
    err = _error(label_value, raw, 4, "label", "f.csv")
    assert err.message == f"data file 'f.csv' has a missing label {raw!r} in column 'label' (row 4)"
    assert err.hint == "fill in or remove the rows without a label"


@pytest.mark.parametrize("raw, what", [(1.5, "not a whole number"), ([1], "a list"), ({"a": 1}, "a dict")])
def test_label_value_that_is_no_class(raw: object, what: str) -> None:
    err = _error(label_value, raw, 4, "label", "f.csv")
    assert err.message == (f"data file 'f.csv' has label {raw!r} in column 'label' (row 4), {what}: "
                           "classification labels are class names or integer class ids")
    assert err.hint == "use integer ids (0, 1, ...) or names for the classes; peftbench has no regression task"


def test_label_values_name_the_row_and_tell_missing_from_mixed(tmp_path: Path) -> None:
    missing = _csv(tmp_path / "m.csv", "text,label", "a,0", "b,1", "c,NA")
    err = _error(label_values, read_table(str(missing)), "label", str(missing))
    assert err.message == f"data file '{missing}' has a missing label 'NA' in column 'label' (row 3)"
    assert err.hint == "fill in or remove the rows without a label"
    mixed = _csv(tmp_path / "x.csv", "text,label", "a,0", "b,1", "c,pos")
    err = _error(label_values, read_table(str(mixed)), "label", str(mixed))
    assert err.message == f"data file '{mixed}' mixes integer and string labels in column 'label' (row 1: 0, row 3: 'pos')"
    assert err.hint == "use one label type throughout (all names or all integer ids)"
    fractional = tmp_path / "f.jsonl"
    fractional.write_text("\n".join(json.dumps({"text": t, "label": v}) for t, v in (("a", 0), ("b", 0.5))))
    err = _error(label_values, read_table(str(fractional)), "label", str(fractional))
    assert err.message.startswith(f"data file '{fractional}' has label 0.5 in column 'label' (row 2), not a whole")


def test_one_class_training_rows_hint_at_n_train(tmp_path: Path) -> None:
    err = _error(check_training_classes, [0, 0], ["neg", "pos"], "train.csv")
    assert err.message == "the training rows drawn from 'train.csv' hold 2 example(s) of only one class ('neg')"
    assert err.hint == "give data.n_train (--n-train) at least 2 per class, or a train file with two classes"
    f = _csv(tmp_path / "t.csv", "text,label", "a,0", "b,1", "c,0", "d,1")
    err = _load_error(train=str(f), eval=str(f), n_train=1, validation_fraction=0)
    assert err.message == f"the training rows drawn from '{f}' hold 1 example(s) of only one class ('0')"


def test_a_missing_label_names_the_file_it_is_in(tmp_path: Path) -> None:
    train = _csv(tmp_path / "train.csv", "text,label", "a,pos", "b,neg")
    eval_ = _csv(tmp_path / "eval.csv", "text,label", "a,pos", "b,")
    err = _load_error(train=str(train), eval=str(eval_))
    assert err.message == f"data file '{eval_}' has a missing label '' in column 'label' (row 2)"


# ---- tokenization -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_path() -> str:
    from peftbench.models.embedded import embedded_model_path

    return str(embedded_model_path())


def test_encoding_truncates_pairs_without_padding(tokenizer_path: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    labels = (1, 0, 1)
    enc = encode_classification(tok, ["a good film indeed", "bad", "ok"], ["yes", "no no no", "no"], labels, 6)
    assert [tok.decode(ids) for ids in enc.input_ids] == ["[CLS] a good [SEP] yes [SEP]",
                                                          "[CLS] bad [SEP] no no [SEP]", "[CLS] ok [SEP] no [SEP]"]
    assert enc.labels == [1, 0, 1] and isinstance(enc.labels, list)
    assert enc.extra == {"token_type_ids": [[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1]]}
    single = encode_classification(tok, ["a good film indeed"], None, [0], 4)
    assert tok.decode(single.input_ids[0]) == "[CLS] a good [SEP]"
    plain = AutoTokenizer.from_pretrained(tokenizer_path, model_input_names=["input_ids", "attention_mask"])
    assert encode_classification(plain, ["a good film"], None, [0], 8).extra == {}
