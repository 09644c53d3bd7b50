"""The encoder is the exact inverse of the decoder, for every type and byte order."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.decode import build_decoder, encode_registers
from gateway.core.encode import (
    INTEGER_RANGES,
    BitWrite,
    Encoded,
    Unwritable,
    encodable_range,
    encode,
    survives,
    write_function,
)
from gateway.core.model import BYTE_ORDERS, PointConfig

NUMERIC = ("int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64")
SCALES = (1.0, 0.1, 0.01, 10.0, -0.5, 0.25)
OFFSETS = (0.0, -40.0, 273.15, 1.5)


def point(dtype: str, order: str = "ABCD", scale: float = 1.0, offset: float = 0.0,
          **kw: object) -> PointConfig:
    return PointConfig("p", dtype, "holding", 10, byte_order=order,  # type: ignore[arg-type]
                       scale=scale, offset=offset, **kw)  # type: ignore[arg-type]


def raw_values(dtype: str) -> st.SearchStrategy[int | float]:
    if dtype in INTEGER_RANGES:
        lo, hi = INTEGER_RANGES[dtype]
        return st.integers(lo, hi)
    width = 32 if dtype == "float32" else 64
    return st.floats(allow_nan=False, allow_infinity=False, width=width)


@st.composite
def decoded_values(draw: st.DrawFn) -> tuple[PointConfig, int | float]:
    """A point of any type, byte order, scale, offset, and a value it can read."""
    dtype = draw(st.sampled_from(NUMERIC))
    order = draw(st.sampled_from(BYTE_ORDERS))
    scale = draw(st.sampled_from(SCALES))
    offset = draw(st.sampled_from(OFFSETS))
    precision = draw(st.sampled_from((None, None, 0, 1, 2, 4)))
    p = point(dtype, order, scale, offset, precision=precision)
    raw = draw(raw_values(dtype))
    value, quality = build_decoder(p)(encode_registers(p, raw))
    if quality != "good":  # scaled past the float range
        return p, 0
    assert isinstance(value, int | float)
    return p, value


@settings(max_examples=600, deadline=None)
@given(decoded_values())
def test_every_value_a_point_reads_is_written_back_to_the_same_value(
        case: tuple[PointConfig, int | float]) -> None:
    p, value = case
    written = encode(p, value)
    assert isinstance(written, Encoded)
    back, quality = build_decoder(p)(list(written.registers))
    assert quality == "good"
    assert survives(p, value, back)  # type: ignore[arg-type]
    assert written.value == back


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(NUMERIC), st.sampled_from(BYTE_ORDERS), st.sampled_from(SCALES),
       st.sampled_from(OFFSETS), st.sampled_from((None, 0, 1, 3)),
       st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                 st.integers(-(1 << 70), 1 << 70),
                 st.decimals(-100000, 100000, places=2).map(float)))
def test_any_value_is_written_exactly_or_refused(dtype: str, order: str, scale: float,
                                                offset: float, precision: int | None,
                                                value: float) -> None:
    p = point(dtype, order, scale, offset, precision=precision)
    try:
        written = encode(p, value)
    except Unwritable as exc:
        assert str(exc)  # a reason, always
        return
    assert isinstance(written, Encoded)
    assert len(written.registers) == p.register_count
    assert all(0 <= r <= 0xFFFF for r in written.registers)
    back, quality = build_decoder(p)(list(written.registers))
    assert quality == "good"
    assert survives(p, value, back)  # type: ignore[arg-type]
    lo, hi = encodable_range(p) or (0, 0)
    assert lo - 1e-6 * max(1, abs(lo)) <= float(value) <= hi + 1e-6 * max(1, abs(hi))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(BYTE_ORDERS), st.integers(1, 8),
       st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=16))
def test_strings_round_trip_in_every_byte_order(order: str, length: int, text: str) -> None:
    p = point("string", order, length=length)
    if len(text) > 2 * length:
        with pytest.raises(Unwritable, match="do not fit"):
            encode(p, text)
        return
    written = encode(p, text)
    assert isinstance(written, Encoded)
    assert build_decoder(p)(list(written.registers)) == (text, "good")


@pytest.mark.parametrize(("dtype", "value", "reason"), [
    ("uint16", 70000, "out of range 0..65535"),
    ("int16", -40000, "out of range"),
    ("uint16", -1, "out of range"),
    ("uint16", 1.5, "cannot be written exactly"),
    ("uint16", float("nan"), "not a finite number"),
    ("float32", float("inf"), "not a finite number"),
    ("float32", 1e39, "out of range of float32"),
    ("uint16", "40", "expected a number, got the string '40'"),
    ("uint16", True, "expected a number, got true"),
    ("uint16", None, "expected a number, got null"),
    ("uint16", [1], "expected a number, got a list"),
    ("bool", 2, "expected true or false"),
    ("bool", "on", "expected true or false"),
])
def test_refusals_say_why(dtype: str, value: object, reason: str) -> None:
    with pytest.raises(Unwritable, match=reason):
        encode(point(dtype), value)


def test_a_scaled_value_between_two_steps_is_refused_not_rounded() -> None:
    p = point("int16", scale=0.1)
    assert encode(p, 47.4) == Encoded(47.4, 10, registers=(474,))
    with pytest.raises(Unwritable, match=r"would read back as 47\.4"):
        encode(p, 47.43)


def test_float32_keeps_seven_digits() -> None:
    written = encode(point("float32", "CDAB"), 0.1)
    assert isinstance(written, Encoded)
    assert math.isclose(float(written.value), 0.1, rel_tol=1e-7)
    near = encode(point("float32"), 16777217)  # 2**24 + 1 is no float32: the nearest is
    assert isinstance(near, Encoded) and near.value == 16777216.0  # within its precision
    with pytest.raises(Unwritable, match="cannot be written exactly"):
        encode(point("float32", precision=2), 0.123)  # rounded to 2 decimals: 0.12


def test_bits_and_coils() -> None:
    bit = point("bool", bit=3)
    written = encode(bit, True)
    assert written == BitWrite(True, 10, 8)
    assert written.apply(0b0001) == 0b1001
    assert encode(bit, False).apply(0xFFFF) == 0xFFF7  # type: ignore[union-attr]
    coil = PointConfig("c", "bool", "coil", 5)
    assert encode(coil, True) == Encoded(True, 5, bits=(True,))
    assert encode(point("bool"), 1) == Encoded(True, 10, registers=(1,))


def test_strings_that_would_not_read_back_are_refused() -> None:
    p = point("string", length=2)
    for text, reason in (("WXT ", "read back as WXT"), ("é", "not ASCII"),
                         ("a\x00b", "NUL"), ("ABCDE", "do not fit")):
        with pytest.raises(Unwritable, match=reason):
            encode(p, text)


def test_input_registers_and_discretes_are_never_written() -> None:
    for table in ("input", "discrete"):
        with pytest.raises(Unwritable, match=f"a {table} point cannot be written"):
            encode(PointConfig("p", "uint16" if table == "input" else "bool",
                               table, 0), 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(("table", "dtype", "multiple", "fc"), [
    ("coil", "bool", False, 5), ("coil", "bool", True, 15),
    ("holding", "uint16", False, 6), ("holding", "uint16", True, 16),
    ("holding", "float32", False, 16), ("holding", "bool", False, 6),
])
def test_function_codes_by_table_and_width(table: str, dtype: str, multiple: bool,
                                           fc: int) -> None:
    p = PointConfig("p", dtype, table, 0)  # type: ignore[arg-type]
    assert write_function(p, multiple=multiple) == fc


def test_encodable_range_follows_type_scale_and_offset() -> None:
    assert encodable_range(point("uint16", scale=0.1, offset=-40)) == pytest.approx(
        (-40.0, 6513.5))
    assert encodable_range(point("int16", scale=-0.5)) == (-16383.5, 16384.0)
    assert encodable_range(point("bool")) is None


def test_64_bit_values_with_whole_scale_and_offset_are_encoded_exactly() -> None:
    # found by hypothesis: the decoder reads these exactly (int arithmetic), so the encoder
    # must not go through a float's 53 bits
    point = PointConfig("p", "int64", "holding", 10, scale=1.0, offset=-40.0)
    for value in (-9007199254740993, 2**62 + 1, -(2**63)):
        write = encode(point, value)
        back, quality = build_decoder(point)(write.registers)
        assert (back, quality) == (value, "good")


@pytest.mark.parametrize("value", [1.5, 21.5, -0.25, 65504.0])
def test_float16_is_written_and_reads_back(value: float) -> None:
    p = point("float16")
    write = encode(p, value)
    assert isinstance(write, Encoded)
    assert build_decoder(p)(list(write.registers)) == (value, "good")
    assert encodable_range(p) == (-65504.0, 65504.0)
    with pytest.raises(Unwritable, match="out of range of float16"):
        encode(p, 70000)


@pytest.mark.parametrize("dtype", ["int8_high", "int8_low", "uint8_high", "uint8_low"])
def test_one_byte_of_a_register_is_never_written(dtype: str) -> None:
    with pytest.raises(Unwritable, match="one byte of a register"):
        encode(point(dtype), 5)
