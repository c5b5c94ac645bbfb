"""The package's shape: import layers (import-linter), no private names shared across modules, small modules.

docs/architecture.md explains the layers; the contract itself is `[tool.importlinter]` in pyproject.toml.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "peftbench"
MAX_MODULE_LINES = 400


def _lint_imports(src_root: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the package found under `src_root`, with the project's contracts."""
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]'")
    env = {**os.environ, "PYTHONPATH": str(src_root)}
    return subprocess.run([str(exe), str(REPO / "pyproject.toml"), "--no-cache"],
                          cwd=src_root, env=env, capture_output=True, text=True, timeout=300)


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _dotted(path: Path, root: Path = PACKAGE.parent) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_layers_contract_is_kept() -> None:
    result = _lint_imports(PACKAGE.parent)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_layers_contract_catches_an_upward_import(tmp_path: Path) -> None:
    """A lower layer (records) importing a higher one (cli) breaks the contract: the check can fail."""
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "peftbench", ignore=shutil.ignore_patterns("__pycache__"))
    io = copy / "peftbench" / "records" / "io.py"
    io.write_text(io.read_text() + "\n\ndef _upward() -> None:\n    from peftbench.cli import app  # noqa: F401\n")
    result = _lint_imports(copy)
    assert result.returncode != 0
    assert "peftbench.records is not allowed to import peftbench.cli" in result.stdout


def _private_imports(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """`from peftbench.x import _name` where x is another module than `path`; relative imports too."""
    here = _dotted(path, root)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level > 0:
            found.append(f"{here}:{node.lineno} uses a relative import")
        elif (node.module or "").startswith("peftbench") and node.module != here:
            found += [f"{here}:{node.lineno} imports {node.module}.{a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_private_name_is_imported_across_modules() -> None:
    found = [line for path in _modules() for line in _private_imports(path)]
    assert not found, "\n".join(found)


def test_private_import_check_sees_one(tmp_path: Path) -> None:
    module = tmp_path / "peftbench" / "x.py"
    module.parent.mkdir()
    module.write_text("from peftbench.records.io import _hidden\nfrom peftbench.x import _mine\n"
                      "from peftbench import __version__\nfrom .y import z\n")
    assert _private_imports(module, tmp_path) == ["peftbench.x:1 imports peftbench.records.io._hidden",
                                                  "peftbench.x:4 uses a relative import"]


def test_modules_stay_small() -> None:
    sizes = {_dotted(p): len(p.read_text().splitlines()) for p in _modules()}
    big = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {big}"
