import pytest

from peftbench.errors import SpecError
from peftbench.methods.base import METHODS
from peftbench.registry import Registry, did_you_mean


def test_unknown_name_suggests_close_match():
    with pytest.raises(SpecError) as err:
        METHODS.get("lroa")
    assert "Unknown method 'lroa'" in str(err.value)
    assert str(err.value).split("Did you mean: ")[1].startswith("lora, ")  # before peft's 'road'


def test_a_swapped_pair_of_letters_is_suggested_first():
    assert did_you_mean("lroa", ["road", "loha", "lora"]) == " Did you mean: lora, road, loha?"
    assert did_you_mean("laro", ["lara", "lora"]) == " Did you mean: lora, lara?"
    assert did_you_mean("LORA", ["lora"]) == " Did you mean: lora?"


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


def _documented_learning_rates() -> dict[str, float]:
    """The `default lr` column of the method table in docs/methods.md: name -> learning rate."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z0-9_]+)` \|.*\| ([0-9.]+e-[0-9]+) \|$", text, flags=re.MULTILINE)
    return {name: float(lr) for name, lr in rows}


def test_every_documented_default_learning_rate_is_the_registered_one():
    documented = _documented_learning_rates()
    assert set(documented) >= {"full", "partial", "lora", "qlora", "ia3", "dora"}, documented
    for name, lr in documented.items():
        assert METHODS.get(name).default_lr == lr, name


def test_at_most_three_of_the_five_closest_names_are_suggested() -> None:
    closer = ["lroab", "lroac", "lroad", "lroae", "lroaf"]  # each closer to 'lroa' than 'lora' is
    # 'lora' is fifth closest: it is in the pool and, having the same letters, comes first
    assert did_you_mean("lroa", [*closer[:4], "lora"]) == " Did you mean: lora, lroae, lroad?"
    # sixth closest: out of the pool
    assert did_you_mean("lroa", [*closer, "lora"]) == " Did you mean: lroaf, lroae, lroad?"
