"""The safe YAML loader (config/yaml_safe.py): alias bombs, recursive aliases and duplicate keys refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftbench.config.spec import load_yaml, parse_override
from peftbench.config.yaml_safe import MAX_QUOTE, clip
from peftbench.errors import SpecError

REPO = Path(__file__).resolve().parents[1]


def _bomb() -> str:
    """A ~350-byte "billion laughs": 9 levels of 9 aliases, 9**9 strings once expanded."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    assert path.stat().st_size < 500
    with pytest.raises(SpecError, match="aliases expand to more than") as err:
        load_yaml(path)
    line = err.value.one_line()
    assert "\n" not in line and len(line) < 400


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("a: &x [1, *x]\n")
    with pytest.raises(SpecError, match="recursive"):
        load_yaml(path)


def test_small_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {epochs: 1, lr: 0.1}\ntrain:\n  <<: *b\n  lr: 0.2\nother: [*b, *b]\n")
    assert load_yaml(path)["train"] == {"epochs": 1, "lr": 0.2}


@pytest.mark.parametrize(("text", "key", "line", "first"), [
    ("train:\n  epochs: 1\nmethod: {name: lora}\ntrain:\n  lr: 0.1\n", "train", 4, 1),
    ("train:\n  epochs: 1\n  lr: 0.1\n  epochs: 3\n", "epochs", 4, 2),
    ("models:\n  - {name: a, model: {name_or_path: x, name_or_path: y}}\n", "name_or_path", 2, 2),
])
def test_duplicate_keys_are_refused(tmp_path: Path, text: str, key: str, line: int, first: int) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_yaml(path)
    msg = err.value.one_line()
    assert f"duplicate key '{key}' (first at line {first})" in msg and f"at line {line}" in msg
    assert "dup.yaml" in msg


def test_long_input_is_clipped_in_messages(tmp_path: Path) -> None:
    assert len(clip("x" * 10_000)) < MAX_QUOTE + 40
    with pytest.raises(SpecError) as err:
        parse_override("k" * 5000)
    assert len(err.value.one_line()) < 400
    path = tmp_path / "long.yaml"
    path.write_text("key: [" + "a" * 50_000 + "\n")
    with pytest.raises(SpecError, match="malformed YAML") as err:
        load_yaml(path)
    assert len(err.value.one_line()) < 600


@pytest.mark.parametrize("example", sorted((REPO / "examples").rglob("*.yaml")), ids=lambda p: p.name)
def test_examples_still_load(example: Path) -> None:
    assert isinstance(load_yaml(example), dict)
