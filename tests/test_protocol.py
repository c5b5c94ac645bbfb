"""Validation/test protocol: split roles, the seeded carve, selection on validation only."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import tiny_spec
from peftbench.config.spec import DataSpec, RunSpec
from peftbench.core.protocol import Selection
from peftbench.core.runner import run
from peftbench.data.classification import load_classification
from peftbench.errors import DataError, SpecError


@pytest.fixture()
def numbered(tmp_path):
    """Train/test files whose texts are unique ids, so splits can be compared row by row."""
    rows = [{"text": f"row {i}", "label": i % 2} for i in range(200)]
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(rows[:40]).assign(text=lambda d: "test " + d.text).to_csv(tmp_path / "test.csv", index=False)
    pd.DataFrame(rows[:30]).assign(text=lambda d: "val " + d.text).to_csv(tmp_path / "val.csv", index=False)
    return tmp_path


def test_validation_is_carved_disjoint_and_seeded(numbered):
    spec = DataSpec(train=str(numbered / "train.csv"), eval=str(numbered / "test.csv"), validation_fraction=0.2)
    d = load_classification(spec)
    assert len(d.validation_texts) == 40 and len(d.train_texts) == 160
    assert not set(d.validation_texts) & set(d.train_texts)
    assert sorted(d.validation_labels).count(0) == 20  # stratified
    again = load_classification(spec)
    assert again.validation_texts == d.validation_texts
    other = load_classification(spec.model_copy(update={"seed": 1}))
    assert set(other.validation_texts) != set(d.validation_texts)


def test_n_train_is_kept_and_validation_comes_from_the_rest(numbered):
    spec = DataSpec(train=str(numbered / "train.csv"), eval=str(numbered / "test.csv"), n_train=100)
    d = load_classification(spec)
    assert len(d.train_texts) == 100 and len(d.validation_texts) == 10
    assert not set(d.validation_texts) & set(d.train_texts)


def test_validation_file_and_test_key(numbered):
    spec = DataSpec(train=str(numbered / "train.csv"), test=str(numbered / "test.csv"),
                    validation=str(numbered / "val.csv"), n_validation=10)
    d = load_classification(spec)
    assert len(d.train_texts) == 200  # nothing carved
    assert len(d.validation_texts) == 10 and all(t.startswith("val ") for t in d.validation_texts)
    assert all(t.startswith("test ") for t in d.eval_texts)


def test_conflicting_test_and_eval_files(numbered):
    spec = DataSpec(train=str(numbered / "train.csv"), test=str(numbered / "test.csv"),
                    eval=str(numbered / "val.csv"))
    with pytest.raises(DataError, match="same role"):
        load_classification(spec)


def test_no_validation_when_fraction_is_zero(numbered):
    d = load_classification(DataSpec(train=str(numbered / "train.csv"), eval=str(numbered / "test.csv"),
                                     validation_fraction=0))
    assert d.validation_texts is None and len(d.train_texts) == 200


def test_selecting_on_test_is_refused_unless_allowed():
    with pytest.raises(SpecError, match=r"select\.split: test"):
        RunSpec.from_dict({"select": {"split": "test"}})
    with pytest.raises(SpecError, match=r"tune\.split: test"):
        RunSpec.from_dict({"tune": {"split": "test"}})
    assert RunSpec.from_dict({"select": {"split": "test"}, "allow_test_selection": True}).select.split == "test"


class _Scripted:
    """An evaluator with scripted validation scores; the test evaluation reads the weight."""

    def __init__(self, scores):
        self.scores = list(scores)
        self.test_calls = 0

    def __call__(self, model, enc=None):
        if enc is None:
            self.test_calls += 1
            return {"accuracy": float(model.weight.item()), "eval_loss": 0.0}
        return {"accuracy": self.scores.pop(0), "eval_loss": 0.0}


def _selection(scores, **select):
    import torch

    model = torch.nn.Linear(1, 1, bias=False)
    spec = RunSpec.from_dict({"select": select})
    ev = _Scripted(scores)
    return model, ev, Selection(spec, "accuracy", ev, validation=object())


def test_best_epoch_weights_are_restored_and_test_is_read_once():
    import torch

    model, ev, sel = _selection([0.5, 0.8, 0.6], strategy="best")
    for epoch in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(epoch)
        sel(model)
    final, summary = sel.finish(model)
    assert summary["chosen_epoch"] == 2 and model.weight.item() == 2.0
    assert final["accuracy"] == 2.0 and ev.test_calls == 1
    assert summary["validation_metrics"]["accuracy"] == 0.8 and summary["split"] == "validation"


def test_perplexity_and_losses_are_minimized_when_selecting():
    from peftbench.core.protocol import _better

    assert _better("perplexity")(9.0, 10.0) and not _better("perplexity")(11.0, 10.0)
    assert _better("eval_loss")(0.1, 0.2) and _better("accuracy")(0.9, 0.8) and not _better("accuracy")(0.7, 0.8)


def test_last_strategy_keeps_the_final_weights():
    import torch

    model, _, sel = _selection([0.9, 0.1], strategy="last")
    for epoch in (1, 2):
        with torch.no_grad():
            model.weight.fill_(epoch)
        sel(model)
    final, summary = sel.finish(model)
    assert final["accuracy"] == 2.0 and summary["chosen_epoch"] == 2


def test_patience_raises_the_stop_flag():
    model, _, sel = _selection([0.5, 0.7, 0.6, 0.6], patience=2)
    flags = []
    for _ in range(4):
        sel(model)
        flags.append(sel.should_stop)
    assert flags == [False, False, False, True]


def test_run_records_splits_and_stops_early(tiny_bert, sentiment_files, tmp_path):
    d = tiny_spec(tiny_bert, sentiment_files, "lora", epochs=4, lr=1e-12)  # nothing improves
    d["select"] = {"strategy": "best", "patience": 1}
    rec = run(RunSpec.from_dict(d), tmp_path, progress=False, log=lambda s: None)
    p = rec["protocol"]
    assert p["splits"]["validation"]["source"] == "carved from train"
    assert p["splits"]["validation"]["n"] + p["splits"]["train"]["n"] == 160
    assert p["numbers_from"]["metrics"] == "test" and rec["eval"]["split"] == "validation"
    assert p["selection"]["stopped_early"] and p["selection"]["epochs_run"] == 2 == len(rec["eval"]["per_epoch"])
    assert p["test_selection"] is False


def test_best_without_validation_is_refused_and_test_selection_is_flagged(tiny_bert, sentiment_files, tmp_path):
    d = tiny_spec(tiny_bert, sentiment_files, "lora")
    d["data"]["validation_fraction"] = 0
    d["select"] = {"strategy": "best"}
    with pytest.raises(SpecError, match="need a validation split"):
        run(RunSpec.from_dict(d), tmp_path / "a", progress=False, log=lambda s: None)
    d["allow_test_selection"] = True
    rec = run(RunSpec.from_dict(d), tmp_path / "b", progress=False, log=lambda s: None)
    assert rec["protocol"]["test_selection"] is True and rec["eval"]["split"] == "eval"


def test_tiny_train_file_runs_without_validation_unless_asked(tmp_path):
    pd.DataFrame({"text": ["a", "b"], "label": [0, 1]}).to_csv(tmp_path / "t.csv", index=False)
    spec = DataSpec(train=str(tmp_path / "t.csv"), eval=str(tmp_path / "t.csv"))
    d = load_classification(spec)
    assert d.validation_texts is None and len(d.train_texts) == 2
    with pytest.raises(DataError, match="cannot carve"):
        load_classification(DataSpec(train=str(tmp_path / "t.csv"), eval=str(tmp_path / "t.csv"),
                                     validation_fraction=0.5))
