import pytest

from peftbench.tasks.metrics import classification_metrics


def test_classification_metrics_on_a_known_case():
    gold = [0, 0, 0, 1, 1, 1, 1, 1]
    pred = [0, 0, 1, 1, 1, 1, 0, 0]
    m = classification_metrics(gold, pred, ["neg", "pos"])
    assert m["accuracy"] == 5 / 8
    assert m["confusion_matrix"] == [[2, 1], [2, 3]]
    # class neg: precision 2/4, recall 2/3; class pos: precision 3/4, recall 3/5
    assert abs(m["per_class"]["neg"]["precision"] - 0.5) < 1e-12
    assert abs(m["per_class"]["pos"]["recall"] - 0.6) < 1e-12
    f_neg = 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3)
    f_pos = 2 * 0.75 * 0.6 / (0.75 + 0.6)
    assert abs(m["f1_macro"] - (f_neg + f_pos) / 2) < 1e-12
    assert m["per_class"]["pos"]["support"] == 5
    assert m["labels"] == ["neg", "pos"]


def test_a_class_never_predicted_gets_zero_not_nan():
    m = classification_metrics([0, 1, 2], [0, 0, 0], ["a", "b", "c"])
    assert m["per_class"]["b"]["precision"] == 0.0
    assert m["confusion_matrix"][2] == [1, 0, 0]


def test_every_classification_field_matches_scikit_learn_on_an_asymmetric_three_class_case():
    """Three classes with different supports and errors in every direction, so that precision and
    recall differ per class and macro averages differ from micro ones: a field computed from the
    wrong quantity or averaged the wrong way cannot agree with scikit-learn here."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score

    gold = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 0, 1]
    pred = [0, 0, 0, 1, 2, 2, 1, 0, 1, 2, 2, 1, 0, 2, 0, 2]
    names = ["a", "b", "c"]
    m = classification_metrics(gold, pred, names)
    for key, fn in (("precision_macro", precision_score), ("recall_macro", recall_score), ("f1_macro", f1_score)):
        assert m[key] == pytest.approx(fn(gold, pred, average="macro", zero_division=0)), key
    assert m["precision_macro"] != pytest.approx(m["recall_macro"])
    per_p = precision_score(gold, pred, average=None, zero_division=0)
    per_r = recall_score(gold, pred, average=None, zero_division=0)
    per_f = f1_score(gold, pred, average=None, zero_division=0)
    for i, name in enumerate(names):
        got = m["per_class"][name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((per_p[i], per_r[i], per_f[i])), name
        assert got["support"] == gold.count(i)
    assert m["accuracy"] == pytest.approx(sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold))
    assert m["confusion_matrix"] == confusion_matrix(gold, pred).tolist()


@pytest.mark.parametrize("metric,up", [
    ("accuracy", True), ("f1_macro", True), ("rougeL", True), ("eval_loss", False), ("perplexity", False),
    ("trainable_params", False), ("train_time_s", False), ("peak_memory_bytes", False),
    ("model_footprint_bytes", False), ("artifact_bytes", False),
    ("Custom_Error_Rate", False), ("STEP_TIME", False), ("gpu_memory_gb", False), ("val_LOSS", False),
    ("bleu", True),
])
def test_metric_direction(metric: str, up: bool) -> None:
    """The direction a report ranks by: declared by the tasks and the run-level numbers, then read
    from the name (case-insensitively) for metrics nobody declared."""
    from peftbench.tasks.metrics import higher_is_better

    assert higher_is_better(metric) is up


def test_every_declared_direction_is_the_tasks_own() -> None:
    from peftbench.tasks.base import TASKS
    from peftbench.tasks.metrics import higher_is_better

    declared = [(m, up) for _, task in TASKS.items() for m, up in task.metrics.items()]
    assert any(not up for _, up in declared) and any(up for _, up in declared)
    for metric, up in declared:
        assert higher_is_better(metric) is up, metric
