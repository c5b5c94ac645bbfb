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

    out = diagnose(model, None)
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


def test_untouched_adapter_has_zero_change():
    """A freshly built LoRA (B = 0) changes no weight: every layer's ΔW is exactly zero."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(12, 10), torch.nn.ReLU(), torch.nn.Linear(10, 4))
    out = diagnose(get_peft_model(base, LoraConfig(r=2, target_modules=["0", "2"])), None)
    assert out["summary"]["layers"] == 2
    assert all(v["delta_norm"] == 0.0 and v["rel_norm"] == 0.0 for v in out["layers"].values())


@pytest.mark.parametrize("method", ["lora", "full"])
def test_runs_without_saved_weights_have_the_same_diagnostics(method, tiny_bert, sentiment_files, tmp_path):
    """`save: none` keeps no artifact but is diagnosed from the weights in memory: the same numbers
    as the same run (same seed) that saves its adapter or model, and nonzero for what trained."""
    records = {}
    for save in ("none", "adapter"):
        d = tiny_spec(tiny_bert, sentiment_files, method, max_steps=2, lr=1e-2 if method == "lora" else 1e-3)
        d["save"] = save
        records[save] = run(RunSpec.from_dict(d), tmp_path / save, progress=False, log=lambda s: None)
    assert records["none"]["artifact"]["saved"] is False and records["adapter"]["artifact"]["saved"] is True
    unsaved, saved = records["none"]["diagnostics"], records["adapter"]["diagnostics"]
    assert unsaved is not None and unsaved["summary"]["layers"] == saved["summary"]["layers"] > 0
    assert set(unsaved["layers"]) == set(saved["layers"])
    for name, stats in unsaved["layers"].items():
        assert stats["rel_norm"] > 0
        assert stats["delta_norm"] == pytest.approx(saved["layers"][name]["delta_norm"], rel=1e-4)
        assert stats["effective_rank"] == pytest.approx(saved["layers"][name]["effective_rank"], rel=1e-3)


@pytest.mark.parametrize(("method", "config"), [
    ("lora", {"r": 2, "init_lora_weights": False}),
    ("dora", {"r": 2, "init_lora_weights": False, "use_dora": True}),
    ("ia3", {"feedforward_modules": ["c_fc"]}),
])
def test_transposed_conv1d_weights_give_the_merged_change(method, config):
    """GPT-2 stores its projections as `Conv1D` (in_features, out_features): every method's ΔW
    is taken in the (out, in) layout and equals the merged weight minus the base weight."""
    from peft import IA3Config, LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    base = GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16))
    w0 = {n: m.weight.detach().clone() for n, m in base.named_modules() if n.endswith(("c_attn", "c_fc"))}
    cls = IA3Config if method == "ia3" else LoraConfig
    model = get_peft_model(base, cls(target_modules=["c_attn", "c_fc"], **config))
    if method == "ia3":
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "ia3_l" in n:
                    p.uniform_(0.5, 1.5)

    layers = diagnose(model, None)["layers"]
    merged = model.merge_and_unload()
    assert set(layers) == {"h.0.attn.c_attn", "h.0.mlp.c_fc"}
    for name, stats in layers.items():
        change = dict(merged.named_modules())[name].weight.detach() - w0[name]
        assert stats["shape"] == list(change.T.shape)  # (out_features, in_features)
        assert stats["delta_norm"] == pytest.approx(torch.linalg.norm(change).item(), rel=1e-4)
        assert stats["delta_norm"] > 0


def test_full_fine_tuning_of_conv1d_layers_is_diagnosed():
    from transformers import GPT2Config, GPT2Model

    from peftbench.trust.diagnostics import snapshot

    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16))
    before = snapshot(model)
    with torch.no_grad():
        model.h[0].attn.c_attn.weight.add_(0.1)
    layers = diagnose(model, before)["layers"]
    assert layers["h.0.attn.c_attn"]["shape"] == [48, 16]
    assert layers["h.0.attn.c_attn"]["delta_norm"] == pytest.approx(0.1 * math.sqrt(48 * 16), rel=1e-4)
    assert layers["h.0.mlp.c_fc"]["delta_norm"] == 0.0
