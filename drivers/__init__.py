"""Device drivers: Modbus (TCP, RTU over a shared bus, RTU over TCP) and serial-line ASCII.

Names are loaded on first use (PEP 562), so ``import drivers`` (or `drivers.base`, the
driver contract) loads no I/O library: pymodbus comes with `drivers.bus`/`drivers.modbus`,
pyserial with `drivers.serial_line`, each only when a device needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drivers.base import DeviceDriver, ScanResult
    from drivers.bus import BusRegistry
    from drivers.registry import create_driver

__all__ = ["BusRegistry", "DeviceDriver", "ScanResult", "create_driver"]

_WHERE = {
    "BusRegistry": "drivers.bus",
    "DeviceDriver": "drivers.base",
    "ScanResult": "drivers.base",
    "create_driver": "drivers.registry",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'drivers' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
