"""Safe YAML loading that remembers line numbers and duplicate keys.

PyYAML's `safe_load` forgets where each value came from and silently keeps the last of two
equal keys. A rules file is written by hand, so every error must point at a line, and a
repeated `threshold:` must be reported rather than quietly win. This module keeps that
bookkeeping apart from the rules schema: it knows YAML, not rules.

Mappings load as `LineDict` and sequences as `LineList`; scalars load as plain Python values
(their line is the line of the key or item that holds them). Only the safe tags are
constructed, so a file can never run code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

__all__ = ["LineDict", "LineList", "YamlSyntaxError", "from_python", "load_yaml"]

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlSyntaxError(ValueError):
    """Text that is not valid YAML, with the 1-based line of the problem (None if unknown)."""

    def __init__(self, problem: str, line: int | None) -> None:
        self.problem = problem
        self.line = line
        super().__init__(problem if line is None else f"line {line}: {problem}")


class LineDict(dict):
    """A mapping that knows its own line, each key's line and the keys written twice.

    Attributes:
        line: 1-based line where the mapping starts.
        key_lines: key -> 1-based line of the key (the last occurrence, like the value).
        duplicates: (key as written, first line, repeated line) for each key written twice.
    """

    line: int
    key_lines: dict[Any, int]
    duplicates: list[tuple[Any, int, int]]


class LineList(list):
    """A sequence that knows its own line and the 1-based line of each item."""

    line: int
    item_lines: list[int]


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry line numbers.

    Duplicate keys are found on the composed node graph before construction, because merge
    keys (`<<: *base`) rewrite mapping nodes in place while constructing, and a key merged
    in from an anchor must not be mistaken for a key written twice.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._duplicates: dict[int, list[tuple[Any, int, int]]] = {}

    def find_duplicates(self, root: yaml.Node) -> None:
        """Record, for every mapping node, the keys that the author wrote twice."""
        seen: set[int] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if id(node) in seen:  # aliases share nodes; also guards against recursion
                continue
            seen.add(id(node))
            if isinstance(node, yaml.MappingNode):
                first: dict[tuple[str, str], int] = {}
                dups = []
                for key_node, value_node in node.value:
                    stack.extend((key_node, value_node))
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                        continue
                    ident = (key_node.tag, key_node.value)
                    if ident in first:
                        dups.append((key_node.value, first[ident], _line(key_node)))
                    else:
                        first[ident] = _line(key_node)
                if dups:
                    self._duplicates[id(node)] = dups
            elif isinstance(node, yaml.SequenceNode):
                stack.extend(node.value)

    def construct_line_map(self, node: yaml.MappingNode) -> Iterator[LineDict]:
        data = LineDict()
        data.line = _line(node)
        data.key_lines = {}
        data.duplicates = self._duplicates.get(id(node), [])
        yield data  # yield first so that recursive aliases resolve, as SafeConstructor does
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=False)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value, not a list or mapping",
                    key_node.start_mark,
                ) from None
            data[key] = self.construct_object(value_node, deep=False)
            data.key_lines[key] = _line(key_node)

    def construct_line_seq(self, node: yaml.SequenceNode) -> Iterator[LineList]:
        data = LineList()
        data.line = _line(node)
        data.item_lines = [_line(item) for item in node.value]
        yield data
        data.extend(self.construct_sequence(node))


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_line_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_line_seq)


def from_python(value: Any) -> Any:
    """Plain Python data as `load_yaml` would give it, with no line numbers (None) known."""
    if isinstance(value, dict):
        data = LineDict((k, from_python(v)) for k, v in value.items())
        data.line, data.key_lines, data.duplicates = None, dict.fromkeys(value), []
        return data
    if isinstance(value, (list, tuple)):
        items = LineList(from_python(v) for v in value)
        items.line, items.item_lines = None, [None] * len(value)
        return items
    return value


def load_yaml(text: str) -> tuple[Any, int]:
    """Parse one YAML document safely.

    Args:
        text: the document.

    Returns:
        The value (None for an empty document) and the 1-based line where it starts.

    Raises:
        YamlSyntaxError: the text is not one valid YAML document.
    """
    loader = None
    try:
        loader = _LineLoader(text)  # checks for unprintable characters at once
        node = loader.get_single_node()
        if node is None:
            return None, 1
        loader.find_duplicates(node)
        return loader.construct_document(node), _line(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:  # PyYAML's context reads before its problem
            but = problem.startswith("but ")
            problem = f"{exc.context}, {problem}" if but else f"{problem} ({exc.context})"
        raise YamlSyntaxError(problem, mark.line + 1 if mark else None) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise YamlSyntaxError(f"character {char} is not allowed in YAML; remove it", line) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), None) from None
    finally:
        if loader is not None:
            loader.dispose()
