"""Label handling and data checks on their own: integer labels remapped to class ids, training rows that
cannot train a classifier, and where a file stops being UTF-8."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftbench.data.classification import check_training_classes, label_remap
from peftbench.data.readers import first_bad_byte
from peftbench.errors import DataError


@pytest.mark.parametrize("index_of", [{0: 0, 1: 1, 2: 2}, {"neg": 0, "pos": 1}, {0: 0, "x": 1}])
def test_class_ids_and_string_labels_are_not_remapped(index_of: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert label_remap(index_of) is None
    assert capsys.readouterr().err == ""


def test_integer_labels_that_are_not_class_ids_are_remapped_and_said(capsys: pytest.CaptureFixture[str]) -> None:
    assert label_remap({-1: 0, 1: 1}) == {"-1": 0, "1": 1}
    assert capsys.readouterr().err == (
        "[peftbench] note: integer labels are not the class ids 0..1; training with them remapped in sorted "
        "order (-1->0, 1->1), recorded as data.label_remap\n")
    stars = {v: v - 1 for v in range(1, 9)}
    assert label_remap(stars) == {str(v): v - 1 for v in range(1, 9)}
    assert "0..7;" in (err := capsys.readouterr().err) and "(1->0, 2->1, 3->2, 4->3, 5->4, 6->5, 7->6, 8->7)" in err
    label_remap({v: v - 1 for v in range(1, 10)})
    assert "(1->0, 2->1, 3->2, 4->3, 5->4, 6->5, 7->6, 8->7, ...)" in capsys.readouterr().err


def test_training_rows_of_one_class_are_refused() -> None:
    with pytest.raises(DataError) as info:
        check_training_classes([1, 1, 1], ["neg", "pos"], "train.csv")
    assert info.value.message == "the training rows drawn from 'train.csv' hold 3 example(s) of only one class ('pos')"
    assert "--n-train" in (info.value.hint or "")


def test_fewer_training_rows_than_classes_are_refused() -> None:
    with pytest.raises(DataError) as info:
        check_training_classes([0, 1], ["a", "b", "c"], "train.csv")
    assert info.value.message == "the training rows drawn from 'train.csv' hold 2 examples for 3 classes"
    assert info.value.hint == "set data.n_train (--n-train) to at least 3, better a few per class"
    check_training_classes([0, 1, 1], ["a", "b", "c"], "train.csv")


def test_first_bad_byte_is_located_exactly(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_bytes(b"text,label\nok \xc3\xa9t\xc3\xa9,1\nab\xe9c,0\n")
    assert first_bad_byte(p) == ": byte 0xe9 at offset 24 (line 3, column 3)"
    p.write_bytes("text,label\nété,1\n".encode())
    assert first_bad_byte(p) == ""
