"""The driver contract: one `DeviceDriver` per configured device, one `ScanResult` per scan.

This module is the contract only: it imports no driver and no I/O library (the drivers
import it; `drivers.registry` builds them, loading each driver's module on first use).

A driver never raises for a device fault: a scan that cannot read some points returns them
with quality ``bad`` and one `DriverError` per failed request (or line). Failures are
logged once per change of state (a dead device does not flood the log), each line naming
the device, its unit and its bus.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from gateway.core.errors import DriverError
from gateway.core.model import DEFAULT_MODBUS_TCP_PORT, TCP_DRIVERS, DeviceConfig, Reading

log = logging.getLogger("sensegate.drivers")

BACKOFF_MIN = 0.5  # seconds before the first reconnect attempt of a port or link
BACKOFF_MAX = 30.0  # cap of the exponential backoff


@dataclass(slots=True)
class ScanResult:
    """One scan of one device."""

    reading: Reading
    raw: dict[str, Sequence[int] | Sequence[bool]] = field(default_factory=dict)
    errors: list[DriverError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every point was read (quality may still be ``invalid``)."""
        return not self.errors


class DeviceDriver(ABC):
    """Reads one device. ``scan`` never raises for a device fault."""

    device: DeviceConfig

    @abstractmethod
    async def scan(self) -> ScanResult:
        """Read every point once now."""

    @abstractmethod
    async def close(self) -> None:
        """Release what this driver alone holds (shared buses stay with the registry)."""


class FailureLog:
    """Logs a failure when it starts or changes kind, and the recovery, never every scan.

    ``key`` tells independent failure sources apart (one per request of a device, the
    connection, serial noise), so a partial failure is reported once too.
    """

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state: dict[Hashable, tuple[str, int | None]] = {}

    def failed(self, key: Hashable, error: DriverError) -> None:
        signature = (error.kind, error.code)
        if self._state.get(key) != signature:
            self._state[key] = signature
            log.warning("%s: %s", error.where(), error)

    def succeeded(self, key: Hashable, where: str, message: str) -> None:
        if self._state.pop(key, None) is not None:
            log.info("%s: %s", where, message)

    @property
    def failing(self) -> bool:
        return bool(self._state)


def where(device: DeviceConfig) -> str:
    """The ``device 'x' unit 3 bus 'rs485-a'`` prefix of log lines about ``device``, the
    same as `DriverError.where` of its errors (see `bus_label`, `unit_of`)."""
    return DriverError("", device=device.name, unit=unit_of(device),
                       bus=bus_label(device)).where()


def unit_of(device: DeviceConfig) -> int | None:
    """The Modbus unit id; ``None`` for serial-line sensors, which have none."""
    return device.unit if device.driver != "serial-line" else None


def bus_label(device: DeviceConfig) -> str | None:
    """What a log line names as the device's bus: the RS-485 bus name (``rs485-a``), the
    TCP endpoint (``tcp 10.0.0.21:502``, also for RTU over TCP) or the serial port of a
    serial-line sensor (``/dev/ttyUSB1``)."""
    if device.driver == "modbus-rtu":
        return device.bus
    if device.driver in TCP_DRIVERS:
        return f"tcp {device.host}:{device.port or DEFAULT_MODBUS_TCP_PORT}"
    if device.serial is not None:
        return device.serial.port
    return None


def describe_os_error(exc: BaseException) -> str:
    """``connection refused``, ``no such file or directory``: lower case, no errno noise."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int) and number > 0:
        return os.strerror(number).lower()
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).strip().rstrip(".").lower()
