"""The issue-19 profiles: addresses as their sources give them (SunSpec model 103 offsets
from 40070; the TUF-2000M's 1-based register numbers through `addressing: one-based`)."""

from __future__ import annotations

from pathlib import Path

from gateway.config.load import load_gateway_config

ROOT = Path(__file__).resolve().parents[2]

# json/model_103.json of github.com/sunspec/models: offset of each point in the model
MODEL_103 = {"model_id": 0, "current": 2, "current_l1": 3, "current_sf": 6, "voltage_l1": 10,
             "voltage_sf": 13, "power": 14, "power_sf": 15, "frequency": 16,
             "frequency_sf": 17, "power_factor": 22, "energy": 24, "energy_sf": 26,
             "dc_power": 31, "dc_power_sf": 32, "temperature_cabinet": 33,
             "temperature_sf": 37, "operating_state": 38}


def _site(tmp_path: Path, profile: str, driver: str) -> Path:
    where = ("    host: 10.0.0.2\n" if driver == "modbus-tcp" else "    bus: b\n")
    path = tmp_path / "gateway.yaml"
    path.write_text("gateway: {id: g}\nmqtt: {host: m}\nbuses: [{name: b, port: /dev/x}]\n"
                    f"devices:\n  - name: d\n    driver: {driver}\n{where}"
                    f"    profile: {profile}\n")
    return path


def test_sunspec_points_sit_at_their_model_103_offsets(tmp_path: Path) -> None:
    device = load_gateway_config(str(_site(tmp_path, "sunspec-inverter-103",
                                           "modbus-tcp"))).devices[0]
    addresses = {p.name: p.address for p in device.points}
    for name, offset in MODEL_103.items():
        assert addresses[name] == 40070 + offset, name
    assert addresses["sunspec_marker"] == 40000


def test_tuf_2000m_register_numbers_are_one_based(tmp_path: Path) -> None:
    device = load_gateway_config(str(_site(tmp_path, "tuf-2000m", "modbus-rtu"))).devices[0]
    addresses = {p.name: p.address for p in device.points}
    assert device.addressing == "one-based"
    assert addresses["flow_rate"] == 0  # REG 0001
    assert addresses["positive_total"] == 8  # REG 0009
    assert addresses["signal_quality"] == 91  # REG 0092
    assert {p.byte_order for p in device.points if p.register_count == 2} == {"CDAB"}


def test_road_sensor_reads_the_protocols_worked_examples(tmp_path: Path) -> None:
    from gateway.core.decode import build_decoder

    device = load_gateway_config(str(_site(tmp_path, "tsingsense-road-sensor",
                                           "modbus-rtu"))).devices[0]
    points = {p.name: p for p in device.points}
    # the protocol's section 3 examples: 0x07EE = 20.3 degC (its text; 2030 is 20.30),
    # 0x00FA = 2.5 mm, 0x0052 = 0.82, 0x0106 = warning 1, state 6 (snow)
    assert build_decoder(points["surface_temperature"])([0x07EE]) == (20.3, "good")
    assert build_decoder(points["water_film"])([0x00FA]) == (2.5, "good")
    assert build_decoder(points["grip"])([0x0052]) == (0.82, "good")
    assert build_decoder(points["warning"])([0x0106]) == (1, "good")
    assert build_decoder(points["road_state"])([0x0106]) == (6, "good")
    assert build_decoder(points["surface_temperature"])([0xFF38]) == (-2.0, "good")
