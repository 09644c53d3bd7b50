"""The shipped sensor profiles and example sites stay loadable and consistent.

Every profile under gateway/config/sensor_profiles/ passes
`gateway.config.load.check_profile`, names its source manual in its header comment, and is
used by at least one example site; every example site (config/site-*.yaml) loads and passes
`sensegate check`.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml

from gateway.commands import check
from gateway.config.load import check_profile, load_gateway_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "gateway" / "config" / "sensor_profiles"
PROFILES = sorted(SHIPPED.glob("*.yaml"))
SITES = sorted((ROOT / "config").glob("site-*.yaml"))
ENV = {"MQTT_USER": "gateway-user", "MQTT_PASSWORD": "not-a-real-password"}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_at_least_five_profiles_and_two_sites_ship() -> None:
    assert len(PROFILES) >= 5
    assert len(SITES) >= 2


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profile_is_valid(path: Path) -> None:
    assert check_profile(str(path), ENV) == []


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profile_names_its_source_manual(path: Path) -> None:
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert re.search(r"^# Source: \S", text, re.M), f"{path.name}: no '# Source:' line"
    assert _yaml(path)["model"]


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profile_is_used_by_an_example_site(path: Path) -> None:
    used = {d.get("profile") for site in SITES for d in _yaml(site)["devices"]}
    assert path.stem in used


@pytest.mark.parametrize("path", SITES, ids=lambda p: p.stem)
def test_site_example_loads(path: Path) -> None:
    config = load_gateway_config(str(path), ENV)
    assert config.devices
    for device in config.devices:
        assert device.points, device.name


@pytest.mark.parametrize("path", SITES, ids=lambda p: p.stem)
def test_site_example_passes_check(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    out = io.StringIO()
    assert check.run(str(path), out) == 0, out.getvalue()


def test_aerocet_pattern_reads_the_manuals_sample_lines() -> None:
    profile = _yaml(SHIPPED / "metone-aerocet-531s.yaml")
    pattern = re.compile(profile["pattern"])
    assert set(pattern.groupindex) == {p["name"] for p in profile["points"]}
    # section 7.4.2 of the manual: a data line, and one without the T/RH probe
    full = pattern.search(
        "2013-01-22 11:23:27,001.1,003.8,005.2,005.9,006.2,008.2,+020,026,001,060,000")
    assert full is not None
    assert full["pm2_5"] == "003.8" and full["pm10"] == "006.2"
    assert full["air_temperature"] == "+020" and full["status"] == "000"
    bare = pattern.search("2013-01-22 11:23:27,001.1,003.8,005.2,005.9,006.2,008.2,,,001,060,048")
    assert bare is not None and bare["humidity"] is None and bare["status"] == "048"
    assert pattern.search("Time,PM1(µg/m3),PM2.5(µg/m3),PM4(µg/m3)") is None


def test_sdm630_addresses_follow_the_register_numbers() -> None:
    """Register number 3xxxx in the manual is protocol address 3xxxx - 30001."""
    profile = _yaml(SHIPPED / "eastron-sdm630.yaml")
    by_name = {p["name"]: p for p in profile["points"]}
    assert by_name["voltage_l1"]["address"] == 30001 - 30001
    assert by_name["power_total"]["address"] == 30053 - 30001
    assert by_name["frequency"]["address"] == 30071 - 30001
    assert by_name["energy_import"]["address"] == 30073 - 30001
    assert all(p["type"] == "float32" and p["table"] == "input" for p in profile["points"])
    assert profile["max_registers"] == 80


def test_sinamics_v20_modicon_numbers_are_the_inverter_register_numbers() -> None:
    """The manual's mapping table pairs inverter register n with MODBUS number 40001 + n;
    the profile lists the MODBUS numbers, which must resolve to holding address n."""
    config = load_gateway_config(str(ROOT / "config" / "site-community-solar.yaml"), ENV)
    pump = next(d for d in config.devices if d.profile == "siemens-sinamics-v20")
    by_name = {p.name: p for p in pump.points}
    assert all(p.table == "holding" for p in pump.points)
    assert by_name["frequency_setpoint"].address == 2  # FREQ REF
    assert by_name["output_frequency"].address == 23  # FREQ OUTPUT
    assert by_name["dc_bus_voltage"].address == 29  # DC BUS VOLTS
    assert {p.name for p in pump.points if p.writable} == {
        "frequency_setpoint", "run_enable", "start", "fault_ack"}
    assert 40013 - 40001 not in {p.address for p in pump.points}  # reserved
