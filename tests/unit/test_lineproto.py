"""Line protocol: exact escaping, refusals, parsing, and a hostile round trip."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.lineproto import (
    RESERVED_KEYS,
    BadName,
    BadText,
    escape_field_key,
    escape_measurement,
    escape_tag,
    escape_tag_key,
    format_field_value,
    format_line,
    parse_line,
    parse_lines,
)
from gateway.core.model import Value


@pytest.mark.parametrize(
    ("func", "text", "expected"),
    [
        pytest.param(escape_measurement, "road weather", "road\\ weather", id="measurement space"),
        pytest.param(escape_measurement, "a,b=c", "a\\,b=c", id="measurement keeps equals"),
        pytest.param(escape_measurement, 'q"uote', 'q"uote', id="measurement keeps quote"),
        pytest.param(escape_tag, "a b,c=d", "a\\ b\\,c\\=d", id="tag all three"),
        pytest.param(escape_tag, "C:\\data", "C:\\data", id="tag literal backslash"),
        pytest.param(escape_tag, "", "", id="tag empty"),
        pytest.param(escape_tag, "東京 1", "東京\\ 1", id="tag unicode"),
        pytest.param(escape_field_key, "a=b c", "a\\=b\\ c", id="field key"),
    ],
)
def test_escape(func: object, text: str, expected: str) -> None:
    assert func(text) == expected  # type: ignore[operator]


@pytest.mark.parametrize(
    ("func", "text", "message"),
    [
        pytest.param(escape_tag, "a\nb", "tag 'a\\nb' contains a control character",
                     id="newline in tag"),
        pytest.param(escape_tag, "a\tb", "tag 'a\\tb' contains a control character",
                     id="tab in tag"),
        pytest.param(escape_tag, "a\\", "tag 'a\\\\' has a backslash line protocol cannot carry",
                     id="trailing backslash"),
        pytest.param(escape_tag, "a\\,b",
                     "tag 'a\\\\,b' has a backslash line protocol cannot carry",
                     id="backslash before comma"),
        pytest.param(escape_tag, "a\\\\b",
                     "tag 'a\\\\\\\\b' has a backslash line protocol cannot carry",
                     id="double backslash"),
        pytest.param(escape_measurement, "", "measurement must not be empty",
                     id="empty measurement"),
        pytest.param(escape_measurement, "#x", "measurement '#x' must not start with '#'",
                     id="comment measurement"),
        pytest.param(escape_measurement, "m\r", "measurement 'm\\r' contains a control character",
                     id="carriage return measurement"),
        pytest.param(escape_field_key, "", "field key must not be empty", id="empty field key"),
    ],
)
def test_escape_refused(func: object, text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        func(text)  # type: ignore[operator]
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(1.5, "1.5", id="float"),
        pytest.param(-12.3, "-12.3", id="negative float"),
        pytest.param(3.0, "3.0", id="integral float stays float"),
        pytest.param(0.1 + 0.2, "0.30000000000000004", id="float round-trips"),
        pytest.param(1e300, "1e+300", id="float exponent"),
        pytest.param(12, "12i", id="int"),
        pytest.param(-(2**63), "-9223372036854775808i", id="int64 min"),
        pytest.param(2**63 - 1, "9223372036854775807i", id="int64 max"),
        pytest.param(2**63, "9223372036854775808u", id="uint64 beyond int64"),
        pytest.param(2**64 - 1, "18446744073709551615u", id="uint64 max"),
        pytest.param(True, "true", id="true"),
        pytest.param(False, "false", id="false"),
        pytest.param("ok", '"ok"', id="string"),
        pytest.param('say "hi" \\o/', '"say \\"hi\\" \\\\o/"', id="string quote backslash"),
        pytest.param("a\nb\rc", '"a\\nb\\rc"', id="string newline"),
        pytest.param("a,b c=d", '"a,b c=d"', id="string keeps delimiters"),
    ],
)
def test_format_field_value(value: Value, expected: str) -> None:
    assert format_field_value(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(math.nan, "float nan is not finite", id="nan"),
        pytest.param(math.inf, "float inf is not finite", id="inf"),
        pytest.param(-math.inf, "float -inf is not finite", id="minus inf"),
        pytest.param(2**64, "integer 18446744073709551616 does not fit in int64 or uint64",
                     id="beyond uint64"),
        pytest.param(-(2**63) - 1,
                     "integer -9223372036854775809 does not fit in int64 or uint64",
                     id="below int64"),
        pytest.param(b"x", "unsupported field value type bytes", id="bytes"),
    ],
)
def test_format_field_value_refused(value: Value, message: str) -> None:
    with pytest.raises(ValueError) as info:
        format_field_value(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ("road_weather", {"lane": "north", "district": "xinwu"},
             {"air_temp": -12.3, "ok": True}, 1764000000123456789),
            "road_weather,district=xinwu,lane=north air_temp=-12.3,ok=true 1764000000123456789",
            id="tags sorted",
        ),
        pytest.param(
            ("m", {}, {"v": 1}, 0), "m v=1i 0", id="no tags",
        ),
        pytest.param(
            ("m", {"empty": "", "a": "x"}, {"v": 1}, 5), "m,a=x v=1i 5",
            id="empty tag value omitted",
        ),
        pytest.param(
            ("m m", {"k,1": "v=1 x"}, {"f f": "s\"s"}, -1),
            'm\\ m,k\\,1=v\\=1\\ x f\\ f="s\\"s" -1', id="escaped everywhere",
        ),
    ],
)
def test_format_line(args: tuple[str, dict[str, str], dict[str, Value], int],
                     expected: str) -> None:
    assert format_line(*args) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("m", {}, {}, 0), "point of measurement 'm' has no fields", id="no fields"),
        pytest.param(("m", {"": "x"}, {"v": 1}, 0), "tag key must not be empty",
                     id="empty tag key"),
        pytest.param(("m", {"k": "a\nb"}, {"v": 1}, 0),
                     "tag value 'a\\nb' contains a control character",
                     id="newline injection in tag value"),
        pytest.param(("m", {}, {"v": math.nan}, 0), "float nan is not finite", id="nan field"),
        pytest.param(("m", {}, {"v": 1}, 1.5), "timestamp 1.5 is not an integer",
                     id="float timestamp"),
    ],
)
def test_format_line_refused(args: tuple[str, dict[str, str], dict[str, Value], int],
                             message: str) -> None:
    with pytest.raises(ValueError) as info:
        format_line(*args)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        pytest.param(("m", {}, {"s": "a\ud800"}, 1), BadText,
                     "string 'a\\ud800' is not valid unicode (surrogates not allowed at "
                     "character 1)", id="lone surrogate in a string"),
        pytest.param(("m", {}, {"\udc00": 1}, 1), BadText,
                     "field key '\\udc00' is not valid unicode (surrogates not allowed at "
                     "character 0)", id="lone surrogate in a field key"),
        pytest.param(("m", {"t": "\ud83d"}, {"v": 1}, 1), BadText,
                     "tag value '\\ud83d' is not valid unicode (surrogates not allowed at "
                     "character 0)", id="lone surrogate in a tag value"),
        pytest.param(("m\udfff", {}, {"v": 1}, 1), BadText,
                     "measurement 'm\\udfff' is not valid unicode (surrogates not allowed at "
                     "character 1)", id="lone surrogate in a measurement"),
        pytest.param(("m", {}, {"v": 1, "time": 2}, 1), BadName,
                     "field key 'time' is reserved: InfluxDB would drop it", id="field time"),
        pytest.param(("m", {"time": "noon"}, {"v": 1}, 1), BadName,
                     "tag key 'time' is reserved: InfluxDB would drop it", id="tag time"),
    ],
)
def test_format_line_refused_by_kind(args: tuple[str, dict[str, str], dict[str, Value], int],
                                     error: type[ValueError], message: str) -> None:
    with pytest.raises(error) as info:
        format_line(*args)
    assert str(info.value) == message


@pytest.mark.parametrize("text", ["Time", "times", "_time", "東京 😀"])
def test_keys_near_the_refusals_are_kept(text: str) -> None:
    assert escape_tag_key(text) == escape_field_key(text) == text.replace(" ", "\\ ")
    assert format_field_value(text) == f'"{text}"'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param("m,a=1 v=1i 10", ("m", {"a": "1"}, {"v": 1}, 10), id="int"),
        pytest.param("m v=1.5", ("m", {}, {"v": 1.5}, None), id="no timestamp"),
        pytest.param("m v=1", ("m", {}, {"v": 1.0}, None), id="bare number is float"),
        pytest.param("m v=-1.5e-3,w=.5", ("m", {}, {"v": -0.0015, "w": 0.5}, None),
                     id="float forms"),
        pytest.param("m v=12u", ("m", {}, {"v": 12}, None), id="unsigned"),
        pytest.param("m a=t,b=F,c=True,d=FALSE", ("m", {}, {"a": True, "b": False, "c": True,
                                                          "d": False}, None), id="bool forms"),
        pytest.param('m s="a\\"b\\\\c\\nd\\x"', ("m", {}, {"s": 'a"b\\c\nd\\x'}, None),
                     id="string escapes"),
        pytest.param('m s="a,b c=d"', ("m", {}, {"s": "a,b c=d"}, None), id="string delimiters"),
        pytest.param("m\\ x\\,y,t\\=k=v\\ 1 f\\,=2i", ("m x,y", {"t=k": "v 1"}, {"f,": 2}, None),
                     id="escapes in names"),
        pytest.param("C:\\m,k=C:\\d v=1i", ("C:\\m", {"k": "C:\\d"}, {"v": 1}, None),
                     id="literal backslash kept"),
        pytest.param("m v=1i 1\r", ("m", {}, {"v": 1}, 1), id="crlf"),
    ],
)
def test_parse_line(line: str, expected: tuple[object, ...]) -> None:
    assert parse_line(line) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        pytest.param("", "line is empty or a comment", id="empty"),
        pytest.param("# hi", "line is empty or a comment", id="comment"),
        pytest.param("m", "expected ' ' before the field set, found end of line at column 2",
                     id="no fields"),
        pytest.param("m ", "missing field key at column 3", id="empty field set"),
        pytest.param("m v=", "missing value of field 'v' at column 5", id="missing value"),
        pytest.param("m v=abc", "invalid value of field 'v': 'abc'", id="bad value"),
        pytest.param("m v=nan", "invalid value of field 'v': 'nan'", id="nan"),
        pytest.param("m v=1e999", "float value of field 'v' is not finite: '1e999'",
                     id="overflow"),
        pytest.param("m v=9223372036854775808i",
                     "integer value of field 'v' out of int64 range: '9223372036854775808i'",
                     id="int overflow"),
        pytest.param('m s="abc', "unterminated string field value at column 5",
                     id="unterminated"),
        pytest.param("m,a v=1", "expected '=' after tag key 'a', found ' ' at column 4",
                     id="tag without value"),
        pytest.param("m,a= v=1", "missing value of tag 'a' at column 5", id="empty tag value"),
        pytest.param("m,a=1,a=2 v=1", "duplicate tag key 'a'", id="duplicate tag"),
        pytest.param("m v=1,v=2", "duplicate field key 'v'", id="duplicate field"),
        pytest.param("m v=1 12x", "invalid timestamp '12x' at column 7", id="bad timestamp"),
        pytest.param("m v=1  12", "invalid timestamp ' 12' at column 7", id="double space"),
        pytest.param(",a=1 v=1", "missing measurement at column 1", id="no measurement"),
        pytest.param("m v=1\nm v=2", "line contains a newline", id="two lines"),
    ],
)
def test_parse_line_fail(line: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_line(line)
    assert str(info.value) == message


def test_parse_lines() -> None:
    text = "# header\nm v=1i 1\n\r\n  \nn,t=x w=true 2\r\n"
    assert parse_lines(text) == [("m", {}, {"v": 1}, 1), ("n", {"t": "x"}, {"w": True}, 2)]


def test_parse_lines_names_line() -> None:
    with pytest.raises(ValueError) as info:
        parse_lines("m v=1i 1\nm v=")
    assert str(info.value) == "line 2: missing value of field 'v' at column 5"


# --- round trip over hostile strings ----------------------------------------------

HOSTILE = st.text(
    alphabet=st.sampled_from(list(',= "\\\'abcXYZ09_#é東京💧')) | st.characters(
        blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1, max_size=12,
)


def formatable(text: str) -> bool:
    try:
        escape_tag(text)
    except ValueError:
        return False
    return True


names = HOSTILE.filter(formatable)
keys = names.filter(lambda s: s not in RESERVED_KEYS)
measurements = names.filter(lambda s: not s.startswith("#"))
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.text(max_size=20),  # string fields may hold anything, newlines included
)


@settings(max_examples=300, deadline=None)
@given(
    measurement=measurements,
    tags=st.dictionaries(keys, names, max_size=4),
    fields=st.dictionaries(keys, values, min_size=1, max_size=4),
    ts=st.integers(-(2**63), 2**63 - 1),
)
def test_round_trip(measurement: str, tags: dict[str, str], fields: dict[str, Value],
                    ts: int) -> None:
    line = format_line(measurement, tags, fields, ts)
    assert "\n" not in line and "\r" not in line
    assert parse_line(line) == (measurement, tags, fields, ts)
    assert parse_lines(line + "\n" + line) == [(measurement, tags, fields, ts)] * 2


@settings(max_examples=300, deadline=None)
@given(text=HOSTILE)
def test_any_tag_is_refused_or_survives(text: str) -> None:
    """Nothing a payload carries can add tags, fields or points: refused, or read back as is."""
    try:
        line = format_line("m", {"k": text}, {"v": 1}, 0)
    except ValueError:
        return
    assert parse_line(line) == ("m", {"k": text}, {"v": 1}, 0)


def test_a_measurement_starting_with_non_ascii_blank_then_hash_is_no_comment() -> None:
    # found by hypothesis: str.lstrip() also strips U+00A0, InfluxDB only ASCII blanks
    line = format_line("\xa0#", {}, {"v": 1.0}, 5)
    assert parse_lines(line) == [("\xa0#", {}, {"v": 1.0}, 5)]
    assert parse_lines("  # a comment\n\t#another") == []
