"""Weight-change diagnostics: the numbers on matrices with known answers, and in run records."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_spec
from peftbench.config.spec import RunSpec
from peftbench.core.runner import run
from peftbench.trust.diagnostics import diagnose, effective_rank, layer_stats


def test_effective_rank_of_known_spectra():
    assert effective_rank(torch.ones(8)) == pytest.approx(8.0)
    assert effective_rank(torch.tensor([5.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert 1.0 < effective_rank(torch.tensor([3.0, 1.0])) < 2.0


def test_new_strong_direction_is_an_intruder_and_a_rescale_is_not():
    w = torch.diag(torch.linspace(10, 1, 16))
    new_dir = torch.zeros(16)
    new_dir[[0, 1]] = 1 / math.sqrt(2)  # 45° between the first two singular directions: cosine 0.71
    far = torch.ones(16) / 4  # spread across all directions: cosine 0.25 with each
    intruder = layer_stats(w, 30 * torch.outer(far, far))
    assert intruder["intruders"] == 1 and intruder["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    mild = layer_stats(w, 30 * torch.outer(new_dir, new_dir))
    assert mild["intruders"] == 0  # cosine 0.71 with an existing direction: above the 0.5 threshold
    rescale = layer_stats(w, 0.1 * w)
    assert rescale["intruders"] == 0 and rescale["rel_norm"] == pytest.approx(0.1)


def test_lora_delta_matches_the_merged_weight():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(12, 10), torch.nn.ReLU(), torch.nn.Linear(10, 4))
    w0 = base[0].weight.detach().clone()
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["0"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()

    class Spec:
        save = "adapter"

    out = diagnose(model, Spec(), None)
    (stats,) = out["layers"].values()
    merged = model.merge_and_unload()[0].weight.detach()
    assert stats["delta_norm"] == pytest.approx(torch.linalg.norm(merged - w0).item(), rel=1e-5)
    assert stats["effective_rank"] <= 2.0 + 1e-6


@pytest.mark.parametrize(("method", "layers"), [("lora", 4), ("full", 13)])
def test_records_carry_diagnostics(method, layers, tiny_bert, sentiment_files, tmp_path):
    d = tiny_spec(tiny_bert, sentiment_files, method, lr=1e-2 if method == "lora" else 1e-3)
    rec = run(RunSpec.from_dict(d), tmp_path, progress=False, log=lambda s: None)
    diag = rec["diagnostics"]
    assert diag["summary"]["layers"] == layers == len(diag["layers"])
    assert all(v["rel_norm"] > 0 for v in diag["layers"].values())
    if method == "lora":
        assert all(v["effective_rank"] <= 8 + 1e-6 for v in diag["layers"].values())
        assert "bert.encoder.layer.0.attention.self.query" in diag["layers"]


def test_runs_without_saved_weights_skip_diagnostics(tiny_bert, sentiment_files, tmp_path):
    d = tiny_spec(tiny_bert, sentiment_files, "lora", max_steps=1)
    d["save"] = "none"
    assert run(RunSpec.from_dict(d), tmp_path, progress=False, log=lambda s: None)["diagnostics"] is None
