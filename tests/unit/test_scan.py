"""`sensegate scan`'s pure part: unit lists, line order, estimate, config stub."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.load import load_gateway_config
from gateway.core.scan import (
    LINE_SETTINGS,
    Found,
    config_stub,
    estimate,
    format_duration,
    parse_units,
)


@pytest.mark.parametrize(
    ("text", "units"),
    [("1-3", [1, 2, 3]), ("5,1-2,2", [1, 2, 5]), ("255", [255]), (" 7 , 9-10 ", [7, 9, 10])],
)
def test_parse_units(text: str, units: list[int]) -> None:
    assert parse_units(text) == units


@pytest.mark.parametrize("text", ["", "0-256", "5-1", "a", "1-x", "300"])
def test_parse_units_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_units(text)


def test_line_settings_most_common_first_and_each_once() -> None:
    assert LINE_SETTINGS[:2] == ((9600, "N"), (19200, "E"))
    assert len(set(LINE_SETTINGS)) == len(LINE_SETTINGS)
    assert {p for _, p in LINE_SETTINGS} == {"N", "E", "O"}


def test_estimate_counts_every_probe() -> None:
    one = estimate([(9600, "N")], [1], 0.1)
    assert one == pytest.approx(15 * 11 / 9600 + 0.1)
    assert estimate([(9600, "N"), (19200, "E")], list(range(1, 21)), 0.1) == pytest.approx(
        20 * (one + 15 * 11 / 19200 + 0.1))
    assert format_duration(12.34) == "12.3s"
    assert format_duration(245) == "4m05s"
    assert format_duration(3 * 3600 + 120) == "3h02m"


def test_stub_is_a_valid_config_once_gateway_and_mqtt_are_added(tmp_path: Path) -> None:
    found = [Found(3, "registers", {"vendor": "Eastron", "product": 'SDM"630'}),
             Found(17, "exception 2 (illegal data address)")]
    stub = config_stub(found, port="/dev/ttyUSB0", baud=19200, parity="E")
    assert "# identification: Eastron SDM\"630" in stub
    path = tmp_path / "gateway.yaml"
    path.write_text("gateway: {id: site}\nmqtt: {host: broker}\n" + stub)
    config = load_gateway_config(str(path))
    assert [(d.name, d.unit, d.bus) for d in config.devices] == [
        ("unit-3", 3, "rs485-1"), ("unit-17", 17, "rs485-1")]
    assert config.devices[0].tags == {"model": 'SDM"630'}
    assert (config.buses[0].serial.baudrate, config.buses[0].serial.parity) == (19200, "E")
    tcp = config_stub([Found(5, "registers")], host="10.0.0.2", tcp_port=1502)
    path.write_text("gateway: {id: site}\nmqtt: {host: broker}\n" + tcp)
    [device] = load_gateway_config(str(path)).devices
    assert (device.host, device.port, device.unit) == ("10.0.0.2", 1502, 5)
