"""Serial-line sensors' text: bytes -> lines -> values. Pure: no serial port, no asyncio.

* `LineSplitter` cuts the byte stream into lines. CR, LF and CRLF all end a line (an empty
  line is skipped, so CRLF split across two reads is one separator). A line longer than
  `MAX_LINE` bytes is not a record: it is reported once as over-long (``None``) and the
  stream is skipped up to the next separator, however long the line goes on, holding at
  most `MAX_LINE` bytes.
* `decode_line` turns a line into text (ASCII; any other byte becomes U+FFFD).
* `build_converter` turns the text of a named group into ``(value, quality)`` per the
  point's type: numbers get scale and offset (integers exactly as from registers,
  `gateway.core.decode.integer_scaler`; floats rounded as `gateway.core.decode.rounding`
  says), ``bool`` reads ``1/0 true/false on/off yes/no``, ``string`` is kept as sent with
  its surrounding white space stripped. Quality ``bad`` when the text is no value of the
  type; ``invalid`` when it is a listed sentinel, not finite, or a string carrying control
  characters (NUL, BEL, ESC, ...) or bytes that are not ASCII.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from gateway.core.decode import (
    DecoderSpec,
    decimals,
    integer_scaler,
    rounding,
    written_decimals,
)
from gateway.core.model import FLOAT_TYPES, PointConfig, Quality, Value

MAX_LINE = 4096  # bytes: a longer "line" is noise (counted), never a record
_SEPARATORS = re.compile(rb"[\r\n]")
_TRUE = frozenset({"1", "true", "on", "yes"})
_FALSE = frozenset({"0", "false", "off", "no"})
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ufffd]")  # controls, undecodable bytes

Converter = Callable[[str], tuple[Value | None, Quality]]


class LineSplitter:
    """Bytes in, complete lines out; ``None`` stands for one over-long line dropped."""

    __slots__ = ("_buffer", "_limit", "_skipping")

    def __init__(self, limit: int = MAX_LINE) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._skipping = False  # inside an over-long line: drop up to the next separator

    def feed(self, data: bytes) -> list[bytes | None]:
        lines: list[bytes | None] = []
        start = 0
        for match in _SEPARATORS.finditer(data):
            self._end_line(data[start : match.start()], lines)
            start = match.end()
        rest = data[start:]
        if self._skipping:
            return lines
        if len(self._buffer) + len(rest) > self._limit:
            self._buffer.clear()
            self._skipping = True
            lines.append(None)
        else:
            self._buffer += rest
        return lines

    def _end_line(self, tail: bytes, lines: list[bytes | None]) -> None:
        if self._skipping:
            self._skipping = False
            return
        if len(self._buffer) + len(tail) > self._limit:
            lines.append(None)
        elif self._buffer or tail:
            lines.append(bytes(self._buffer) + tail)
        self._buffer.clear()

    def clear(self) -> None:
        """Forget a partial line (what was pending before a request was sent)."""
        self._buffer.clear()
        self._skipping = False

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held."""
        return len(self._buffer)


def decode_line(line: bytes) -> str:
    """A line's text: ASCII, every other byte U+FFFD (so a string value can refuse it)."""
    return line.decode("ascii", errors="replace")


def build_converter(point: PointConfig) -> Converter:
    """Text of a named group -> ``(value, quality)`` per the point's type, scale, offset."""
    if point.type == "string":
        return _to_string
    if point.type == "bool":
        return _to_bool
    sentinels = frozenset(point.invalid_values)
    if point.type not in FLOAT_TYPES:
        scale_int = integer_scaler(DecoderSpec.of(point))  # as from registers: exact

        def to_integer(text: str) -> tuple[Value | None, Quality]:
            try:
                raw = int(text.strip(), 10)
            except ValueError:
                return None, "bad"
            if sentinels and raw in sentinels:
                return None, "invalid"
            return scale_int(raw)

        return to_integer
    scale = float(point.scale)
    offset = float(point.offset)
    identity = scale == 1 and offset == 0
    places = rounding(point)  # a set precision: fixed; otherwise per the text's decimals
    scale_places = decimals(scale)
    offset_places = decimals(offset)

    def to_number(text: str) -> tuple[Value | None, Quality]:
        try:
            raw = float(text)
        except ValueError:
            return None, "bad"
        if sentinels and raw in sentinels:
            return None, "invalid"
        value = raw if identity else raw * scale + offset
        if not math.isfinite(value):
            return None, "invalid"
        if places is not None:
            value = round(value, places)
        elif not identity:  # a float written with N decimals, scaled
            value = round(value, max(scale_places + written_decimals(text), offset_places))
        return value, "good"

    return to_number


def _to_string(text: str) -> tuple[Value | None, Quality]:
    value = text.strip()
    if _UNPRINTABLE.search(value):
        return None, "invalid"
    return value, "good"


def _to_bool(text: str) -> tuple[Value | None, Quality]:
    word = text.strip().lower()
    if word in _TRUE:
        return True, "good"
    if word in _FALSE:
        return False, "good"
    return None, "bad"
