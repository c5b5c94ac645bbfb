"""Statistics for reports: seed summaries, paired significance tests and Pareto fronts.

Tests come from scipy/statsmodels so that their definitions are the ones users can look up;
this module only chooses which test applies and how runs are paired. The choices are
documented in docs/report.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

ALPHA = 0.05
CONFIDENCE = 0.95
# McNemar: exact binomial test when there are few discordant pairs, chi-square with continuity
# correction otherwise (the usual rule of thumb, e.g. statsmodels' and Dietterich 1998).
MCNEMAR_EXACT_BELOW = 25
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0


def seed_summary(values: Sequence[float], *, bootstrap: bool = False) -> dict[str, Any]:
    """Mean, sample std and a 95% t-interval over seeds (and a percentile bootstrap when asked).

    With one seed there is no spread to measure: std and the interval are None, not zero.
    """
    import numpy as np
    from scipy import stats

    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    out: dict[str, Any] = {"n": n, "mean": None, "std": None, "ci_low": None, "ci_high": None,
                           "ci_method": None, "values": vals}
    if n == 0:
        return out
    arr = np.asarray(vals, dtype=float)
    out["mean"] = float(arr.mean())
    if n < 2:
        return out
    out["std"] = float(arr.std(ddof=1))
    sem = float(stats.sem(arr))
    if sem == 0.0:
        low = high = out["mean"]
    else:
        low, high = stats.t.interval(CONFIDENCE, n - 1, loc=out["mean"], scale=sem)
    out.update(ci_low=float(low), ci_high=float(high), ci_method="t")
    if bootstrap:
        if float(arr.std()) == 0.0:
            blow = bhigh = out["mean"]
        else:
            res = stats.bootstrap((arr,), np.mean, confidence_level=CONFIDENCE, method="percentile",
                                  n_resamples=BOOTSTRAP_RESAMPLES, random_state=BOOTSTRAP_SEED)
            blow, bhigh = res.confidence_interval
        out.update(boot_low=float(blow), boot_high=float(bhigh))
    return out


def mcnemar_test(pred_a: Sequence[int], pred_b: Sequence[int], gold: Sequence[int]) -> dict[str, Any]:
    """McNemar's test on two classifiers' per-example correctness over the same examples.

    b = examples only A gets right, c = examples only B gets right. Exact binomial test when
    b + c < MCNEMAR_EXACT_BELOW, else chi-square with continuity correction (statsmodels).
    """
    from statsmodels.stats.contingency_tables import mcnemar

    if not (len(pred_a) == len(pred_b) == len(gold)):
        raise ValueError("McNemar needs predictions of equal length over the same examples")
    ok_a = [p == g for p, g in zip(pred_a, gold, strict=True)]
    ok_b = [p == g for p, g in zip(pred_b, gold, strict=True)]
    both = sum(a and b for a, b in zip(ok_a, ok_b, strict=True))
    only_a = sum(a and not b for a, b in zip(ok_a, ok_b, strict=True))
    only_b = sum(b and not a for a, b in zip(ok_a, ok_b, strict=True))
    neither = len(gold) - both - only_a - only_b
    exact = (only_a + only_b) < MCNEMAR_EXACT_BELOW
    res = mcnemar([[both, only_a], [only_b, neither]], exact=exact, correction=True)
    return {"test": "mcnemar", "exact": exact, "n": len(gold), "both_correct": both, "only_a": only_a,
            "only_b": only_b, "neither": neither, "statistic": float(res.statistic), "pvalue": float(res.pvalue),
            "delta": (only_a - only_b) / len(gold) if gold else 0.0}


def paired_bootstrap(scores_a: Sequence[float], scores_b: Sequence[float]) -> dict[str, Any]:
    """Paired bootstrap over examples of mean(a - b): percentile 95% CI and a two-sided p-value.

    p = 2 * min(P*(d <= 0), P*(d >= 0)) over the bootstrap distribution of the mean difference,
    so p < alpha exactly when the percentile interval excludes zero.
    """
    import numpy as np
    from scipy import stats

    a = np.asarray(scores_a, dtype=float)
    b = np.asarray(scores_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired bootstrap needs two non-empty score lists of equal length")
    d = a - b
    delta = float(d.mean())
    if float(d.std()) == 0.0:
        return {"test": "paired_bootstrap", "n": len(d), "delta": delta, "ci_low": delta, "ci_high": delta,
                "pvalue": 1.0 if delta == 0.0 else 0.0, "resamples": 0}
    res = stats.bootstrap((d,), np.mean, confidence_level=CONFIDENCE, method="percentile",
                          n_resamples=BOOTSTRAP_RESAMPLES, random_state=BOOTSTRAP_SEED)
    dist = np.asarray(res.bootstrap_distribution)
    p = min(1.0, 2.0 * min(float((dist <= 0).mean()), float((dist >= 0).mean())))
    low, high = res.confidence_interval
    return {"test": "paired_bootstrap", "n": len(d), "delta": delta, "ci_low": float(low), "ci_high": float(high),
            "pvalue": p, "resamples": BOOTSTRAP_RESAMPLES}


def welch_test(values_a: Sequence[float], values_b: Sequence[float]) -> dict[str, Any] | None:
    """Welch's t-test between two configurations' seed results (None with fewer than 2 seeds each)."""
    from scipy import stats

    if len(values_a) < 2 or len(values_b) < 2:
        return None
    if len(set(values_a)) == 1 and len(set(values_b)) == 1:
        return {"test": "welch", "statistic": None, "pvalue": 1.0 if values_a[0] == values_b[0] else 0.0}
    import warnings

    with warnings.catch_warnings():  # near-identical seed values: scipy warns, the p-value is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(values_a, values_b, equal_var=False)
    return {"test": "welch", "statistic": float(res.statistic), "pvalue": float(res.pvalue)}


def combine_seed_tests(tests: list[dict[str, Any]]) -> dict[str, Any]:
    """One verdict from several matched seed pairs: an intersection-union test.

    The pair counts as significant only when every matched seed pair is significant in the same
    direction; its p-value is the largest of the per-seed p-values (a level-alpha test).
    """
    if not tests:
        return {"pvalue": None, "significant": False, "direction": 0}
    signs = {(t["delta"] > 0) - (t["delta"] < 0) for t in tests}
    p = max(t["pvalue"] for t in tests)
    direction = signs.pop() if len(signs) == 1 else 0
    return {"pvalue": p, "significant": bool(p < ALPHA and direction != 0), "direction": direction}


def pareto_front(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[bool]:
    """Mask of non-dominated points. A point is dominated when another is at least as good on every
    objective and strictly better on one; equal points do not dominate each other."""
    signs = [1.0 if m else -1.0 for m in maximize]
    scored = [[s * float(v) for s, v in zip(signs, p, strict=True)] for p in points]
    mask = []
    for i, p in enumerate(scored):
        dominated = any(
            all(q[k] >= p[k] for k in range(len(p))) and any(q[k] > p[k] for k in range(len(p)))
            for j, q in enumerate(scored) if j != i
        )
        mask.append(not dominated)
    return mask
