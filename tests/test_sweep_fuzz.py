"""Property tests: grid expansion is deterministic and as large as the product of its axes; any
sweep file either expands or fails with the project's own error."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peftbench.config.sweep import SweepSpec
from peftbench.errors import PeftbenchError

pytestmark = pytest.mark.reliability

DEFAULTS = {"model": {"name_or_path": "embedded"}, "data": {"train": "t.csv", "eval": "e.csv"}}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(methods=st.lists(st.sampled_from(["lora", "dora"]), min_size=1, max_size=2, unique=True),
       ranks=st.lists(st.integers(1, 256), min_size=1, max_size=4, unique=True),
       lrs=st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=3, unique=True),
       seeds=st.lists(st.integers(0, 10_000), min_size=1, max_size=3, unique=True))
def test_expansion_size_is_the_product_and_stable(methods, ranks, lrs, seeds) -> None:
    spec = {"defaults": DEFAULTS, "methods": methods, "grid": {"method.r": ranks, "train.lr": lrs}, "seeds": seeds}
    runs = SweepSpec.from_dict(spec).expand()
    assert len(runs) == math.prod(map(len, (methods, ranks, lrs, seeds)))
    assert len({r.run_id for r in runs}) == len(runs)
    assert [r.run_id for r in SweepSpec.from_dict(spec).expand()] == [r.run_id for r in runs]


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                       max_leaves=8)
_keys = st.sampled_from(["defaults", "models", "tasks", "methods", "grid", "seeds", "per_model", "per_method",
                         "max_runs", "timeout_s", "name", "metods"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _values, max_size=5))
def test_any_sweep_file_expands_or_raises_our_error(data) -> None:
    try:
        runs = SweepSpec.from_dict(data).expand()
    except PeftbenchError as err:
        assert str(err) and "\n" not in str(err)  # one line, naming the problem
        return
    assert 1 <= len(runs) <= SweepSpec.from_dict(data).size()
