"""Property tests over spec parsing: any input either becomes a valid, usable spec or fails with
the project's own error (never a raw KeyError/TypeError/AttributeError/ValueError)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from peftbench.config.spec import DataSpec, ModelSpec, RunSpec, TrainSpec, apply_overrides, parse_override
from peftbench.errors import PeftbenchError

pytestmark = pytest.mark.reliability

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SECTION_KEYS = {
    "model": list(ModelSpec.model_fields),
    "data": list(DataSpec.model_fields),
    "train": list(TrainSpec.model_fields),
    "method": ["name", "r", "alpha", "dropout", "target_modules", "bias", "layers", "fraction", "quant_type",
               "double_quant", "feedforward_modules", "use_rslora", "rank_pattern", "init_lora_weights"],
}
TOP_KEYS = ["name", "task", "save", *SECTION_KEYS]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=12), st.sampled_from(["lora", "full", "partial", "qlora", "ia3", "dora", "auto", "float32",
                                           "classification", "summarization", "adapter", "none", "cpu", "1e-3",
                                           "../x", "a/b", "", "nf4", "all-linear"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=6)
any_key = st.one_of(st.text(max_size=10), st.integers(-3, 3), st.none(), st.booleans())


def section(name: str) -> st.SearchStrategy[Any]:
    keys = st.one_of(st.sampled_from(SECTION_KEYS[name]), any_key)
    return st.one_of(st.dictionaries(keys, values, max_size=5), values)


spec_dicts = st.one_of(
    st.fixed_dictionaries({}, optional={k: (section(k) if k in SECTION_KEYS else values) for k in TOP_KEYS}),
    st.dictionaries(st.one_of(st.sampled_from(TOP_KEYS), any_key), values, max_size=4),
    values,
)

dotted_keys = st.one_of(
    st.sampled_from([f"{s}.{k}" for s, keys in SECTION_KEYS.items() for k in keys] + TOP_KEYS),
    st.lists(st.text(max_size=5), min_size=1, max_size=4).map(".".join),
)
override_values = st.one_of(
    st.text(max_size=15), st.integers().map(str), st.floats().map(repr),
    st.sampled_from(["[1, 2", "{a: 1}", "!!python/object:os.system", "null", "~", "'quoted'", "2e-4", "-1",
                     "[q, v]", "true", "0x10", "1_000", ".inf", "&a [*a]", "*unknown", "%TAG", "@x"]),
)
overrides = st.one_of(st.text(max_size=30), st.tuples(dotted_keys, override_values).map(lambda kv: f"{kv[0]}={kv[1]}"))


def _usable(spec: RunSpec) -> None:
    """A spec that parsed must resolve, get a run id and survive a round trip."""
    try:
        resolved = spec.resolved()
        resolved.run_id()
    except PeftbenchError:
        return  # e.g. a method-specific value checked when defaults are filled in
    dumped = spec.to_dict()
    again = RunSpec.from_dict(json.loads(json.dumps(dumped))).to_dict()
    assert json.dumps(again, sort_keys=True, default=str) == json.dumps(dumped, sort_keys=True, default=str)
    lr = resolved.train.lr
    assert lr is not None and math.isfinite(lr) and lr > 0
    assert all(math.isfinite(v) for v in resolved.train.model_dump().values() if isinstance(v, float))
    name = resolved.name
    assert name is None or ("/" not in name and not name.startswith(".") and len(name) <= 100)
    params = resolved.method.params
    if params.get("r") is not None:
        assert isinstance(params["r"], int) and not isinstance(params["r"], bool) and params["r"] > 0
    if params.get("alpha") is not None:
        assert math.isfinite(params["alpha"]) and params["alpha"] > 0
    if params.get("dropout") is not None:
        assert 0 <= params["dropout"] < 1


@FUZZ
@given(spec_dicts)
@example({"train": {"lr": math.inf}})  # each of these once parsed as valid
@example({"method": {"name": "lora", "r": 2.5}})
@example({"method": {"name": "dora", "r": True}})
@example({"method": {"name": "lora", "alpha": math.nan}})
@example({"method": {"name": "qlora", "dropout": 5}})
@example({"name": "x" * 300})
def test_from_dict_parses_or_raises_own_error(data: Any) -> None:
    try:
        spec = RunSpec.from_dict(data)
    except PeftbenchError as err:
        assert "\n" not in str(err)
        return
    _usable(spec)


@FUZZ
@given(st.text(max_size=40))
def test_parse_override_parses_or_raises_own_error(item: str) -> None:
    try:
        path, _value = parse_override(item)
    except PeftbenchError as err:
        assert "\n" not in str(err)
        return
    assert path and all(path)


@FUZZ
@given(st.lists(overrides, max_size=4))
@example(["model.revision=", "method.r=&0 [*0]"])  # a YAML alias loop once failed with a raw ValueError
def test_overrides_on_a_valid_spec(items: list[str]) -> None:
    base = {"model": {"name_or_path": "embedded"}, "data": {"train": "t.csv", "eval": "e.csv"},
            "method": {"name": "lora"}, "train": {"epochs": 1}}
    try:
        spec = RunSpec.from_dict(apply_overrides(base, items))
    except PeftbenchError as err:
        assert "\n" not in str(err)
        return
    _usable(spec)


@FUZZ
@given(spec_dicts, st.lists(overrides, max_size=3))
def test_overrides_on_any_input(data: Any, items: list[str]) -> None:
    try:
        spec = RunSpec.from_dict(apply_overrides(data, items) if isinstance(data, dict) else data)
    except PeftbenchError:
        return
    _usable(spec)


@given(st.sampled_from([f"{s}.{k}" for s, keys in SECTION_KEYS.items() for k in keys]), st.integers(-10**9, 10**9))
@settings(max_examples=100, deadline=None)
def test_parse_override_round_trip(key: str, number: int) -> None:
    assert parse_override(f"{key}={number}") == (key.split("."), number)
