"""Crash safety, security and the real command line (the bad-input matrix is test_errors_matrix.py).

- the installed entry point (`python -m peftbench`) prints one line and no traceback, unless --debug;
- secrets in the environment never reach any written file; the record's environment holds
  versions and hardware only; trust_remote_code is off unless set, and recorded;
- weights are loaded and saved as safetensors; YAML is read safely; run names stay inside --out;
- every file peftbench writes goes through the atomic writers; a reader never sees half a record,
  even when the writer is killed; a later failure never damages an earlier success.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from peftbench.cli.app import cli
from peftbench.errors import ModelError, SpecError

pytestmark = pytest.mark.reliability

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "peftbench"
SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY",
               "MLFLOW_TRACKING_PASSWORD", "GITHUB_TOKEN", "COMET_API_KEY")


def _argv(model: Path, files: tuple[Path, Path], out: Path, *extra: str, method: str = "lora") -> list[str]:
    return ["run", "--model", str(model), "--data-train", str(files[0]), "--data-eval", str(files[1]),
            "--method", method, "--n-train", "64", "--n-eval", "32", "--out", str(out), "--quiet",
            "--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "data.max_length=32",
            "--set", "model.dtype=float32", *extra]


def _cli(argv: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, argv, prog_name="peftbench")
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


def _python_m(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "peftbench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


# ---- the real entry point -------------------------------------------------------------------


def test_entry_point_one_line_without_traceback(tmp_path: Path) -> None:
    proc = _python_m("run", "--method", "lorra", "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("peftbench: error: Unknown method 'lorra'. Did you mean: lora")
    assert "(fix: use one of: " in lines[0]
    assert not (tmp_path / "runs").exists()


def test_entry_point_debug_shows_traceback(tmp_path: Path) -> None:
    proc = _python_m("--debug", "run", "--method", "lorra", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "SpecError: Unknown method 'lorra'" in proc.stderr


# ---- secrets, remote code, safetensors ------------------------------------------------------


@pytest.fixture(scope="module")
def secret_run(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """One tiny successful run with secret-looking variables set, from a scratch working folder,
    spying on every `from_pretrained` call."""
    import transformers

    root = tmp_path_factory.mktemp("secrets")
    markers = {name: f"SECRET-{name}-{random.randrange(16**8):08x}" for name in SECRET_VARS}
    calls: list[tuple[str, dict]] = []
    with pytest.MonkeyPatch.context() as mp:
        for name, value in markers.items():
            mp.setenv(name, value)
        mp.chdir(root)
        for cls_name in ("AutoConfig", "AutoTokenizer", "AutoModelForSequenceClassification"):
            cls = getattr(transformers, cls_name)
            original = cls.from_pretrained

            def spy(*args, _orig=original, _name=cls_name, **kwargs):  # type: ignore[no-untyped-def]
                calls.append((_name, kwargs))
                return _orig(*args, **kwargs)

            mp.setattr(cls, "from_pretrained", spy)
        code, stdout, stderr = _cli(_argv(tiny_bert, sentiment_files, root / "runs"))
    assert code == 0, stderr
    record = json.loads(next((root / "runs").rglob("result.json")).read_text())
    return {"root": root, "markers": markers, "calls": calls, "record": record, "output": stdout + stderr}


def test_secrets_never_reach_disk(secret_run: dict) -> None:
    files = [p for p in secret_run["root"].rglob("*") if p.is_file()]
    assert len(files) >= 3  # the record, the adapter weights and config at least
    for path in files:
        blob = path.read_bytes()
        for marker in secret_run["markers"].values():
            assert marker.encode() not in blob, f"{marker} leaked into {path}"
    for marker in secret_run["markers"].values():
        assert marker not in secret_run["output"]


def test_record_environment_holds_no_environment_variables(secret_run: dict) -> None:
    env = secret_run["record"]["environment"]
    assert env["packages"]["torch"] and "python" in env  # versions and hardware are there

    def walk(node: object):  # every key and scalar value, recursively
        if isinstance(node, dict):
            for k, v in node.items():
                yield str(k)
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)
        else:
            yield str(node)

    items = set(walk(env))
    assert not items & set(os.environ), "an environment variable name is in the record"
    long_values = {v for v in os.environ.values() if len(v) >= 12}
    assert not items & long_values, "an environment variable value is in the record"


def test_trust_remote_code_off_by_default_and_recorded(secret_run: dict) -> None:
    record = secret_run["record"]
    assert record["trust_remote_code"] is False
    assert record["spec"]["model"]["trust_remote_code"] is False
    loaders = {name for name, _ in secret_run["calls"]}
    assert loaders == {"AutoConfig", "AutoTokenizer", "AutoModelForSequenceClassification"}
    assert all(kwargs.get("trust_remote_code") is False for _, kwargs in secret_run["calls"])
    model_kwargs = [kw for name, kw in secret_run["calls"] if name == "AutoModelForSequenceClassification"]
    assert all(kw.get("use_safetensors") is True for kw in model_kwargs)


def test_trust_remote_code_when_set_is_recorded(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    code, _, stderr = _cli(_argv(tiny_bert, sentiment_files, tmp_path, "--set", "model.trust_remote_code=true"))
    assert code == 0, stderr
    record = json.loads(next(tmp_path.rglob("result.json")).read_text())
    assert record["trust_remote_code"] is True


def test_artifacts_are_safetensors_only(secret_run: dict) -> None:
    run_dir = next((secret_run["root"] / "runs").rglob("result.json")).parent
    saved = [p.name for p in (run_dir / secret_run["record"]["artifact"]["path"]).iterdir()]
    assert "adapter_model.safetensors" in saved
    pickles = [p for p in secret_run["root"].rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle")]
    assert pickles == []
    assert not (run_dir / ".tmp").exists()  # staging folders are cleaned up


def test_full_model_saved_as_safetensors(tiny_bert: Path, sentiment_files: tuple[Path, Path],
                                         tmp_path: Path) -> None:
    code, _, stderr = _cli(_argv(tiny_bert, sentiment_files, tmp_path, method="full"))
    assert code == 0, stderr
    weights = [p.name for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt")]
    assert weights == ["model.safetensors"]


def test_check_weights_pickle_only_with_explicit_flag(tmp_path: Path) -> None:
    from peftbench.models.loading import check_weights

    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match="only pickle weights"):
        check_weights(str(tmp_path), allow_pickle=False)
    check_weights(str(tmp_path), allow_pickle=True)  # the user said they trust it


def test_yaml_read_with_safe_loader_only() -> None:
    """No module calls yaml.load / unsafe_load / full_load or passes a Loader."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in ("load", "unsafe_load", "full_load", "load_all", "unsafe_load_all") and \
                        isinstance(node.func.value, ast.Name) and node.func.value.id == "yaml":
                    offenders.append(f"{path.name}:{node.lineno}")
                if node.func.attr.startswith("safe_load") and any(k.arg == "Loader" for k in node.keywords):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize("name", ["../evil", "..", ".hidden", "a/b", "/abs", "a\\b", "x/../../y", "", " "])
def test_run_names_cannot_escape(name: str) -> None:
    from peftbench.config.spec import RunSpec

    with pytest.raises(SpecError, match="run name may hold only"):
        RunSpec.from_dict({"name": name})


@pytest.mark.parametrize("run_id", ["../x", "..", "a/../../b", "/etc"])
def test_run_dir_stays_inside_output(tmp_path: Path, run_id: str) -> None:
    from peftbench.core.runner import run_dir_for

    with pytest.raises(SpecError, match="would escape the output folder"):
        run_dir_for(tmp_path, run_id)


# ---- atomic writes --------------------------------------------------------------------------


def _writes_files(tree: ast.AST) -> list[int]:
    """Lines that write a file directly: open(..., 'w'/'a'/'x'), Path.write_text/write_bytes, json.dump."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("write_text", "write_bytes", "dump"):
            if name == "dump" and not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                                       and func.value.id in ("json", "yaml", "pickle")):
                continue
            lines.append(node.lineno)
        elif name in ("open", "fdopen"):
            modes = [a for a in node.args[1:2]] + [k.value for k in node.keywords if k.arg == "mode"]
            if isinstance(func, ast.Attribute) and func.attr == "open" and not isinstance(func.value, ast.Name):
                modes = [a for a in node.args[:1]] + [k.value for k in node.keywords if k.arg == "mode"]
            for m in modes:
                if isinstance(m, ast.Constant) and isinstance(m.value, str) and set(m.value) & set("wax"):
                    lines.append(node.lineno)
    return sorted(lines)


def test_every_writer_is_atomic() -> None:
    """Only records/io.py opens files for writing; everything else goes through atomic_write_*.

    (Model weights are written by save_pretrained into a staging folder that is swapped in whole.)"""
    writer = PACKAGE / "records" / "io.py"
    assert writer.exists()
    offenders = {str(p.relative_to(PACKAGE)): _writes_files(ast.parse(p.read_text(encoding="utf-8")))
                 for p in sorted(PACKAGE.rglob("*.py")) if p != writer}
    assert {k: v for k, v in offenders.items() if v} == {}
    # and the check itself finds a plain write
    assert _writes_files(ast.parse("open(p, 'w').write(x)\nPath(p).write_text(s)\njson.dump(o, f)\n")) == [1, 2, 3]


@pytest.mark.parametrize(("code", "kind"), [(errno.ENOSPC, "disk_full"), (errno.EDQUOT, "disk_full"),
                                           (errno.EACCES, "io"), (errno.EROFS, "io"), (errno.EIO, None)])
def test_os_errors_become_clear_errors(code: int, kind: str | None) -> None:
    from peftbench.errors import from_os_error

    err = from_os_error(OSError(code, os.strerror(code), "/out/run/result.json"))
    if kind is None:
        assert err is None  # anything else stays an internal error, with --debug for details
    else:
        assert err is not None and err.reason == kind and "/out/run/result.json" in err.one_line()
    assert from_os_error(ValueError("x")) is None


def test_atomic_write_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from peftbench.records import io as records

    target = tmp_path / "result.json"
    records.atomic_write_json(target, {"status": "success", "n": 1})
    before = target.read_bytes()

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records.os, "fsync", full_disk)
    with pytest.raises(OSError):
        records.atomic_write_json(target, {"status": "failed", "n": 2, "pad": "x" * 100_000})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left behind


_WRITER = r"""
import hashlib, json, random, sys
from peftbench.records.io import atomic_write_json
path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
i = 0
while True:
    i += 1
    payload = "".join(rng.choice("abcdef") for _ in range(rng.randrange(1_000, 200_000)))
    atomic_write_json(path, {"n": i, "payload": payload, "sha": hashlib.sha256(payload.encode()).hexdigest(),
                             "complete": True})
    if i == 1:  # the handshake: this round's first record is on disk; the reader starts now
        print("wrote", flush=True)
"""


def _check_whole(text: str) -> int:
    rec = json.loads(text)
    assert rec["complete"] is True
    assert hashlib.sha256(rec["payload"].encode()).hexdigest() == rec["sha"]
    return rec["n"]


def test_reader_never_sees_half_a_record_even_when_the_writer_is_killed(tmp_path: Path) -> None:
    """A writer rewrites one big record in a loop; a reader reads it meanwhile; the writer is
    killed with SIGKILL at random moments, 10 times. Every read and every file left is whole.

    No clock: the writer says when its first record is on disk, the reader reads until it has seen
    a few different records (so the writer replaced the file while it read), reads a random number
    of times more, and only then is the writer killed — the same on a loaded machine as on an idle one."""
    target = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    rng = random.Random(1234)
    reads = kills = 0
    last_n = 0
    for round_ in range(10):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), str(round_)], env=env,
                                stdout=subprocess.PIPE, text=True)
        seen: set[int] = set()
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "wrote"
            wanted = rng.randint(2, 4)
            while len(seen) < wanted:
                assert proc.poll() is None, "the writer died before it was killed"
                seen.add(_check_whole(target.read_text(encoding="utf-8")))
                reads += 1
            for _ in range(rng.randrange(0, 30)):  # a random moment of the writer's loop
                seen.add(_check_whole(target.read_text(encoding="utf-8")))
                reads += 1
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        kills += 1
        assert len(seen) >= wanted and min(seen) >= 1  # this round's records, several of them
        last_n = _check_whole(target.read_text(encoding="utf-8"))
        assert last_n >= max(seen)  # what is left is the newest record or a later one, whole
    assert kills == 10 and reads >= 20
    assert last_n >= 1
    # Leftover temporary files from killed writers are never taken for records.
    from peftbench.records.io import load_records

    assert [r["complete"] for r in load_records(tmp_path)] == [True]


# ---- a later failure never damages an earlier success ---------------------------------------


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*")
            if p.is_file() and not p.name.startswith("failed-")}


@pytest.fixture
def earlier_success(tiny_bert: Path, sentiment_files: tuple[Path, Path], tmp_path: Path):
    argv = _argv(tiny_bert, sentiment_files, tmp_path / "runs")
    code, _, stderr = _cli(argv)
    assert code == 0, stderr
    run_dir = next((tmp_path / "runs").rglob("result.json")).parent
    return argv, run_dir, _snapshot(run_dir)


def test_disk_full_during_save_keeps_earlier_success(earlier_success, monkeypatch: pytest.MonkeyPatch) -> None:
    import peft.peft_model

    argv, run_dir, before = earlier_success

    def save_file(tensors, filename, metadata=None):  # type: ignore[no-untyped-def]
        Path(filename).write_bytes(b"\0" * 10)  # half written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(peft.peft_model, "safe_save_file", save_file)
    code, _, stderr = _cli([*argv, "--force"])
    assert code == 1
    lines = [ln for ln in stderr.splitlines() if ln.startswith("peftbench:")]
    assert len(lines) == 1 and lines[0].lower().startswith("peftbench: error: no space left on device"), stderr
    assert _snapshot(run_dir) == before  # record and adapter byte for byte
    failed = [json.loads(p.read_text()) for p in run_dir.glob("failed-*.json")]
    assert [(f["status"], f["error"]["type"]) for f in failed] == [("failed", "disk_full")]


def test_disk_full_while_writing_the_record(earlier_success, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills as the new record is written: the old record stays whole, one clear line."""
    from peftbench.records import io as records

    argv, run_dir, before = earlier_success
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".result.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(records.os, "fsync", fsync)
    code, _, stderr = _cli([*argv, "--force"])
    assert code == 1
    lines = [ln for ln in stderr.splitlines() if ln.startswith("peftbench:")]
    assert len(lines) == 1 and "no space left on device" in lines[0].lower(), stderr
    assert "Traceback" not in stderr
    assert json.loads((run_dir / "result.json").read_bytes()) == json.loads(before["result.json"])
    assert not list(run_dir.glob(".result.json.*"))  # no temporary record left behind


def test_training_failure_after_success_keeps_earlier_success(earlier_success) -> None:
    """--force on the same spec (same run folder) with a forward that runs out of memory."""
    from transformers.models.bert import modeling_bert

    argv, run_dir, before = earlier_success

    with pytest.MonkeyPatch.context() as mp:
        def boom(self, *a, **k):  # type: ignore[no-untyped-def]
            raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")

        mp.setattr(modeling_bert.BertForSequenceClassification, "forward", boom)
        code, _, _ = _cli([*argv, "--force"])
    assert code == 1
    assert _snapshot(run_dir) == before
    assert [json.loads(p.read_text())["error"]["type"] for p in run_dir.glob("failed-*.json")] == ["oom"]
