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
