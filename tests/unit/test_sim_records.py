"""`sensegate simulate`'s serial-line records (`gateway.sim.records`): a record built from a
device's own pattern reads back, through the driver's search and the textline converters,
as the values put in it; patterns it cannot build for say why."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.config.load import load_gateway_config
from gateway.core.model import DeviceConfig, Value
from gateway.core.textline import build_converter, decode_line
from gateway.sim.records import RecordFormat, Unsupported, spellings
from gateway.sim.serve import plausible


def device(tmp_path: Path, body: str) -> DeviceConfig:
    """The one serial-line device of a config whose device entry ends with ``body``."""
    site = tmp_path / "site.yaml"
    site.write_text("gateway: {id: t}\nmqtt: {host: 127.0.0.1}\ndevices:\n"
                    "  - name: s\n    driver: serial-line\n    port: /dev/ttyS9\n" + body)
    return load_gateway_config(str(site)).device("s")


def read_back(dev: DeviceConfig, line: str) -> dict[str, tuple[Value | None, str]]:
    """What the serial-line driver makes of ``line``: its pattern searched in the line's
    text, each group converted by its point's converter."""
    assert dev.pattern is not None
    found = re.search(dev.pattern, decode_line(line.encode("ascii")))
    assert found is not None, line
    texts = {p.name: found.group(p.name) for p in dev.points}
    return {p.name: (None, "bad") if texts[p.name] is None else build_converter(p)(texts[p.name])
            for p in dev.points}


PM = ("    pattern: 'PM25=(?P<pm25>[\\d.]+),PM10=(?P<pm10>[\\d.]+)'\n"
      "    points:\n      - {name: pm25, unit: ug/m3}\n      - {name: pm10, unit: ug/m3}\n")


@pytest.mark.parametrize(
    ("body", "raw", "record", "values"),
    [
        pytest.param(PM, {"pm25": 12.345, "pm10": 30.0}, "PM25=12.3,PM10=30.0",
                     {"pm25": 12.3, "pm10": 30.0}, id="the example's key=value CSV"),
        pytest.param(
            "    pattern: '^T:\\s*(?P<t>[-+]?\\d+(?:\\.\\d+)?)\\s*C;\\s+H:(?P<h>\\d+)%$'\n"
            "    points:\n      - {name: t, scale: 0.1, offset: -40}\n"
            "      - {name: h, type: uint16}\n",
            {"t": -12.04, "h": 55}, "T:-12.0C; H:55%", {"t": -41.2, "h": 55},
            id="anchors, optional spaces, sign, optional decimals, scale and offset"),
        pytest.param(
            "    pattern: '(?P<id>[A-Z]{2}\\d+)\\|(?P<on>ON|OFF)\\|(?P<n>\\d{3})'\n"
            "    points:\n      - {name: id, type: string}\n      - {name: on, type: bool}\n"
            "      - {name: n, type: int32}\n",
            {"id": "SIM", "on": True, "n": 7}, None, None,
            id="a string the group refuses is said, not sent"),
        pytest.param(
            "    pattern: '(?P<on>ON|OFF),(?P<n>\\d+),(?P<word>\\w+)'\n"
            "    points:\n      - {name: on, type: bool}\n      - {name: n, type: int32}\n"
            "      - {name: word, type: string}\n",
            {"on": False, "n": 7, "word": "SIM"}, "OFF,7,SIM",
            {"on": False, "n": 7, "word": "SIM"}, id="a bool word the group names"),
        pytest.param(
            "    pattern: '\\$GPX,[^,]*,(?P<v>\\d+\\.\\d{2}),[^,]+,(?:A|V)\\*\\w\\w'\n"
            "    points:\n      - {name: v, unit: V}\n",
            {"v": 230.4}, "$GPX,,230.40,a,A*aa", {"v": 230.4},
            id="NMEA-like: negated classes, fixed decimals, an alternation"),
        pytest.param(
            "    pattern: '(?i)temp\\{(?P<t>\\d+)\\}(?#comment)x{0}'\n"
            "    points:\n      - {name: t, type: int16}\n",
            {"t": 21}, "temp{21}", {"t": 21}, id="flags, literal braces, a comment"),
        pytest.param(
            "    pattern: '\\b[^\\s\\d]+:[^a-z0-9 ](?P<t>\\d+)[\\b\\t]'\n"
            "    points:\n      - {name: t, type: int16}\n",
            {"t": 21}, "a:_21\b", {"t": 21}, id="negated classes of escapes, \\b in a class"),
        pytest.param(
            "    pattern: 'T=(?P<t>\\d+)|H=(?P<h>\\d+)'\n"
            "    points:\n      - {name: t, type: int16}\n      - {name: h, type: int16}\n",
            {"t": 21, "h": 40}, "T=21", {"t": 21}, id="alternation: one branch per record"),
        pytest.param(
            "    pattern: 'V(?P<v>\\d{3}) T(?P<t>[-+]\\d{2}\\.\\d)'\n"
            "    points:\n      - {name: v, type: uint16}\n      - {name: t}\n",
            {"v": 7, "t": 5.3}, "V007 T+05.3", {"v": 7, "t": 5.3},
            id="fixed-width fields: zero-padded"),
    ],
)
def test_record_reads_back(tmp_path: Path, body: str, raw: dict[str, Value],
                           record: str | None, values: dict[str, Value] | None) -> None:
    dev = device(tmp_path, body)
    form = RecordFormat.of(dev)
    if record is None:
        with pytest.raises(Unsupported, match="accepts none of SIM"):
            form.record(raw)
        return
    line = form.record(raw)
    assert line == record
    assert values is not None
    got = read_back(dev, line)
    assert {n: v for n, (v, q) in got.items() if q == "good"} == values
    assert form.missing == [n for n in got if n not in values]


SHIPPED = ("    profile: metone-aerocet-531s\n", PM,
           "    pattern: '(?P<flag>[01]),(?P<count>\\d+),(?P<level>[-\\d.]+)'\n"
           "    points:\n      - {name: flag, type: bool}\n"
           "      - {name: count, type: uint32, unit: Wh}\n"
           "      - {name: level, type: float32, scale: 0.01, unit: m}\n")


@pytest.mark.parametrize("body", SHIPPED, ids=["aerocet profile", "example", "bool, counter"])
def test_plausible_values_over_a_day_read_back_good(tmp_path: Path, body: str) -> None:
    dev = device(tmp_path, body)
    form = RecordFormat.of(dev)
    assert form.missing == []
    for t in range(0, 86_400, 997):
        raw = {p.name: plausible(p, float(t), seed) for seed, p in enumerate(dev.points)}
        got = read_back(dev, form.record(raw))
        for point in dev.points:
            value, quality = got[point.name]
            assert quality == "good", (point.name, t)
            expected: Any = raw[point.name]
            if isinstance(expected, float):  # printed with one decimal
                expected = expected * point.scale + point.offset
                assert math.isclose(float(value), expected,  # type: ignore[arg-type]
                                    abs_tol=0.05 * point.scale + 1e-6), (point.name, t)
            else:
                assert value == expected, (point.name, t)


def test_aerocet_record_looks_like_the_manual(tmp_path: Path) -> None:
    form = RecordFormat.of(device(tmp_path, SHIPPED[0]))
    line = form.record({p.name: 1.0 for p in form.device.points} | {"status": 0})
    assert line == "0000-00-00 00:00:00,1.0,1.0,1.0,1.0,1.0,1.0,1.0,1.0,0,0,0"


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("A=(?P<a>\\d+)(?=;)", "look-ahead"),
        ("(?<=X)A=(?P<a>\\d+)", "look-behind"),
        ("A=(?P<a>\\d+),(?P=a)", "back-reference"),
        ("(x)?A=(?P<a>\\d+)\\1", "back-reference"),
        ("(?x) A = (?P<a> \\d+ )", "verbose"),
        ("(?:(?P<a>\\d+),){3}", "repeated"),
        ("(?P<a>\\d){2}", "repeated"),
        ("A=(?P<a>\\d+)°C", "not ASCII"),
        ("A=(?P<a>[a-z]+)", "accepts none of"),
        ("\\d+(?P<a>\\d+)", "reads '0' instead of '100'"),
        ("A(?P<a>\\d+)\\r", "holds a line end"),
    ],
)
def test_unsupported_patterns_say_why(tmp_path: Path, pattern: str, reason: str) -> None:
    quoted = pattern.replace("'", "''")
    dev = device(tmp_path, f"    pattern: '{quoted}'\n    points:\n"
                           "      - {name: a, type: int32}\n")
    with pytest.raises(Unsupported, match=reason):
        RecordFormat.of(dev).record({"a": 100})


def test_spellings_are_read_back_by_the_converter(tmp_path: Path) -> None:
    dev = device(tmp_path, "    pattern: '(?P<b>\\w+),(?P<f>\\S+),(?P<i>\\S+)'\n    points:\n"
                           "      - {name: b, type: bool}\n      - {name: f, scale: 0.5}\n"
                           "      - {name: i, type: int16}\n")
    points = {p.name: p for p in dev.points}
    for name, raw, value in (("b", True, True), ("b", False, False), ("f", 3.25, 1.625),
                             ("i", -7, -7)):
        convert = build_converter(points[name])
        for text in spellings(points[name], raw):
            got, quality = convert(text)
            assert quality == "good", text
            assert got == pytest.approx(value, abs=0.25), text
