from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import profiles
from gateway.config.load import load_gateway_config
from gateway.core.errors import ConfigError

METER = """model: Test Meter
description: a meter for tests
interval: 5s
max_registers: 40
byte_order: CDAB
points:
  - {name: voltage, table: input, address: 0, type: float32, unit: V}
  - {name: current, table: input, address: 2, type: float32, unit: A}
"""


def _site(tmp_path: Path, devices: str, gateway_extra: str = "") -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"gateway: {{id: g{gateway_extra}}}\nmqtt: {{host: b}}\ndevices:\n{devices}",
                    encoding="utf-8")
    return str(path)


def _profile(directory: Path, name: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.yaml").write_text(text, encoding="utf-8")


def test_profile_points_and_defaults_apply(tmp_path: Path) -> None:
    _profile(tmp_path / "profiles", "meter", METER)
    cfg = load_gateway_config(_site(tmp_path, """  - name: m1
    driver: modbus-tcp
    host: h
    profile: meter
"""), env={})
    d = cfg.devices[0]
    assert [p.name for p in d.points] == ["voltage", "current"]
    assert (d.interval, d.max_registers, d.profile) == (5.0, 40, "meter")
    assert {p.byte_order for p in d.points} == {"CDAB"}


def test_device_overrides_and_extends_the_profile(tmp_path: Path) -> None:
    _profile(tmp_path / "profiles", "meter", METER)
    cfg = load_gateway_config(_site(tmp_path, """  - name: m1
    driver: modbus-tcp
    host: h
    profile: meter
    interval: 1s
    byte_order: ABCD
    points:
      - {name: current, table: input, address: 2, type: float32, scale: 0.001, unit: kA}
      - {name: frequency, table: input, address: 70, type: float32}
"""), env={})
    d = cfg.devices[0]
    assert [p.name for p in d.points] == ["voltage", "current", "frequency"]
    current = d.points[1]
    assert (current.scale, current.unit) == (0.001, "kA")
    assert d.interval == 1.0
    assert {p.byte_order for p in d.points} == {"ABCD"}


def test_search_order(tmp_path: Path) -> None:
    _profile(tmp_path / "mine", "meter", METER.replace("interval: 5s", "interval: 7s"))
    _profile(tmp_path / "profiles", "meter", METER)
    devices = "  - {name: m1, driver: modbus-tcp, host: h, profile: meter}\n"
    first = load_gateway_config(_site(tmp_path, devices, ", profile_dirs: [mine]"), env={})
    assert first.devices[0].interval == 7.0
    second = load_gateway_config(_site(tmp_path, devices), env={})
    assert second.devices[0].interval == 5.0


def test_shipped_profiles_are_found(tmp_path: Path) -> None:
    shipped = sorted(Path(profiles.SHIPPED_DIR).glob("*.yaml"))
    assert len(shipped) >= 5
    name = next(p.stem for p in shipped if "pattern:" not in p.read_text(encoding="utf-8"))
    cfg = load_gateway_config(_site(
        tmp_path, f"  - {{name: m1, driver: modbus-tcp, host: h, profile: {name}}}\n"), env={})
    assert cfg.devices[0].points


def test_unknown_profile_names_the_directories(tmp_path: Path) -> None:
    _profile(tmp_path / "profiles", "meter", METER)
    with pytest.raises(ConfigError) as info:
        load_gateway_config(_site(
            tmp_path, "  - {name: m1, driver: modbus-tcp, host: h, profile: metre}\n"), env={})
    [issue] = info.value.issues
    assert (issue.line, issue.col, issue.path) == (4, 54, "devices[0].profile")
    assert issue.message.startswith(
        f"profile 'metre' not found in {tmp_path / 'profiles'}, {profiles.SYSTEM_DIR}, "
        f"{profiles.SHIPPED_DIR}")
    assert issue.message.endswith("; did you mean 'meter'?")


def test_profile_errors_are_reported_once_in_the_profile_file(tmp_path: Path) -> None:
    _profile(tmp_path / "profiles", "meter", METER.replace("type: float32, unit: A",
                                                           "type: flot32, unit: A"))
    devices = ("  - {name: m1, driver: modbus-tcp, host: h, profile: meter}\n"
               "  - {name: m2, driver: modbus-tcp, host: h2, profile: meter}\n")
    with pytest.raises(ConfigError) as info:
        load_gateway_config(_site(tmp_path, devices), env={})
    assert [str(i) for i in info.value.issues] == [
        f"{tmp_path}/profiles/meter.yaml:8:53: points[1].type: 'flot32' is not a data type; "
        "did you mean 'float32'?",
    ]


@pytest.mark.parametrize(("text", "errors"), [
    pytest.param(METER, [], id="valid"),
    pytest.param("description: x\n", ["p.yaml:1:1: missing required key 'model'",
                                      "p.yaml:1:1: missing required key 'points'"],
                 id="missing-model-and-points"),
    pytest.param("model: x\npoints:\n  - {name: a, table: input, address: 0}\n"
                 "  - {name: a, table: input, address: 1}\n",
                 ["p.yaml:4:12: points[1].name: duplicate point name 'a' (first at line 3)"],
                 id="duplicate-point"),
    pytest.param("model: x\npattern: 'A=(?P<a>\\d+)'\npoints:\n  - {name: b}\n",
                 ["p.yaml:2:10: pattern: group 'a' of the pattern is not a point; add a point "
                  "or rename the group",
                  "p.yaml:4:12: points[0].name: point 'b' is not a named group of the pattern; "
                  "add (?P<b>...) to it"],
                 id="serial-pattern-mismatch"),
    pytest.param("model: x\npoints:\n  - {name: a}\n",
                 ["p.yaml:3:5: points[0]: missing required key 'table' for a modbus point",
                  "p.yaml:3:5: points[0]: missing required key 'address' for a modbus point"],
                 id="modbus-point-without-address"),
])
def test_check_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, errors: list[str],
) -> None:
    (tmp_path / "p.yaml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert [str(i) for i in profiles.check_profile("p.yaml", env={})] == errors
