"""One versioned JSON record per run, written atomically.

The layout follows the idea of peft's method comparison: what was asked (`spec`), what was
measured (`params`, `train`, `eval`, `artifact`), and where (`environment`). Field meanings are in
docs/records.md and the JSON Schema in `peftbench/records/schema/record.schema.json`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
KNOWN_SCHEMA_VERSIONS = frozenset({1})
_REPORTED: set[str] = set()  # bad records this process reported and could not move aside


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Temporary file in the same folder, fsync, rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; results are meant to be shared like any other file (umask applies).
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def require_folder(path: str | Path, option: str) -> None:
    """A SpecError (exit 2) when the output folder `path` exists as something other than a folder."""
    from peftbench.errors import SpecError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SpecError(f"{option} '{path}' is a file, not a folder",
                        hint=f"give {option} a folder path, or move that file away")


def run_dir_for(out_dir: str | Path, run_id: str) -> Path:
    """The run's folder under `out_dir`; a SpecError (exit 2) for an id that would lead outside it."""
    root = Path(out_dir).resolve()
    target = (root / run_id).resolve()
    if root not in target.parents:
        from peftbench.errors import SpecError

        raise SpecError(f"run id '{run_id}' would escape the output folder", hint="use a plain run name")
    return target


def check_writable(out_dir: str | Path) -> None:
    """Create `out_dir` and write a probe file in it: a SpecError (exit 2) now, not a failure after training."""
    root = Path(out_dir)
    require_folder(root, "--out")
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        from peftbench.errors import SpecError

        raise SpecError(f"output folder '{out_dir}' is not writable: {err.strerror}",
                        hint="choose another --out folder or fix its permissions") from None


def require_file_path(path: str | Path, what: str) -> None:
    """A SpecError (exit 2) when `path`, where a file is written, is a folder."""
    from peftbench.errors import SpecError

    if Path(path).is_dir():
        raise SpecError(f"{what} '{path}' is a folder, not a file",
                        hint="move that folder away: peftbench writes a file there")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def replace_dir(staging: str | Path, target: str | Path) -> None:
    """Move a fully written folder into place; an existing `target` is swapped out whole, never
    half-overwritten (a reader sees the old folder, briefly none, then the new one)."""
    import shutil

    staging, target = Path(staging), Path(target)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, set | tuple):
        return list(obj)
    return str(obj)


def parse_record(path: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """`(record, None)` for a well-formed record of a known schema version, `(None, reason)` for a
    file that is not one, `(None, None)` when there is no file. Never raises."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        p = p / RESULT_FILE
    if p.is_symlink():
        return None, f"is a symlink (to '{os.readlink(p)}'), not a record written here"
    if not p.exists():
        return None, None
    try:
        text = p.read_bytes().decode("utf-8")
        obj = json.loads(text)
    except IsADirectoryError:
        return None, "is a folder, not a file"
    except OSError as err:
        return None, f"cannot be read: {err.strerror}"
    except UnicodeDecodeError as err:
        return None, f"is not valid UTF-8 (byte {err.start})"
    except (json.JSONDecodeError, RecursionError) as err:
        detail = f"{err.msg}: line {err.lineno}, column {err.colno}" if isinstance(err, json.JSONDecodeError) else "nested too deeply"
        return None, f"is not valid JSON ({detail})"
    if not isinstance(obj, dict):
        return None, f"holds a JSON {_json_kind(obj)}, not a record (a JSON object)"
    version = obj.get("schema_version", SCHEMA_VERSION)  # records without the field are older version-1 records
    if type(version) is not int or version not in KNOWN_SCHEMA_VERSIONS:
        return None, f"has unknown schema_version {version!r} (this peftbench reads {SCHEMA_VERSION})"
    return obj, None


def _json_kind(obj: Any) -> str:
    kinds = {list: "list", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return kinds.get(type(obj), type(obj).__name__)


def set_aside(path: str | Path, reason: str) -> Path | None:
    """Rename a file or folder that is not a trusted record to `<name>.bad-<time>` (never deleted),
    and report it once on stderr; the renamed path, or None when it could not be renamed."""
    p = Path(path)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    target, n = p.with_name(f"{p.name}.bad-{stamp}"), 1
    while target.exists() or target.is_symlink():
        target, n = p.with_name(f"{p.name}.bad-{stamp}-{n}"), n + 1
    try:
        os.rename(p, target)
        where = f"moved aside to '{target}'"
    except OSError as err:
        target, where = None, f"could not be moved aside: {err.strerror}"
    key = str(p.absolute())
    if key not in _REPORTED:  # a file that could not be moved would otherwise be reported at every read
        if target is None:
            _REPORTED.add(key)
        print(f"peftbench: warning: ignoring '{p}': it {reason}; {where}", file=sys.stderr, flush=True)
    return target


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The record in a run folder (or file), or None when absent or not a well-formed record; a
    file that is not one is reported and moved aside (`set_aside`), so the run counts as not done."""
    p = Path(path)
    rec, reason = parse_record(p)
    if reason is not None:
        set_aside(p / RESULT_FILE if p.is_dir() and not p.is_symlink() else p, reason)
    return rec


def untrusted_run_dir(root: str | Path, run_dir: str | Path) -> str | None:
    """Why `run_dir` (below the output folder `root`) may not be read or written as a run folder:
    it is a symlink, or it resolves outside `root`; None when it is trusted."""
    run_dir = Path(run_dir)
    if run_dir.is_symlink():
        return f"is a symlinked run folder (to '{os.readlink(run_dir)}'), not trusted"
    if run_dir.exists() and not run_dir.resolve().is_relative_to(Path(root).resolve()):
        return f"resolves outside the output folder '{root}', not trusted"
    return None


def read_run_record(root: str | Path, run_id: str) -> dict[str, Any] | None:
    """The record of run `run_id` in the output folder `root`, or None (not done): an untrusted run
    folder is reported and moved aside, so that a rerun writes a fresh folder instead of following it."""
    run_dir = Path(root) / run_id
    reason = untrusted_run_dir(root, run_dir)
    if reason is not None:
        set_aside(run_dir, reason)
        return None
    return read_record(run_dir / RESULT_FILE)


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """All well-formed records under a folder (recursively, symlinks not followed), sorted by path;
    the others are reported and moved aside (`read_record`, `read_run_record`)."""
    root = Path(path)
    if root.is_file():
        rec = read_record(root)
        return [rec] if rec else []
    found = []
    for folder, subdirs, files in os.walk(root, followlinks=False):
        for name in [d for d in subdirs if os.path.islink(os.path.join(folder, d)) and ".bad-" not in d]:
            if os.path.lexists(os.path.join(folder, name, RESULT_FILE)):
                set_aside(Path(folder) / name, untrusted_run_dir(root, Path(folder) / name) or "is not trusted")
        if RESULT_FILE in files:
            found.append(Path(folder) / RESULT_FILE)
    out = []
    for f in sorted(found):
        rec = read_record(f)
        if rec is not None:
            rec.setdefault("_path", str(f.parent))
            out.append(rec)
    return out


def _version(pkg: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment() -> dict[str, Any]:
    """Package versions and hardware. Never environment variables: they may hold secrets."""
    import torch

    from peftbench.runtime.device import cpu_has_native_bf16

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in ("peftbench", "torch", "transformers", "peft", "accelerate",
                                               "bitsandbytes", "datasets", "scikit-learn", "numpy")},
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    return env


def git_commit() -> str | None:
    """The peftbench source tree's commit, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def dir_size(path: str | Path) -> int:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
