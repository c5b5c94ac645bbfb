import pytest


@pytest.mark.slow
def test_demo_runs_all_six_methods(tmp_path, capsys):
    from peftbench.demo import DEMO_METHODS, run_demo

    records = run_demo(str(tmp_path), progress=False)
    assert [r["method"] for r in records] == DEMO_METHODS
    assert all(r["status"] == "success" for r in records)
    accs = [r["metrics"]["accuracy"] for r in records]
    assert min(accs) > 0.6 and max(accs) < 1.0  # learnable, but not trivial
    assert len({round(a, 3) for a in accs}) > 1  # methods differ
    assert (tmp_path / "summary.md").is_file()
    assert (tmp_path / "report" / "report.html").is_file()
    out = capsys.readouterr().out
    for m in DEMO_METHODS:
        assert m in out


def test_synthetic_data_is_deterministic_and_balanced_enough():
    from peftbench.data.synthetic import generate

    a = generate(300, 100, seed=5)
    assert a == generate(300, 100, seed=5)
    assert a != generate(300, 100, seed=6)
    labels = [y for _, y in a[0]]
    assert 0.35 < sum(labels) / len(labels) < 0.65
    train_texts = {t for t, _ in a[0]}
    assert not train_texts & {t for t, _ in a[1] if "sublime" in t or "atrocious" in t}
    assert any(" but " in t for t, _ in a[1]) and any(" not " in t for t, _ in a[1])
