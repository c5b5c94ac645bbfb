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


def test_a_class_absent_from_the_slice_still_counts_in_every_field() -> None:
    """The declared label set, not the labels that happen to occur, defines the per-class table, the
    macro averages and the confusion matrix: an eval slice without one class must not shrink them."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    gold, pred, names = [0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0], ["a", "b", "c"]
    m = classification_metrics(gold, pred, names)
    p, r, f, _ = precision_recall_fscore_support(gold, pred, labels=[0, 1, 2], average="macro", zero_division=0)
    assert (m["precision_macro"], m["recall_macro"], m["f1_macro"]) == pytest.approx((p, r, f))
    assert m["f1_macro"] == pytest.approx(2 / 3 * 2 / 3)  # two classes at 2/3, the absent one at 0
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["confusion_matrix"] == confusion_matrix(gold, pred, labels=[0, 1, 2]).tolist()
    assert len(m["confusion_matrix"]) == 3


def test_undefined_precision_is_zero_in_the_macro_average_and_warns_nothing() -> None:
    """A class never predicted has undefined precision: it counts as 0 (not 1, which would flatter a
    model that ignores a class), and the evaluation prints no scikit-learn warning about it."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics([0, 1, 2], [0, 0, 0], ["a", "b", "c"])
    assert m["precision_macro"] == pytest.approx((1 / 3 + 0 + 0) / 3)
    assert m["recall_macro"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("metric", ["eval_perplexity", "Token_Error", "wall_time", "max_memory", "state_bytes",
                                    "smoothed_loss"])
def test_undeclared_metric_names_that_go_down(metric: str) -> None:
    from peftbench.tasks.metrics import higher_is_better

    assert higher_is_better(metric) is False
    assert higher_is_better(metric.upper()) is False


def test_rouge_stems_words_as_evaluate_does() -> None:
    """'cats running' and 'cat runs' are the same words after Porter stemming."""
    from peftbench.tasks.metrics import rouge_per_example, rouge_scores

    assert rouge_scores(["the cats running"], ["the cat runs"])["rouge1"] == pytest.approx(1.0)
    assert rouge_per_example(["the cats running", "a dog"], ["the cat runs", "the dog"], "rouge1") == \
        pytest.approx([1.0, 0.5])


def test_rouge_refuses_predictions_and_references_of_different_lengths() -> None:
    from peftbench.tasks.metrics import rouge_per_example, rouge_scores

    with pytest.raises(ValueError, match="differ in length"):
        rouge_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError):
        rouge_per_example(["a", "b"], ["a"], "rouge1")
