"""Payload decoding for the bridge: both formats, topic binding, and the hostile corpus."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bridge import ingest
from gateway.bridge.ingest import Rejected, decode_message, topic_source
from gateway.core import lineproto
from tests.support.hostile import hostile_cases, hostile_payload

TOPIC = "sensegate/xinwu-road-017/rws-1/data"

SPEC_PAYLOAD = {
    "gateway": "xinwu-road-017", "device": "rws-1", "measurement": "road_weather",
    "tags": {"district": "xinwu", "lane": "north"},
    "readings": [
        {"ts": 1764000000123456789, "values": {"air_temp": -12.3, "humidity": 65.43},
         "quality": {"wind_speed": "bad"}},
    ],
}


def series_key(measurement: str, tags: dict[str, str]) -> str:
    """The series key as InfluxDB prints it in SHOW SERIES."""
    parts = [lineproto.escape_measurement(measurement)]
    parts += [f"{lineproto.escape_tag(k)}={lineproto.escape_tag(tags[k])}" for k in sorted(tags)]
    return ",".join(parts)


def test_spec_json_payload() -> None:
    lines = decode_message(TOPIC, json.dumps(SPEC_PAYLOAD).encode())
    assert lines == [
        "road_weather,device=rws-1,district=xinwu,gateway=xinwu-road-017,lane=north "
        "air_temp=-12.3,humidity=65.43 1764000000123456789"
    ]


@pytest.mark.parametrize(
    ("values", "fields"),
    [
        pytest.param({"a": 1}, "a=1i", id="int"),
        pytest.param({"a": 1.0}, "a=1.0", id="float"),
        pytest.param({"a": True, "b": False}, "a=true,b=false", id="bool"),
        pytest.param({"a": 'x "y" \\z'}, 'a="x \\"y\\" \\\\z"', id="string"),
        pytest.param({"a b": 2.5}, "a\\ b=2.5", id="field-key-space"),
    ],
)
def test_json_value_types(values: dict[str, Any], fields: str) -> None:
    payload = {"gateway": "g", "device": "d", "readings": [{"ts": 5, "values": values}]}
    assert decode_message("p/g/d/data", json.dumps(payload).encode()) == [
        f"d,device=d,gateway=g {fields} 5"
    ]


def test_json_several_readings_and_empty_scan() -> None:
    payload = {"measurement": "m", "readings": [
        {"ts": 1, "values": {"x": 1.5}},
        {"ts": 2, "values": {}, "quality": {"x": "bad"}},
        {"ts": 3, "values": {"x": 2.5}},
    ]}
    assert decode_message("a/b/g/d/data", json.dumps(payload).encode()) == [
        "m,device=d,gateway=g x=1.5 1",
        "m,device=d,gateway=g x=2.5 3",
    ]


def test_json_without_readings_is_empty() -> None:
    assert decode_message(TOPIC, b'{"readings": []}') == []


def test_line_protocol_payload_gets_topic_tags() -> None:
    payload = (
        b"road_weather,district=xinwu,gateway=xinwu-road-017 air_temp=-12.3,ok=true,n=3i "
        b"1764000000123456789\n"
        b"road_weather,lane=north air_temp=-12.4 1764000000223456789\n"
    )
    assert decode_message(TOPIC, payload) == [
        "road_weather,device=rws-1,district=xinwu,gateway=xinwu-road-017 "
        "air_temp=-12.3,ok=true,n=3i 1764000000123456789",
        "road_weather,device=rws-1,gateway=xinwu-road-017,lane=north "
        "air_temp=-12.4 1764000000223456789",
    ]


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        pytest.param("sensegate/g/d/data", ("g", "d"), id="plain"),
        pytest.param("city/sensegate/g/d/data", ("g", "d"), id="deep-prefix"),
        pytest.param("g/d/data", ("g", "d"), id="no-prefix"),
        pytest.param("sensegate/g/status", None, id="status"),
        pytest.param("sensegate/g/d/other", None, id="not-data"),
        pytest.param("d/data", None, id="short"),
    ],
)
def test_topic_source(topic: str, expected: tuple[str, str] | None) -> None:
    assert topic_source(topic) == expected


def test_rejected_detail_wording() -> None:
    payload = dict(SPEC_PAYLOAD, gateway="other-gw")
    result = decode_message(TOPIC, json.dumps(payload).encode())
    assert result == Rejected(
        "topic_mismatch", "payload gateway 'other-gw' is not the topic's 'xinwu-road-017'"
    )


def test_too_large_is_refused_unread() -> None:
    assert decode_message(TOPIC, b"{" + b" " * 100, max_payload=50) == Rejected(
        "too_large", "payload of 101 bytes exceeds 50"
    )


_DEFAULT_TOPIC, _CASES = hostile_cases()


@pytest.mark.parametrize("case", _CASES, ids=[c["id"] for c in _CASES])
def test_hostile_payload(case: dict[str, Any]) -> None:
    result = decode_message(case.get("topic", _DEFAULT_TOPIC), hostile_payload(case))
    if "reason" in case:
        assert isinstance(result, Rejected), result
        assert result.reason == case["reason"], result.detail
        assert result.detail
        return
    assert isinstance(result, list)
    series = set()
    for line in result:
        measurement, tags, fields, ts = lineproto.parse_line(line)
        assert ts is not None
        assert (tags["gateway"], tags["device"]) == ("gw-1", "dev-1")
        assert sorted(fields) == sorted(case.get("fields", ["x"]))
        series.add(series_key(measurement, tags))
    assert sorted(series) == sorted(case["series"])


@pytest.mark.parametrize("values", [
    {"f": 1.5, "i": -7, "b": True, "s": 'a "q" \\ b', "big": 2**63 - 1, "neg": -(2**63) + 1},
    {"f": 1e300, "tiny": 5e-324, "z": -0.0, "u": 2**63},  # u: uint64, careful path
    {"new key, with=space": 1.0},
])
def test_fast_path_equals_format_line(values: dict[str, Any]) -> None:
    """The second decode of a message (caches warm: fast path) equals the first and equals
    lineproto.format_line, value for value."""
    doc = {**SPEC_PAYLOAD, "readings": [{"ts": 5, "values": values}, {"ts": 6, "values": {}}]}
    payload = json.dumps(doc).encode()
    first = decode_message(TOPIC, payload)
    second = decode_message(TOPIC, payload)
    tags = {"district": "xinwu", "lane": "north", "gateway": "xinwu-road-017",
            "device": "rws-1"}
    assert first == second == [lineproto.format_line("road_weather", tags, values, 5)]


@pytest.mark.parametrize(("value", "reason"), [
    (float("nan"), "non_finite"), (float("inf"), "non_finite"), (None, "bad_value"),
    ([1], "bad_value"), ({"a": 1}, "bad_value"), (-(2**63) - 1, "bad_value"),
])
def test_fast_path_refuses_as_the_careful_one(value: object, reason: str) -> None:
    good = json.dumps({**SPEC_PAYLOAD, "readings": [{"ts": 5, "values": {"x": 1.0}}]})
    assert isinstance(decode_message(TOPIC, good.encode()), list)  # "x" now cached
    doc = {**SPEC_PAYLOAD, "readings": [{"ts": 5, "values": {"x": value}}]}
    result = decode_message(TOPIC, json.dumps(doc).encode())
    assert isinstance(result, Rejected) and result.reason == reason, result


# --- orjson (the usual path) and the stdlib (exact reasons) give the same answer ---------

def _stdlib_only(topic: str, payload: bytes, monkeypatch: pytest.MonkeyPatch) -> object:
    def refuse(_payload: bytes) -> object:
        raise orjson.JSONDecodeError("forced", "", 0)

    with monkeypatch.context() as m:
        m.setattr(ingest, "_orjson_loads", refuse)
        return decode_message(topic, payload)


@pytest.mark.parametrize("case", _CASES, ids=[c["id"] for c in _CASES])
def test_orjson_and_stdlib_agree_on_the_hostile_corpus(
        case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    topic, payload = case.get("topic", _DEFAULT_TOPIC), hostile_payload(case)
    assert decode_message(topic, payload) == _stdlib_only(topic, payload, monkeypatch)


_json_values = st.one_of(
    st.floats(), st.integers(min_value=-(2**70), max_value=2**70), st.booleans(),
    st.text(max_size=8), st.none(), st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(values=st.dictionaries(st.text(min_size=1, max_size=6), _json_values, max_size=4),
       ts=st.integers(min_value=-(2**64), max_value=2**64))
def test_orjson_and_stdlib_agree_on_any_values(values: dict[str, Any], ts: int) -> None:
    doc = {**SPEC_PAYLOAD, "readings": [{"ts": ts, "values": values}]}
    payload = json.dumps(doc).encode()  # NaN and Infinity as the stdlib writes them
    with pytest.MonkeyPatch.context() as m:
        expected = _stdlib_only(TOPIC, payload, m)
    assert decode_message(TOPIC, payload) == expected
