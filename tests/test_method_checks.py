"""What the method layer checks before peft sees a spec: registry lookups, shared adapter keys, target
module lists, and the translation of peft's failures into one-line errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import pytest

from peftbench.errors import ModelError, SpecError
from peftbench.methods.base import (
    METHODS,
    MethodContext,
    MethodRegistry,
    check_param_values,
    make_config,
    resolve_targets,
    settled_kwargs,
    wrap_peft,
)
from peftbench.registry import Registry


def test_a_registry_returns_what_was_registered_and_lists_names_in_order() -> None:
    reg: Registry[dict[str, int]] = Registry("widget")
    first = {"n": 1}
    assert reg.add("b", first) is first

    @reg.register("a")
    def second() -> str:
        return "second"

    assert second() == "second"  # the decorator hands back the function it registered
    assert reg.get("b") is first and reg.get("a") is second
    assert list(reg) == reg.names() == ["b", "a"] and reg.items() == [("b", first), ("a", second)]
    assert "a" in reg and "c" not in reg
    with pytest.raises(SpecError) as info:
        reg.get("bb")
    assert info.value.message.startswith("Unknown widget 'bb'.")
    assert info.value.hint == "use one of: a, b"


def test_the_method_registry_is_case_insensitive_and_loads_lazily_in_order() -> None:
    reg = MethodRegistry()
    reg.add("one", 1)  # type: ignore[arg-type]
    reg.loaders.append(lambda r: r.add("two", 2))
    reg.loaders.append(lambda r: r.add("three", 3))
    assert reg.get(" ONE ") == 1 and "One" in reg
    assert reg.registered() == ["one"]  # a known name loads nothing
    assert reg.get("Three") == 3
    assert reg.registered() == ["one", "two", "three"] and reg.loaders == []
    reg2 = MethodRegistry()
    reg2.loaders.append(lambda r: r.add("late", 0))
    assert "LATE" in reg2
    with pytest.raises(SpecError, match=r"^Unknown method 'nope'"):
        reg2.get("nope")


def test_peft_fields_offer_the_config_keys_but_not_peft_internals() -> None:
    fields = set(METHODS.get("lora").peft_fields())
    assert {"r", "lora_alpha", "lora_dropout", "target_modules"} <= fields
    assert fields.isdisjoint({"peft_type", "task_type", "base_model_name_or_path", "revision", "auto_mapping",
                              "inference_mode"})


def test_an_unknown_method_key_names_the_valid_ones() -> None:
    with pytest.raises(SpecError) as info:
        METHODS.get("lora").resolve_params({"rank": 8})
    assert info.value.message.startswith("unknown key 'method.rank' for method 'lora'.")
    hint = info.value.hint or ""
    assert hint.startswith("valid keys: ") and hint.removeprefix("valid keys: ").split(", ") == sorted(
        METHODS.get("lora").valid_keys())
    assert "lora_alpha" in hint.split(", ")


@pytest.mark.parametrize("key,value", [("r", 0), ("r", -4), ("alpha", 0), ("alpha", -1.0), ("r", "8")])
def test_rank_and_alpha_must_be_positive_numbers(key: str, value: Any) -> None:
    with pytest.raises(SpecError) as info:
        METHODS.get("lora").resolve_params({key: value})
    assert info.value.message == f"invalid value for 'method.{key}': must be a positive number (got {value!r})"
    assert info.value.hint == f"set e.g. --set method.{key}=8"


def test_the_smallest_valid_rank_and_alpha_pass() -> None:
    out = METHODS.get("lora").resolve_params({"r": 1, "alpha": 0.5, "dropout": 0})
    assert (out["r"], out["alpha"], out["dropout"]) == (1, 0.5, 0)


@pytest.mark.parametrize("params,line", [
    ({"r": True}, "invalid value for 'method.r': must be a positive integer (got True) (fix: set e.g. --set method.r=8)"),
    ({"r": 8.0}, "invalid value for 'method.r': must be a positive integer (got 8.0) (fix: set e.g. --set method.r=8)"),
    ({"alpha": math.inf}, "invalid value for 'method.alpha': must be a positive finite number (got inf) "
                          "(fix: set e.g. --set method.alpha=16)"),
    ({"alpha": True}, "invalid value for 'method.alpha': must be a positive finite number (got True) "
                      "(fix: set e.g. --set method.alpha=16)"),
    ({"dropout": 1}, "invalid value for 'method.dropout': must be a number in [0, 1) (got 1) "
                     "(fix: set e.g. --set method.dropout=0.1)"),
    ({"target_modules": 5}, "invalid value for 'method.target_modules': must be 'auto', 'all-linear', a "
                            "module-name pattern or a list of module names (got 5) "
                            "(fix: set e.g. --set method.target_modules=[query,value])"),
])
def test_each_shared_key_error_names_the_key_the_rule_and_an_example(params: dict[str, Any], line: str) -> None:
    with pytest.raises(SpecError) as info:
        check_param_values(params)
    assert str(info.value) == line


@pytest.mark.parametrize("params", [
    {"alpha": math.nan}, {"dropout": True}, {"dropout": "0.1"}, {"dropout": -0.1}, {"dropout": 1.5},
    {"target_modules": ["query", 1]}, {"target_modules": {"query": 1}}, {"feedforward_modules": 5},
])
def test_other_bad_shared_values_are_spec_errors(params: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match=f"^invalid value for 'method.{next(iter(params))}'"):
        check_param_values(params)


@pytest.mark.parametrize("params", [
    {"r": 8, "alpha": 16.0, "dropout": 0.0}, {"dropout": 0}, {"dropout": 0.99}, {"target_modules": "all-linear"},
    {"target_modules": ("query", "value")}, {"feedforward_modules": ["output"]}, {"r": None, "alpha": None},
])
def test_good_shared_values_pass(params: dict[str, Any]) -> None:
    check_param_values(params)


@pytest.fixture(scope="module")
def ctx(tiny_bert: Path) -> MethodContext:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    return MethodContext(model=model, family=None, peft_task_type="SEQ_CLS")


def test_target_modules_resolve_to_the_default_or_every_linear_layer(ctx: MethodContext) -> None:
    from peftbench.models.families import linear_module_names

    every = linear_module_names(ctx.model)
    assert {"query", "value", "dense"} <= set(every)
    assert resolve_targets("auto", ("query", "value"), ctx) == ["query", "value"]
    assert resolve_targets(None, ("query",), ctx) == ["query"]
    assert resolve_targets("auto", None, ctx) == every
    assert resolve_targets("all-linear", ("query",), ctx) == every
    assert resolve_targets(["key"], ("query",), ctx) == ["key"]


def test_peft_settings_it_refuses_are_spec_errors(ctx: MethodContext) -> None:
    with pytest.raises(SpecError) as info:
        make_config("LoraConfig", ctx, {"r": 4, "bogus_key": 1})
    assert info.value.message.startswith("invalid LoraConfig settings: ") and "bogus_key" in info.value.message
    assert info.value.hint == "check the method section of the spec"


def test_a_long_peft_complaint_is_cut_to_300_characters_and_still_told_apart(ctx: MethodContext) -> None:
    key = "k" * 400
    with pytest.raises(SpecError) as info:
        make_config("LoraConfig", ctx, {key: 1})
    prefix = "invalid LoraConfig settings: "
    assert info.value.message.startswith(prefix) and len(info.value.message) == len(prefix) + 300
    err = _wrap_error(ctx, "FEATURE_EXTRACTION", target_modules=["m" * 400])
    prefix = "target modules matched nothing in the model: "
    assert err.message.startswith(prefix + "Target modules ") and len(err.message) == len(prefix) + 300


def _wrap_error(ctx: MethodContext, task_type: str = "SEQ_CLS", **lora: Any) -> ModelError:
    import copy

    from peft import LoraConfig

    with pytest.raises(ModelError) as info:
        wrap_peft(LoraConfig(task_type=task_type, r=2, **lora), MethodContext(copy.deepcopy(ctx.model), None, task_type))
    return info.value


def test_targets_that_match_nothing_are_named_as_such(ctx: MethodContext) -> None:
    # peft's two wordings: without a classifier head to keep trainable it names the targets; with one
    # (SEQ_CLS) or with exclusions that empty the list it says that nothing was targeted
    for task_type, lora, says in (
            ("FEATURE_EXTRACTION", {"target_modules": ["no_such_layer"]},
             "Target modules {'no_such_layer'} not found in the base model."),
            ("SEQ_CLS", {"target_modules": ["no_such_layer"]}, "No modules were targeted"),
            ("SEQ_CLS", {"target_modules": ["no_such_layer", "query"], "exclude_modules": ["query"]},
             "No modules were targeted")):
        err = _wrap_error(ctx, task_type, **lora)
        assert err.message.startswith(f"target modules matched nothing in the model: {says}"), lora
        assert err.hint == "set method.target_modules to module names that exist, or 'auto'"
        assert "\n" not in err.message


def test_a_method_that_cannot_apply_says_so(ctx: MethodContext) -> None:
    err = _wrap_error(ctx, target_modules=["LayerNorm"])
    assert err.message.startswith("method cannot apply to this model: ") and "LayerNorm" in err.message
    assert err.hint == "pick a method that supports this architecture (peftbench methods)"


def test_settled_kwargs_drop_nulls_where_the_config_has_another_default() -> None:
    from peft import LoraConfig

    got = settled_kwargs(LoraConfig, {"rank_pattern": None, "use_dora": None, "layers_pattern": None, "r": 4,
                                      "no_such_field": None})
    # rank_pattern's default is a factory ({}), use_dora's is False: both left out; layers_pattern's
    # default is None and a key peft lacks is left for peft to refuse.
    assert got == {"layers_pattern": None, "r": 4, "no_such_field": None}


def test_settled_kwargs_refuse_wrong_types_naming_each_key_and_type() -> None:
    from peft import LoHaConfig, LoKrConfig, LoraConfig

    ok = {"rank_pattern": {"query": 4}, "use_rslora": True, "lora_alpha": 1.5, "lora_dropout": 0.1, "r": 8,
          "target_modules": ["query"], "layers_to_transform": 1, "no_such_field": object()}
    assert settled_kwargs(LoraConfig, ok) == ok  # peftbench checks its own keys (alpha may be fractional)
    for cls in (LoHaConfig, LoKrConfig):  # their `alpha`, annotated `int`, is peftbench's shared key too
        assert settled_kwargs(cls, {"alpha": 1.5, "r": 4}) == {"alpha": 1.5, "r": 4}
    with pytest.raises(SpecError) as one:
        settled_kwargs(LoraConfig, {"rank_pattern": 5})
    assert one.value.message == "method.rank_pattern=5 is not of the type LoraConfig takes (Optional[dict])"
    assert one.value.hint == "give each setting a value of the type shown, or leave it out for the default"
    with pytest.raises(SpecError) as two:
        settled_kwargs(LoraConfig, {"use_rslora": "maybe", "r": 4, "rank_pattern": [1]})
    assert two.value.message == (
        "2 problems in the method section: method.use_rslora='maybe' is not of the type LoraConfig takes (bool); "
        "method.rank_pattern=[1] is not of the type LoraConfig takes (Optional[dict])")
    with pytest.raises(SpecError) as long:
        settled_kwargs(LoraConfig, {"rank_pattern": "x" * 2000})
    assert len(long.value.message) == 600 and long.value.message.startswith("method.rank_pattern='xxx")


class Thing:
    """A type pydantic knows nothing of: checked by isinstance."""


class NoSchema:
    """A type whose pydantic schema cannot be built at all: values for it are left to peft."""

    @classmethod
    def __get_pydantic_core_schema__(cls, *_args: Any) -> Any:
        raise RuntimeError("no schema")


class Holder:
    thing: Thing
    maybe: Optional[Thing]  # noqa: UP045  (as peft writes its annotations)
    size: int
    odd: NoSchema


def test_settled_kwargs_check_arbitrary_classes_and_dataclasses_by_instance() -> None:
    from peft import LoraConfig
    from peft.tuners.lora.config import LoraRuntimeConfig

    kept = Thing()
    assert settled_kwargs(Holder, {"thing": kept}) == {"thing": kept}
    with pytest.raises(SpecError) as err:
        settled_kwargs(Holder, {"thing": 5, "size": 1})
    assert err.value.message == f"method.thing=5 is not of the type Holder takes ({Thing.__name__})"
    assert settled_kwargs(Holder, {"maybe": kept, "odd": 5}) == {"maybe": kept, "odd": 5}
    with pytest.raises(SpecError) as maybe:
        settled_kwargs(Holder, {"maybe": 5})
    assert maybe.value.message == f"method.maybe=5 is not of the type Holder takes (Optional[{__name__}.Thing])"
    # LoraConfig's runtime_config is a dataclass, which pydantic checks only with its own config: it must be
    # an instance (no spec value is), and the keys after it are checked all the same
    with pytest.raises(SpecError) as two:
        settled_kwargs(LoraConfig, {"runtime_config": {"ephemeral_gpu_offload": True}, "rank_pattern": 5})
    assert two.value.message == (
        "2 problems in the method section: method.runtime_config={'ephemeral_gpu_offload': True} is not of the "
        "type LoraConfig takes (LoraRuntimeConfig); method.rank_pattern=5 is not of the type LoraConfig takes "
        "(Optional[dict])")
    runtime = LoraRuntimeConfig()
    assert settled_kwargs(LoraConfig, {"runtime_config": runtime}) == {"runtime_config": runtime}


def test_a_peft_error_without_a_message_is_named_by_its_type(ctx: MethodContext,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import peft

    def fails(*_args: Any, **_kw: Any) -> None:
        raise NotImplementedError

    monkeypatch.setattr(peft, "get_peft_model", fails)
    assert _wrap_error(ctx).message == "method cannot apply to this model: NotImplementedError"


def test_settled_kwargs_of_a_plain_class_check_its_annotations_only() -> None:
    class Plain:
        size: int

    class Unreadable:
        size: int
        other: NoSuchType  # noqa: F821  (annotations that cannot be resolved: peft checks the values)

    assert settled_kwargs(Plain, {"size": 3, "other": None}) == {"size": 3, "other": None}  # no dataclass defaults
    with pytest.raises(SpecError) as err:
        settled_kwargs(Plain, {"size": "big"})
    assert err.value.message == "method.size='big' is not of the type Plain takes (int)"
    assert settled_kwargs(Unreadable, {"size": "big"}) == {"size": "big"}
