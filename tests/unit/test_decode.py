"""Decoding: every data type under every byte order, against layouts built here with struct."""

from __future__ import annotations

import math
import struct
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config.load import load_gateway_config
from gateway.core.decode import (
    apply_scale_factors,
    build_decoder,
    decimals,
    decode_all_orders,
    encode_registers,
    scale_factors,
    written_decimals,
)
from gateway.core.errors import ConfigError
from gateway.core.model import PointConfig

# Where each byte of the big-endian value (index 0 = most significant) sits on the wire.
LAYOUT = {
    2: {"ABCD": [0, 1], "CDAB": [0, 1], "BADC": [1, 0], "DCBA": [1, 0]},
    4: {"ABCD": [0, 1, 2, 3], "DCBA": [3, 2, 1, 0], "BADC": [1, 0, 3, 2], "CDAB": [2, 3, 0, 1]},
    8: {
        "ABCD": [0, 1, 2, 3, 4, 5, 6, 7],
        "DCBA": [7, 6, 5, 4, 3, 2, 1, 0],
        "BADC": [1, 0, 3, 2, 5, 4, 7, 6],
        "CDAB": [6, 7, 4, 5, 2, 3, 0, 1],  # Telegraf: words reversed, not swapped pairwise
    },
}
CODES = {
    "int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f",
    "int64": "q", "uint64": "Q", "float64": "d",
}
SAMPLES = {
    "int16": -12345, "uint16": 54321, "int32": -123456789, "uint32": 3123456789,
    "float32": -12.5, "int64": -1234567890123456789, "uint64": 12345678901234567890,
    "float64": 6.02214076e23,
}


def wire(type_: str, order: str, value: float | int) -> list[int]:
    big = struct.pack(">" + CODES[type_], value)
    data = bytes(big[i] for i in LAYOUT[len(big)][order])
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


CASES = [
    pytest.param(t, o, SAMPLES[t], id=f"{t}-{o}")
    for t in CODES
    for o in ("ABCD", "DCBA", "BADC", "CDAB")
]


@pytest.mark.parametrize(("type_", "order", "value"), CASES)
def test_numeric_types_in_every_byte_order(type_: str, order: str, value: float) -> None:
    point = PointConfig(name="p", type=type_, table="holding", address=0, byte_order=order)
    registers = wire(type_, order, value)
    assert build_decoder(point)(registers) == (value, "good")
    assert encode_registers(point, value) == registers


def test_distinct_layouts_for_the_same_value() -> None:
    words = {o: wire("uint64", o, 0x0102030405060708) for o in ("ABCD", "DCBA", "BADC", "CDAB")}
    assert words == {
        "ABCD": [0x0102, 0x0304, 0x0506, 0x0708],
        "DCBA": [0x0807, 0x0605, 0x0403, 0x0201],
        "BADC": [0x0201, 0x0403, 0x0605, 0x0807],
        "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
    }


@pytest.mark.parametrize(
    ("point", "registers", "expected"),
    [
        pytest.param(PointConfig("t", "int16", "holding", 0, scale=0.1), [0xFF85], (-12.3, "good"),
                     id="int16-scaled"),
        pytest.param(PointConfig("t", "uint16", "holding", 0, offset=-40), [100], (60, "good"),
                     id="uint16-whole-offset-stays-int"),
        pytest.param(PointConfig("t", "uint16", "holding", 0), [100], (100, "good"),
                     id="uint16-stays-int"),
        pytest.param(PointConfig("t", "int32", "holding", 0, scale=2, offset=1), [0, 5],
                     (11, "good"), id="int32-whole-scale-offset-stays-int"),
        pytest.param(PointConfig("t", "float32", "holding", 0), wire("float32", "ABCD", math.nan),
                     (None, "invalid"), id="float32-nan"),
        pytest.param(PointConfig("t", "float32", "holding", 0), wire("float32", "ABCD", math.inf),
                     (None, "invalid"), id="float32-inf"),
        pytest.param(PointConfig("t", "float64", "holding", 0),
                     wire("float64", "ABCD", -math.inf), (None, "invalid"), id="float64-minus-inf"),
        pytest.param(PointConfig("t", "float32", "holding", 0), [1], (None, "bad"),
                     id="too-few-registers"),
        pytest.param(PointConfig("t", "uint16", "holding", 0), [70000], (None, "bad"),
                     id="register-out-of-range"),
        pytest.param(PointConfig("t", "bool", "holding", 0, bit=0), [0b1], (True, "good"),
                     id="bit-0-is-lsb"),
        pytest.param(PointConfig("t", "bool", "holding", 0, bit=15), [0x7FFF], (False, "good"),
                     id="bit-15-clear"),
        pytest.param(PointConfig("t", "bool", "holding", 0, bit=15), [0x8000], (True, "good"),
                     id="bit-15-set"),
        pytest.param(PointConfig("t", "bool", "holding", 0), [2], (True, "good"),
                     id="bool-register-nonzero"),
        pytest.param(PointConfig("t", "bool", "coil", 0), [False], (False, "good"),
                     id="coil-bool"),
        pytest.param(PointConfig("t", "bool", "discrete", 0), [True], (True, "good"),
                     id="discrete-bool"),
        pytest.param(PointConfig("t", "uint16", "coil", 0, scale=5), [True], (5, "good"),
                     id="coil-numeric-scaled"),
        pytest.param(PointConfig("t", "uint16", "coil", 0, scale=0.5), [True], (0.5, "good"),
                     id="coil-numeric-fraction"),
        pytest.param(PointConfig("t", "string", "holding", 0, length=4),
                     [0x4142, 0x4344, 0x4500, 0x0000], ("ABCDE", "good"), id="string-abcd-nul"),
        pytest.param(PointConfig("t", "string", "holding", 0, length=2, byte_order="BADC"),
                     [0x4241, 0x2043], ("ABC", "good"), id="string-badc-space"),
        pytest.param(PointConfig("t", "string", "holding", 0, length=2, byte_order="DCBA"),
                     [0x4241, 0x4443], ("ABCD", "good"), id="string-dcba-bytes-swapped"),
        pytest.param(PointConfig("t", "string", "holding", 0, length=1), [0xC3A9],
                     ("\u00e9", "good"), id="string-utf8-default"),
        pytest.param(PointConfig("t", "string", "holding", 0, length=1), [0xFF41],
                     (None, "invalid"), id="string-undecodable-is-invalid"),
        pytest.param(PointConfig("t", "string", "holding", 0, length=1, encoding="latin-1"),
                     [0xE900], ("\u00e9", "good"), id="string-latin-1"),
        pytest.param(PointConfig("t", "string", "holding", 0, length=1, encoding="ascii"),
                     [0xC3A9], (None, "invalid"), id="string-ascii-refuses-utf8"),
        pytest.param(PointConfig("t", "string", "holding", 0, length=3),
                     [0x2041, 0x4200, 0x5858], ("AB", "good"),
                     id="string-cut-at-first-nul-and-stripped"),
        pytest.param(PointConfig("t", "string", "holding", 0, length=2), [0x4142],
                     (None, "bad"), id="string-short"),
    ],
)
def test_decoder_cases(point: PointConfig, registers: list[int], expected: tuple) -> None:
    value, quality = build_decoder(point)(registers)
    assert quality == expected[1]
    if isinstance(expected[0], float):
        assert value == pytest.approx(expected[0])
        assert isinstance(value, float)
    else:
        assert value == expected[0]
        assert type(value) is type(expected[0])


def _sentinel(type_: str, *values: float, **kw: float) -> PointConfig:
    return PointConfig("t", type_, "input", 0, invalid_values=values, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("point", "registers", "expected"),
    [
        pytest.param(_sentinel("int16", 32767, scale=0.1), [0x7FFF], (None, "invalid"),
                     id="int16-32767-before-scale"),
        pytest.param(_sentinel("int16", 32767, scale=0.1), [0x7FFE], (3276.6, "good"),
                     id="int16-next-to-sentinel-good"),
        pytest.param(_sentinel("int16", 32767, 65535), [0xFFFF], (-1, "good"),
                     id="int16-0xffff-is-minus-1-not-65535"),
        pytest.param(_sentinel("int16", -32768), [0x8000], (None, "invalid"),
                     id="int16-negative-sentinel"),
        pytest.param(_sentinel("uint16", 32767, 65535), [0xFFFF], (None, "invalid"),
                     id="uint16-65535"),
        pytest.param(_sentinel("uint16", 65535, offset=-40), [0xFFFF], (None, "invalid"),
                     id="uint16-before-offset"),
        pytest.param(_sentinel("uint16", 65535, offset=-40), [65495], (65455.0, "good"),
                     id="uint16-scaled-value-equal-to-sentinel-is-good"),
        pytest.param(_sentinel("uint32", 0xFFFFFFFF), [0xFFFF, 0xFFFF], (None, "invalid"),
                     id="uint32"),
        pytest.param(_sentinel("int32", -1, byte_order="CDAB"), [0xFFFF, 0xFFFF],
                     (None, "invalid"), id="int32-word-swapped"),
        pytest.param(_sentinel("float32", -9999.0), wire("float32", "ABCD", -9999.0),
                     (None, "invalid"), id="float32-sentinel"),
        pytest.param(_sentinel("float32", -9999.0), wire("float32", "ABCD", -9998.0),
                     (-9998.0, "good"), id="float32-other-value-good"),
        pytest.param(_sentinel("uint16"), [0xFFFF], (65535, "good"), id="no-sentinels"),
    ],
)
def test_invalid_values(point: PointConfig, registers: list[int], expected: tuple) -> None:
    value, quality = build_decoder(point)(registers)
    assert (quality, value) == (expected[1], pytest.approx(expected[0]) if isinstance(
        expected[0], float) else expected[0])


@pytest.mark.parametrize(
    ("point", "message"),
    [
        pytest.param(PointConfig("x", "int16", "holding", 0, byte_order="AB"),  # type: ignore[arg-type]
                     "unknown byte order 'AB' for point 'x'", id="byte-order"),
        pytest.param(PointConfig("x", "int8", "holding", 0),  # type: ignore[arg-type]
                     "unknown data type 'int8' for point 'x'", id="type"),
        pytest.param(PointConfig("x", "bool", "holding", 0, bit=16),
                     "bit 16 of point 'x' is not in 0..15", id="bit"),
    ],
)
def test_build_decoder_rejects(point: PointConfig, message: str) -> None:
    with pytest.raises(ValueError) as info:
        build_decoder(point)
    assert str(info.value) == message


def test_decode_all_orders() -> None:
    point = PointConfig("f", "float32", "holding", 0, byte_order="ABCD")
    registers = wire("float32", "CDAB", 21.5)
    decoded = decode_all_orders(point, registers)
    assert set(decoded) == {"ABCD", "DCBA", "BADC", "CDAB"}
    assert decoded["CDAB"] == 21.5
    assert decoded["ABCD"] != 21.5


_RANGES = {
    "int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1),
}


@pytest.mark.parametrize("order", ["ABCD", "DCBA", "BADC", "CDAB"])
@pytest.mark.parametrize("type_", sorted(_RANGES))
def test_integer_round_trip(type_: str, order: str) -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    point = PointConfig("p", type_, "holding", 0, byte_order=order)  # type: ignore[arg-type]
    decode = build_decoder(point)

    @given(st.integers(*_RANGES[type_]))
    def check(value: int) -> None:
        registers = wire(type_, order, value)
        assert decode(registers) == (value, "good")

    check()


@pytest.mark.parametrize(
    ("point", "registers", "expected"),
    [
        pytest.param(PointConfig("h", "uint16", "holding", 0, scale=0.1), [474], 47.4,
                     id="47.4, not 47.400000000000006"),
        pytest.param(PointConfig("h", "int16", "holding", 0, scale=0.01, offset=-40), [6747],
                     27.47, id="scale and offset"),
        pytest.param(PointConfig("h", "uint16", "holding", 0, scale=0.1, offset=0.05), [1],
                     0.15, id="offset with more decimals"),
        pytest.param(PointConfig("h", "uint16", "holding", 0, scale=0.001, precision=1), [47449],
                     47.4, id="precision wins"),
        pytest.param(PointConfig("h", "uint16", "coil", 0, scale=0.1), [True], 0.1,
                     id="coil scaled"),
    ],
)
def test_scaled_values_are_rounded(point: PointConfig, registers: list[int],
                                   expected: float) -> None:
    value, quality = build_decoder(point)(registers)
    assert quality == "good"
    assert value == expected  # exactly: no float noise
    assert repr(value) == repr(expected)


def test_float_raw_values_are_not_rounded_without_precision() -> None:
    point = PointConfig("t", "float32", "holding", 0, scale=0.1)
    value, _ = build_decoder(point)(encode_registers(PointConfig("t", "float32", "holding", 0),
                                                     47.4))
    assert value == pytest.approx(4.74, rel=1e-6)
    rounded = PointConfig("t", "float32", "holding", 0, scale=0.1, precision=2)
    assert build_decoder(rounded)(encode_registers(PointConfig("t", "float32", "holding", 0),
                                                   47.4)) == (4.74, "good")


@pytest.mark.parametrize(("number", "places"),
                         [(0.1, 1), (0.05, 2), (1e-05, 5), (10.0, 0), (2.5e3, 0), (-0.25, 2)])
def test_decimals(number: float, places: int) -> None:
    assert decimals(number) == places


def test_precision_from_the_config(tmp_path: Path) -> None:
    """``precision`` in YAML reaches the decoder; a bad one is a positioned error."""
    head = "gateway: {id: site-1}\nmqtt: {host: broker}\ndevices:\n"
    good = tmp_path / "good.yaml"
    good.write_text(head + """  - name: rws-1
    driver: modbus-tcp
    host: 10.0.0.21
    points:
      - {name: h, table: input, address: 0, scale: 0.001, precision: 1}
      - {name: t, table: input, address: 1, scale: 0.1}
""")
    h, t = load_gateway_config(str(good), env={}).devices[0].points
    assert (h.precision, t.precision) == (1, None)
    assert build_decoder(h)([47449]) == (47.4, "good")
    assert build_decoder(t)([474]) == (47.4, "good")
    bad = tmp_path / "bad.yaml"
    bad.write_text(head + """  - name: rws-1
    driver: modbus-tcp
    host: 10.0.0.21
    points:
      - {name: h, table: input, address: 0, precision: -1}
""")
    with pytest.raises(ConfigError) as info:
        load_gateway_config(str(bad), env={})
    [issue] = info.value.issues
    assert "precision" in str(issue) and "bad.yaml:8:" in str(issue)


@given(raw=st.integers(-32768, 32767),
       scale=st.sampled_from([0.1, 0.01, 0.001, 0.5, 0.25, 0.2, 2.5, 10.0]),
       offset=st.sampled_from([0.0, -40.0, 0.5, 273.15, -0.05]))
def test_rounded_value_is_the_exact_decimal_result(raw: int, scale: float,
                                                   offset: float) -> None:
    """For an integer register, the value is the exact decimal raw x scale + offset (as the
    nearest float), never that plus float noise."""
    point = PointConfig("p", "int16", "holding", 0, scale=scale, offset=offset)
    value, quality = build_decoder(point)([raw & 0xFFFF])
    exact = Decimal(raw) * Decimal(repr(scale)) + Decimal(repr(offset))
    assert quality == "good"
    assert value == float(exact)


@pytest.mark.parametrize(("text", "places"),
                         [("47.40", 2), ("1e-05", 5), ("2.5e3", 0), ("10.0", 1), ("-3", 0),
                          ("1.25E-1", 3), ("x", 0)])
def test_written_decimals(text: str, places: int) -> None:
    assert written_decimals(text) == places


def test_points_that_decode_alike_share_one_decoder() -> None:
    """100 devices with one register map hold 20 decoders, not 2,000."""
    a = PointConfig(name="a", type="int16", table="holding", address=0, scale=0.1)
    b = PointConfig(name="b", type="int16", table="input", address=7, scale=0.1)
    assert build_decoder(a) is build_decoder(b)
    other = [PointConfig(name="a", type="int16", table="holding", address=0, scale=0.01),
             PointConfig(name="a", type="uint16", table="holding", address=0, scale=0.1),
             PointConfig(name="a", type="int16", table="holding", address=0, scale=0.1,
                         byte_order="BADC"),
             PointConfig(name="a", type="int16", table="holding", address=0, scale=0.1,
                         invalid_values=(-1,)),
             PointConfig(name="a", type="int16", table="coil", address=0, scale=0.1)]
    decoders = {id(build_decoder(p)) for p in [a, *other]}
    assert len(decoders) == 1 + len(other)
    assert build_decoder(a)([65535]) == (-0.1, "good")
    assert build_decoder(other[3])([65535]) == (None, "invalid")


U64 = (1 << 64) - 1
I64 = (1 << 63) - 1


def _u64(value: int, **kw: float) -> tuple[object, str]:
    point = PointConfig("t", "uint64", "holding", 0, **kw)  # type: ignore[arg-type]
    return build_decoder(point)(wire("uint64", "ABCD", value))


@pytest.mark.parametrize(
    ("raw", "scale", "offset", "expected"),
    [
        pytest.param(U64, 1, 0, (U64, "good"), id="uint64-max-as-is"),
        pytest.param(U64 - 1, 1, 1, (U64, "good"), id="uint64-max-minus-1-plus-1-exact"),
        pytest.param(U64, 1.0, 0.0, (U64, "good"), id="whole-floats-count-as-integers"),
        pytest.param(U64, 1, 1, (None, "invalid"), id="uint64-max-plus-1-past-the-range"),
        pytest.param(U64, 5, 0, (None, "invalid"), id="uint64-max-times-5-past-the-range"),
        pytest.param(I64, 2, 1, (U64, "good"), id="int64-max-times-2-plus-1-exact"),
        pytest.param(3, -5, 0, (-15, "good"), id="negative-scale-stays-int"),
        pytest.param(1 << 62, -2, 0, (-(1 << 63), "good"), id="lowest-int64-is-in-range"),
        pytest.param(1 << 62, -2, -1, (None, "invalid"), id="below-int64-is-invalid"),
    ],
)
def test_whole_scale_and_offset_stay_exact_integers(
    raw: int, scale: float, offset: float, expected: tuple[object, str]
) -> None:
    value, quality = _u64(raw, scale=scale, offset=offset)
    assert (value, quality) == expected
    if quality == "good":
        assert type(value) is int


@pytest.mark.parametrize(
    ("type_", "scale", "offset", "raw", "expected"),
    [
        pytest.param("int16", 10, 0, 6, 60.0, id="whole scale"),
        pytest.param("int16", 1, 0, -6, -6.0, id="unscaled"),
        pytest.param("uint16", 1, -40, 100, 60.0, id="whole offset"),
        pytest.param("uint16", 0.1, 0, 474, 47.4, id="fractional scale as in auto"),
        pytest.param("uint64", 5, 0, U64, float(U64 * 5), id="past the integer range: a float"),
    ],
)
def test_output_float_publishes_a_float(type_: str, scale: float, offset: float, raw: int,
                                        expected: float) -> None:
    """`output: float` keeps a field a float (an InfluxDB field that holds floats refuses
    integers): the same arithmetic, the result a float."""
    point = PointConfig("t", type_, "holding", 0, scale=scale, offset=offset,  # type: ignore[arg-type]
                        output="float")
    value, quality = build_decoder(point)(wire(type_, "ABCD", raw))
    assert quality == "good"
    assert type(value) is float and value == expected
    auto = PointConfig("t", type_, "holding", 0, scale=scale, offset=offset)  # type: ignore[arg-type]
    assert build_decoder(auto) is not build_decoder(point)


def test_fractional_scale_of_a_64_bit_raw_is_correctly_rounded() -> None:
    # 18446744073709551615 * 0.1 = 1844674407370955161.5 exactly; a float product is off
    value, quality = _u64(U64, scale=0.1)
    assert quality == "good"
    assert value == float(Decimal(U64) * Decimal("0.1"))
    value, _ = _u64(12345678901234567891, scale=0.001, offset=0.5)
    assert value == float(Decimal("12345678901234567.891") + Decimal("0.5"))


@given(st.integers(0, U64), st.integers(-1000, 1000), st.integers(-(1 << 64), 1 << 64))
def test_integer_arithmetic_is_exact(raw: int, scale: int, offset: int) -> None:
    value, quality = _u64(raw, scale=scale, offset=offset)
    exact = raw * scale + offset
    if -(1 << 63) <= exact <= U64:
        assert (value, quality) == (exact, "good")
    else:
        assert (value, quality) == (None, "invalid")


@given(st.binary(min_size=0, max_size=8).map(lambda b: b.ljust(8, b"\x00")))
def test_strings_never_bad_and_invalid_only_when_undecodable(data: bytes) -> None:
    point = PointConfig("t", "string", "holding", 0, length=4)
    registers = [int.from_bytes(data[i : i + 2], "big") for i in range(0, 8, 2)]
    value, quality = build_decoder(point)(registers)
    head = data.split(b"\x00", 1)[0]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        assert (value, quality) == (None, "invalid")
    else:
        assert (value, quality) == (text.strip(" \x00"), "good")


# 64-bit word orders: where each big-endian byte (A=0 .. H=7) sits on the wire
WORD_ORDER_LAYOUTS = {
    "CDABGHEF": [2, 3, 0, 1, 6, 7, 4, 5],
    "EFGHABCD": [4, 5, 6, 7, 0, 1, 2, 3],
    "DCBAHGFE": [3, 2, 1, 0, 7, 6, 5, 4],
    "FEHGBADC": [5, 4, 7, 6, 1, 0, 3, 2],
}


def test_64_bit_word_orders_lay_out_bytes_as_named() -> None:
    for order, layout in WORD_ORDER_LAYOUTS.items():
        point = PointConfig("t", "uint64", "holding", 0, byte_order=order)  # type: ignore[arg-type]
        big = (0x0102030405060708).to_bytes(8, "big")
        data = bytes(big[i] for i in layout)
        registers = [int.from_bytes(data[i : i + 2], "big") for i in range(0, 8, 2)]
        assert registers == encode_registers(point, 0x0102030405060708)
        assert build_decoder(point)(registers) == (0x0102030405060708, "good")
    assert encode_registers(PointConfig("t", "uint64", "holding", 0, byte_order="EFGHABCD"),
                            0x0102030405060708) == [0x0506, 0x0708, 0x0102, 0x0304]


@pytest.mark.parametrize("order", list(WORD_ORDER_LAYOUTS))
@pytest.mark.parametrize("type_", ["int64", "uint64", "float64"])
def test_64_bit_word_orders_round_trip(type_: str, order: str) -> None:
    point = PointConfig("t", type_, "holding", 0, byte_order=order)  # type: ignore[arg-type]
    assert build_decoder(point)(encode_registers(point, SAMPLES[type_])) == (
        SAMPLES[type_], "good")


def test_word_orders_refused_for_narrower_types() -> None:
    with pytest.raises(ValueError, match="64-bit types only"):
        build_decoder(PointConfig("t", "float32", "holding", 0, byte_order="EFGHABCD"))


def test_all_orders_of_a_64_bit_point_include_the_word_orders() -> None:
    point = PointConfig("t", "uint64", "holding", 0)
    orders = decode_all_orders(point, [0x0506, 0x0708, 0x0102, 0x0304])
    assert orders["EFGHABCD"] == 0x0102030405060708
    assert list(decode_all_orders(point, [0, 0, 0, 1], four_only=True)) == [
        "ABCD", "DCBA", "BADC", "CDAB"]


@pytest.mark.parametrize(
    ("type_", "order", "register", "expected"),
    [
        ("uint8_high", "ABCD", 0xFE01, 0xFE),
        ("uint8_low", "ABCD", 0xFE01, 0x01),
        ("int8_high", "ABCD", 0xFE01, -2),
        ("int8_low", "ABCD", 0x01FE, -2),
        ("int8_low", "ABCD", 0x017F, 127),
        ("uint8_high", "BADC", 0xFE01, 0x01),  # bytes swapped first
        ("uint8_low", "DCBA", 0xFE01, 0xFE),
    ],
)
def test_8_bit_types(type_: str, order: str, register: int, expected: int) -> None:
    point = PointConfig("t", type_, "holding", 0, byte_order=order)  # type: ignore[arg-type]
    assert build_decoder(point)([register]) == (expected, "good")
    assert build_decoder(point)(encode_registers(point, expected)) == (expected, "good")


def test_8_bit_scaled_and_invalid() -> None:
    point = PointConfig("t", "int8_low", "holding", 0, scale=0.5, invalid_values=(-128,))
    assert build_decoder(point)([0x00FF]) == (-0.5, "good")
    assert build_decoder(point)([0x0080]) == (None, "invalid")


@pytest.mark.parametrize(
    ("register", "expected"),
    [(0x3C00, 1.0), (0xC000, -2.0), (0x7BFF, 65504.0), (0x3555, 0.333251953125),
     (0x0001, 2.0 ** -24)],
)
def test_float16(register: int, expected: float) -> None:
    point = PointConfig("t", "float16", "holding", 0)
    assert build_decoder(point)([register]) == (expected, "good")
    swapped = PointConfig("t", "float16", "holding", 0, byte_order="BADC")
    assert build_decoder(swapped)([((register & 0xFF) << 8) | (register >> 8)]) == (
        expected, "good")


def test_float16_nan_and_infinity_are_invalid() -> None:
    point = PointConfig("t", "float16", "holding", 0)
    assert build_decoder(point)([0x7C00]) == (None, "invalid")
    assert build_decoder(point)([0x7E00]) == (None, "invalid")


@pytest.mark.parametrize(
    ("values", "quality", "expected_values", "expected_quality"),
    [
        pytest.param({"w": 2301, "w_sf": -1}, {}, {"w": 230.1, "w_sf": -1}, {},
                     id="negative power: exact decimal, a float"),
        pytest.param({"w": 23, "w_sf": 2}, {}, {"w": 2300.0, "w_sf": 2}, {},
                     id="positive power: still a float (the field keeps its type)"),
        pytest.param({"w": 5, "w_sf": 0}, {}, {"w": 5.0, "w_sf": 0}, {}, id="zero power"),
        pytest.param({"w": 2301}, {"w_sf": "invalid"}, {}, {"w": "invalid", "w_sf": "invalid"},
                     id="factor not implemented (a sentinel): the point is invalid too"),
        pytest.param({"w": 2301}, {"w_sf": "bad"}, {}, {"w": "bad", "w_sf": "bad"},
                     id="factor not read: bad"),
        pytest.param({"w": 2301, "w_sf": 11}, {}, {"w_sf": 11}, {"w": "invalid"},
                     id="factor out of -10..10"),
        pytest.param({"w_sf": -1}, {"w": "bad"}, {"w_sf": -1}, {"w": "bad"},
                     id="point itself bad: unchanged"),
        pytest.param({"w": 12.5, "w_sf": -2}, {}, {"w": 0.125, "w_sf": -2}, {},
                     id="a scaled value scaled again"),
    ],
)
def test_apply_scale_factors(values: dict[str, object], quality: dict[str, str],
                             expected_values: dict[str, object],
                             expected_quality: dict[str, str]) -> None:
    factors = scale_factors([PointConfig("w", "int16", "holding", 0, scale_factor="w_sf"),
                             PointConfig("w_sf", "int16", "holding", 1)])
    got_values = dict(values)
    got_quality = dict(quality)
    apply_scale_factors(got_values, got_quality, factors)  # type: ignore[arg-type]
    assert got_values == expected_values
    assert got_quality == expected_quality
    for name, value in expected_values.items():
        assert type(got_values[name]) is type(value)


def test_scale_factor_precision_and_64_bit_exactness() -> None:
    factors = scale_factors([
        PointConfig("e", "uint64", "holding", 0, scale_factor="sf", precision=1),
        PointConfig("big", "uint64", "holding", 4, scale_factor="sf"),
        PointConfig("sf", "int16", "holding", 8)])
    values: dict[str, object] = {"e": 123456, "big": U64, "sf": -3}
    apply_scale_factors(values, {}, factors)  # type: ignore[arg-type]
    assert values["e"] == 123.5
    assert values["big"] == float(Decimal(U64).scaleb(-3))
