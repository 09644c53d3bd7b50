"""Serial-line text: line splitting (CR, LF, CRLF, the line limit) and value conversion."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.model import PointConfig
from gateway.core.textline import MAX_LINE, LineSplitter, build_converter, decode_line


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        pytest.param([b"a\nb\n"], [b"a", b"b"], id="LF"),
        pytest.param([b"a\rb\r"], [b"a", b"b"], id="CR-only: two records, not one"),
        pytest.param([b"a\r\nb\r\n"], [b"a", b"b"], id="CRLF"),
        pytest.param([b"a\r", b"\nb\r\n"], [b"a", b"b"], id="CRLF split across reads"),
        pytest.param([b"a\r\n\r\n\nb\n"], [b"a", b"b"], id="empty lines skipped"),
        pytest.param([b"ab", b"c", b"d\n"], [b"abcd"], id="a line over several reads"),
        pytest.param([b"abc"], [], id="no separator yet: nothing"),
        pytest.param([b"x" * MAX_LINE + b"\n"], [b"x" * MAX_LINE], id="exactly the limit"),
        pytest.param([b"x" * (MAX_LINE + 1) + b"\nok\n"], [None, b"ok"],
                     id="one byte over: dropped, the next line is read"),
        pytest.param([b"x" * 3000, b"x" * 3000, b"x" * 3000, b"\nok\n"], [None, b"ok"],
                     id="over-long across reads: one noise, skipped to the separator"),
    ],
)
def test_splitter(chunks: list[bytes], lines: list[bytes | None]) -> None:
    splitter = LineSplitter()
    got: list[bytes | None] = []
    for chunk in chunks:
        got += splitter.feed(chunk)
    assert got == lines


def test_five_mib_line_is_one_noise_and_holds_at_most_the_limit() -> None:
    splitter = LineSplitter()
    got: list[bytes | None] = []
    chunk = b"PM25=1,PM10=2,N=3" * 241  # ~4 KiB per read, like a serial driver's reads
    sent = 0
    while sent < 5 * 1024 * 1024:
        got += splitter.feed(chunk)
        sent += len(chunk)
        assert splitter.pending <= MAX_LINE
    got += splitter.feed(b"\nPM25=1,PM10=2,N=3\n")
    assert got == [None, b"PM25=1,PM10=2,N=3"]


def test_clear_forgets_a_partial_line() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"stale par") == []
    splitter.clear()
    assert splitter.feed(b"fresh\n") == [b"fresh"]


@given(st.lists(st.binary(max_size=50), max_size=20))
def test_splitter_lines_never_hold_separators(chunks: list[bytes]) -> None:
    splitter = LineSplitter(limit=64)
    for chunk in chunks:
        for line in splitter.feed(chunk):
            assert line is None or (line and b"\r" not in line and b"\n" not in line
                                    and len(line) <= 64)


STRING = PointConfig("s", "string")


@pytest.mark.parametrize(
    ("point", "text", "expected"),
    [
        pytest.param(STRING, " WXT530 ", ("WXT530", "good"), id="string stripped"),
        pytest.param(STRING, "a\x00b", (None, "invalid"), id="NUL refused"),
        pytest.param(STRING, "a\x1b[2Jb", (None, "invalid"), id="ESC refused"),
        pytest.param(STRING, "ring\x07", (None, "invalid"), id="BEL refused"),
        pytest.param(STRING, "a\x7fb", (None, "invalid"), id="DEL refused"),
        pytest.param(STRING, decode_line(b"caf\xe9"), (None, "invalid"), id="not ASCII"),
        pytest.param(PointConfig("b", "bool"), " ON", (True, "good"), id="bool on"),
        pytest.param(PointConfig("b", "bool"), "no", (False, "good"), id="bool no"),
        pytest.param(PointConfig("b", "bool"), "maybe", (None, "bad"), id="bool bad"),
        pytest.param(PointConfig("n", "int32"), "42", (42, "good"), id="int"),
        pytest.param(PointConfig("n", "int32"), "4.2", (None, "bad"), id="int with a point"),
        pytest.param(PointConfig("n", "int32", invalid_values=(9999,)), " 9999",
                     (None, "invalid"), id="int sentinel"),
        pytest.param(PointConfig("h", "int32", scale=0.1), "474", (47.4, "good"),
                     id="int scaled: 47.4, not 47.400000000000006"),
        pytest.param(PointConfig("h", "int32", scale=0.1, offset=-40), "474", (7.4, "good"),
                     id="int scale and offset"),
        pytest.param(PointConfig("h", "int32", scale=0.01, precision=1), "4747", (47.5, "good"),
                     id="precision wins"),
        pytest.param(PointConfig("pm", "float64", scale=0.5), "12.35", (6.175, "good"),
                     id="float: decimals of the text plus the scale's"),
        pytest.param(PointConfig("pm", "float64", scale=0.1), "474", (47.4, "good"),
                     id="float text without decimals"),
        pytest.param(PointConfig("pm", "float64"), "47.400000000000006",
                     (47.400000000000006, "good"), id="unscaled float kept as sent"),
        pytest.param(PointConfig("pm", "float64", invalid_values=(-999.0,), scale=0.1),
                     "-999", (None, "invalid"), id="float sentinel before scale"),
        pytest.param(PointConfig("pm", "float64", scale=0.1), "-99.9", (-9.99, "good"),
                     id="float other value"),
        pytest.param(PointConfig("pm", "float64", scale=2), "inf", (None, "invalid"),
                     id="not finite"),
        pytest.param(PointConfig("h", "float16"), "1.5", (1.5, "good"),
                     id="float16 text is a float, not an integer"),
    ],
)
def test_converter(point: PointConfig, text: str, expected: tuple[object, str]) -> None:
    assert build_converter(point)(text) == expected


U64 = (1 << 64) - 1


@pytest.mark.parametrize(
    ("point", "text", "expected"),
    [
        pytest.param(PointConfig("n", "int32", scale=10), "6", (60, "good"),
                     id="whole scale stays an int, as from registers"),
        pytest.param(PointConfig("n", "int32", offset=-40), "100", (60, "good"),
                     id="whole offset stays an int"),
        pytest.param(PointConfig("n", "uint64", offset=1), str(U64 - 1), (U64, "good"),
                     id="exact at 64 bits"),
        pytest.param(PointConfig("n", "uint64", scale=5), str(U64), (None, "invalid"),
                     id="past the integer range: invalid, not a rounded float"),
        pytest.param(PointConfig("n", "int32", scale=10, output="float"), "6", (60.0, "good"),
                     id="output float"),
        pytest.param(PointConfig("n", "int32", output="float"), "6", (6.0, "good"),
                     id="output float unscaled"),
    ],
)
def test_integer_text_scales_as_registers_do(point: PointConfig, text: str,
                                             expected: tuple[object, str]) -> None:
    value, quality = build_converter(point)(text)
    assert (value, quality) == expected
    assert type(value) is type(expected[0])


@given(mantissa=st.integers(-10**6, 10**6), places=st.integers(0, 4),
       scale=st.sampled_from([0.1, 0.5, 0.25, 0.01, 2.0]))
def test_scaled_float_text_is_the_exact_decimal_result(mantissa: int, places: int,
                                                       scale: float) -> None:
    """A number written with N decimals, scaled, is the exact decimal product (as the
    nearest float), never that plus float noise."""
    text = f"{Decimal(mantissa).scaleb(-places):f}"
    value, quality = build_converter(PointConfig("x", "float64", scale=scale))(text)
    assert quality == "good"
    assert value == float(Decimal(text) * Decimal(repr(scale)))
