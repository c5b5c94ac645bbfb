import json

import pytest

from peftbench.config.spec import DataSpec
from peftbench.data.classification import load_classification
from peftbench.data.readers import read_table
from peftbench.data.splits import stratified_subsample
from peftbench.errors import DataError


def _write(path, rows, header=("text", "label"), sep=","):
    path.write_text("\n".join([sep.join(header), *(sep.join(map(str, r)) for r in rows)]) + "\n")
    return path


def test_reads_every_supported_format(tmp_path):
    import pandas as pd

    rows = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}]
    pd.DataFrame(rows).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame(rows).to_csv(tmp_path / "a.tsv", index=False, sep="\t")
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "a.parquet")
    for suffix in ("csv", "tsv", "json", "jsonl", "parquet"):
        df = read_table(str(tmp_path / f"a.{suffix}"))
        assert df["text"].tolist() == ["good", "bad"], suffix
        assert [int(x) for x in df["label"]] == [1, 0], suffix


def test_string_labels_get_sorted_names_and_subsampling_is_stratified(tmp_path):
    rows = [(f"t{i}", "pos" if i % 4 else "neg") for i in range(400)]
    f = _write(tmp_path / "t.csv", rows)
    d = load_classification(DataSpec(train=str(f), eval=str(f), n_train=100, n_eval=40, seed=1))
    assert d.label_names == ["neg", "pos"]
    assert len(d.train_labels) == 100 and d.train_labels.count(0) == 25
    assert len(d.eval_labels) == 40 and d.eval_labels.count(0) == 10
    again = load_classification(DataSpec(train=str(f), eval=str(f), n_train=100, n_eval=40, seed=1))
    assert again.train_texts == d.train_texts  # same seed, same subset
    other = load_classification(DataSpec(train=str(f), eval=str(f), n_train=100, n_eval=40, seed=2))
    assert other.train_texts != d.train_texts


def test_stratified_subsample_sizes():
    labels = [0] * 90 + [1] * 10
    idx = stratified_subsample(labels, 20, 0)
    assert len(idx) == 20 and sum(labels[i] for i in idx) == 2
    assert stratified_subsample(labels, None, 0) == list(range(100))


def test_presets_map_shared_layouts(tmp_path):
    f = _write(tmp_path / "s.tsv", [("nice film", 1), ("dull film", 0)], header=("sentence", "label"), sep="\t")
    d = load_classification(DataSpec(preset="sst2", train=str(f), eval=str(f)))
    assert d.label_names == ["negative", "positive"] and d.train_texts[0] == "nice film"


@pytest.mark.parametrize("content, phrase", [
    (None, "does not exist"),
    ("", "is empty"),
    ("text,stars\na,1\nb,0\n", "no label column 'label'"),
    ("text,label\na,1\nb,x\n", "mixes integer and string labels"),
    ("text,label\na,1\nb,1\n", "only one class"),
    ("text,label\na,1\n ,0\n", "empty text"),
])
def test_bad_data_files_give_clear_errors(tmp_path, content, phrase):
    f = tmp_path / "bad.csv"
    if content is not None:
        f.write_text(content)
    with pytest.raises(DataError, match=phrase):
        load_classification(DataSpec(train=str(f), eval=str(f)))


def test_non_utf8_and_undeclared_labels(tmp_path):
    f = tmp_path / "latin.csv"
    f.write_bytes("text,label\ncaf\xe9,1\nb,0\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8"):
        load_classification(DataSpec(train=str(f), eval=str(f)))
    g = _write(tmp_path / "g.csv", [("a", 0), ("b", 1), ("c", 2)])
    with pytest.raises(DataError, match="not in the declared label set"):
        load_classification(DataSpec(train=str(g), eval=str(g), labels=["neg", "pos"]))


def test_eval_classes_absent_from_train(tmp_path):
    tr = _write(tmp_path / "tr.csv", [("a", "x"), ("b", "y")])
    ev = _write(tmp_path / "ev.csv", [("a", "x"), ("b", "z")])
    with pytest.raises(DataError, match="never occurs in train"):
        load_classification(DataSpec(train=str(tr), eval=str(ev)))
