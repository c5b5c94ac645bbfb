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


def test_demo_device_becomes_train_device_of_every_method(tmp_path):
    from peftbench.demo import demo_spec

    files = (tmp_path / "train.csv", tmp_path / "eval.csv")
    assert demo_spec("lora", *files, 1, "cuda").train.device == "cuda"
    assert demo_spec("lora", *files, 1, "cpu").train.device == "cpu"
    assert demo_spec("lora", *files, 1).train.device == "auto"


def test_demo_on_cuda_without_a_gpu_fails_at_once_with_one_line(tmp_path):
    import torch
    from click.testing import CliRunner

    from peftbench.cli.app import cli

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: --device cuda is valid here")
    r = CliRunner().invoke(cli, ["demo", "--device", "cuda", "--out", str(tmp_path / "demo")], prog_name="peftbench")
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines() == [
        "peftbench: error: train.device is 'cuda' but no CUDA device is available (fix: set train.device=auto or cpu)"]
    assert not (tmp_path / "demo").exists()  # nothing generated, nothing trained
