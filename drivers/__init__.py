"""Device drivers: Modbus (TCP, RTU over a shared bus, RTU over TCP) and serial-line ASCII."""

from drivers.base import DeviceDriver, ScanResult, create_driver
from drivers.bus import BusRegistry

__all__ = ["BusRegistry", "DeviceDriver", "ScanResult", "create_driver"]
