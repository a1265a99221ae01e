"""YAML with lines: composed nodes that remember where each key was written.

Every file a user writes (a site file, a bench file, a device profile) is validated key by
key, and each mistake is reported with its file, line and key path. These helpers are
public so that plugins validate their own files the same way.

Parsing uses libyaml (PyYAML's C parser: a large file loads in less than half the time)
where PyYAML was built with it, and PyYAML's pure-Python parser otherwise. Both feed the
same composer, so lines and keys are the same; a YAML syntax error, and text the two
parsers read differently, are left to the pure-Python parser. Whatever the text, the
result is a tree or issues: never a traceback, never a hang.
"""

from __future__ import annotations

import re
from typing import Any

import os
import stat

import attrs
import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent, ScalarEvent
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

try:
    from yaml.cyaml import CParser as _LibyamlParser
except ImportError:  # PyYAML built without libyaml
    _LibyamlParser = None

from .errors import ConfigError, ConfigIssue

_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _TAG + "merge"
#: the tags of plain mappings and lists; any other on a collection (!!set, !!omap, !foo)
#: asks for a type no meterhub file uses
_COLLECTION_TAGS = {"map": _TAG + "map", "seq": _TAG + "seq"}
#: what each YAML 1.1 scalar type is called in a message
_SCALAR_KINDS = {
    _TAG + "int": "a whole number",
    _TAG + "float": "a number",
    _TAG + "bool": "true or false",
    _TAG + "timestamp": "a date",
}

#: How deeply a file may nest, values and what aliases bring in counted. A site file nests
#: six deep (the file, meters, a meter, its options, a list in them, a value), a bench
#: file or a plugin's options a few more. The composer and the walks after it recurse,
#: up to three Python frames a level: 32 levels stay far inside the interpreter's
#: recursion limit (1000 frames), where 5,000 nested ``[`` would not.
MAX_NESTING = 32
#: How many keys and values a file may hold, each use of an alias counted in full. A site
#: of 10,000 meters, each with a name, ten quantities, options and a merged anchor (about
#: 35 keys and values), holds 350,000. A 400-byte "billion laughs" file expands to 10**9:
#: it is refused while it is composed, in time proportional to its text, before anything
#: walks the expanded tree.
MAX_NODES = 500_000
#: The longest whole number a file may write, in digits. CPython refuses to convert longer
#: decimal text (int_max_str_digits, CVE-2020-10735), so a longer number could not even be
#: put in a message; no setting comes near (addresses are text, keys a few dozen digits).
MAX_INTEGER_DIGITS = 4300
_INTEGER_LIMIT = 10**MAX_INTEGER_DIGITS
_TOO_LONG_A_NUMBER = f"a whole number of more than {MAX_INTEGER_DIGITS} digits; quote it if you meant text"
#: how much of a value a message quotes: enough to recognise it, and a 1 MB line stays short
_SHOWN_CHARS = 60
#: YAML 1.1 §5.4 line breaks: CR LF, CR, LF, NEL, LS and PS; the parsers count lines by them
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


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
    """Compose ``text`` with SafeLoader semantics and convert it to :class:`Node`; YAML errors,
    and documents too deep or too large (:data:`MAX_NESTING`, :data:`MAX_NODES`), become issues.

    ``None`` with no issue means the file holds no document (empty, comments, a bare ``---``).
    """
    loader, root = compose_yaml(text, filename, issues)
    if loader is None:
        return None
    try:
        if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _TAG + "null"):
            return None
        return _Converter(loader, filename, issues).convert(root, "", root.start_mark.line + 1)
    finally:
        loader.dispose()


def compose_yaml(text: str, filename: str, issues: list[ConfigIssue]) -> tuple[Any, yaml.Node | None]:
    """PyYAML's composed node tree of ``text`` and its loader (SafeLoader semantics), for a
    file format that converts nodes its own way; the same bounds as :func:`compose_into`.

    YAML errors and documents too deep or too large become issues, and the loader is then
    None. The caller constructs scalars with the loader (``construct_object``: catch
    ``yaml.YAMLError`` and ``ValueError`` for text that is not of its tag's type) and
    disposes of it.
    """
    try:
        return _parse(text)
    except yaml.reader.ReaderError as exc:
        issues.append(_reader_issue(filename, text, exc))
    except yaml.MarkedYAMLError as exc:
        issues.append(_yaml_issue(filename, exc))
    except _Refused as exc:
        issues.append(ConfigIssue(filename, exc.line, exc.key, exc.message))
    return None, None


def read_document(path: str | os.PathLike[str], *, max_bytes: int, what: str = "a file", hint: str = "") -> str:
    """The text of a file a user names (a site file, a device profile, a bench file), or
    :class:`ConfigError` saying why it cannot be one, with the line of a bad byte.

    It must be a regular file of at most ``max_bytes`` (``what`` and ``hint`` say what it
    should be in the message), in UTF-8 (a byte-order mark is dropped). The type is checked
    before the file is opened: opening a FIFO for reading waits for a writer, a device such
    as /dev/zero never ends, and opening a serial port toggles its lines; the open does not
    wait either (``O_NONBLOCK``), should the path have become a FIFO since.
    """
    filename = os.fspath(path)

    def refuse(message: str, line: int | None = None) -> ConfigError:
        return ConfigError([ConfigIssue(filename, line, "", message)])

    try:
        mode = os.stat(filename).st_mode
        if not stat.S_ISREG(mode):
            raise refuse(f"cannot read the file: it is {_file_type(mode)}, not a regular file")
        fd = os.open(filename, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            status = os.fstat(f.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise refuse(f"cannot read the file: it is {_file_type(status.st_mode)}, not a regular file")
            if status.st_size > max_bytes:
                raise refuse(too_large(status.st_size, max_bytes, "bytes", what, hint))
            data = f.read(max_bytes + 1)  # the size said may be wrong (/proc) or have grown
    except OSError as exc:
        raise refuse(f"cannot read the file: {exc.strerror or exc}") from None
    except ValueError:  # os.stat: embedded null byte
        raise refuse("cannot read the file: its name holds a NUL character") from None
    if len(data) > max_bytes:
        raise refuse(too_large(len(data), max_bytes, "bytes", what, hint))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        valid = exc.object[: exc.start].decode("utf-8-sig")  # the text before the first bad byte
        raise refuse(f"the file is not UTF-8 text: {exc.reason}", line_at(valid, len(valid))) from None


def _file_type(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


def too_large(size: int, limit: int, unit: str, what: str, hint: str = "") -> str:
    """The message for a document over its size bound."""
    return f"the file is too large for {what}: more than {limit} {unit} (it has {size})" + (f"; {hint}" if hint else "")


def line_at(text: str, position: int) -> int:
    """The 1-based line of ``position`` in ``text``, counting line breaks as YAML does."""
    return len(_LINE_BREAK.findall(text, 0, position)) + 1


def shorten(text: str) -> str:
    """``text`` quoted for a message, cut short: a 1 MB line stays one line."""
    return repr(text) if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]!r}... ({len(text)} characters)"


def clip(text: str) -> str:
    """``text`` as written, for a message, cut short like :func:`shorten`."""
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"


# -- parsing and composing ----------------------------------------------------------


class _Refused(Exception):
    """A document the composer will not build (too deep or too large), located by line and key."""

    def __init__(self, line: int, key: str, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.key = key
        self.message = message


@attrs.define
class _Open:
    """A mapping or list being composed: where it is, and what its children measure so far."""

    index: Any  #: its key node (a mapping's value), its position (a list item) or None (the root, a key)
    mark: Any  #: where it starts
    size: int = 0  #: keys and values below it, each alias counted in full
    height: int = 0  #: levels below it, through aliases


class _BoundedComposer(Composer):
    """PyYAML's composer, refusing a document nested too deep or too large once aliases are expanded.

    An alias shares its anchor's node, so composing stays linear in the text; but every walk
    after it (conversion, validation, a driver reading its options) meets each use of an
    alias in full. So each node is measured as those walks will meet it, by its size (keys
    and values) and height (levels), from the measures of its children and of the anchors
    its aliases name; one past :data:`MAX_NODES` or :data:`MAX_NESTING` is refused where it
    is written, before anything walks it.
    """

    def __init__(self) -> None:
        Composer.__init__(self)
        self._open: list[_Open] = []  # outermost first
        self._measures: dict[int, tuple[int, int]] = {}  # id of an anchored node -> (size, height)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        level = len(self._open) + 1
        if isinstance(event, ScalarEvent):  # most nodes: one value, one level
            if level > MAX_NESTING:
                raise self._too_deep(index, event.start_mark, "")
            if event.tag == "!":  # libyaml calls an empty "!" scalar not plain; PyYAML's parser does
                event.implicit = (True, False)
            node = super().compose_node(parent, index)
            size = height = 1
        elif isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            # a scalar's anchor is not measured (1, 1); nor is a node still open, which makes
            # a loop that the converter reports
            size, height = self._measures.get(id(node), (1, 1))
            if level + height - 1 > MAX_NESTING:
                raise self._too_deep(index, event.start_mark, " once its aliases are expanded")
        else:
            if level > MAX_NESTING:
                raise self._too_deep(index, event.start_mark, "")
            opened = _Open(index, event.start_mark)
            self._open.append(opened)
            node = super().compose_node(parent, index)
            self._open.pop()
            size, height = 1 + opened.size, 1 + opened.height
            if event.anchor is not None:
                self._measures[id(node)] = (size, height)
        if self._open:
            enclosing = self._open[-1]
            enclosing.size += size
            if height > enclosing.height:
                enclosing.height = height
            if enclosing.size >= MAX_NODES:  # refused as soon as it is known, not at its end
                raise self._too_large()
        return node

    def _too_large(self) -> _Refused:
        """The refusal of the innermost open node, now past :data:`MAX_NODES` with its children."""
        enclosing = self._open[-1]
        return _Refused(
            _line(enclosing.index, enclosing.mark),
            _path_of(opened.index for opened in self._open),
            f"holds more than {MAX_NODES} keys and values (each use of an alias counted in full);"
            " no file meterhub reads needs that many",
        )

    def _too_deep(self, index: Any, mark: Any, how: str) -> _Refused:
        """The refusal of a node past :data:`MAX_NESTING`, at the value it is nested in:
        ``meters[0].name`` for ``name: [[[[...``, not the innermost list."""
        chain = [(opened.index, opened.mark) for opened in self._open] + [(index, mark)]
        while len(chain) > 1 and isinstance(chain[-1][0], int):  # a list item: go up to its list
            chain.pop()
        where, where_mark = chain[-1]
        message = f"nested more than {MAX_NESTING} levels deep{how}"
        return _Refused(_line(where, where_mark), _path_of(part for part, _ in chain), message)


def _line(index: Any, mark: Any) -> int:
    """The line a node is reported at: its key's for a mapping value (as :class:`Node` has it)."""
    return (index.start_mark if isinstance(index, yaml.Node) else mark).line + 1


def _path_of(indexes: Any) -> str:
    """The key path (``meters[2].options``) of composer indexes: key nodes and positions."""
    path = ""
    for index in indexes:
        if isinstance(index, int):
            path += f"[{index}]"
        elif isinstance(index, yaml.ScalarNode):
            path = child_path(path, index.value)
        # None: the root, or a key (a mapping key is not a place of its own)
    return path


class _PurePythonLoader(Reader, Scanner, Parser, _BoundedComposer, SafeConstructor, Resolver):
    """PyYAML's SafeLoader with the bounded composer."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        _BoundedComposer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)


if _LibyamlParser is not None:

    class _LibyamlLoader(_BoundedComposer, _LibyamlParser, SafeConstructor, Resolver):  # type: ignore[misc,valid-type]
        """libyaml's parser (events) under the bounded composer: the same nodes, sooner."""

        def __init__(self, text: str) -> None:
            _LibyamlParser.__init__(self, text)
            _BoundedComposer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)


#: Text libyaml and PyYAML's parser read differently, found by comparing the two on random
#: text; a file with any of it is parsed by PyYAML alone, at its speed (few site files hold
#: any: editors write spaces, load_site drops the byte-order mark a file starts with, and a
#: ? is rare outside a pyserial URL's options).
_LIBYAML_DIFFERS = re.compile(
    r"\t"  # a tab: libyaml lets one stand where PyYAML refuses it (key:\tvalue, a\tb)
    r"|\ufeff"  # a byte-order mark: libyaml skips one at the start of any line, PyYAML only of the text
    r"|\?"  # a ?: libyaml takes one inside text in a flow collection ({note: why?}), PyYAML ends the text there
    r"|[|>][-+0-9]*#"  # a comment right after a block scalar's header (|#): libyaml takes it
    r"|![\w-]*[^\w\s!-][^\s!]*!"  # a second ! in a tag after other characters (!.!int): libyaml
    # reads a tag suffix, PyYAML a broken tag handle
)

#: The loader tried first: libyaml's where PyYAML was built with it, else None (the pure-
#: Python loader alone). Tests set it to None to run the pure-Python loader.
FAST_LOADER: type | None = _LibyamlLoader if _LibyamlParser is not None else None


def _parse(text: str) -> tuple[Any, yaml.Node | None]:
    """The loader and the composed document.

    libyaml parses first where it is installed. Where it finds the text wrong, the pure-
    Python parser parses again and reports: libyaml words its errors its own way and counts
    bytes, not characters, and one file must get one message whichever PyYAML is installed.
    A wrong file costs the slower parse, up to the error; so does a file with text the two
    parsers read differently (:data:`_LIBYAML_DIFFERS`).
    """
    if FAST_LOADER is not None and not _LIBYAML_DIFFERS.search(text):
        try:
            loader = FAST_LOADER(text)
            return loader, loader.get_single_node()
        except (yaml.YAMLError, UnicodeEncodeError):  # libyaml is given UTF-8: a lone surrogate has none
            pass
    loader = _PurePythonLoader(text)
    return loader, loader.get_single_node()


def _reader_issue(filename: str, text: str, exc: yaml.reader.ReaderError) -> ConfigIssue:
    """A character YAML does not allow (control characters, ...), located by its line."""
    line = line_at(text, exc.position) if isinstance(exc.position, int) else None
    character = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)  # PyYAML gives its code
    return ConfigIssue(filename, line, "", f"invalid YAML: {exc.reason} ({character})")


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

    def __init__(self, loader: Any, filename: str, issues: list[ConfigIssue]) -> None:
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
        if not isinstance(node, yaml.ScalarNode):
            kind = "map" if isinstance(node, yaml.MappingNode) else "seq"
            if node.tag != _COLLECTION_TAGS[kind]:
                written = "a plain mapping" if kind == "map" else "a plain list"
                self._issue(line, path, f"the tag {_short_tag(node.tag)} is not supported here; write {written}")
                return Node("scalar", None, line, path, node.tag, broken=True)
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
            value = self._construct(node)
        except ConstructorError as exc:
            self._issue(line, path, exc.problem or str(exc))
            return Node("scalar", None, line, path, node.tag, node.value, broken=True)
        except _Unreadable as exc:
            self._issue(line, path, str(exc))
            return Node("scalar", None, line, path, node.tag, node.value, broken=True)
        return Node("scalar", value, line, path, node.tag, node.value)

    def _construct(self, node: yaml.ScalarNode) -> Any:
        """A scalar's value; :class:`_Unreadable` saying why when its text is not of its type."""
        if node.tag == _TAG + "int" and len(node.value) > MAX_INTEGER_DIGITS:
            raise _Unreadable(_TOO_LONG_A_NUMBER)
        try:
            value = self.loader.construct_object(node, deep=True)
        except (ValueError, KeyError, AttributeError, IndexError) as exc:
            # SafeConstructor trusts the resolver to hand it only text in the type's own
            # syntax; an explicit tag skips the resolver, and then int() fails (!!int abc), a
            # dict lookup (!!bool maybe), a regex match (!!timestamp x) or text[0] (!!float "").
            # A date that does not exist (2020-02-30) fails in datetime.
            raise _Unreadable(self._not_its_type(node, exc)) from None
        if isinstance(value, int) and abs(value) >= _INTEGER_LIMIT:  # 0x or 1:2:3 notation
            raise _Unreadable(_TOO_LONG_A_NUMBER)
        return value

    def _not_its_type(self, node: yaml.ScalarNode, exc: Exception) -> str:
        kind = _SCALAR_KINDS.get(node.tag, "a value of that type")
        # datetime says which part of a date is wrong; int() and float() only repeat the text
        reason = f" ({exc})" if node.tag == _TAG + "timestamp" and isinstance(exc, ValueError) else ""
        # plain text the resolver typed (a plain scalar's style is '' from libyaml, None from PyYAML)
        untagged = not node.style and self.loader.resolve(yaml.ScalarNode, node.value, (True, False)) == node.tag
        if untagged:
            return f"YAML reads {clip(node.value)} as {kind}, but it is not one{reason}; quote it if you meant text"
        return f"the tag {_short_tag(node.tag)} asks for {kind}, and {shorten(node.value)} is not one{reason}"

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


class _Unreadable(Exception):
    """A scalar whose text is not of the type its tag (written or resolved) names."""


def _short_tag(tag: str) -> str:
    """``!!int`` for ``tag:yaml.org,2002:int``, as a user writes it."""
    return "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag


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

