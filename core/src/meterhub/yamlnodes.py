"""YAML with lines: composed nodes that remember where each key was written.

Every file a user writes (a site file, a bench file, a device profile) is validated key by
key, and each mistake is reported with its file, line and key path. These helpers are
public so that plugins validate their own files the same way.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import yaml

from .errors import ConfigError, ConfigIssue

_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _TAG + "merge"


def compose(text: str, filename: str) -> Node | None:
    """The document in ``text`` as a :class:`Node` tree; ``None`` when it holds none.

    Raises :class:`ConfigError` with every YAML-level problem (syntax, duplicate keys,
    recursive aliases) located by line.
    """
    issues: list[ConfigIssue] = []
    root = compose_into(text, filename, issues)
    if issues:
        raise ConfigError(issues)
    return root


@attrs.frozen
class Node:
    """A composed YAML node reduced to what validation needs: its value, line and key path.

    ``value`` is a ``dict[str, Node]`` for a mapping, a ``list[Node]`` for a sequence and
    the constructed Python value for a scalar. ``line`` is the line of the key that holds
    the node (the line a user looks at), or the node's own line for list items and the root.
    ``raw`` is a scalar's source text: ``000000000001`` keeps its zeros there even though
    YAML reads it as the number 1.
    """

    kind: str  # "map", "seq" or "scalar"
    value: Any
    line: int
    path: str
    tag: str = ""
    raw: str = ""
    broken: bool = False  #: YAML could not construct it; already reported

    def get(self, key: str) -> Node | None:
        return self.value.get(key) if self.kind == "map" else None

    @property
    def is_null(self) -> bool:
        return self.kind == "scalar" and self.value is None and not self.broken


def child_path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def compose_into(text: str, filename: str, issues: list[ConfigIssue]) -> Node | None:
    """Compose ``text`` with SafeLoader and convert it to :class:`Node`; YAML errors become issues.

    ``None`` with no issue means the file holds no document (empty, comments, a bare ``---``).
    """
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        issues.append(_reader_issue(filename, text, exc))
        return None
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            issues.append(_yaml_issue(filename, exc))
            return None
        except yaml.reader.ReaderError as exc:
            issues.append(_reader_issue(filename, text, exc))
            return None
        if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _TAG + "null"):
            return None
        return _Converter(loader, filename, issues).convert(root, "", root.start_mark.line + 1)
    finally:
        loader.dispose()


def _reader_issue(filename: str, text: str, exc: yaml.reader.ReaderError) -> ConfigIssue:
    """A character YAML does not allow (control characters, ...), located by its line."""
    line = text[: exc.position].count("\n") + 1 if isinstance(exc.position, int) else None
    return ConfigIssue(filename, line, "", f"invalid YAML: {exc.reason} (character {exc.character!r})")


def _yaml_issue(filename: str, exc: yaml.MarkedYAMLError) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    message = exc.problem or "not valid YAML"
    if exc.context:
        where = exc.context
        if exc.context_mark is not None and exc.context_mark.line + 1 != line:
            where += f" started on line {exc.context_mark.line + 1}"
        message = f"{message} ({where})"
    return ConfigIssue(filename, line, "", f"invalid YAML: {message}")


class _Converter:
    """Walks composed nodes; constructs scalars with SafeLoader and keeps every line."""

    def __init__(self, loader: yaml.SafeLoader, filename: str, issues: list[ConfigIssue]) -> None:
        self.loader = loader
        self.filename = filename
        self.issues = issues
        self._active: set[int] = set()  # nodes being converted: an alias back to one is a loop

    def _issue(self, line: int, key: str, message: str) -> None:
        self.issues.append(ConfigIssue(self.filename, line, key, message))

    def convert(self, node: yaml.Node, path: str, line: int) -> Node:
        if id(node) in self._active:
            self._issue(line, path, "an alias refers back to itself (recursive YAML)")
            return Node("scalar", None, line, path, _TAG + "null", broken=True)
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path, line)
            if isinstance(node, yaml.SequenceNode):
                items = [self.convert(item, f"{path}[{i}]", item.start_mark.line + 1) for i, item in enumerate(node.value)]
                return Node("seq", items, line, path, node.tag)
            return self._scalar(node, path, line)
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, path: str, line: int) -> Node:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self._issue(line, path, exc.problem or str(exc))
            return Node("scalar", None, line, path, node.tag, node.value, broken=True)
        return Node("scalar", value, line, path, node.tag, node.value)

    def _mapping(self, node: yaml.MappingNode, path: str, line: int) -> Node:
        merged, own = self._pairs(node, path, {id(node)})
        entries: dict[str, Node] = {}
        for key_node, value_node in merged:  # highest precedence first: the first one wins
            if isinstance(key_node, yaml.ScalarNode) and key_node.value not in entries:
                key = key_node.value
                entries[key] = self.convert(value_node, child_path(path, key), key_node.start_mark.line + 1)
        first_lines: dict[str, int] = {}
        for key_node, value_node in own:  # the mapping's own keys override merged ones
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self._issue(key_line, path, "a key must be a plain name, not a list or mapping")
                continue
            key = key_node.value
            if key in first_lines:
                self._issue(key_line, child_path(path, key), f"duplicate key (first on line {first_lines[key]})")
                continue
            first_lines[key] = key_line
            entries[key] = self.convert(value_node, child_path(path, key), key_line)
        return Node("map", entries, line, path, node.tag)

    def _pairs(
        self, node: yaml.MappingNode, path: str, seen: set[int]
    ) -> tuple[list[tuple[yaml.Node, yaml.Node]], list[tuple[yaml.Node, yaml.Node]]]:
        """(merged, own) key/value nodes of a mapping, resolving ``<<`` merge keys.

        YAML merge keys: the mapping's own keys win over merged ones, and of a list of
        merged mappings the earlier wins; ``merged`` is in that order of precedence. The
        composed nodes are left unchanged (one anchor may be merged in many places).
        """
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        own: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node))
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                source_line = source.start_mark.line + 1
                if not isinstance(source, yaml.MappingNode):
                    self._issue(source_line, path, "a merge key (<<) takes a mapping or a list of mappings")
                elif id(source) in seen or id(source) in self._active:
                    self._issue(source_line, path, "an alias refers back to itself (recursive YAML)")
                else:
                    source_merged, source_own = self._pairs(source, path, seen | {id(source)})
                    merged += source_own + source_merged
        return merged, own


def plain(node: Node) -> Any:
    """The node as plain Python data (for options and the uplink, kept as written)."""
    if node.kind == "map":
        return {key: plain(child) for key, child in node.value.items()}
    if node.kind == "seq":
        return [plain(child) for child in node.value]
    return node.value


def locate(node: Node, key: str) -> int:
    """The line of ``key`` (``rs485.mode``, ``items[2]``) under ``node``, or of its nearest parent."""
    line = node.line
    current: Node | None = node
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        if current is None:
            break
        if part.startswith("["):
            index = int(part[1:-1])
            current = current.value[index] if current.kind == "seq" and index < len(current.value) else None
        else:
            current = current.get(part)
        if current is not None:
            line = current.line
    return line

