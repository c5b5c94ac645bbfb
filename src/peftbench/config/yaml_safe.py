"""The one YAML reader of peftbench: a `yaml.SafeLoader` that also refuses alias bombs and duplicate keys.

A plain safe loader builds no Python objects beyond plain data, but still accepts two inputs that hurt:

- an alias bomb ("billion laughs"): a few hundred bytes of nested `&anchor` / `*alias` references that
  expand to billions of nodes once anything walks, copies or prints the data. The loader counts the
  nodes each composed node stands for (an alias counts as the whole node it refers to) and stops as
  soon as the document stands for more than `MAX_NODES`, before anything is expanded; an alias
  that refers to a node that holds it (a recursive document) is refused too.
- a duplicate mapping key: YAML keeps the last one, so a second `train:` block silently drops the
  first. The loader refuses it, naming the key and both lines (merge keys `<<:` may still be overridden).

`load_text` turns every YAML problem into a one-line `SpecError` whose quoted input is clipped to
`MAX_QUOTE` characters.
"""

from __future__ import annotations

from typing import Any

import yaml

from peftbench.errors import SpecError

MAX_NODES = 100_000  # a spec file holds a few hundred nodes; a YAML alias bomb billions
MAX_QUOTE = 200  # the longest piece of user input an error message quotes
MERGE_TAG = "tag:yaml.org,2002:merge"


def clip(text: Any, limit: int = MAX_QUOTE) -> str:
    """`text` as a string of at most `limit` characters (plus a note of how much was cut), on one line."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else f"{s[:limit]}… ({len(s) - limit} more characters)"


class YamlLimitError(yaml.YAMLError):
    """A document the safe loader refuses: `problem` (one line), `line` (1-based or None), `hint`."""

    def __init__(self, problem: str, line: int | None, hint: str):
        super().__init__(problem)
        self.problem, self.line, self.hint = problem, line, hint


class SafeSpecLoader(yaml.SafeLoader):
    """A SafeLoader that refuses documents that expand past `MAX_NODES` nodes, recursive aliases and
    duplicate mapping keys."""

    def __init__(self, stream: Any, max_nodes: int = MAX_NODES):
        super().__init__(stream)
        self.max_nodes = max_nodes
        self.node_weights: dict[int, int] = {}  # id(node) -> the number of nodes it stands for, expanded

    def compose_node(self, parent: Any, index: Any) -> Any:
        alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        node = super().compose_node(parent, index)
        if alias:
            if id(node) not in self.node_weights:
                raise YamlLimitError("an alias refers to a node that contains it (a recursive document)",
                                     mark.line + 1, "anchors may refer only to complete, earlier nodes")
            return node
        weight = 1 + sum(self.node_weights.get(id(child), 1) for child in _children(node))
        self.node_weights[id(node)] = weight
        if weight > self.max_nodes:
            raise YamlLimitError(f"the document's aliases expand to more than {self.max_nodes} nodes "
                                 "(an alias bomb?)", mark.line + 1,
                                 "write the values out, or use fewer nested '*alias' references")
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    seen = first_line.get(key)
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                line = key_node.start_mark.line + 1
                if seen is not None:
                    raise YamlLimitError(f"duplicate key '{clip(key, 80)}' (first at line {seen}): "
                                         "YAML would silently drop the first one", line,
                                         f"merge the two '{clip(key, 80)}' entries into one")
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def safe_load(text: str, max_nodes: int = MAX_NODES) -> Any:
    """The data of one YAML document, read with `SafeSpecLoader`; raises `yaml.YAMLError` subclasses."""
    loader = SafeSpecLoader(text, max_nodes=max_nodes)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_text(text: str, source: str) -> Any:
    """`safe_load`, every YAML problem turned into a one-line `SpecError` naming `source` and the line."""
    where = f"'{clip(source, 120)}'"
    try:
        return safe_load(text)
    except YamlLimitError as err:
        at = f" at line {err.line}" if err.line else ""
        raise SpecError(f"refused YAML in {where}{at}: {err.problem}", hint=err.hint) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or (str(err).splitlines() or ["unreadable YAML"])[0]
        raise SpecError(f"malformed YAML in {where}{at}: {clip(problem)}", hint="fix the YAML syntax") from None
    except RecursionError:
        raise SpecError(f"malformed YAML in {where}: nested too deeply to read",
                        hint="use fewer levels of nesting") from None
