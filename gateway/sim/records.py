"""Records a serial-line device's own ``pattern`` reads: the simulator's side of
`gateway.core.textline`, for `sensegate simulate`.

A device's record format is its ``pattern``: a regular expression with one named group per
point. `RecordFormat.of(device)` reads the pattern into a template: the text every part
outside the named groups minimally needs (``\\d{4}`` -> ``0000``, ``\\s*`` -> nothing,
``[^,]+`` -> one character that is no comma, an alternation -> its branch with the most
named groups, a named group made optional by ``?`` -> present), and one field per named
group. `RecordFormat.record(values)` fills each field with the text of its point's raw value
(before scale and offset, as the sensor prints it) in the first of a few spellings the
group's own expression accepts (``12.3``, ``12.30``, ``12``, ``+12.3``, zero-padded for a
fixed-width field ``012.3`` ...; for a bool ``1``/``0``, ``true``/``false``, ``on``/``off``,
``yes``/``no``), and proves the result: the pattern must find the record in it, as the
driver searches each line, with every group holding exactly the text put there.

The common forms are supported: literals and escapes, classes (``\\d \\w \\s``, ``[...]``,
``[^...]``), ``.``, anchors, groups (named, ``(?:...)``, inline flags, comments),
alternation and quantifiers. A pattern that needs more (look-arounds, back-references,
conditionals, verbose mode, a named group repeated or inside another, non-ASCII text) or
whose record does not prove out raises `Unsupported` with the reason, which `sensegate
simulate` prints instead of serving the device.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from gateway.core.model import FLOAT_TYPES, DeviceConfig, PointConfig, Value
from gateway.core.textline import decode_line

_ESCAPED = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v", "a": "\a"}
_CLASS_EXAMPLE = {"d": "0", "w": "a", "s": " ", "D": "x", "W": " ", "S": "x"}
_CLASS_TEST = {"d": str.isdecimal, "w": lambda c: c.isalnum() or c == "_",
               "s": str.isspace}
_ZERO_WIDTH = frozenset("bBAZ")
_FILLERS = "a0x _-.,;:/=+|#"  # characters tried for a negated class or a lone dot
_PAD_TO = 8  # digits a fixed-width field (``\\d{3}``) may be zero-padded to
_BOOL_WORDS = (("1", "0"), ("true", "false"), ("on", "off"), ("yes", "no"),
               ("TRUE", "FALSE"), ("ON", "OFF"))


class Unsupported(ValueError):
    """A pattern no record can be generated for here; the message says why."""


@dataclass(slots=True)
class _Node:
    """One parsed item: literal ``text``, a named group ``name`` with its expression
    ``body``, or a sequence/alternation of ``children`` repeated ``times``."""

    text: str = ""
    name: str | None = None
    body: str = ""
    branches: list[list[_Node]] = field(default_factory=list)
    low: int = 1
    high: int | None = 1

    def groups(self) -> Iterator[str]:
        if self.name is not None:
            yield self.name
        for branch in self.branches:
            for node in branch:
                yield from node.groups()


class _Parser:
    """A recursive-descent reader of Python's regular expression syntax, enough to build
    one string the expression matches (no `re` internals: they are not public)."""

    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.at = 0

    def fail(self, what: str) -> Unsupported:
        return Unsupported(f"{what} (at position {self.at} of the pattern)")

    def peek(self, n: int = 1) -> str:
        return self.src[self.at : self.at + n]

    def parse(self) -> list[_Node]:
        node = self.alternation()
        if self.at < len(self.src):
            raise self.fail("unbalanced ')'")
        return [node]

    def alternation(self) -> _Node:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.at += 1
            branches.append(self.sequence())
        return _Node(branches=branches)

    def sequence(self) -> list[_Node]:
        items: list[_Node] = []
        while self.at < len(self.src) and self.peek() not in "|)":
            atom = self.atom()
            if atom is not None:
                self.quantifier(atom)
                items.append(atom)
        return items

    def atom(self) -> _Node | None:
        c = self.src[self.at]
        self.at += 1
        if c in "^$":
            return _Node()
        if c == ".":
            return _Node(text="x")
        if c == "[":
            return _Node(text=self.char_class())
        if c == "(":
            return self.group()
        if c == "\\":
            return _Node(text=self.escape(in_class=False))
        if c in "*+?":
            raise self.fail(f"nothing to repeat before {c!r}")
        return _Node(text=c)

    def group(self) -> _Node | None:
        if self.peek() != "?":
            node = self.alternation()  # an unnamed capturing group
        elif self.peek(3) == "?P<":
            end = self.src.find(">", self.at)
            name = self.src[self.at + 3 : end]
            self.at = end + 1
            start = self.at
            inner = self.alternation()
            if any(True for _ in inner.groups()):
                raise self.fail(f"named group {name!r} holds another named group")
            node = _Node(name=name, body=self.src[start : self.at])
        elif self.peek(2) == "?#":
            end = self.src.find(")", self.at)
            self.at = end
            node = None
        elif self.peek(2) == "?:":
            self.at += 2
            node = self.alternation()
        elif re.match(r"\?[aiLmsux-]+[:)]", self.src[self.at :]):
            flags = re.match(r"\?([aiLmsux-]+)", self.src[self.at :])
            assert flags is not None
            if "x" in flags.group(1).partition("-")[0]:
                raise self.fail("verbose mode (?x) is not supported")
            self.at += flags.end()
            if self.peek() == ")":
                self.at += 1
                return None  # global flags: the literal text still matches
            self.at += 1
            node = self.alternation()
        else:
            kind = {"?=": "a look-ahead", "?!": "a look-ahead", "?<": "a look-behind",
                    "?P": "a back-reference", "?(": "a conditional"}.get(
                        self.peek(2), f"the group '({self.peek(2)}'")
            raise self.fail(f"{kind} is not supported")
        if self.peek() != ")":
            raise self.fail("missing ')'")
        self.at += 1
        return node

    def quantifier(self, node: _Node) -> None:
        c = self.peek()
        if c == "*":
            low, high = 0, None
        elif c == "+":
            low, high = 1, None
        elif c == "?":
            low, high = 0, 1
        else:
            braces = re.match(r"\{(\d*)(,?)(\d*)\}", self.src[self.at :])
            if c != "{" or braces is None or not (braces.group(1) or braces.group(3)):
                return  # a literal '{'
            low = int(braces.group(1) or 0)
            high = None if braces.group(2) and not braces.group(3) else int(
                braces.group(3) or braces.group(1))
            self.at += braces.end() - 1
        self.at += 1
        if self.peek() in ("?", "+"):  # lazy, possessive: the same strings
            self.at += 1
        node.low, node.high = low, high

    def escape(self, *, in_class: bool) -> str:
        c = self.src[self.at]
        self.at += 1
        if c in _CLASS_EXAMPLE:
            return _CLASS_EXAMPLE[c]
        if c in _ZERO_WIDTH:
            return "\b" if in_class and c == "b" else ("" if not in_class else c)
        if c in _ESCAPED:
            return _ESCAPED[c]
        if c in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[c]
            digits = self.src[self.at : self.at + width]
            self.at += width
            return chr(int(digits, 16))
        if c == "0":
            octal = re.match(r"[0-7]{0,2}", self.src[self.at :])
            assert octal is not None
            self.at += octal.end()
            return chr(int("0" + octal.group(0), 8))
        if c.isdigit() or c == "N":
            raise self.fail("a back-reference or \\N{...} is not supported")
        return c

    def char_class(self) -> str:
        """One character the class ``[...]`` matches (the class is consumed)."""
        negated = self.peek() == "^"
        if negated:
            self.at += 1
        members: list[str] = []  # single characters
        tests: list[object] = []  # ranges (lo, hi) and class escapes
        first = True
        while self.at < len(self.src) and (first or self.peek() != "]"):
            first = False
            c = self.src[self.at]
            self.at += 1
            if c == "\\":
                letter = self.peek()
                if letter in _CLASS_EXAMPLE:
                    self.at += 1
                    tests.append(letter)
                    members.append(_CLASS_EXAMPLE[letter])
                    continue
                c = self.escape(in_class=True)
            if self.peek() == "-" and self.peek(2) not in ("-", "-]"):  # a range c-hi
                hi = self.src[self.at + 1]
                self.at += 2
                if hi == "\\":
                    hi = self.escape(in_class=True)
                tests.append((c, hi))
                members.append(c)
                continue
            members.append(c)
        if self.peek() != "]":
            raise self.fail("missing ']'")
        self.at += 1
        if not negated:
            if not members:
                raise self.fail("an empty class")
            return members[0]

        def matched(ch: str) -> bool:
            for test in tests:
                if isinstance(test, tuple):
                    if test[0] <= ch <= test[1]:
                        return True
                elif isinstance(test, str):
                    check = _CLASS_TEST.get(test.lower())
                    if check is not None and check(ch) != test.isupper():
                        return True
            return ch in members

        for candidate in _FILLERS:
            if not matched(candidate):
                return candidate
        raise self.fail("no character found outside a negated class")


def _shape(nodes: list[_Node], out: list[str], bodies: dict[str, str]) -> None:
    """The template text of ``nodes``: literal text as is (braces doubled), ``{name}`` per
    named group (its expression into ``bodies``); each item repeated its least number of
    times (a part holding a named group at least once), each alternation by its branch with
    the most named groups."""
    for node in nodes:
        holds = any(True for _ in node.groups())
        times = max(node.low, 1) if holds else node.low
        if node.name is not None and (times > 1 or node.high is None or node.high > 1):
            raise Unsupported(f"named group {node.name!r} is repeated")
        for _ in range(times):
            if node.name is not None:
                if node.name in bodies:
                    raise Unsupported(f"named group {node.name!r} is repeated")
                bodies[node.name] = node.body
                out.append("{" + node.name + "}")
            elif node.branches:
                best = max(node.branches, key=lambda b: sum(len(list(n.groups())) for n in b))
                _shape(best, out, bodies)
            else:
                out.append(node.text.replace("{", "{{").replace("}", "}}"))


def spellings(point: PointConfig, raw: Value) -> list[str]:
    """Ways a sensor may print ``raw`` (a value before scale and offset) that the point's
    converter reads back as it, most natural first."""
    if isinstance(raw, bool):
        return [pair[0] if raw else pair[1] for pair in _BOOL_WORDS]
    if isinstance(raw, str):
        return [raw, raw.lower(), raw.upper()]
    if point.type not in FLOAT_TYPES:
        whole = int(raw)
        text = str(whole)
        padded = [f"{whole:0{width}d}" for width in range(len(text) + 1, _PAD_TO + 1)]
        signed = [f"+{t}" for t in (text, *padded) if whole >= 0]
        return [text, *signed[:1], *padded, *signed[1:]]
    number = float(raw)
    if not math.isfinite(number):
        return [str(number)]
    texts = [f"{number:.{places}f}" for places in (1, 2, 3, 0)]
    padded = [f"{number:0{width}.{places}f}" for places in (1, 2, 3, 0)
              for width in range(len(f"{number:.{places}f}") + 1, _PAD_TO + places + 2)]
    signed = [f"+{t}" for t in (*texts, *padded) if number >= 0]
    return [*texts, *signed[:len(texts)], *padded, *signed[len(texts):]]


@dataclass(frozen=True, slots=True)
class RecordFormat:
    """A device's record: ``template`` (a `str.format` template, one ``{point}`` field per
    named group) and each group's own expression (``bodies``)."""

    device: DeviceConfig
    pattern: re.Pattern[str]
    template: str
    bodies: dict[str, re.Pattern[str]]

    @classmethod
    def of(cls, device: DeviceConfig) -> RecordFormat:
        """The record format of ``device``'s pattern; `Unsupported` says why there is none."""
        if not device.pattern:
            raise Unsupported("the device has no pattern")
        pattern = re.compile(device.pattern)
        out: list[str] = []
        bodies: dict[str, str] = {}
        _shape(_Parser(device.pattern).parse(), out, bodies)
        template = "".join(out)
        if not template.isascii():
            raise Unsupported("the pattern needs text that is not ASCII, which the driver "
                              "never reads as such")
        return cls(device, pattern, template,
                   {name: re.compile(body, pattern.flags) for name, body in bodies.items()})

    @property
    def missing(self) -> list[str]:
        """Points of the device no record carries (in another branch of an alternation, or
        named by no group): the gateway reads them ``bad``."""
        return [p.name for p in self.device.points if p.name not in self.bodies]

    def texts(self, raw: Mapping[str, Value]) -> dict[str, str]:
        """The text of each field: the first spelling of the point's raw value its group
        accepts. `Unsupported` names a value no spelling of which the group accepts."""
        points = {p.name: p for p in self.device.points}
        texts: dict[str, str] = {}
        for name, body in self.bodies.items():
            point = points[name]  # the config refuses a group that is no point
            options = spellings(point, raw[name])
            text = next((t for t in options if body.fullmatch(t)), None)
            if text is None:
                raise Unsupported(f"point {name!r}: its group ({body.pattern}) accepts none of "
                                  f"{', '.join(options[:3])}")
            texts[name] = text
        return texts

    def record(self, raw: Mapping[str, Value]) -> str:
        """The record line (without its line end) printing ``raw``, proven to read back:
        `Unsupported` when it would not."""
        return self.line(self.texts(raw))

    def line(self, texts: Mapping[str, str]) -> str:
        """The record line of the fields' ``texts``, proven: the pattern finds it, each group
        holding exactly its text; `Unsupported` when not."""
        line = self.template.format(**texts)
        if "\r" in line or "\n" in line:  # the driver cuts lines there: never one record
            raise Unsupported(f"the record built, {line!r}, holds a line end")
        found = self.pattern.search(decode_line(line.encode("ascii")))
        if found is None:
            raise Unsupported(f"the record built, {line!r}, does not match the pattern")
        for name, text in texts.items():
            if found.group(name) != text:
                raise Unsupported(f"in the record built, {line!r}, group {name!r} reads "
                                  f"{found.group(name)!r} instead of {text!r}")
        return line
