"""Where a run computes and in which precision: the device choice, the dtype rule and one autocast.

bf16 is used only where it is fast: CUDA with bf16 support, or a CPU with native bf16 (AVX512-BF16
or AMX). On other CPUs bf16 matmuls are emulated and many times slower than fp32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.errors import SpecError

if TYPE_CHECKING:
    import torch


def pick_device(choice: str) -> str:
    """'auto' picks CUDA when present, else the CPU; an explicit 'cuda' without a GPU is a spec error."""
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SpecError("train.device is 'cuda' but no CUDA device is available", hint="set train.device=auto or cpu")
    return choice


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX: without them bf16 matmuls are many times slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_dtype(name: str, device: str) -> str:
    """The compute dtype for `model.dtype`: 'auto' becomes bf16 where it is native, fp32 elsewhere."""
    if name != "auto":
        return name
    import torch

    if device == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def autocast(device: str, dtype: Any) -> AbstractContextManager[Any]:
    """Autocast to `dtype` on `device`, or a no-op when `dtype` is None (fp32 runs)."""
    import torch

    return torch.autocast(device_type=device, dtype=dtype) if dtype is not None else nullcontext()


def quiet_kernel_notices() -> None:
    """Silence the warnings optional kernel packages log when they import: bitsandbytes on a CPU with
    AVX512-BF16 tries to fetch a hub kernel (offline here, so it warns on every import of peft);
    the notices say nothing about the run and would split a one-line error in two."""
    import logging

    for name in ("bitsandbytes", "kernels"):
        logging.getLogger(name).setLevel(logging.ERROR)
