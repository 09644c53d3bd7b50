"""Report-by-exception settings as loaded: point, device and profile defaults."""

from __future__ import annotations

from pathlib import Path

from gateway.config.load import load_gateway_config
from gateway.core.report import Rule, rule_of

ROOT = Path(__file__).resolve().parents[2]
ENV = {"MQTT_USER": "u", "MQTT_PASSWORD": "p"}


def test_the_road_site_reports_at_each_sensors_accuracy() -> None:
    config = load_gateway_config(str(ROOT / "config" / "site-xinwu-road.yaml"), env=ENV)
    wxt = config.device("wxt-1")
    rules = {p.name: rule_of(wxt, p) for p in wxt.points}
    assert rules["air_temperature"] == Rule(0.3, None, 900.0, 10.0)
    assert rules["pressure"] == Rule(0.5, None, 900.0, 10.0)
    assert rules["precipitation_type"].deadband == 0  # a code: every change
    noise = config.device("noise-1")
    assert (noise.publish_interval, noise.aggregate) == (60.0, ("min", "max", "mean", "count"))
    pm = config.device("pm-1")
    assert rule_of(pm, pm.points[0]).deadband_pct == 10


def write(tmp_path: Path, device: str) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text("gateway: {id: g}\nmqtt: {host: h}\n"
                    "buses: [{name: b, port: /dev/null}]\ndevices:\n" + device)
    return str(path)


def test_a_device_overrides_its_profile_and_may_aggregate_instead(tmp_path: Path) -> None:
    config = load_gateway_config(write(tmp_path, """
  - name: wxt
    driver: modbus-rtu
    bus: b
    profile: vaisala-wxt530
    heartbeat: 1h
    points:
      - {name: pressure, table: input, address: 0x0E, type: int16, scale: 0.1,
         deadband_pct: 0.1, interval: 1m}
"""))
    wxt = config.device("wxt")
    rules = {p.name: rule_of(wxt, p) for p in wxt.points}
    assert rules["pressure"] == Rule(None, 0.1, 3600.0, 60.0)
    assert rules["humidity"] == Rule(3.0, None, 3600.0, 10.0)
    # the profile's deadbands are not an error on a device that aggregates
    config = load_gateway_config(write(tmp_path, """
  - name: wxt
    driver: modbus-rtu
    bus: b
    profile: vaisala-wxt530
    publish_interval: 1m
    aggregate: [mean]
"""))
    assert config.device("wxt").aggregate == ("mean",)
