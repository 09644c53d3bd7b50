"""YAML source: a node tree that remembers FILE:LINE:COL for every value.

The loader builds its nodes straight from the parser's events (``yaml.parse``; no PyYAML
node tree, no object construction), so it can report *every* duplicate key instead of
stopping at the first, and resolves plain scalars itself with the YAML 1.2 core schema
(``on``/``no``/``N`` stay strings, unlike YAML 1.1). Explicit tags are ignored, as before.

Parsing uses libyaml through PyYAML's C loader when it is installed (about ten times
faster than pure Python, which matters for sites with a thousand devices); whenever it
reports a syntax error, or something PyYAML's composer refuses (an undefined alias, a
duplicate anchor, a second document), PyYAML's pure-Python composer re-reads the text so
that these always read the same, in a technician's words (`gateway.config.syntax`).

``${NAME}`` in a scalar value is replaced from the environment; ``$${`` is a literal ``${``.
A substituted value is never quoted in a message: `describe` names the variable instead. It
is not masked in logs unless its key holds a secret (password, token): hosts, ports and
names read as themselves (`gateway.config.schema` registers the secret keys' values).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, ClassVar

import yaml

from gateway.config.syntax import explain
from gateway.core.errors import ConfigIssue

SCALAR = 0
MAPPING = 1
SEQUENCE = 2

_MERGE_KEY = "<<"


class Node:
    """One YAML node with its position: a `Scalar`, a `Mapping` or a `Sequence`.

    ``value`` is a scalar's python value, a mapping's ``dict[str, KeyNode]`` (each `KeyNode` holds
    its value node) or a sequence's ``list[Node]``. ``text`` is a scalar's source text.
    ``env`` names the variables a scalar was built from; ``bad`` marks a value that already
    produced an issue (e.g. a missing variable), so validators skip it.

    Compact on purpose (a 1,000-device site is about 200,000 nodes): a kind is a class, not
    a field, and what most nodes lack (``text``, ``env``, ``bad``) is a class default.
    """

    __slots__ = ("col", "file", "line", "value")
    kind: ClassVar[int] = SCALAR
    text: str | None = None  # a scalar's source text (after substitution): '017' stays '017'
    env: tuple[str, ...] = ()
    bad: bool = False

    def __init__(self, value: Any, file: str, line: int, col: int) -> None:
        self.value = value
        self.file = file
        self.line = line
        self.col = col

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r}, {self.file}:{self.line}:{self.col})"

    @property
    def is_mapping(self) -> bool:
        return self.kind == MAPPING

    @property
    def is_sequence(self) -> bool:
        return self.kind == SEQUENCE

    @property
    def is_scalar(self) -> bool:
        return self.kind == SCALAR

    def get(self, key: str) -> Node | None:
        """The value node of ``key`` in a mapping, or None."""
        if self.kind != MAPPING:
            return None
        pair = self.value.get(key)
        return pair.node if pair is not None else None

    def key_node(self, key: str) -> Node | None:
        """The node of the key ``key`` itself in a mapping (its position), or None."""
        if self.kind != MAPPING:
            return None
        pair: KeyNode | None = self.value.get(key)
        return pair

    def issue(self, path: str, message: str) -> ConfigIssue:
        return ConfigIssue(self.file, self.line, self.col, path, message)

    def plain(self) -> Any:
        """The node as plain python data (dicts, lists, scalars), positions dropped."""
        if self.kind == MAPPING:
            return {k: pair.node.plain() for k, pair in self.value.items()}
        if self.kind == SEQUENCE:
            return [n.plain() for n in self.value]
        return self.value


class ScalarNode(Node):
    """A scalar: its python value and its source text."""

    __slots__ = ("text",)

    def __init__(self, value: Any, file: str, line: int, col: int, text: str) -> None:
        super().__init__(value, file, line, col)
        self.text = text


class EnvScalarNode(ScalarNode):
    """A scalar built from ``${NAME}`` references (``bad`` when one could not be)."""

    __slots__ = ("bad", "env")

    def __init__(self, value: Any, file: str, line: int, col: int, text: str,
                 env: tuple[str, ...], bad: bool) -> None:
        super().__init__(value, file, line, col, text)
        self.env = env
        self.bad = bad


class KeyNode(Node):
    """A mapping key (its text and position) and the value node written under it."""

    __slots__ = ("node",)

    def __init__(self, value: str, file: str, line: int, col: int, node: Node) -> None:
        super().__init__(value, file, line, col)
        self.node = node


class MappingNode(Node):
    """``value``: ``dict[str, KeyNode]``, in the order written."""

    __slots__ = ()
    kind = MAPPING

    def __init__(self, file: str, line: int, col: int) -> None:
        super().__init__({}, file, line, col)


class SequenceNode(Node):
    """``value``: ``list[Node]``."""

    __slots__ = ()
    kind = SEQUENCE

    def __init__(self, file: str, line: int, col: int) -> None:
        super().__init__([], file, line, col)


_UNRESOLVED: Any = object()


def describe(node: Node, secret: bool = False) -> str:
    """How a message refers to this node's value: quoted, unless it came from the environment."""
    if node.env:
        names = " and ".join(f"${{{n}}}" for n in node.env)
        return f"the value of {names}"
    if secret:
        return "the value"
    if node.kind == MAPPING:
        return "a mapping"
    if node.kind == SEQUENCE:
        return "a list"
    if node.value is None:
        return "null"
    return quote(node.value)


def quote(value: Any) -> str:
    """A value as messages show it: strings in single quotes, as written (no escaping)."""
    if isinstance(value, str):
        return f"'{value}'" if "'" not in value else repr(value)
    return repr(value)


# --- scalar resolution (YAML 1.2 core schema) -------------------------------------------

_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_INT = re.compile(r"[-+]?[0-9]+\Z")
_INT_OTHER = re.compile(r"0o[0-7]+\Z|0x[0-9a-fA-F]+\Z")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_SPECIAL_FLOAT = {
    ".inf": math.inf, ".Inf": math.inf, ".INF": math.inf,
    "+.inf": math.inf, "+.Inf": math.inf, "+.INF": math.inf,
    "-.inf": -math.inf, "-.Inf": -math.inf, "-.INF": -math.inf,
    ".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan,
}


def resolve_plain(text: str) -> Any:
    """The python value of an unquoted scalar under the YAML 1.2 core schema."""
    if text in _NULL:
        return None
    first = text[0]
    if first in "tTfF":
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        return text
    if first in "0123456789+-.":
        if _INT.match(text):
            return int(text)
        if _INT_OTHER.match(text):
            return int(text, 0)
        if _FLOAT.match(text):
            return float(text)
        special = _SPECIAL_FLOAT.get(text)
        if special is not None:
            return special
    return text


# --- environment substitution -------------------------------------------------------------

_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def substitute(
    text: str, env: Mapping[str, str], problems: list[str],
) -> tuple[str, tuple[str, ...]]:
    """Replace ``${NAME}`` in ``text``; return the new text and the variables used.

    Problems (missing or malformed references) are appended to ``problems``.
    """
    used: list[str] = []

    def repl(m: re.Match[str]) -> str:
        whole = m.group(0)
        if whole == "$${":
            return "${"
        name = m.group(1)
        if name is None:
            problems.append("'${' is not closed; write '$${' for a literal '${'")
            return whole
        if not _NAME.match(name):
            problems.append(f"'{whole}' is not a valid variable reference")
            return whole
        used.append(name)
        if name not in env:
            problems.append(f"environment variable ${{{name}}} is not set")
            return whole
        return env[name]

    return _VAR.sub(repl, text), tuple(dict.fromkeys(used))


# --- composing: the node tree straight from the parser's events ----------------------------

try:  # libyaml through PyYAML, when present: much faster than the pure-python parser
    _FAST_LOADER: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _FAST_LOADER = yaml.SafeLoader

# Bounds of one file (issue: an 85 KB file of aliases took `check` 62.7 s and 1.58 GB).
MAX_FILE_BYTES = 4 * 1024 * 1024  # a 1,003-device site written out is 1.5 MiB
MAX_NODES = 2_000_000  # values in the document once every alias is expanded


class _Amplified(Exception):
    """The document expands to more than MAX_NODES values through its aliases."""

    def __init__(self, mark: Any) -> None:
        super().__init__()
        self.mark = mark


class _NotComposable(Exception):
    """What PyYAML's composer refuses (an undefined alias, a duplicate anchor, a second
    document): the pure-Python `yaml.compose` then words it, as for a syntax error."""


class _Anchor:
    """An anchored node, for its aliases: the node, the values under it (aliases expanded,
    for the amplification bound), and its key form when used as a mapping key."""

    __slots__ = ("key_text", "mark", "node", "plain_key", "weight")

    def __init__(self, node: Node, mark: Any, key_text: str | None, plain_key: bool) -> None:
        self.node = node
        self.mark = mark
        self.weight = 1  # until the node is complete (an alias inside it sees 1)
        self.key_text = key_text
        self.plain_key = plain_key


_ScalarEvent = yaml.ScalarEvent
_MappingStart = yaml.MappingStartEvent
_SequenceStart = yaml.SequenceStartEvent
_Alias = yaml.AliasEvent


class _Builder:
    """Builds the tree from `yaml.parse` events: one pass, no composed PyYAML nodes.

    Composing first (``yaml.compose``) held PyYAML's whole node tree beside ours: 6.7 MiB
    of a 100-device load's 11.5 MiB peak. Anchors are kept here as PyYAML's composer keeps
    them (an alias is the anchored node itself), so the tree is the same.
    """

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.issues: list[ConfigIssue] = []
        self.anchors: dict[str, _Anchor] = {}
        self.expanded = 0  # values so far, as if every alias were written out
        self.skipping = 0  # >0 inside what a mapping drops (a non-scalar key and its value)
        self.lines: dict[int, int] = {}  # one int object per line number, shared by its nodes
        self.texts: dict[str, str] = {}  # one str object per distinct scalar text
        self.resolved: dict[str, Any] = {}  # plain text -> its value
        self.events: Iterator[Any] = iter(())

    def _line(self, mark: Any) -> int:
        line: int = mark.line + 1
        return self.lines.setdefault(line, line)

    def _grow(self, count: int, mark: Any) -> None:
        """Count values as validation will visit them; stop at once past MAX_NODES, so an
        alias bomb costs as little as reading it."""
        self.expanded += count
        if self.expanded > MAX_NODES and not self.skipping:
            raise _Amplified(mark)

    def document(self, events: Iterator[Any]) -> Node | None:
        """The single document of the stream (None when there is none)."""
        self.events = events
        next(events)  # StreamStartEvent
        event = next(events)
        if type(event) is yaml.StreamEndEvent:
            return None
        root = self.node(next(events), "")  # after the DocumentStartEvent
        next(events)  # DocumentEndEvent
        if type(next(events)) is not yaml.StreamEndEvent:
            raise _NotComposable  # a second document
        return root

    def drain(self, events: Iterator[Any]) -> None:
        """Read the rest of the stream as the composer would, without building: raise what
        it refuses (a syntax error, an undefined alias, a duplicate anchor, a second
        document)."""
        names = set(self.anchors)
        for event in events:
            kind = type(event)
            if kind is _Alias:
                if event.anchor not in names:
                    raise _NotComposable
            elif kind is yaml.DocumentStartEvent:
                raise _NotComposable
            elif kind in (_ScalarEvent, _MappingStart, _SequenceStart) and event.anchor:
                if event.anchor in names:
                    raise _NotComposable
                names.add(event.anchor)

    def _anchored(self, event: Any) -> _Anchor:
        """The anchor an alias names."""
        entry = self.anchors.get(event.anchor)
        if entry is None:
            raise _NotComposable  # undefined alias
        return entry

    def _register(self, event: Any, node: Node, key_text: str | None = None,
                  plain_key: bool = False) -> _Anchor | None:
        anchor = event.anchor
        if anchor is None:
            return None
        if anchor in self.anchors:
            raise _NotComposable  # duplicate anchor
        entry = self.anchors[anchor] = _Anchor(node, event.start_mark, key_text, plain_key)
        return entry

    def node(self, event: Any, path: str) -> Node:
        kind = type(event)
        if kind is _ScalarEvent:
            return self._scalar(event, path)
        if kind is _Alias:
            target = self._anchored(event)
            self._grow(target.weight, target.mark)
            return target.node
        start = self.expanded
        mark = event.start_mark
        self._grow(1, mark)
        line, col = self._line(mark), mark.column + 1
        if kind is _MappingStart:
            node: Node = MappingNode(self.file, line, col)
            entry = self._register(event, node)
            self._mapping(node, path)
        else:  # a sequence
            node = SequenceNode(self.file, line, col)
            entry = self._register(event, node)
            items: list[Node] = node.value
            for i, item in enumerate(self.events):
                if type(item) is yaml.SequenceEndEvent:
                    break
                items.append(self.node(item, f"{path}[{i}]"))
        if entry is not None:
            entry.weight = self.expanded - start
        return node

    def _scalar(self, event: Any, path: str) -> Node:
        mark = event.start_mark
        self._grow(1, mark)
        line, col = self._line(mark), mark.column + 1
        text: str = event.value
        plain = not event.style
        node: Node
        if "$" in text:
            problems: list[str] = []
            text, names = substitute(text, self.env, problems)
            if not self.skipping:
                self.issues.extend(ConfigIssue(self.file, line, col, path, problem)
                                   for problem in problems)
            if names or problems:
                value = resolve_plain(text) if plain else text
                node = EnvScalarNode(value, self.file, line, col, text, names, bool(problems))
                self._register(event, node, event.value, plain)
                return node
        text = self.texts.setdefault(text, text)
        if plain:
            value = self.resolved.get(text, _UNRESOLVED)
            if value is _UNRESOLVED:
                value = self.resolved[text] = resolve_plain(text)
        else:
            value = text
        node = ScalarNode(value, self.file, line, col, text)
        if event.anchor is not None:
            self._register(event, node, event.value, plain)
        return node

    def _key(self, event: Any) -> tuple[str, bool, Any] | None:
        """A key event's (text, plain, mark); None for a key that is not a scalar, whose
        node (and its value's) is still built, for its anchors, then dropped."""
        kind = type(event)
        if kind is _ScalarEvent:
            if event.anchor is not None:  # for its aliases, counted and checked where used
                saved = self.expanded
                self.skipping += 1
                self._scalar(event, "")
                self.skipping -= 1
                self.expanded = saved
            return event.value, not event.style, event.start_mark
        if kind is _Alias:
            entry = self._anchored(event)
            if entry.key_text is not None:
                return entry.key_text, entry.plain_key, entry.mark
            return None
        self.skipping += 1
        self.node(event, "")
        self.skipping -= 1
        return None

    def _mapping(self, node: Node, path: str) -> None:
        out: dict[str, KeyNode] = node.value
        merged: list[tuple[str, KeyNode]] = []
        events = self.events
        texts = self.texts
        for event in events:
            if type(event) is yaml.MappingEndEvent:
                break
            key = self._key(event)
            if key is None:
                mark = event.start_mark
                saved = self.expanded
                self.skipping += 1
                self.node(next(events), path)
                self.skipping -= 1
                self.expanded = saved
                if not self.skipping:
                    self.issues.append(ConfigIssue(
                        self.file, mark.line + 1, mark.column + 1, path,
                        "a mapping key must be a plain value"))
                continue
            key_text, plain, kmark = key
            key_text = texts.setdefault(key_text, key_text)
            line, col = self._line(kmark), kmark.column + 1
            if key_text == _MERGE_KEY and plain:
                merged.extend(self._merge_sources(next(events), path))
                continue
            child_path = f"{path}.{key_text}" if path else key_text
            first = out.get(key_text)
            if first is not None:
                if not self.skipping:
                    self.issues.append(ConfigIssue(
                        self.file, line, col, child_path,
                        f"duplicate key '{key_text}' (first at line {first.line})"))
                saved = self.expanded
                self.skipping += 1
                self.node(next(events), child_path)
                self.skipping -= 1
                self.expanded = saved
                continue
            out[key_text] = KeyNode(key_text, self.file, line, col, self.node(next(events),
                                                                          child_path))
        # Keys written out in the mapping win over keys merged in with '<<'.
        for key_text, pair in merged:
            out.setdefault(key_text, pair)

    def _merge_sources(self, event: Any, path: str) -> list[tuple[str, KeyNode]]:
        """The pairs a '<<' value merges in: a mapping, or a list of them."""
        kind = type(event)
        sources: list[Node]
        if kind is _SequenceStart:
            mark: Any = event.start_mark
            start = self.expanded
            sequence = SequenceNode(self.file, self._line(mark), mark.column + 1)
            entry = self._register(event, sequence)
            sources = sequence.value
            for item in self.events:
                if type(item) is yaml.SequenceEndEvent:
                    break
                sources.append(self.node(item, path))
            if entry is not None:  # its items, and itself once an alias makes it a value
                entry.weight = self.expanded - start + 1
        elif kind is _Alias and self._anchored(event).node.kind == SEQUENCE:
            target = self._anchored(event)  # '<<: *list': its items, as if written here
            self._grow(target.weight - 1, target.mark)
            sources = target.node.value
        else:
            sources = [self.node(event, path)]
        pairs: list[tuple[str, KeyNode]] = []
        for built in sources:
            if built.kind != MAPPING:
                if not self.skipping:
                    self.issues.append(built.issue(path, "'<<' merges only mappings"))
                continue
            pairs.extend(built.value.items())
        return pairs


def parse(
    text: str, file: str, env: Mapping[str, str], issues: list[ConfigIssue],
) -> Node | None:
    """Parse one YAML document into a Node tree; problems go to ``issues``.

    Returns None for an empty document or a syntax error (reported in ``issues``). libyaml
    reads first; whatever it refuses, PyYAML's pure-Python composer re-reads to word it.
    """
    try:
        return _build(text, file, env, _FAST_LOADER, issues)
    except (yaml.YAMLError, _NotComposable):
        pass
    try:
        yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line, col, message = explain(exc, text)
        issues.append(ConfigIssue(file, line, col, "", message))
        return None
    except yaml.YAMLError as exc:
        issues.append(ConfigIssue(file, 1, 1, "", f"yaml error: {exc}"))
        return None
    return _build(text, file, env, yaml.SafeLoader, issues)  # libyaml refused valid YAML


def _build(text: str, file: str, env: Mapping[str, str], loader: Any,
           issues: list[ConfigIssue]) -> Node | None:
    """The tree from ``loader``'s events; raises what the parser or composer refuses."""
    builder = _Builder(file, env)
    events = yaml.parse(text, Loader=loader)
    try:
        try:
            root = builder.document(events)
        except _Amplified as exc:
            builder.drain(events)  # a syntax error further on is reported instead
            issues.extend(builder.issues)
            issues.append(ConfigIssue(
                file, exc.mark.line + 1, exc.mark.column + 1, "",
                f"the file holds more than {MAX_NODES:,} values once its aliases are expanded "
                "(this anchor is among the ones repeated); repeat it fewer times"))
            return None
    finally:
        events.close()  # type: ignore[attr-defined]
    issues.extend(builder.issues)
    return root


def _read_bounded(fh: BinaryIO) -> bytes:
    """The file's bytes, at most MAX_FILE_BYTES + 1 of them, in a buffer of the file's size:
    ``read(MAX_FILE_BYTES + 1)`` would allocate 4 MiB for every file (a pipe, whose size is
    unknown, still gets that)."""
    size = os.fstat(fh.fileno()).st_size
    if not 0 < size <= MAX_FILE_BYTES:
        return fh.read(MAX_FILE_BYTES + 1)
    data = fh.read(size + 1)
    if len(data) > size:  # it grew while we read: the rest, up to the bound
        data += fh.read(MAX_FILE_BYTES + 1 - len(data))
    return data


def load(path: str, env: Mapping[str, str], issues: list[ConfigIssue]) -> Node | None:
    """Read and parse the file at ``path``; the file name in issues is ``path`` as given."""
    try:
        with open(path, "rb") as fh:
            data = _read_bounded(fh)
        if len(data) > MAX_FILE_BYTES:
            issues.append(ConfigIssue(path, 1, 1, "", f"the file is larger than "
                                                      f"{MAX_FILE_BYTES // 2**20} MiB, the "
                                                      "most a config may be"))
            return None
        text = data.decode("utf-8")
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        issues.append(ConfigIssue(path, 1, 1, "", f"cannot read file: {reason}"))
        return None
    except UnicodeDecodeError as exc:
        issues.append(ConfigIssue(path, 1, 1, "", f"file is not utf-8 text: {exc.reason}"))
        return None
    return parse(text, path, env, issues)
