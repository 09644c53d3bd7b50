"""YAML source: a node tree that remembers FILE:LINE:COL for every value.

The loader composes the document into nodes (no object construction), so it can report
*every* duplicate key instead of stopping at the first, and resolves plain scalars itself
with the YAML 1.2 core schema (``on``/``no``/``N`` stay strings, unlike YAML 1.1).

Composing uses libyaml through PyYAML's C loader when it is installed (about ten times
faster than pure Python, which matters for sites with a thousand devices); whenever it
reports a syntax error, PyYAML's pure-Python parser re-reads the text so that syntax errors
always read the same, in a technician's words (`gateway.config.syntax`).

``${NAME}`` in a scalar value is replaced from the environment; ``$${`` is a literal ``${``.
A substituted value is never quoted in a message: `describe` names the variable instead. It
is not masked in logs unless its key holds a secret (password, token): hosts, ports and
names read as themselves (`gateway.config.schema` registers the secret keys' values).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import yaml

from gateway.config.syntax import explain
from gateway.core.errors import ConfigIssue

SCALAR = 0
MAPPING = 1
SEQUENCE = 2

_MERGE_KEY = "<<"


class Node:
    """One YAML node: a scalar (python value), a mapping or a sequence, with its position.

    For a mapping ``value`` is ``dict[str, tuple[Node, Node]]`` (key node, value node), for a
    sequence ``list[Node]``. ``text`` is a scalar's source text. ``env`` names the variables
    a scalar was built from; ``bad`` marks a value that already produced an issue (e.g. a
    missing variable), so validators skip it.
    """

    __slots__ = ("bad", "col", "env", "file", "kind", "line", "text", "value")

    def __init__(
        self, kind: int, value: Any, file: str, line: int, col: int,
        env: tuple[str, ...] = (), bad: bool = False, text: str | None = None,
    ) -> None:
        self.kind = kind
        self.value = value
        self.file = file
        self.line = line
        self.col = col
        self.env = env
        self.bad = bad
        self.text = text  # a scalar's source text (after substitution): '017' stays '017'

    def __repr__(self) -> str:
        return f"Node({self.kind}, {self.value!r}, {self.file}:{self.line}:{self.col})"

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
        return pair[1] if pair else None

    def key_node(self, key: str) -> Node | None:
        if self.kind != MAPPING:
            return None
        pair = self.value.get(key)
        return pair[0] if pair else None

    def issue(self, path: str, message: str) -> ConfigIssue:
        return ConfigIssue(self.file, self.line, self.col, path, message)

    def plain(self) -> Any:
        """The node as plain python data (dicts, lists, scalars), positions dropped."""
        if self.kind == MAPPING:
            return {k: v.plain() for k, (_, v) in self.value.items()}
        if self.kind == SEQUENCE:
            return [n.plain() for n in self.value]
        return self.value


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


# --- composing ----------------------------------------------------------------------------

try:  # libyaml through PyYAML, when present: much faster than the pure-python parser
    _FAST_LOADER: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _FAST_LOADER = yaml.SafeLoader


def _compose(text: str, file: str, issues: list[ConfigIssue]) -> Any:
    """Compose with libyaml; on a syntax error, re-parse with PyYAML's pure-Python parser so
    that the message (worded by `syntax.explain`) is the same whether libyaml is there."""
    try:
        return yaml.compose(text, Loader=_FAST_LOADER)
    except yaml.YAMLError:
        pass
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line, col, message = explain(exc, text)
        issues.append(ConfigIssue(file, line, col, "", message))
    except yaml.YAMLError as exc:
        issues.append(ConfigIssue(file, 1, 1, "", f"yaml error: {exc}"))
    return None


# Bounds of one file (issue: an 85 KB file of aliases took `check` 62.7 s and 1.58 GB).
MAX_FILE_BYTES = 4 * 1024 * 1024  # a 1,003-device site written out is 1.5 MiB
MAX_NODES = 2_000_000  # values in the document once every alias is expanded


class _Amplified(Exception):
    """The document expands to more than MAX_NODES values through its aliases."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self.raw = raw


class _Builder:
    def __init__(self, file: str, env: Mapping[str, str], issues: list[ConfigIssue]) -> None:
        self.file = file
        self.env = env
        self.issues = issues
        self.memo: dict[int, Node] = {}  # anchors/aliases: one Node per composed node
        self.weight: dict[int, int] = {}  # values under a collection, aliases expanded
        self.expanded = 0  # values so far, as if every alias were written out

    def _grow(self, count: int, raw: Any) -> None:
        """Count values as validation will visit them; stop at once past MAX_NODES, so an
        alias bomb costs as little as reading it."""
        self.expanded += count
        if self.expanded > MAX_NODES:
            raise _Amplified(raw)

    def build(self, raw: Any, path: str) -> Node:
        known = self.memo.get(id(raw))
        if known is not None:
            self._grow(self.weight.get(id(raw), 1), raw)
            return known
        start = self.expanded
        self._grow(1, raw)
        mark = raw.start_mark
        line, col = mark.line + 1, mark.column + 1
        if raw.id == "mapping":
            node = Node(MAPPING, {}, self.file, line, col)
            self.memo[id(raw)] = node
            self._mapping(raw, node, path)
            self.weight[id(raw)] = self.expanded - start
            return node
        if raw.id == "sequence":
            node = Node(SEQUENCE, [], self.file, line, col)
            self.memo[id(raw)] = node
            node.value = [self.build(item, f"{path}[{i}]") for i, item in enumerate(raw.value)]
            self.weight[id(raw)] = self.expanded - start
            return node
        text: str = raw.value
        plain = not raw.style
        env_names: tuple[str, ...] = ()
        bad = False
        if "$" in text:
            problems: list[str] = []
            text, env_names = substitute(text, self.env, problems)
            for problem in problems:
                self.issues.append(ConfigIssue(self.file, line, col, path, problem))
            bad = bool(problems)
        value: Any = resolve_plain(text) if plain else text
        node = Node(SCALAR, value, self.file, line, col, env_names, bad, text)
        self.memo[id(raw)] = node
        return node

    def _mapping(self, raw: Any, node: Node, path: str) -> None:
        out: dict[str, tuple[Node, Node]] = node.value
        merged: list[tuple[str, tuple[Node, Node]]] = []
        for key_raw, value_raw in raw.value:
            kmark = key_raw.start_mark
            if key_raw.id != "scalar":
                self.issues.append(ConfigIssue(
                    self.file, kmark.line + 1, kmark.column + 1, path,
                    "a mapping key must be a plain value"))
                continue
            key_text = key_raw.value
            key_node = Node(SCALAR, key_text, self.file, kmark.line + 1, kmark.column + 1)
            if key_text == _MERGE_KEY and not key_raw.style:
                merged.extend(self._merge_sources(value_raw, path))
                continue
            child_path = f"{path}.{key_text}" if path else key_text
            first = out.get(key_text)
            if first is not None:
                self.issues.append(ConfigIssue(
                    self.file, key_node.line, key_node.col, child_path,
                    f"duplicate key '{key_text}' (first at line {first[0].line})"))
                continue
            out[key_text] = (key_node, self.build(value_raw, child_path))
        # Keys written out in the mapping win over keys merged in with '<<'.
        for key_text, pair in merged:
            out.setdefault(key_text, pair)

    def _merge_sources(self, raw: Any, path: str) -> list[tuple[str, tuple[Node, Node]]]:
        sources = raw.value if raw.id == "sequence" else [raw]
        pairs: list[tuple[str, tuple[Node, Node]]] = []
        for source in sources:
            built = self.build(source, path)
            if built.kind != MAPPING:
                self.issues.append(built.issue(path, "'<<' merges only mappings"))
                continue
            pairs.extend(built.value.items())
        return pairs


def parse(
    text: str, file: str, env: Mapping[str, str], issues: list[ConfigIssue],
) -> Node | None:
    """Parse one YAML document into a Node tree; problems go to ``issues``.

    Returns None for an empty document or a syntax error (reported in ``issues``).
    """
    raw = _compose(text, file, issues)
    if raw is None:
        return None
    try:
        return _Builder(file, env, issues).build(raw, "")
    except _Amplified as exc:
        mark = exc.raw.start_mark
        issues.append(ConfigIssue(
            file, mark.line + 1, mark.column + 1, "",
            f"the file holds more than {MAX_NODES:,} values once its aliases are expanded "
            "(this anchor is among the ones repeated); repeat it fewer times"))
        return None


def load(path: str, env: Mapping[str, str], issues: list[ConfigIssue]) -> Node | None:
    """Read and parse the file at ``path``; the file name in issues is ``path`` as given."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
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
