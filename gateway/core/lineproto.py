"""InfluxDB line protocol, both ways: escape and format points, and parse them back.

The gateway writes it (``format: influx`` MQTT payloads, read by Telegraf's
``mqtt_consumer`` with ``data_format = "influx"``), the bridge writes it to InfluxDB and
reads it back from ``format: influx`` payloads. Line protocol is also where a hostile
payload would try to inject extra tags, fields or points, so the rules here are strict:

* measurement: ``,`` and space are escaped; tag keys, tag values and field keys: ``,``,
  ``=`` and space are escaped (``\\,`` ``\\=`` ``\\ ``).
* backslashes: the implementations disagree on ``\\\\`` (InfluxDB 1.x/2.x and Telegraf keep
  both characters, the InfluxDB 3 docs read one), so a backslash in a name is written
  literally, which every reader keeps as is, and a name whose backslash would change meaning
  (at its end, or before ``\\`` ``,`` ``=`` ``"`` or space) is refused with ``ValueError``.
* control characters (newline, carriage return, tab, ...) cannot be carried in a name or
  tag value: refused with ``ValueError`` so the caller can dead-letter the message. An empty
  measurement, tag key or field key is refused; an empty tag value omits the tag (InfluxDB
  does not store empty tag values). A measurement may not start with ``#`` (a comment line).
* a tag key or field key named ``time`` is refused (`BadName`): InfluxDB drops such a tag or
  field without a word (or the whole point, when it was its only field).
* text that has no UTF-8 encoding (a lone surrogate such as ``\\ud800``, which a JSON
  escape can produce) is refused with `BadText`, in names and string values alike: the
  line could not be sent.
* string fields are double-quoted with ``"`` and ``\\`` escaped. Line protocol cannot carry a
  raw newline even in a quoted string, so newline and carriage return are written as
  ``\\n`` and ``\\r``: InfluxDB and Telegraf store those two characters, `parse_line` turns
  them back into the control character (a literal backslash-n is written ``\\\\n``).
* floats use the shortest repr that round-trips; NaN and infinities are refused. Integers
  get the ``i`` suffix; a uint64 reading beyond int64 gets the unsigned ``u`` suffix
  (InfluxDB 2.x/3.x and Telegraf read it, InfluxDB 1.x refuses it); beyond uint64 is
  refused. Booleans are ``true``/``false``.
* tags are sorted by key, as InfluxDB recommends; fields keep the caller's order.

Every refusal is a ``ValueError``; `BadName` and `BadText` (subclasses) say which kind, so a
caller can name the reason. `parse_line`/`parse_lines` read everything `format_line` writes,
plus the other spellings of the protocol (``u`` unsigned integers, ``t``/``T``/``True``/
``FALSE`` booleans, no timestamp), and raise ``ValueError`` with the reason on malformed
input. Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from gateway.core.model import Value

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# a backslash that a reader could take as an escape: at the end or before one of these
_AMBIGUOUS_BACKSLASH = re.compile(r'\\(?:$|[\\,= "])')
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INT = re.compile(r"[+-]?\d+")
_UINT = re.compile(r"\d+")
_BOOLS = {
    "t": True, "T": True, "true": True, "True": True, "TRUE": True,
    "f": False, "F": False, "false": False, "False": False, "FALSE": False,
}

# Keys InfluxDB drops silently: a tag or field named `time` (the timestamp's column).
RESERVED_KEYS = frozenset({"time"})

Point = tuple[str, dict[str, str], dict[str, Value], int | None]


class BadName(ValueError):
    """A tag key or field key InfluxDB would drop (`RESERVED_KEYS`)."""


class BadText(ValueError):
    """Text with no UTF-8 encoding (a lone surrogate): no line can carry it."""


def check_text(kind: str, text: str) -> None:
    """Raise `BadText` when `text` cannot be encoded as UTF-8 (cheap for ASCII text)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadText(f"{kind} {text!r} is not valid unicode ({exc.reason} at "
                          f"character {exc.start})") from None


def _check_name(kind: str, text: str) -> None:
    if not isinstance(text, str):
        raise ValueError(f"{kind} must be a string, got {type(text).__name__}")
    check_text(kind, text)
    if _CONTROL.search(text):
        raise ValueError(f"{kind} {text!r} contains a control character")
    if _AMBIGUOUS_BACKSLASH.search(text):
        raise ValueError(f"{kind} {text!r} has a backslash line protocol cannot carry")


def escape_measurement(name: str) -> str:
    """Escape a measurement name: comma and space."""
    _check_name("measurement", name)
    if not name:
        raise ValueError("measurement must not be empty")
    if name.startswith("#"):
        raise ValueError(f"measurement {name!r} must not start with '#'")
    return name.replace(",", "\\,").replace(" ", "\\ ")


def escape_tag(text: str, *, kind: str = "tag") -> str:
    """Escape a tag key or tag value (and field keys): comma, equals sign and space."""
    _check_name(kind, text)
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_tag_key(key: str) -> str:
    """Escape a tag key; empty keys and `RESERVED_KEYS` are refused."""
    return _escape_key(key, "tag key")


def escape_field_key(key: str) -> str:
    """Escape a field key: comma, equals sign and space; empty keys and `RESERVED_KEYS`
    are refused."""
    return _escape_key(key, "field key")


def _escape_key(key: str, kind: str) -> str:
    if key == "":
        raise ValueError(f"{kind} must not be empty")
    escaped = escape_tag(key, kind=kind)
    if key in RESERVED_KEYS:
        raise BadName(f"{kind} {key!r} is reserved: InfluxDB would drop it")
    return escaped


def _escape_string(text: str) -> str:
    return (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )


def format_field_value(value: Value) -> str:
    """One field value in line protocol: ``1.5``, ``12i``, ``true``, ``"text"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return f"{value}i"
        if INT64_MAX < value <= UINT64_MAX:
            return f"{value}u"  # uint64 readings beyond int64: InfluxDB 2.x/3.x, Telegraf
        raise ValueError(f"integer {value} does not fit in int64 or uint64")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"float {value!r} is not finite")
        return repr(value)
    if isinstance(value, str):
        check_text("string", value)
        return f'"{_escape_string(value)}"'
    raise ValueError(f"unsupported field value type {type(value).__name__}")


def format_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, Value],
    ts_ns: int,
) -> str:
    """One point as a line of line protocol, without the trailing newline."""
    if not fields:
        raise ValueError(f"point of measurement {measurement!r} has no fields")
    parts = [escape_measurement(measurement)]
    for key in sorted(tags):
        value = tags[key]
        escaped_key = escape_tag_key(key)
        escaped_value = escape_tag(value, kind="tag value")
        if escaped_value:
            parts.append(f"{escaped_key}={escaped_value}")
    field_set = ",".join(f"{escape_field_key(k)}={format_field_value(v)}"
                         for k, v in fields.items())
    if isinstance(ts_ns, bool) or not isinstance(ts_ns, int):
        raise ValueError(f"timestamp {ts_ns!r} is not an integer")
    return f"{','.join(parts)} {field_set} {ts_ns}"


# --- parsing -------------------------------------------------------------------------


class _Scanner:
    """Position in one line; every read method raises ValueError naming the column."""

    def __init__(self, line: str) -> None:
        self.line = line
        self.pos = 0

    def fail(self, reason: str) -> ValueError:
        return ValueError(f"{reason} at column {self.pos + 1}")

    def at_end(self) -> bool:
        return self.pos >= len(self.line)

    def peek(self) -> str:
        return self.line[self.pos] if self.pos < len(self.line) else ""

    def token(self, stops: str, escapable: str) -> str:
        """Read up to an unescaped char of ``stops``; unescape ``\\`` + ``escapable``."""
        out: list[str] = []
        line = self.line
        while self.pos < len(line):
            ch = line[self.pos]
            if ch == "\\" and self.pos + 1 < len(line):
                nxt = line[self.pos + 1]
                if nxt in escapable:
                    out.append(nxt)
                else:
                    out.append(ch + nxt)  # not an escape: both characters are kept
                self.pos += 2
                continue
            if ch in stops:
                break
            out.append(ch)
            self.pos += 1
        return "".join(out)

    def expect(self, ch: str, what: str) -> None:
        if self.peek() != ch:
            found = repr(self.peek()) if self.peek() else "end of line"
            raise self.fail(f"expected {what}, found {found}")
        self.pos += 1

    def quoted(self) -> str:
        opening = self.pos
        self.expect('"', "'\"'")
        out: list[str] = []
        line = self.line
        while self.pos < len(line):
            ch = line[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "\\" and self.pos + 1 < len(line):
                nxt = line[self.pos + 1]
                out.append({'"': '"', "\\": "\\", "n": "\n", "r": "\r"}.get(nxt, ch + nxt))
                self.pos += 2
                continue
            out.append(ch)
            self.pos += 1
        self.pos = opening
        raise self.fail("unterminated string field value")


def _field_value(scan: _Scanner, key: str) -> Value:
    if scan.peek() == '"':
        return scan.quoted()
    start = scan.pos
    raw = scan.token(", ", "")
    if raw == "":
        scan.pos = start
        raise scan.fail(f"missing value of field {key!r}")
    if raw in _BOOLS:
        return _BOOLS[raw]
    if raw[-1] == "i" and _INT.fullmatch(raw[:-1]):
        number = int(raw[:-1])
        if not INT64_MIN <= number <= INT64_MAX:
            raise ValueError(f"integer value of field {key!r} out of int64 range: {raw!r}")
        return number
    if raw[-1] == "u" and _UINT.fullmatch(raw[:-1]):
        number = int(raw[:-1])
        if number > UINT64_MAX:
            raise ValueError(f"unsigned value of field {key!r} out of uint64 range: {raw!r}")
        return number
    if _FLOAT.fullmatch(raw):
        number_f = float(raw)
        if not math.isfinite(number_f):
            raise ValueError(f"float value of field {key!r} is not finite: {raw!r}")
        return number_f
    raise ValueError(f"invalid value of field {key!r}: {raw!r}")


def parse_line(line: str) -> Point:
    """Parse one line into ``(measurement, tags, fields, ts)``; ``ts`` is None when absent."""
    if "\n" in line:
        raise ValueError("line contains a newline")
    scan = _Scanner(line.removesuffix("\r"))
    if scan.at_end() or scan.peek() == "#":
        raise ValueError("line is empty or a comment")
    measurement = scan.token(", ", ", ")
    if not measurement:
        raise scan.fail("missing measurement")
    tags: dict[str, str] = {}
    while scan.peek() == ",":
        scan.pos += 1
        key = scan.token(",= ", ",= ")
        if not key:
            raise scan.fail("missing tag key")
        scan.expect("=", f"'=' after tag key {key!r}")
        value = scan.token(", ", ",= ")
        if not value:
            raise scan.fail(f"missing value of tag {key!r}")
        if key in tags:
            raise ValueError(f"duplicate tag key {key!r}")
        tags[key] = value
    scan.expect(" ", "' ' before the field set")
    fields: dict[str, Value] = {}
    while True:
        key = scan.token(",= ", ",= ")
        if not key:
            raise scan.fail("missing field key")
        scan.expect("=", f"'=' after field key {key!r}")
        if key in fields:
            raise ValueError(f"duplicate field key {key!r}")
        fields[key] = _field_value(scan, key)
        if scan.peek() != ",":
            break
        scan.pos += 1
    ts: int | None = None
    if not scan.at_end():
        scan.expect(" ", "' ' before the timestamp")
        raw = scan.line[scan.pos:]
        if not _INT.fullmatch(raw):
            raise scan.fail(f"invalid timestamp {raw!r}")
        ts = int(raw)
    return measurement, tags, fields, ts


def parse_lines(text: str) -> list[Point]:
    """Parse a batch of lines; blank lines and ``#`` comments are skipped.

    A malformed line raises ``ValueError`` naming its 1-based line number.
    """
    points: list[Point] = []
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.removesuffix("\r")
        # InfluxDB trims ASCII blanks only: a measurement may begin with other white space
        # (U+00A0 ...) and then '#', which is then no comment.
        content = stripped.lstrip(" \t")
        if not content or content.startswith("#"):
            continue
        try:
            points.append(parse_line(stripped))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    return points
