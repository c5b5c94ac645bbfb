"""Training memory by kind: parameters, gradients, optimizer state and activations kept for backward.

The figure is counted from the tensors themselves, the same way on every device, so it means the
same on a CPU as on a GPU: parameters and buffers by their storage (a 4-bit weight by its packed
bytes plus its quantization state, never its logical size), gradients as autograd accumulates them
(`register_post_accumulate_grad_hook`), optimizer state after each optimizer step, and activations
as autograd saves them for backward (`torch.autograd.graph.saved_tensors_hooks`). A saved tensor is
counted once per storage while autograd holds it, and never when it is a parameter's or a buffer's
storage. The peak is the maximum of the sum over each step, taken whenever a kind grows (a release
never makes a new peak). What it leaves out: temporaries that no kind holds (a GEMM's workspace,
gradients of activations in flight during backward), which a device allocator's peak does include.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

KINDS = ("parameters", "buffers", "gradients", "optimizer_state", "activations")
FOUR_BIT = "4bit"  # the `parameters_by_dtype` key of 4-bit weights (packed bytes plus quantization state)


def tensor_bytes(t: Any) -> int:
    """Bytes of a tensor's elements (its view, not the whole storage)."""
    return int(t.numel()) * int(t.element_size())


def quant_state_bytes(state: Any) -> int:
    """Bytes of a bitsandbytes quantization state: block scales, code book, offset, nested state."""
    if state is None:
        return 0
    total = 0
    for name in ("absmax", "code", "offset"):
        value = getattr(state, name, None)
        if hasattr(value, "element_size"):
            total += tensor_bytes(value)
    return total + quant_state_bytes(getattr(state, "state2", None))


def weight_bytes(model: Any) -> dict[str, Any]:
    """The model's weights as they sit in memory: parameters by dtype (4-bit ones under `4bit`), the
    trainable share, and buffers. Tied weights are counted once."""
    seen: set[int] = set()
    by_dtype: dict[str, int] = {}
    trainable = 0
    for p in model.parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        state = getattr(p, "quant_state", None)
        key = FOUR_BIT if state is not None else str(p.dtype).removeprefix("torch.")
        size = tensor_bytes(p) + quant_state_bytes(state)
        by_dtype[key] = by_dtype.get(key, 0) + size
        trainable += size if p.requires_grad else 0
    buffers = sum(tensor_bytes(b) for b in model.buffers() if b.data_ptr() not in seen)
    return {"parameters_bytes": sum(by_dtype.values()), "parameters_by_dtype": dict(sorted(by_dtype.items())),
            "trainable_bytes": trainable, "buffers_bytes": buffers}


def model_footprint(model: Any) -> dict[str, Any]:
    """The model's in-memory footprint as it trains (parameters and buffers; a 4-bit base by its packed
    bytes): the figure the QLoRA papers compare, apart from the saved artifact's size on disk."""
    w = weight_bytes(model)
    return {"bytes": w["parameters_bytes"] + w["buffers_bytes"], "parameters_by_dtype": w["parameters_by_dtype"],
            "four_bit_bytes": w["parameters_by_dtype"].get(FOUR_BIT, 0), "trainable_bytes": w["trainable_bytes"],
            "buffers_bytes": w["buffers_bytes"]}


def optimizer_state_bytes(optimizer: Any) -> int:
    """Bytes of every tensor in the optimizer's state (AdamW: both moments and the step counts)."""
    seen: set[int] = set()
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if hasattr(value, "element_size") and value.data_ptr() not in seen:
                seen.add(value.data_ptr())
                total += tensor_bytes(value)
    return total


class _Saved:
    """What autograd holds in place of a saved tensor; releases the tensor's storage from the count
    when autograd drops it (after backward has used it, or with the graph)."""

    __slots__ = ("key", "owner", "tensor")

    def __init__(self, tensor: Any, key: int, owner: MemoryByKind):
        self.tensor, self.key, self.owner = tensor, key, owner

    def __del__(self) -> None:
        self.owner.release(self.key)


def _unpack(packed: Any) -> Any:
    return packed.tensor if isinstance(packed, _Saved) else packed


class MemoryByKind:
    """Tracks a training loop's memory by kind and the peak of its sum.

    `attach(optimizer)` hooks the optimizer's steps; each micro-step (forward, backward and the
    optimizer step when it comes) runs inside `measured(shape)`; `result()` is the record's
    `train.memory_by_kind`. Counting costs a few microseconds per saved tensor and per gradient, so by
    default only micro-steps whose batch shape no counted micro-step covers (every dimension at most as
    large) are counted: activations grow with the batch's rows and length, so those micro-steps hold
    the peak, and a run of equal batches counts two (before and after the optimizer state exists). A
    micro-step that starts with gradients held (the later ones under gradient accumulation) counts as
    larger than one that does not. `every_step` counts them all."""

    def __init__(self, model: Any, *, every_step: bool = False):
        self.weights = weight_bytes(model)
        self.static = self.weights["parameters_bytes"] + self.weights["buffers_bytes"]
        self.excluded = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.every_step = every_step
        self.saved: dict[int, list[int]] = {}  # storage pointer -> [bytes, holders]
        self.activations = self.gradients = self.optimizer_state = 0
        self.peaks = dict.fromkeys(("activations", "gradients"), 0)
        self.peak = self.static
        self.at_peak = self._snapshot()
        self.with_grad: set[int] = set()  # ids of the parameters whose gradient is counted
        self.grads_held = self.stepped = False
        self.shapes: list[tuple[int, ...]] = []  # batch shapes of the counted micro-steps
        self.micro_steps = self.counted_steps = 0
        self.state_entries = -1  # optimizer state entries when last sized
        self.handles: list[Any] = []

    def attach(self, optimizer: Any) -> None:
        """Hook the optimizer's steps: the torch optimizer, not a wrapper that skips steps during
        gradient accumulation, so that the hook fires on real steps only."""
        self.handles.append(optimizer.register_step_post_hook(self._stepped))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def covered(self, shape: tuple[int, ...]) -> bool:
        """Whether a counted micro-step's batch was at least as large in every dimension."""
        return any(len(s) == len(shape) and all(a >= b for a, b in zip(s, shape, strict=True)) for s in self.shapes)

    @contextmanager
    def measured(self, shape: tuple[int, ...] = ()) -> Iterator[None]:
        """One micro-step runs inside: on a counted one, saved tensors and gradients are counted as
        autograd makes and drops them."""
        self.micro_steps += 1
        self.stepped = False
        shape = (*shape, int(self.grads_held), int(self.optimizer_state > 0))  # what else the sum holds
        if not self.every_step and self.covered(shape):
            yield
        else:
            self.shapes.append(shape)
            self.counted_steps += 1
            with self._counting():
                yield
        self.grads_held = not self.stepped  # zero_grad(set_to_none=True) follows each optimizer step

    @contextmanager
    def _counting(self) -> Iterator[None]:
        import torch

        if self.grads_held:  # gradients from uncounted micro-steps of this optimizer step
            held = [p for p in self.trainable if p.grad is not None]
            self.with_grad = {id(p) for p in held}
            self.gradients = sum(tensor_bytes(p.grad) for p in held)
        hooks = [p.register_post_accumulate_grad_hook(self._grad_ready) for p in self.trainable]
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack):
                yield
        finally:
            for hook in hooks:
                hook.remove()

    def _pack(self, tensor: Any) -> Any:
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # a tensor without a plain storage (sparse, wrapped)
            return tensor
        key = storage.data_ptr()
        if key in self.excluded or key == 0:
            return tensor
        held = self.saved.get(key)
        if held is None:
            self.saved[key] = [storage.nbytes(), 1]
            self.activations += self.saved[key][0]
            self._grew()
        else:
            held[1] += 1
        return _Saved(tensor, key, self)

    def release(self, key: int) -> None:
        held = self.saved.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            self.activations -= held[0]
            del self.saved[key]

    def _grad_ready(self, param: Any) -> None:
        if id(param) not in self.with_grad and param.grad is not None:
            self.with_grad.add(id(param))
            self.gradients += tensor_bytes(param.grad)
            self._grew()

    def _stepped(self, optimizer: Any, *_: Any) -> None:
        if len(optimizer.state) != self.state_entries:  # AdamW's state keeps its size once made
            self.state_entries = len(optimizer.state)
            self.optimizer_state = optimizer_state_bytes(optimizer)
            self._grew()
        self.stepped = True
        self.with_grad.clear()  # zero_grad(set_to_none=True) follows the step
        self.gradients = 0

    def _snapshot(self) -> dict[str, int]:
        return {"parameters": self.weights["parameters_bytes"], "buffers": self.weights["buffers_bytes"],
                "gradients": self.gradients, "optimizer_state": self.optimizer_state,
                "activations": self.activations}

    def _grew(self) -> None:
        self.peaks["activations"] = max(self.peaks["activations"], self.activations)
        self.peaks["gradients"] = max(self.peaks["gradients"], self.gradients)
        total = self.static + self.optimizer_state + self.gradients + self.activations
        if total > self.peak:
            self.peak = total
            self.at_peak = self._snapshot()

    def result(self) -> dict[str, Any]:
        """The record's `train.memory_by_kind`."""
        w = self.weights
        return {
            "method": "tensor_accounting", "peak_bytes": int(self.peak), "at_peak": self.at_peak,
            "parameters_bytes": w["parameters_bytes"], "parameters_by_dtype": w["parameters_by_dtype"],
            "trainable_bytes": w["trainable_bytes"], "buffers_bytes": w["buffers_bytes"],
            "gradients_peak_bytes": self.peaks["gradients"], "optimizer_state_bytes": self.optimizer_state,
            "activations_peak_bytes": self.peaks["activations"],
            "micro_steps": self.micro_steps, "micro_steps_counted": self.counted_steps,
            "counted_on": "every_step" if self.every_step else "new_batch_shapes",
        }
