"""MQTT topics and payloads: exact bytes of SPEC §3."""

from __future__ import annotations

import json
import math

import pytest

from gateway.core.lineproto import parse_lines
from gateway.core.model import Reading
from gateway.core.payload import (
    build_influx,
    build_json,
    build_payload,
    data_topic,
    status_payload,
    status_topic,
)

TAGS = {"district": "xinwu", "lane": "north"}
SCAN = Reading("rws-1", 1764000000123456789, {"air_temp": -12.3, "humidity": 65.43},
               {"wind_speed": "bad"})
GOOD = Reading("rws-1", 1764000001000000000, {"air_temp": -12.25, "ok": True, "n": 7,
                                               "id": "A 1"})
DEAD = Reading("rws-1", 1764000002000000000, {}, {"air_temp": "bad", "humidity": "bad"})


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(("sensegate", "xinwu-road-017", "rws-1"),
                     "sensegate/xinwu-road-017/rws-1/data", id="spec example"),
        pytest.param(("city/sensegate/", "g", "d"), "city/sensegate/g/d/data",
                     id="multi-level prefix"),
    ],
)
def test_data_topic(args: tuple[str, str, str], expected: str) -> None:
    assert data_topic(*args) == expected


def test_status_topic() -> None:
    assert status_topic("sensegate", "xinwu-road-017") == "sensegate/xinwu-road-017/status"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("p", "g/x", "d"), "gateway id 'g/x' cannot be a topic level", id="slash"),
        pytest.param(("p", "g", "d+"), "device 'd+' cannot be a topic level", id="plus"),
        pytest.param(("p", "g", ""), "device '' cannot be a topic level", id="empty"),
        pytest.param(("#", "g", "d"), "topic prefix '#' is not a valid topic", id="prefix hash"),
    ],
)
def test_topic_refused(args: tuple[str, str, str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        data_topic(*args)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("args", "extra", "expected"),
    [
        pytest.param(("online", 5), {}, b'{"state":"online","ts":5}', id="online"),
        pytest.param(("offline", 7), {"version": "0.1.0"},
                     b'{"state":"offline","ts":7,"version":"0.1.0"}', id="extra keys"),
    ],
)
def test_status_payload(args: tuple[str, int], extra: dict[str, str], expected: bytes) -> None:
    assert status_payload(*args, **extra) == expected


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        pytest.param(
            [SCAN],
            b'{"gateway":"xinwu-road-017","device":"rws-1","measurement":"road_weather",'
            b'"tags":{"district":"xinwu","lane":"north"},"readings":['
            b'{"ts":1764000000123456789,"values":{"air_temp":-12.3,"humidity":65.43},'
            b'"quality":{"wind_speed":"bad"}}]}',
            id="spec example",
        ),
        pytest.param(
            [GOOD, DEAD],
            b'{"gateway":"xinwu-road-017","device":"rws-1","measurement":"road_weather",'
            b'"tags":{"district":"xinwu","lane":"north"},"readings":['
            b'{"ts":1764000001000000000,"values":{"air_temp":-12.25,"ok":true,"n":7,'
            b'"id":"A 1"}},'
            b'{"ts":1764000002000000000,"values":{},'
            b'"quality":{"air_temp":"bad","humidity":"bad"}}]}',
            id="several scans, no quality key when all good",
        ),
        pytest.param(
            [],
            b'{"gateway":"xinwu-road-017","device":"rws-1","measurement":"road_weather",'
            b'"tags":{"district":"xinwu","lane":"north"},"readings":[]}',
            id="no scans",
        ),
    ],
)
def test_build_json(readings: list[Reading], expected: bytes) -> None:
    payload = build_json("xinwu-road-017", "rws-1", "road_weather", TAGS, readings)
    assert payload == expected
    json.loads(payload)


def test_build_json_utf8() -> None:
    payload = build_json("g", "d", "m", {"place": "東京"}, [Reading("d", 1, {"s": "µg/m³"})])
    assert payload == ('{"gateway":"g","device":"d","measurement":"m","tags":{"place":"東京"},'
                       '"readings":[{"ts":1,"values":{"s":"µg/m³"}}]}').encode()


def test_build_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        build_json("g", "d", "m", {}, [Reading("d", 1, {"v": math.nan})])


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        pytest.param(
            [SCAN],
            b"road_weather,device=rws-1,district=xinwu,gateway=xinwu-road-017,lane=north "
            b"air_temp=-12.3,humidity=65.43 1764000000123456789\n",
            id="spec example",
        ),
        pytest.param(
            [GOOD, DEAD, SCAN],
            b"road_weather,device=rws-1,district=xinwu,gateway=xinwu-road-017,lane=north "
            b'air_temp=-12.25,ok=true,n=7i,id="A 1" 1764000001000000000\n'
            b"road_weather,device=rws-1,district=xinwu,gateway=xinwu-road-017,lane=north "
            b"air_temp=-12.3,humidity=65.43 1764000000123456789\n",
            id="scan without good values has no line",
        ),
        pytest.param([DEAD], b"", id="nothing good, empty payload"),
    ],
)
def test_build_influx(readings: list[Reading], expected: bytes) -> None:
    assert build_influx("xinwu-road-017", "rws-1", "road_weather", TAGS, readings) == expected


def test_build_influx_topic_identity_wins_over_tags() -> None:
    payload = build_influx("g", "d", "m", {"gateway": "evil", "device": "x,y=z"},
                           [Reading("d", 3, {"v": 1.0})])
    assert payload == b"m,device=d,gateway=g v=1.0 3\n"


def test_build_influx_reads_back() -> None:
    payload = build_influx("g", "d", "road weather", {"a b": "c,d"},
                           [Reading("d", 3, {"v": 1.5, "s": 'x"y'})])
    assert parse_lines(payload.decode()) == [
        ("road weather", {"a b": "c,d", "device": "d", "gateway": "g"}, {"v": 1.5, "s": 'x"y'}, 3)
    ]


@pytest.mark.parametrize(
    ("fmt", "start"),
    [pytest.param("json", b'{"gateway"', id="json"), pytest.param("influx", b"m,", id="influx")],
)
def test_build_payload(fmt: str, start: bytes) -> None:
    assert build_payload(fmt, "g", "d", "m", {}, [Reading("d", 1, {"v": 1})]).startswith(start)


def test_build_payload_unknown_format() -> None:
    with pytest.raises(ValueError) as info:
        build_payload("xml", "g", "d", "m", {}, [])
    assert str(info.value) == "unknown payload format 'xml'"
