"""Test-only helpers around gateway.sim.simulator: device configs pointing at simulators."""

from __future__ import annotations

from gateway.core.model import DeviceConfig, PointConfig

POINTS = (
    PointConfig("seq", "uint16", "holding", 0),
    PointConfig("temp", "float32", "holding", 2, unit="degC"),
    PointConfig("energy", "uint64", "holding", 4, byte_order="CDAB", unit="Wh"),
    PointConfig("level", "int16", "input", 100, scale=0.1, unit="m"),
    PointConfig("alarm", "bool", "holding", 8, bit=3),
    PointConfig("model", "string", "holding", 10, length=3),
    PointConfig("pump", "bool", "coil", 5),
)
VALUES = {"temp": 21.5, "energy": 123456789012, "level": -123, "model": "WXT5"}
EXPECTED = {"temp": 21.5, "energy": 123456789012, "level": -12.3, "alarm": True,
            "model": "WXT5", "pump": True}


def load(unit, points: tuple[PointConfig, ...] = POINTS) -> None:
    """Lay out VALUES in a simulator unit, a sequence number at holding 0."""
    by_name = {p.name: p for p in points}
    for name, value in VALUES.items():
        if name in by_name:
            unit.set_point(by_name[name], value)
    unit.set_registers("holding", 8, [0b1000])
    unit.set_bits("coil", 5, [True])
    unit.add_counter("holding", 0)


def tcp_device(port: int, *, name: str = "dev", unit: int = 1, driver: str = "modbus-tcp",
               points: tuple[PointConfig, ...] = POINTS, timeout: float = 0.3,
               retries: int = 1) -> DeviceConfig:
    return DeviceConfig(name, driver, points, host="127.0.0.1", port=port,  # type: ignore[arg-type]
                        unit=unit, timeout=timeout, retries=retries, measurement=name)


def rtu_device(bus: str, *, name: str = "dev", unit: int = 1,
               points: tuple[PointConfig, ...] = POINTS, timeout: float = 0.3,
               retries: int = 1) -> DeviceConfig:
    return DeviceConfig(name, "modbus-rtu", points, bus=bus, unit=unit, timeout=timeout,
                        retries=retries, measurement=name)
