"""The project's own error types.

Every error a user can cause is a `PeftbenchError` with a one-line message that names the
problem and the fix; the CLI prints it without a traceback and exits with `exit_code`.
"""

from __future__ import annotations


class PeftbenchError(Exception):
    """Base error: `str(err)` is the one-line message shown to the user."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        # Both parts may quote user input (a key, a value) that holds line breaks of any kind.
        text = " ".join(self.message.strip().splitlines())
        if self.hint:
            text = f"{text} (fix: {' '.join(self.hint.strip().splitlines())})"
        return text


class SpecError(PeftbenchError):
    """The spec or the command line is wrong: usage error, exit 2."""

    exit_code = 2
    kind = "spec"


class DataError(PeftbenchError):
    """A data file is missing, unreadable or inconsistent: exit 2, nothing trained."""

    exit_code = 2
    kind = "data"


class ModelError(PeftbenchError):
    """A model cannot be loaded or a method cannot apply to it: exit 2."""

    exit_code = 2
    kind = "model"


class TrainingError(PeftbenchError):
    """Training failed after it started (NaN loss, out of memory...): recorded as `failed`."""

    exit_code = 1

    def __init__(self, message: str, reason: str = "error", hint: str | None = None):
        self.reason = reason
        super().__init__(message, hint)


class NanLossError(TrainingError):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, reason="nan_loss", hint=hint)


class OutOfMemory(TrainingError):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, reason="oom", hint=hint)

    @classmethod
    def from_error(cls, err: BaseException, where: str = "") -> OutOfMemory:
        """The one-line error for an allocator failure; `where` says in which phase it happened."""
        first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        return cls(f"out of memory{' ' + where if where else ''}: {first}",
                   hint="lower train.batch_size or data.max_length, or use qlora")


class RunCanceled(TrainingError):
    def __init__(self, message: str = "run canceled by the user (Ctrl-C)"):
        super().__init__(message, reason="canceled")


class DiskFull(TrainingError):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, reason="disk_full", hint=hint)


def from_os_error(err: BaseException) -> PeftbenchError | None:
    """An OSError the user can act on (disk full, no permission, read-only disk) as one clear error."""
    import errno

    if not isinstance(err, OSError) or isinstance(err, PeftbenchError):
        return None
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing '{err.filename}'" if err.filename else ""
        return DiskFull(f"No space left on device{where}", hint="free disk space or choose another --out folder")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        where = f": '{err.filename}'" if err.filename else ""
        return TrainingError(f"{err.strerror or 'permission denied'}{where}", reason="io",
                             hint="fix the permissions, or choose another --out folder")
    return None


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, a CPU MemoryError, or an allocator RuntimeError saying so."""
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower()))
