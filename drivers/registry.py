"""Which driver serves a device: `create_driver`, loading each driver's module on first use.

The registry names each driver's module and class instead of importing them, so importing
the scheduler (or anything that only needs the driver contract, `drivers.base`) loads
neither pymodbus nor pyserial; a gateway with only serial-line sensors never loads pymodbus.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from drivers.base import DeviceDriver
from gateway.core.model import DeviceConfig, GatewayConfig

if TYPE_CHECKING:
    from drivers.bus import BusRegistry

DRIVERS: dict[str, tuple[str, str]] = {
    "modbus-tcp": ("drivers.modbus", "ModbusDriver"),
    "modbus-rtu": ("drivers.modbus", "ModbusDriver"),
    "modbus-rtu-over-tcp": ("drivers.modbus", "ModbusDriver"),
    "serial-line": ("drivers.serial_line", "SerialLineDriver"),
}
"""driver name (a device's ``driver``) -> (module, class); every class takes
``(device, buses)``."""


def create_driver(
    device: DeviceConfig, config: GatewayConfig | None, buses: BusRegistry
) -> DeviceDriver:
    """The driver for ``device``; RTU devices share their bus (and TCP endpoints their
    connection) through ``buses``. Raises ``ValueError`` for a device no driver can serve
    (the config loader rejects those first)."""
    try:
        module, name = DRIVERS[device.driver]
    except KeyError:
        raise ValueError(f"unknown driver {device.driver!r} for device {device.name!r}") from None
    driver: DeviceDriver = getattr(importlib.import_module(module), name)(device, buses)
    return driver
