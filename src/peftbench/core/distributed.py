"""Data-parallel runs over several processes (`torchrun`, `accelerate launch`), on accelerate's state.

`train.batch_size` is the *global* batch: every rank builds the same list of global batches (same
seed) and trains on its contiguous slice of each one. Each rank's mean loss is weighted by its share
of the batch, so DDP's gradient average equals the gradient of the mean over the whole global batch:
N processes follow the same optimisation path as one process with the same spec, and the record
stays comparable (same run id, same steps, same schedule).

Counts that the loop makes from the global batch (samples, real tokens) are already global; what
each rank measures for itself (padded tokens, time, memory) is combined here at the end. Every rank
evaluates the whole eval set on the unwrapped model (no collectives there), so metrics are those of
the full set; only rank 0 writes files.

With one process everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


def world_size() -> int:
    """Processes in this run, from the launcher's environment (cheap: no torch import)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def is_main_process() -> bool:
    """Only rank 0 writes records, artifacts, tracker logs and messages."""
    return rank() == 0


def bind_device(device: str) -> None:
    """Under a multi-GPU launch, make plain 'cuda' mean this rank's own GPU (before the model moves)."""
    if device == "cuda" and world_size() > 1:
        import torch

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0") or 0))


@dataclass
class Shard:
    """This rank's part of one global batch, and the loss weight that makes DDP's average exact."""

    idx: list[int]
    weight: float

    def scale(self, loss: Any) -> Any:
        return loss if self.weight == 1.0 else loss * self.weight


def split_batch(idx: list[int], rank: int, world: int) -> Shard:
    """Contiguous, near-equal slices. A rank left without examples (a tail batch smaller than the
    world) still runs one example with weight 0, so that every rank joins the gradient all-reduce."""
    if world == 1:
        return Shard(idx, 1.0)
    n = len(idx)
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    size = base + (1 if rank < extra else 0)
    if size == 0:
        return Shard(idx[:1], 0.0)
    return Shard(idx[start:start + size], size * world / n)


def accelerator_options() -> dict[str, Any]:
    """`split_batches`: our batches are global and split across ranks, so the prepared LR scheduler
    must step once per optimizer step (not once per process, accelerate's default)."""
    from accelerate import DataLoaderConfiguration

    return {"dataloader_config": DataLoaderConfiguration(split_batches=True)}


class DataParallel:
    """The training loop's view of the process group (from an `accelerate.Accelerator`)."""

    def __init__(self, accelerator: Any):
        self.accelerator = accelerator
        self.world = int(accelerator.num_processes)
        self.rank = int(accelerator.process_index)

    def shard(self, idx: list[int]) -> Shard:
        return split_batch(idx, self.rank, self.world)

    def mean(self, value: Any) -> Any:
        """Mean of a tensor over ranks: with weighted losses, the loss of the global batch."""
        return self.accelerator.reduce(value, "mean") if self.world > 1 else value

    def unwrap(self, model: Any) -> Any:
        """The bare model, so that evaluation runs no DDP collectives (buffer broadcasts)."""
        return self.accelerator.unwrap_model(model) if self.world > 1 else model

    def finish(self, out: Any) -> None:
        """Combine what each rank measured: padded tokens add up, times take the slowest rank,
        memory keeps every rank's peak and their maximum."""
        if self.world == 1:
            return
        import torch

        mine = torch.tensor([float(out.computed_tokens), out.train_time_s, out.eval_time_s, out.compute_time_s,
                             float(out.memory.get("peak_bytes") or 0)], dtype=torch.float64,
                            device=self.accelerator.device)
        table = self.accelerator.gather(mine.unsqueeze(0)).reshape(self.world, -1).cpu()
        out.computed_tokens = int(table[:, 0].sum().item())
        out.train_time_s = float(table[:, 1].max().item())
        out.eval_time_s = float(table[:, 2].max().item())
        out.compute_time_s = float(table[:, 3].max().item())
        per_rank = [int(v) for v in table[:, 4].tolist()]
        out.memory = {**out.memory, "rank0_peak_bytes": out.memory.get("peak_bytes"), "peak_bytes": max(per_rank),
                      "per_rank_peak_bytes": per_rank, "scope": "max over ranks"}


def describe(tspec: Any) -> dict[str, Any]:
    """The record's `distributed` section: how many processes and how the batch was split."""
    world = world_size()
    info: dict[str, Any] = {"world_size": world, "distributed_type": "NO", "backend": None}
    if world > 1:
        from accelerate import PartialState

        state = PartialState()
        info.update(world_size=int(state.num_processes), backend=state.backend,
                    distributed_type=str(state.distributed_type).split(".")[-1])
        world = info["world_size"]
    info.update(global_batch_size=tspec.batch_size, per_device_batch_size=-(-tspec.batch_size // world),
                effective_batch_size=tspec.batch_size * tspec.grad_accum)
    return info
