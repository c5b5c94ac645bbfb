"""The error types themselves: the one-line message, the hint, the failure reason a record keeps,
and the translation of OS and allocator errors into errors a user can act on."""

from __future__ import annotations

import errno

import pytest
import torch

from peftbench.errors import (
    DataError,
    DiskFull,
    ModelError,
    NanLossError,
    OutOfMemory,
    PeftbenchError,
    RunCanceled,
    SpecError,
    TrainingError,
    from_os_error,
    is_out_of_memory,
)


def test_message_and_hint_make_one_line_and_str_is_that_line() -> None:
    err = PeftbenchError("bad value\r\nfor 'lr'", hint="set train.lr\nto a number")
    assert err.one_line() == "bad value for 'lr' (fix: set train.lr to a number)"
    assert str(err) == err.one_line()
    assert err.hint == "set train.lr\nto a number"
    assert str(PeftbenchError("  no hint  ")) == "no hint"


@pytest.mark.parametrize("cls,code", [(PeftbenchError, 1), (SpecError, 2), (DataError, 2), (ModelError, 2),
                                      (TrainingError, 1)])
def test_exit_codes(cls: type[PeftbenchError], code: int) -> None:
    assert cls("x").exit_code == code


@pytest.mark.parametrize("make,reason", [
    (lambda: TrainingError("x"), "error"),
    (lambda: NanLossError("x", hint="lower the lr"), "nan_loss"),
    (lambda: OutOfMemory("x", hint="lower the lr"), "oom"),
    (lambda: DiskFull("x", hint="lower the lr"), "disk_full"),
    (lambda: RunCanceled(), "canceled"),
])
def test_each_training_failure_keeps_its_reason_and_hint(make, reason: str) -> None:
    err = make()
    assert err.reason == reason
    if reason not in ("error", "canceled"):
        assert err.hint == "lower the lr"
        assert str(err).endswith("(fix: lower the lr)")


def test_a_canceled_run_says_so_by_default() -> None:
    msg = str(RunCanceled())
    assert "canceled" in msg and "Ctrl-C" in msg


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_becomes_disk_full_naming_the_file(code: int) -> None:
    err = from_os_error(OSError(code, "No space left on device", "/runs/a/model.safetensors"))
    assert isinstance(err, DiskFull) and err.reason == "disk_full"
    assert err.message == "No space left on device writing '/runs/a/model.safetensors'"
    assert err.hint and "--out" in err.hint
    bare = from_os_error(OSError(code, "No space left on device"))
    assert isinstance(bare, DiskFull) and bare.message == "No space left on device"


@pytest.mark.parametrize("code,strerror", [(errno.EACCES, "Permission denied"), (errno.EPERM, "Operation not permitted"),
                                           (errno.EROFS, "Read-only file system")])
def test_permission_errors_become_io_failures_with_the_os_words(code: int, strerror: str) -> None:
    err = from_os_error(OSError(code, strerror, "/runs/a"))
    assert type(err) is TrainingError and err.reason == "io"
    assert err.message == f"{strerror}: '/runs/a'"
    assert err.hint and "permissions" in err.hint and "--out" in err.hint
    bare = from_os_error(OSError(code, strerror))
    assert bare is not None and bare.message == strerror


def test_a_permission_error_without_os_words_still_says_what_happened() -> None:
    err = OSError()
    err.errno, err.filename = errno.EACCES, "/runs/a"
    out = from_os_error(err)
    assert out is not None and out.message == "permission denied: '/runs/a'"


@pytest.mark.parametrize("err", [ValueError("no space"), OSError(errno.ENOENT, "No such file"), KeyError("x")])
def test_other_errors_are_left_alone(err: BaseException) -> None:
    assert from_os_error(err) is None


@pytest.mark.parametrize("err,oom", [
    (MemoryError(), True),
    (torch.cuda.OutOfMemoryError("CUDA error: allocation failed"), True),
    (RuntimeError("DefaultCPUAllocator: Out Of Memory"), True),
    (RuntimeError("shapes cannot be multiplied"), False),
    (ValueError("out of memory"), False),
])
def test_what_counts_as_out_of_memory(err: BaseException, oom: bool) -> None:
    assert is_out_of_memory(err) is oom


def test_out_of_memory_from_an_allocator_error_keeps_its_first_line_and_the_phase() -> None:
    err = RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nsee the allocator docs")
    assert OutOfMemory.from_error(err).message == "out of memory: CUDA out of memory. Tried to allocate 2 GiB"
    during = OutOfMemory.from_error(err, "during evaluation")
    assert during.message == "out of memory during evaluation: CUDA out of memory. Tried to allocate 2 GiB"
    assert during.reason == "oom" and "batch_size" in (during.hint or "") and "qlora" in (during.hint or "")
    assert OutOfMemory.from_error(MemoryError()).message == "out of memory: MemoryError"
    assert len(OutOfMemory.from_error(RuntimeError("x" * 1000)).message) < 200
