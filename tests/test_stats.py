"""The report's statistics on constructed cases, each against scipy/statsmodels or its definition
(docs/report.md): seed summaries, McNemar, the paired bootstrap, Welch, the seed-pair verdict and the
Pareto front. The same functions on real records are covered by tests/test_report.py."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from peftbench.reports.stats import (
    ALPHA,
    combine_seed_tests,
    mcnemar_test,
    paired_bootstrap,
    pareto_front,
    seed_summary,
    welch_test,
)


def test_seed_summary_of_no_usable_value_and_of_one_value() -> None:
    empty = seed_summary([None, math.nan, math.inf])  # type: ignore[list-item]
    assert empty == {"n": 0, "mean": None, "std": None, "ci_low": None, "ci_high": None, "ci_method": None,
                     "values": []}
    one = seed_summary([0.8, None, math.nan], bootstrap=True)  # type: ignore[list-item]
    assert (one["n"], one["mean"], one["std"], one["ci_low"], one["ci_method"]) == (1, 0.8, None, None, None)
    assert "boot_low" not in one


def test_seed_summary_matches_scipy() -> None:
    vals = [0.71, 0.78, 0.74, 0.80, 0.69, 0.83, 0.77, 0.72, 0.75, 0.81, 0.70, 0.79]  # enough for a smooth bootstrap
    s = seed_summary([*vals, None], bootstrap=True)  # type: ignore[list-item]
    arr = np.asarray(vals)
    low, high = sps.t.interval(0.95, len(vals) - 1, loc=arr.mean(), scale=sps.sem(arr))
    assert (s["n"], s["values"], s["ci_method"]) == (12, vals, "t")
    assert s["mean"] == pytest.approx(arr.mean()) and s["std"] == pytest.approx(arr.std(ddof=1))
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((low, high))
    boot = sps.bootstrap((arr,), np.mean, confidence_level=0.95, method="percentile", n_resamples=9999,
                         random_state=0).confidence_interval
    assert (s["boot_low"], s["boot_high"]) == pytest.approx((boot.low, boot.high))
    assert "boot_low" not in seed_summary(vals)
    two = seed_summary([0.0, 2.0], bootstrap=True)  # the fewest seeds with a spread; population std exactly 1
    assert two["std"] == pytest.approx(2 ** 0.5) and two["ci_method"] == "t" and two["boot_low"] < two["boot_high"]


def test_equal_seed_values_have_a_zero_width_interval() -> None:
    s = seed_summary([0.5, 0.5, 0.5], bootstrap=True)
    assert (s["std"], s["ci_low"], s["ci_high"], s["boot_low"], s["boot_high"]) == (0.0, 0.5, 0.5, 0.5, 0.5)


def test_mcnemar_counts_the_table_and_matches_statsmodels() -> None:
    from statsmodels.stats.contingency_tables import mcnemar

    gold = [0, 1, 0, 1, 0, 1, 0, 1, 1, 0]
    pred_a = [0, 1, 0, 1, 0, 1, 1, 0, 1, 1]  # right on 0-5 and 8
    pred_b = [0, 1, 1, 0, 1, 1, 0, 1, 0, 1]  # right on 0, 1, 5, 6, 7
    res = mcnemar_test(pred_a, pred_b, gold)
    assert {k: res[k] for k in ("test", "exact", "n", "both_correct", "only_a", "only_b", "neither")} == \
        {"test": "mcnemar", "exact": True, "n": 10, "both_correct": 3, "only_a": 4, "only_b": 2, "neither": 1}
    assert res["delta"] == pytest.approx((4 - 2) / 10)
    ref = mcnemar([[3, 4], [2, 1]], exact=True, correction=True)
    assert (res["statistic"], res["pvalue"]) == pytest.approx((ref.statistic, ref.pvalue))
    assert mcnemar_test([], [], [])["delta"] == 0.0
    with pytest.raises(ValueError, match=r"^McNemar needs predictions of equal length over the same examples$"):
        mcnemar_test([0, 1], [0], [0, 1])


def _mcnemar_on(only_a: int, only_b: int) -> dict:
    """mcnemar_test on items where model A alone is right `only_a` times and B alone `only_b` times
    (plus two items both get right and one neither does)."""
    gold = [1] * (only_a + only_b + 3)
    pred_a = [1] * only_a + [0] * only_b + [1, 1, 0]
    pred_b = [0] * only_a + [1] * only_b + [1, 1, 0]
    return mcnemar_test(pred_a, pred_b, gold)


@pytest.mark.parametrize(("only_a", "only_b"), [(16, 8), (17, 8)])
def test_mcnemar_is_exact_below_25_discordant_pairs_and_chi_square_from_25(only_a: int, only_b: int) -> None:
    """Below 25 discordant pairs the exact two-sided binomial test; from 25 on, the chi-square statistic
    with continuity correction, (|b - c| - 1)^2 / (b + c), on one degree of freedom."""
    res = _mcnemar_on(only_a, only_b)
    discordant = only_a + only_b
    assert (res["only_a"], res["only_b"], res["both_correct"], res["neither"]) == (only_a, only_b, 2, 1)
    if discordant < 25:
        expected = sps.binomtest(min(only_a, only_b), discordant, 0.5).pvalue
        assert res["exact"] is True and res["pvalue"] == pytest.approx(expected)
    else:
        chi2 = (abs(only_a - only_b) - 1) ** 2 / discordant
        assert res["exact"] is False and res["statistic"] == pytest.approx(chi2)
        assert res["pvalue"] == pytest.approx(sps.chi2.sf(chi2, 1))


def test_paired_bootstrap_follows_its_definition() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.random(60), rng.random(60)
    res = paired_bootstrap(a, b)
    boot = sps.bootstrap((a - b,), np.mean, confidence_level=0.95, method="percentile", n_resamples=9999,
                         random_state=0)
    dist = boot.bootstrap_distribution
    p = min(1.0, 2 * min((dist <= 0).mean(), (dist >= 0).mean()))
    assert res["test"] == "paired_bootstrap" and res["n"] == 60 and res["resamples"] == 9999
    assert res["delta"] == pytest.approx((a - b).mean()) and res["pvalue"] == pytest.approx(p)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx(tuple(boot.confidence_interval))


def test_paired_bootstrap_without_spread_and_bad_input() -> None:
    same = paired_bootstrap([0.5, 0.7], [0.5, 0.7])
    assert same == {"test": "paired_bootstrap", "n": 2, "delta": 0.0, "ci_low": 0.0, "ci_high": 0.0, "pvalue": 1.0,
                    "resamples": 0}
    shifted = paired_bootstrap([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])  # every difference exactly 0.5
    assert shifted == {"test": "paired_bootstrap", "n": 3, "delta": 0.5, "ci_low": 0.5, "ci_high": 0.5,
                       "pvalue": 0.0, "resamples": 0}
    # Differences +1/-1: a quarter of the resampled means or more are exactly 0 and count on both sides, so
    # 2 * min(P(d <= 0), P(d >= 0)) exceeds 1 and is capped there; the interval spans zero.
    spread = paired_bootstrap([1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0])  # differences of std exactly 1
    assert spread["resamples"] == 9999 and spread["pvalue"] == 1.0 and spread["ci_low"] < 0 < spread["ci_high"]
    for a, b in (([1.0], [1.0, 2.0]), ([], []), ([[1.0]], [[1.0]])):
        with pytest.raises(ValueError, match=r"^paired bootstrap needs two non-empty score lists of equal length$"):
            paired_bootstrap(a, b)


@pytest.mark.parametrize("a,b", [([0.7, 0.8], [0.6, 0.65]), ([0.7, 0.7, 0.7], [0.6, 0.65, 0.62]),
                                 ([0.6, 0.65, 0.62], [0.7, 0.7])])
def test_welch_matches_scipy(a: list[float], b: list[float]) -> None:
    res = welch_test(a, b)
    with warnings.catch_warnings():  # scipy warns about a side whose values are all equal
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = sps.ttest_ind(a, b, equal_var=False)
    assert res is not None and res["test"] == "welch"
    assert (res["statistic"], res["pvalue"]) == pytest.approx((ref.statistic, ref.pvalue))


def test_welch_needs_two_seeds_a_side_and_handles_equal_values() -> None:
    assert welch_test([0.7], [0.6, 0.65]) is None and welch_test([0.6, 0.65], [0.7]) is None
    assert welch_test([0.7, 0.7], [0.7, 0.7]) == {"test": "welch", "statistic": None, "pvalue": 1.0}
    assert welch_test([0.7, 0.7], [0.6, 0.6]) == {"test": "welch", "statistic": None, "pvalue": 0.0}


def _t(delta: float, p: float) -> dict[str, float]:
    return {"delta": delta, "pvalue": p}


@pytest.mark.parametrize("tests,expected", [
    ([], {"pvalue": None, "significant": False, "direction": 0}),
    ([_t(0.1, 0.01), _t(0.2, 0.03)], {"pvalue": 0.03, "significant": True, "direction": 1}),
    ([_t(-0.1, 0.001), _t(-0.2, 0.02)], {"pvalue": 0.02, "significant": True, "direction": -1}),
    ([_t(0.1, 0.001), _t(-0.2, 0.001)], {"pvalue": 0.001, "significant": False, "direction": 0}),
    ([_t(0.1, 0.01), _t(0.2, ALPHA)], {"pvalue": ALPHA, "significant": False, "direction": 1}),
    ([_t(0.0, 0.001)], {"pvalue": 0.001, "significant": False, "direction": 0}),
])
def test_seed_pairs_are_significant_only_when_every_pair_is_in_the_same_direction(tests, expected) -> None:
    assert combine_seed_tests(tests) == expected


def test_pareto_front_directions_ties_and_mismatched_points() -> None:
    pts = [(0.9, 10.0), (0.8, 5.0), (0.8, 6.0), (0.9, 10.0), (0.7, 5.0)]
    assert pareto_front(pts, [True, False]) == [True, True, False, True, False]
    assert pareto_front(pts, [False, True]) == [True, False, True, True, True]
    with pytest.raises(ValueError):
        pareto_front([(0.9, 10.0, 1.0)], [True, False])
