import pytest

from peftbench.errors import SpecError
from peftbench.methods.base import METHODS
from peftbench.registry import Registry, did_you_mean


def test_unknown_name_suggests_close_match():
    with pytest.raises(SpecError) as err:
        METHODS.get("lroa")
    assert "Unknown method 'lroa'" in str(err.value)
    assert "Did you mean: lora" in str(err.value)


def test_duplicate_registration_is_refused():
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", 2)


def test_did_you_mean_is_empty_when_nothing_is_close():
    assert did_you_mean("zzzzzz", ["lora", "ia3"]) == ""


def test_seed_methods_are_registered_with_their_own_learning_rates():
    for name in ("full", "partial", "lora", "qlora", "ia3", "dora"):
        assert name in METHODS
    # adapter methods need a much larger learning rate than full fine-tuning
    assert METHODS.get("lora").default_lr >= 10 * METHODS.get("full").default_lr
    assert METHODS.get("ia3").default_lr >= 10 * METHODS.get("full").default_lr
