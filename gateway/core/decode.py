"""Registers and bits -> values and quality: one decoder per point, built once at load.

Pure: no pymodbus, no I/O. A driver slices the registers (or bits) a point occupies out of
the response of the request that carried it and calls the point's decoder; the decoder
returns ``(value, quality)``:

* ``good``: the value decoded, with ``value = raw * scale + offset`` applied. Integer types
  (and numeric bits) stay ``int`` when scale and offset are whole numbers (``5``, ``-40``,
  ``1.0``): exact at any width, so ``uint64`` 2**64-2 plus 1 is 2**64-1, not a float off by
  one. A whole-number result outside int64..uint64 (`INTEGER_RANGE`: what InfluxDB and JSON
  consumers store as integers) is ``invalid``, never a rounded float. Otherwise the value
  is a ``float`` rounded to the decimals scale and offset imply (`rounding`: raw 474 x
  scale 0.1 is 47.4, not 47.400000000000006), or to the point's ``precision`` when it sets
  one (which rounds float types too).
* ``invalid``: decoded, but not a finite number (NaN, +inf, -inf), or a raw value the point
  lists in ``invalid_values`` (a sensor's "no reading" sentinel such as 32767, compared with
  the integer or float the registers hold, before scale and offset); the value is ``None``.
* ``bad``: the registers cannot be decoded (wrong count, a register past 16 bits); the
  value is ``None``. ``bad`` means the device did not give a usable answer; a string the
  device sent whose bytes are not valid in the point's ``encoding`` is ``invalid``.

Byte orders. The registers arrive as 16-bit words ``w0, w1, ...`` in address order, each
word sent high byte first. Naming the bytes of a 32-bit value ``A`` (most significant) to
``D`` (least), the four orders say how the device lays them out:

=====  ==============================  ==========================================
order  32-bit wire layout (w0 w1)      meaning for any width (16, 32, 64 bits)
=====  ==============================  ==========================================
ABCD   ``AB CD``                       big endian: words in order, high byte first
DCBA   ``DC BA``                       little endian: every byte reversed
BADC   ``BA DC``                       words in order, the two bytes of each swapped
CDAB   ``CD AB``                       words reversed, high byte first in each word
=====  ==============================  ==========================================

For 64-bit values these are Telegraf's definitions (``plugins/inputs/modbus``,
``type_conversions64.go``): ``CDAB`` reverses the order of all four words (``GH EF CD AB``),
it does not swap words pairwise; ``BADC`` swaps the bytes inside each word
(``BA DC FE HG``). For 16-bit values only the byte swap matters: ``ABCD`` and ``CDAB``
read ``AB``, ``BADC`` and ``DCBA`` read ``BA`` (as Telegraf does).

64-bit word orders. Some devices (energy counters as float64 or uint64) lay out eight
bytes ``A`` (most significant) to ``H`` in ways the four orders above do not cover; they are
named by the bytes as they appear on the wire, in address order, and apply to ``int64``,
``uint64`` and ``float64`` only:

==========  ======================  =================================================
order       wire (w0 w1 w2 w3)      meaning
==========  ======================  =================================================
CDABGHEF    ``CD AB GH EF``         32-bit halves in order, words swapped inside each
EFGHABCD    ``EF GH AB CD``         32-bit halves swapped, words in order inside each
DCBAHGFE    ``DC BA HG FE``         halves in order, each half little endian
FEHGBADC    ``FE HG BA DC``         halves swapped, bytes of each word swapped
==========  ======================  =================================================

The four short names keep their meaning at 64 bits: ``ABCD`` is ``ABCDEFGH``, ``DCBA``
is ``HGFEDCBA``, ``BADC`` is ``BADCFEHG`` and ``CDAB`` is ``GHEFCDAB`` (those 8-letter
spellings are accepted as aliases).

``float16`` is an IEEE 754 half-precision value in one register. ``int8_high``,
``int8_low``, ``uint8_high`` and ``uint8_low`` read one byte of a register (signed or
not); a byte-swapping order (``BADC``, ``DCBA``) swaps the register's two bytes first, as
it does for 16-bit values.

Strings occupy ``length`` registers, two bytes per register; ``ABCD``/``CDAB`` put the
first byte in the high byte, ``BADC``/``DCBA`` in the low byte (word order is not
changed for strings). The bytes are cut at the first NUL (devices leave old text after the
terminator), decoded with the point's ``encoding`` (UTF-8 unless set, e.g. ``ascii``,
``latin-1``), and leading and trailing spaces and NULs are stripped. Bytes the encoding
cannot decode give quality ``invalid``.

``bit`` (0 = least significant bit) reads one bit of a 16-bit register as a ``bool``.
Points in the coil and discrete tables are read as bits: ``bool`` points get the bit,
numeric points get ``0``/``1`` with scale and offset applied.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import NamedTuple

from gateway.core.model import (
    ALL_BYTE_ORDERS,
    BIT_TABLES,
    BYTE_ORDERS,
    FLOAT_TYPES,
    SIXTY_FOUR_BIT_TYPES,
    WORD_ORDERS_64,
    PointConfig,
    Quality,
    Value,
)

Decoded = tuple[Value | None, Quality]
Decoder = Callable[[Sequence[int] | Sequence[bool]], Decoded]

BAD: Decoded = (None, "bad")
INVALID: Decoded = (None, "invalid")

# struct codes of the numeric types, and their width in registers
_CODES: dict[str, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "float32": ("f", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float64": ("d", 4),
    "float16": ("e", 1),
}
# 8-bit types: one byte of a register, by its place in the register (byte order aside)
_BYTES: dict[str, tuple[int, bool]] = {
    "int8_high": (8, True), "int8_low": (0, True),
    "uint8_high": (8, False), "uint8_low": (0, False),
}
INTEGER_RANGE = (-(1 << 63), (1 << 64) - 1)
"""Integers a point may publish: int64 and uint64, what JSON consumers and InfluxDB's
integer (``i``) and unsigned (``u``) fields hold exactly; a scaled integer beyond is invalid."""
_FLOAT_EXACT = 1 << 53  # past it, raw * scale in floats is no longer exact


def written_decimals(text: str) -> int:
    """Decimal places a number's text carries: ``"47.40"`` -> 2, ``"1e-05"`` -> 5,
    ``"2.5e3"`` -> 0, ``"10.0"`` -> 1 (as written; see `decimals` for a config number)."""
    mantissa, _, exponent = text.strip().lower().partition("e")
    _, _, fraction = mantissa.partition(".")
    try:
        shift = int(exponent) if exponent else 0
    except ValueError:
        return 0
    return max(0, len(fraction) - shift)


def decimals(number: float) -> int:
    """Decimal places of ``number`` as written in the config (its shortest repr, trailing
    zeros dropped): ``0.1`` -> 1, ``0.05`` -> 2, ``1e-05`` -> 5, ``10`` -> 0."""
    if not math.isfinite(number):
        return 0
    mantissa, e, exponent = repr(float(number)).partition("e")
    return written_decimals(mantissa.rstrip("0") + e + exponent)


class DecoderSpec(NamedTuple):
    """What a point's decoder depends on; points that agree on it share one decoder (a site
    of 100 devices with the same register map has 20 decoders, not 2,000)."""

    type: str
    table: str | None  # a bit table's name; None for registers (all decode alike)
    byte_order: str
    bit: int | None
    length: int | None
    scale: float
    offset: float
    invalid_values: tuple[int | float, ...]
    precision: int | None
    encoding: str
    output: str = "auto"

    @classmethod
    def of(cls, point: PointConfig) -> DecoderSpec:
        table = point.table if point.table in BIT_TABLES else None
        return cls(point.type, table, point.byte_order, point.bit, point.length, point.scale,
                   point.offset, tuple(point.invalid_values), point.precision, point.encoding,
                   point.output)


def rounding(point: PointConfig | DecoderSpec) -> int | None:
    """Decimals a scaled value of ``point`` is rounded to, or ``None`` for no rounding.

    ``precision`` when the point sets it; otherwise, for an integer raw value (any integer
    type, a bit), the decimals its scale and offset imply, ``max(decimals(scale),
    decimals(offset))``: exact, since an integer times a number of N decimals has at most N.
    A float raw value has no decimals to go by, so it is not rounded (unless ``precision``).
    """
    if point.precision is not None:
        return point.precision
    if point.scale == 1 and point.offset == 0:
        return None
    if point.type in FLOAT_TYPES and point.table not in BIT_TABLES:
        return None
    return max(decimals(point.scale), decimals(point.offset))


def _swaps_bytes(byte_order: str) -> bool:
    """Whether the two bytes inside each register are swapped (low byte first)."""
    return byte_order in ("BADC", "DCBA")


def _reverses_words(byte_order: str) -> bool:
    """Whether the registers come least significant first."""
    return byte_order in ("CDAB", "DCBA")


def _check_order(point: PointConfig) -> None:
    if point.byte_order not in ALL_BYTE_ORDERS:
        raise ValueError(f"unknown byte order {point.byte_order!r} for point {point.name!r}")
    if point.byte_order in WORD_ORDERS_64 and point.type not in SIXTY_FOUR_BIT_TYPES:
        raise ValueError(f"byte order {point.byte_order} of point {point.name!r} is for "
                         f"64-bit types only")


def _wire_places(order: str) -> tuple[int, ...]:
    """For an 8-letter order: the wire position of each big-endian byte (A=0 .. H=7)."""
    return tuple(order.index(chr(ord("A") + i)) for i in range(8))


def _to_big_endian(order: str, width: int) -> Callable[[Sequence[int]], bytes]:
    """Registers as sent under ``order`` -> the value's bytes, most significant first."""
    if order in WORD_ORDERS_64:
        places = _wire_places(order)
        pack8 = struct.Struct(">4H").pack

        def reorder(registers: Sequence[int]) -> bytes:
            wire = pack8(*registers)
            return bytes(wire[i] for i in places)

        return reorder
    pack = struct.Struct(f"{'<' if _swaps_bytes(order) else '>'}{width}H").pack
    if width > 1 and _reverses_words(order):
        return lambda registers: pack(*registers[::-1])
    return lambda registers: pack(*registers)


def _from_big_endian(order: str, data: bytes) -> list[int]:
    """The inverse of `_to_big_endian`: a value's bytes -> the registers sent."""
    width = len(data) // 2
    if order in WORD_ORDERS_64:
        places = _wire_places(order)
        wire = bytearray(8)
        for i, place in enumerate(places):
            wire[place] = data[i]
        return list(struct.unpack(">4H", bytes(wire)))
    words = list(struct.unpack(f"{'<' if _swaps_bytes(order) else '>'}{width}H", data))
    if width > 1 and _reverses_words(order):
        words.reverse()
    return words


def integral(number: float) -> int | None:
    """``number`` as an ``int`` when it is a whole number (``5.0`` -> 5), else None."""
    if isinstance(number, bool):
        return int(number)
    if isinstance(number, int):
        return number
    return int(number) if math.isfinite(number) and float(number).is_integer() else None


def integer_scaler(point: DecoderSpec) -> Callable[[int], Decoded]:
    """``raw * scale + offset`` of an integer raw value (an integer type or a bit, from
    registers or from a serial-line record), exact.

    With a whole scale and offset the result is an ``int``, exact at any width, and
    ``invalid`` outside `INTEGER_RANGE` (the integers the payload formats carry), unless the
    point's ``output`` is ``float``. Otherwise a ``float``, rounded per `rounding`; past
    2**53, where a float product would already be off, the sum is computed in `Decimal` and
    rounded once.
    """
    whole_scale, whole_offset = integral(point.scale), integral(point.offset)
    places = rounding(point)
    low, high = INTEGER_RANGE
    if whole_scale is not None and whole_offset is not None and point.output == "auto":
        identity = whole_scale == 1 and whole_offset == 0

        def scale_int(raw: int) -> Decoded:
            value = raw if identity else raw * whole_scale + whole_offset
            if not low <= value <= high:
                return INVALID
            return value, "good"

        return scale_int
    scale, offset = float(point.scale), float(point.offset)
    exact_scale, exact_offset = Decimal(repr(scale)), Decimal(repr(offset))
    isfinite = math.isfinite

    def scale_float(raw: int) -> Decoded:
        if -_FLOAT_EXACT <= raw <= _FLOAT_EXACT:
            value = raw * scale + offset
        else:
            exact = Decimal(raw) * exact_scale + exact_offset
            value = float(round(exact, places) if places is not None else exact)
        if not isfinite(value):
            return INVALID
        return (value if places is None else round(value, places)), "good"

    return scale_float


def _numeric(point: DecoderSpec) -> Decoder:
    code, width = _CODES[point.type]
    to_bytes = _to_big_endian(point.byte_order, width)
    unpack = struct.Struct(f">{code}").unpack
    is_float = point.type in FLOAT_TYPES
    scale = float(point.scale)
    offset = float(point.offset)
    identity = scale == 1 and offset == 0
    isfinite = math.isfinite
    sentinels = frozenset(point.invalid_values)
    places = rounding(point)
    scale_int = integer_scaler(point)

    def decode(registers: Sequence[int] | Sequence[bool]) -> Decoded:
        if len(registers) != width:
            return BAD
        try:
            raw = unpack(to_bytes(registers))[0]
        except struct.error:
            return BAD
        if sentinels and raw in sentinels:
            return INVALID
        if not is_float:
            return scale_int(raw)
        if not isfinite(raw):
            return INVALID
        value = raw if identity else raw * scale + offset
        if not isfinite(value):
            return INVALID
        return (value if places is None else round(value, places)), "good"

    return decode


def _register_bit(point: DecoderSpec) -> Decoder:
    mask = 1 << (point.bit or 0)

    def decode(registers: Sequence[int] | Sequence[bool]) -> Decoded:
        if len(registers) < 1:
            return BAD
        return bool(int(registers[0]) & mask), "good"

    return decode


def _register_bool(point: DecoderSpec) -> Decoder:
    def decode(registers: Sequence[int] | Sequence[bool]) -> Decoded:
        if len(registers) != 1:
            return BAD
        return registers[0] != 0, "good"

    return decode


def _bit_table(point: DecoderSpec) -> Decoder:
    if point.type == "bool":

        def decode_bool(bits: Sequence[int] | Sequence[bool]) -> Decoded:
            if len(bits) != 1:
                return BAD
            return bool(bits[0]), "good"

        return decode_bool
    scale_int = integer_scaler(point)

    def decode_number(bits: Sequence[int] | Sequence[bool]) -> Decoded:
        if len(bits) != 1:
            return BAD
        return scale_int(1 if bits[0] else 0)

    return decode_number


def _byte(point: DecoderSpec) -> Decoder:
    """``int8_high`` .. ``uint8_low``: one byte of a register; with a byte-swapping order
    (BADC, DCBA) the register's bytes are swapped first, as for 16-bit values."""
    shift, signed = _BYTES[point.type]
    if _swaps_bytes(point.byte_order):
        shift = 8 - shift
    sentinels = frozenset(point.invalid_values)
    scale_int = integer_scaler(point)

    def decode(registers: Sequence[int] | Sequence[bool]) -> Decoded:
        if len(registers) != 1 or not 0 <= int(registers[0]) <= 0xFFFF:
            return BAD
        raw = (int(registers[0]) >> shift) & 0xFF
        if signed and raw > 127:
            raw -= 256
        if sentinels and raw in sentinels:
            return INVALID
        return scale_int(raw)

    return decode


def _string(point: DecoderSpec) -> Decoder:
    length = point.length or 1
    pack = struct.Struct(f"{'<' if _swaps_bytes(point.byte_order) else '>'}{length}H").pack
    encoding = point.encoding

    def decode(registers: Sequence[int] | Sequence[bool]) -> Decoded:
        if len(registers) != length:
            return BAD
        try:
            data = pack(*registers)
        except struct.error:
            return BAD
        try:
            text = data.split(b"\x00", 1)[0].decode(encoding)
        except UnicodeDecodeError:
            return INVALID
        return text.strip(" \x00"), "good"

    return decode


def build_decoder(point: PointConfig) -> Decoder:
    """The decoder of ``point``: registers (or bits) -> ``(value, quality)``.

    Raises ``ValueError`` for a point no decoder can be built for (unknown type or byte
    order, ``bit`` outside 0..15); the config loader rejects those first. Points with the
    same `DecoderSpec` get the same decoder (a pure function of the registers).
    """
    _check_order(point)
    if point.table not in BIT_TABLES and point.bit is not None and not 0 <= point.bit <= 15:
        raise ValueError(f"bit {point.bit} of point {point.name!r} is not in 0..15")
    if (point.table not in BIT_TABLES and point.bit is None
            and point.type not in ("bool", "string") and point.type not in _CODES
            and point.type not in _BYTES):
        raise ValueError(f"unknown data type {point.type!r} for point {point.name!r}")
    return _shared_decoder(DecoderSpec.of(point))


@functools.lru_cache(maxsize=1024)
def _shared_decoder(spec: DecoderSpec) -> Decoder:
    if spec.table is not None:
        return _bit_table(spec)
    if spec.bit is not None:
        return _register_bit(spec)
    if spec.type == "bool":
        return _register_bool(spec)
    if spec.type == "string":
        return _string(spec)
    if spec.type in _BYTES:
        return _byte(spec)
    return _numeric(spec)


def is_multi_register(point: PointConfig) -> bool:
    """Whether byte order changes how ``point`` decodes beyond a byte swap."""
    return (
        point.table not in BIT_TABLES
        and point.bit is None
        and point.type != "bool"
        and point.register_count > 1
    )


def decode_all_orders(
    point: PointConfig, registers: Sequence[int], *, four_only: bool = False
) -> dict[str, Value | None]:
    """``registers`` decoded under every byte order (for ``sensegate read --all-orders``).

    A value that is not good under some order is ``None`` there. 64-bit types get the
    8-letter word orders (`WORD_ORDERS_64`) after the four, unless ``four_only``.
    """
    result: dict[str, Value | None] = {}
    orders = BYTE_ORDERS
    if point.type in SIXTY_FOUR_BIT_TYPES and not four_only:
        orders = ALL_BYTE_ORDERS
    for order in orders:
        value, quality = build_decoder(replace(point, byte_order=order))(registers)
        result[order] = value if quality == "good" else None
    return result


def format_raw(point: PointConfig, raw: Sequence[int] | Sequence[bool]) -> str:
    """Registers as ``0041 b800`` (hex, address order), bits as ``1 0 1``."""
    if point.table in BIT_TABLES:
        return " ".join("1" if b else "0" for b in raw)
    return " ".join(f"{int(r):04x}" for r in raw)


def encode_registers(point: PointConfig, value: Value) -> list[int]:
    """The registers a device holding ``value`` for ``point`` sends (before scale/offset).

    The inverse of the point's decoder for numeric and string types, used by the
    simulator and the tests to lay out values in any byte order. ``value`` is the raw
    value: scale and offset are not undone.
    """
    _check_order(point)
    if point.type == "string":
        length = point.length or 1
        data = str(value).encode(point.encoding).ljust(2 * length, b"\x00")[: 2 * length]
        fmt = f"{'<' if _swaps_bytes(point.byte_order) else '>'}{length}H"
        return list(struct.unpack(fmt, data))
    if point.type == "bool":
        return [1 if value else 0]
    if point.type in _BYTES:
        shift, _ = _BYTES[point.type]
        if _swaps_bytes(point.byte_order):
            shift = 8 - shift
        return [(int(value) & 0xFF) << shift]
    code, _ = _CODES[point.type]
    return _from_big_endian(point.byte_order, struct.pack(f">{code}", value))


# Powers of ten a scale-factor point may hold (SunSpec's sunssf: -10..10).
SCALE_FACTOR_RANGE = (-10, 10)


class ScaleFactor(NamedTuple):
    """A point whose value is multiplied by 10 to the value of another point of its scan."""

    point: str
    factor: str  # the point holding the power of ten
    precision: int | None


def scale_factors(points: Sequence[PointConfig]) -> tuple[ScaleFactor, ...]:
    """The points of a scan that have a ``scale_factor``."""
    return tuple(ScaleFactor(p.name, p.scale_factor, p.precision)
                 for p in points if p.scale_factor)


def apply_scale_factors(values: dict[str, Value], quality: dict[str, str],
                        factors: Sequence[ScaleFactor]) -> None:
    """In place, after a scan is decoded: ``value * 10**factor`` for each of ``factors``,
    as a float (a factor may change sign, and InfluxDB keeps a field's first type).

    Computed in `Decimal` and rounded once (raw 2301 with factor -1 is 230.1), then to the
    point's ``precision`` when it sets one. When the factor point is not good, the point
    takes its quality (``bad`` if it has none); a factor that is not a whole number within
    `SCALE_FACTOR_RANGE` makes the point ``invalid``.
    """
    low, high = SCALE_FACTOR_RANGE
    for point, factor, precision in factors:
        value = values.get(point)
        if value is None:
            continue  # not good itself: its quality already says why
        power = values.get(factor)
        if power is None:
            del values[point]
            quality[point] = quality.get(factor, "bad")
            continue
        exponent = None if isinstance(power, bool | str) else integral(power)
        if exponent is None or not low <= exponent <= high or isinstance(value, bool | str):
            del values[point]
            quality[point] = "invalid"
            continue
        exact = Decimal(value if isinstance(value, int) else repr(value)).scaleb(exponent)
        result = float(exact)
        values[point] = result if precision is None else round(result, precision)
