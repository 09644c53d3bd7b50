"""Values -> registers or bits for a Modbus write: the exact inverse of `gateway.core.decode`.

Pure: no pymodbus, no I/O. `encode` turns an engineering value (what a command names) into
what goes on the wire for one point, and proves it: the registers are decoded again with
the point's own decoder (`build_decoder`) and the value that comes back must be the value
asked for, within the point's precision. A value that does not survive that round trip
(47.43 on a point of 0.1 steps, 70000 on a uint16, 0.3 on a bool, a string with trailing
spaces the decoder would strip) is refused with the reason; nothing is ever written
"nearly".

* integer types: ``raw = round((value - offset) / scale)``, within the type's range;
* float32/float64: ``raw = (value - offset) / scale`` as the float type holds it; float32
  keeps about 7 significant digits, so 0.1 survives as float32(0.1) (its decoder gives back
  0.1 only when a precision rounds it; without one the value read back is 0.100000001490116,
  which is 0.1 within float32's precision);
* bool on a register (no ``bit``): 1 or 0; bool on a ``bit``: a mask for a
  read-modify-write (`BitWrite`), done by the driver under the bus lock;
* coil: one bit; a numeric point on a coil: 0 or 1 after scale and offset;
* string: ASCII, NUL-padded to ``length`` registers, byte order as the decoder reads it.

Function codes (`write_function`): 5 (one coil), 15 (coils), 6 (one register), 16
(registers); a device with ``write_multiple`` gets 15/16 always (some refuse 5 and 6).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from gateway.core.decode import build_decoder, encode_registers, integral, rounding
from gateway.core.model import BIT_TABLES, INTEGER_RANGES, PointConfig, Value

FLOAT_LIMITS: dict[str, float] = {"float16": 65504.0, "float32": 3.4028234663852886e38,
                                  "float64": 1.7976931348623157e308}
# Relative precision a float type keeps (half an ulp).
FLOAT_EPSILON: dict[str, float] = {"float16": 2.0 ** -11, "float32": 2.0 ** -24,
                                   "float64": 2.0 ** -53}
# One byte of a register: writing it would overwrite the other byte, another point's.
HALF_REGISTER_TYPES = ("int8_high", "int8_low", "uint8_high", "uint8_low")
WRITABLE_TABLES = ("holding", "coil")


class Unwritable(ValueError):
    """A value that cannot be written to a point; ``str()`` is the reason."""


@dataclass(frozen=True, slots=True)
class Encoded:
    """What to write: ``registers`` (holding) or ``bits`` (coil), from ``address``."""

    value: Value  # the engineering value, as it will read back
    address: int
    registers: tuple[int, ...] = ()
    bits: tuple[bool, ...] = ()


@dataclass(frozen=True, slots=True)
class BitWrite:
    """One bit of a holding register: read, set or clear ``mask``, write back."""

    value: bool
    address: int
    mask: int

    def apply(self, register: int) -> int:
        return (register | self.mask) if self.value else (register & ~self.mask & 0xFFFF)


Write = Encoded | BitWrite


def write_function(point: PointConfig, *, multiple: bool = False) -> int:
    """The function code writing ``point``: 5/15 for coils, 6/16 for holding registers."""
    if point.table == "coil":
        return 15 if multiple else 5
    if point.table != "holding":
        raise Unwritable(f"a {point.table} point cannot be written")
    return 16 if multiple or point.register_count > 1 or point.type == "string" else 6


def is_float(point: PointConfig) -> bool:
    return point.type in FLOAT_LIMITS and point.table not in BIT_TABLES


def is_numeric(point: PointConfig) -> bool:
    return point.type not in ("bool", "string")


def unwritable_type(point: PointConfig) -> str | None:
    """Why a point of this type can never be written (None: it can)."""
    if point.type in HALF_REGISTER_TYPES:
        return (f"type {point.type} is one byte of a register: Modbus writes whole "
                f"registers, and the other byte is another value")
    return None


def encodable_range(point: PointConfig) -> tuple[float, float] | None:
    """The smallest and largest engineering value ``point`` can hold (None: bool, string)."""
    if not is_numeric(point):
        return None
    if point.table in BIT_TABLES:
        lo, hi = 0.0, 1.0
    elif point.type in INTEGER_RANGES:
        lo, hi = (float(x) for x in INTEGER_RANGES[point.type])
    else:
        hi = FLOAT_LIMITS[point.type]
        lo = -hi
    a, b = lo * point.scale + point.offset, hi * point.scale + point.offset
    return (min(a, b), max(a, b))


def coerce(point: PointConfig, value: object) -> Value:
    """A command's JSON value as the point's kind of value, or `Unwritable` saying why."""
    if point.type == "string":
        if not isinstance(value, str):
            raise Unwritable(f"expected a string, got {_kind(value)}")
        return value
    if point.type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise Unwritable(f"expected true or false, got {_kind(value)}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unwritable(f"expected a number, got {_kind(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise Unwritable(f"{value} is not a finite number")
    return value


def encode(point: PointConfig, value: object) -> Write:
    """What to write for ``value`` on ``point``; `Unwritable` when it cannot be written
    exactly. Checks the kind of value and the round trip; not min/max/allowed (see
    `gateway.core.command`)."""
    if point.table not in WRITABLE_TABLES or point.address is None:
        raise Unwritable(f"a {point.table or 'serial-line'} point cannot be written")
    why = unwritable_type(point)
    if why is not None:
        raise Unwritable(why)
    typed = coerce(point, value)
    address = point.address
    if point.table == "coil":
        if point.type == "bool":
            return Encoded(typed, address, bits=(bool(typed),))
        assert not isinstance(typed, str)
        raw_bit = _integer_raw(point, typed, (0, 1))
        encoded: Write = Encoded(typed, address, bits=(raw_bit == 1,))
        return _proved(point, encoded, typed, [raw_bit == 1])
    if point.bit is not None:
        return BitWrite(bool(typed), address, 1 << point.bit)
    if point.type == "bool":
        return Encoded(typed, address, registers=(1 if typed else 0,))
    if point.type == "string":
        text = str(typed)
        try:
            text.encode("ascii")
        except UnicodeEncodeError:
            raise Unwritable("not ASCII: a string point holds ASCII only") from None
        room = 2 * (point.length or 1)
        if len(text) > room:
            raise Unwritable(f"{len(text)} characters do not fit in {room}")
        if "\x00" in text:
            raise Unwritable("a NUL character does not survive the round trip")
        registers = encode_registers(point, text)
        return _proved(point, Encoded(text, address, registers=tuple(registers)), text,
                       registers)
    if point.scale == 0:
        raise Unwritable("scale 0 cannot be inverted")
    assert not isinstance(typed, str)
    number = float(typed)
    raw: int | float
    if point.type in INTEGER_RANGES:
        raw = _integer_raw(point, typed, INTEGER_RANGES[point.type])
    else:
        raw = (number - point.offset) / point.scale if (point.scale, point.offset) != (1, 0) \
            else number
        limit = FLOAT_LIMITS[point.type]
        if not math.isfinite(raw) or abs(raw) > limit:
            raise Unwritable(f"{_show(typed)} is out of range of {point.type}")
    try:
        registers = encode_registers(point, raw)
    except (struct.error, OverflowError):
        raise Unwritable(f"{_show(typed)} is out of range of {point.type}") from None
    return _proved(point, Encoded(typed, address, registers=tuple(registers)), typed,
                   registers)


def _integer_raw(point: PointConfig, number: float | int, limits: tuple[int, int]) -> int:
    """The raw integer that reads back as ``number``; the nearest one when none does (the
    round trip then refuses it), or `Unwritable` when it is outside the type's range."""
    scale, offset = integral(point.scale), integral(point.offset)
    whole = integral(number)
    if scale and offset is not None and whole is not None:
        # whole scale and offset: the decoder reads exact integers (64 bits included), so
        # the inverse is exact integer arithmetic too, never a float's 53 bits
        raw, rest = divmod(whole - offset, scale)
        if rest:
            raw = round((whole - offset) / scale)  # not a value the point can read
    else:
        exact = (number - point.offset) / point.scale
        if not math.isfinite(exact):
            raise Unwritable(f"{_show(number)} is out of range of {point.type}")
        raw = round(exact)
        if point.precision is not None or not (limits[0] <= raw <= limits[1]):
            # A half-way value (x.x5 rounded to one decimal), a precision coarser than the
            # scale, the edge of a 64-bit range: a neighbour may be the one that reads back
            # as ``number``.
            floor = math.floor(exact)
            for candidate in dict.fromkeys((raw, floor, floor + 1)):
                edge = min(max(candidate, limits[0]), limits[1])
                if _reads_back(point, edge, number):
                    return edge
    if not limits[0] <= raw <= limits[1]:
        lo, hi = encodable_range(point) or (limits[0], limits[1])
        if lo <= number <= hi:  # a float at the edge of a 64-bit range: the nearest raw
            return min(max(raw, limits[0]), limits[1])
        raise Unwritable(f"{_show(number)} is out of range {_show(lo)}..{_show(hi)} that "
                         f"{point.type} with scale {point.scale:g} and offset "
                         f"{point.offset:g} can hold")
    return raw


def _reads_back(point: PointConfig, raw: int, number: float | int) -> bool:
    wire: list[int] | list[bool] = (
        [raw == 1] if point.table in BIT_TABLES else encode_registers(point, raw))
    back, quality = build_decoder(point)(wire)
    return quality == "good" and back is not None and survives(point, number, back)


def _proved(point: PointConfig, encoded: Write, wanted: Value,
            wire: list[int] | list[bool]) -> Write:
    """``encoded`` if the point's decoder gives ``wanted`` back from ``wire``."""
    back, quality = build_decoder(point)(wire)
    if quality != "good" or back is None:
        raise Unwritable(f"{_show(wanted)} would read back as {quality}")
    if not survives(point, wanted, back):
        raise Unwritable(f"{_show(wanted)} cannot be written exactly: it would read back as "
                         f"{_show(back)}")
    if isinstance(encoded, Encoded) and back != encoded.value:
        return Encoded(back, encoded.address, encoded.registers, encoded.bits)
    return encoded


def survives(point: PointConfig, wanted: Value, back: Value) -> bool:
    """Whether ``back`` (decoded) is ``wanted`` within the point's precision."""
    if isinstance(wanted, str) or isinstance(back, str):
        return wanted == back
    if isinstance(wanted, bool) or isinstance(back, bool):
        return bool(wanted) == bool(back) and not isinstance(wanted, float)
    if isinstance(wanted, int) and isinstance(back, int):
        return wanted == back
    a, b = float(wanted), float(back)
    tolerance = 1e-9 * max(1.0, abs(a))  # float noise of scale and offset
    if is_float(point):
        # the float type's own precision, on the raw value, scaled
        raw = abs((a - point.offset) / point.scale) if point.scale else abs(a)
        tolerance = max(tolerance, FLOAT_EPSILON[point.type] * raw * abs(point.scale) * 2)
        places = rounding(point)
        if places is not None:
            tolerance = max(tolerance, 0.5 * 10.0 ** -places) if abs(
                a - round(a, places)) <= 1e-9 * max(1.0, abs(a)) else tolerance
    return abs(a - b) <= tolerance


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, int | float):
        return _show(value)
    return type(value).__name__ if not isinstance(value, list | dict) else (
        "a list" if isinstance(value, list) else "an object")


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.15g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10 ** 30:
        return f"{value:.3e}"
    return str(value)
