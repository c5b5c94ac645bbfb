"""Carving data splits: which file is the reported (test) split, the validation split carved from
train, and seeded subsamples (stratified by class, or plain random).

The validation carve is stratified and seeded (`data.seed + VALIDATION_SEED_OFFSET`), and taken
before `n_train` applies.
"""

from __future__ import annotations

from typing import Any

from peftbench.errors import DataError

VALIDATION_SEED_OFFSET = 2


def test_file(spec_data: Any) -> str | None:
    """The reported split's file: data.test, or data.eval under its older name."""
    test, eval_ = getattr(spec_data, "test", None), spec_data.eval
    if test and eval_ and test != eval_:
        raise DataError(f"data.test ('{test}') and data.eval ('{eval_}') name different files for the same role",
                        hint="give only data.test (data.eval is its older name)")
    return test or eval_


def carve_validation(labels: list[int], spec_data: Any) -> tuple[list[int], list[int]] | None:
    """(validation rows, remaining train rows): a stratified, seeded carve taken before n_train applies.

    None when the train file is too small to give up rows and the carve was not asked for
    explicitly (it is on by default): the run then has no validation split, and says so."""
    explicit = bool({"validation_fraction", "n_validation"} & spec_data.model_fields_set)
    total = len(labels)
    target_train = min(spec_data.n_train or total, total)
    n_val = spec_data.n_validation or max(1, round(spec_data.validation_fraction * target_train))
    problem = None
    if n_val > total - 2:
        problem = f"cannot carve {n_val} validation rows out of {total} train rows"
    else:
        val = stratified_subsample(labels, n_val, spec_data.seed + VALIDATION_SEED_OFFSET)
        taken = set(val)
        rest = [i for i in range(total) if i not in taken]
        if len({labels[i] for i in rest}) < 2:
            problem = "carving the validation split left a single class in train"
    if problem is None:
        return val, rest
    if explicit:
        raise DataError(problem, hint="lower data.validation_fraction or give a data.validation file")
    return None


def stratified_subsample(labels: list[int], n: int | None, seed: int) -> list[int]:
    """Indices of a class-stratified random subset of size n (all indices when n is None or larger)."""
    import numpy as np

    idx = np.arange(len(labels))
    if n is None or n >= len(labels):
        return idx.tolist()
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    classes, counts = np.unique(labels_arr, return_counts=True)
    quota = np.floor(counts / counts.sum() * n).astype(int)
    # Hand out what rounding left over to the classes with the largest remainders.
    rest = n - quota.sum()
    order = np.argsort(-(counts / counts.sum() * n - quota))
    for k in order[:rest]:
        quota[k] += 1
    chosen = []
    for c, q in zip(classes, quota, strict=True):
        members = idx[labels_arr == c]
        chosen.extend(rng.choice(members, size=min(q, len(members)), replace=False).tolist())
    rng.shuffle(chosen)
    return [int(i) for i in chosen]


def random_subsample(n_rows: int, n: int | None, seed: int) -> list[int]:
    """Sorted indices of a seeded random subset of size n (all rows when n is None or larger)."""
    import numpy as np

    if n is None or n >= n_rows:
        return list(range(n_rows))
    return sorted(np.random.default_rng(seed).choice(n_rows, size=n, replace=False).tolist())
