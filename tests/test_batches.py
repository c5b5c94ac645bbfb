"""Batch order: every example once per epoch, seeded, and length grouping as strong as asked."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("torch")


def _padding_efficiency(batches: list[list[int]], lengths: list[int]) -> float:
    real = sum(lengths[i] for b in batches for i in b)
    return real / sum(len(b) * max(lengths[i] for i in b) for b in batches)


def test_grouping_strength_follows_the_mega_batch_size() -> None:
    from peftbench.data.batching import make_batches

    rng = random.Random(0)
    lengths = [rng.choice([4, 8, 60]) + rng.randrange(4) for _ in range(1000)]
    effs = {}
    for group, per_mega in ((False, 50), (True, 4), (True, 50)):
        batches = make_batches(lengths, 10, seed=3, group_by_length=group, group_batches=per_mega)
        assert sorted(i for b in batches for i in b) == list(range(1000))  # each example exactly once
        assert batches == make_batches(lengths, 10, seed=3, group_by_length=group, group_batches=per_mega)
        effs[(group, per_mega)] = _padding_efficiency(batches, lengths)
    assert effs[(False, 50)] < effs[(True, 4)] < effs[(True, 50)]
    assert effs[(True, 50)] > 0.9 > effs[(False, 50)] + 0.3


def test_mega_batch_size_is_part_of_the_run_only_when_grouping(tmp_path) -> None:
    from peftbench.config.spec import RunSpec

    f = tmp_path / "t.csv"
    f.write_text("text,label\na,0\nb,1\n")

    def run_id(**train: object) -> str:
        return RunSpec.from_dict({"data": {"train": str(f)}, "method": {"name": "lora"}, "train": train}).run_id()

    assert run_id() == run_id(length_group_batches=8)
    assert run_id(group_by_length=True) != run_id(group_by_length=True, length_group_batches=8)
