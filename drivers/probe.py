"""`sensegate scan`'s wire side: is there a Modbus unit at this id, and what is it?

One cheap request per unit id (read holding register 0) with a short timeout: any answer,
data or an exception, means a device is there, except exceptions 10 and 11, which a Modbus
TCP gateway sends for a unit id with no device behind it. Then, for a unit that answered, the basic
device identification (function 43, MEI type 14, read code 1: vendor, product code,
revision), which many devices do not support (an exception or silence: no identity).
Reads only: the scan never writes. pymodbus's public client only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse

from drivers.bus import quiet_pymodbus
from drivers.line import usable_settings
from gateway.core.modbus import describe_exception
from gateway.core.model import SerialSettings
from gateway.core.scan import Found

log = logging.getLogger("sensegate.scan")

_IDENTITY_NAMES = {0: "vendor", 1: "product", 2: "revision"}
_GATEWAY_EXCEPTIONS = frozenset({10, 11})  # gateway path unavailable, target did not respond
_QUIET = 0.02  # after a probe without an answer: let a late one pass before the next


class Prober:
    """One connection (a serial line at one setting, or a TCP host) and its probes."""

    def __init__(self, client: ModbusBaseClient, timeout: float, *, serial: bool) -> None:
        self.client = client
        self.timeout = timeout
        self.serial = serial
        self.warning: str | None = None

    @classmethod
    def rtu(cls, settings: SerialSettings, timeout: float, framing: str = "rtu") -> Prober:
        quiet_pymodbus()
        usable, warning = usable_settings(settings)
        client = AsyncModbusSerialClient(
            usable.port, framer=FramerType.ASCII if framing == "ascii" else FramerType.RTU,
            baudrate=usable.baudrate, bytesize=usable.bytesize, parity=usable.parity,
            stopbits=usable.stopbits, timeout=timeout, retries=0, reconnect_delay=0,
        )
        prober = cls(client, timeout, serial=True)
        prober.warning = warning
        return prober

    @classmethod
    def tcp(cls, host: str, port: int, timeout: float) -> Prober:
        quiet_pymodbus()
        client = AsyncModbusTcpClient(host, port=port, timeout=timeout, retries=0,
                                      reconnect_delay=0)
        return cls(client, timeout, serial=False)

    async def connect(self) -> bool:
        try:
            async with asyncio.timeout(max(self.timeout, 1.0) + 1.0):
                return bool(await self.client.connect())
        except (TimeoutError, OSError, ModbusException):
            return False

    def close(self) -> None:
        self.client.close()

    async def _ask(self, call: Callable[[], Awaitable[Any]]) -> Any:
        try:
            async with asyncio.timeout(self.timeout + 0.5):
                return await call()
        except (TimeoutError, ModbusException, ValueError, IndexError):
            if self.serial:
                await asyncio.sleep(_QUIET)
            return None

    async def probe(self, unit: int) -> Found | None:
        """The unit at ``unit``, or None when nothing answered."""
        response = await self._ask(
            lambda: self.client.read_holding_registers(0, count=1, device_id=unit))
        if response is None:
            return None
        if isinstance(response, ExceptionResponse):
            if response.exception_code in _GATEWAY_EXCEPTIONS:
                return None  # a TCP gateway saying nothing is behind it at this unit id
            answer = describe_exception(response.exception_code)
        else:
            answer = "registers"
        return Found(unit, answer, await self.identify(unit))

    async def identify(self, unit: int) -> dict[str, str]:
        """FC 43/14 basic identification, ``{}`` when the device does not support it."""
        response = await self._ask(
            lambda: self.client.read_device_information(read_code=1, object_id=0,
                                                        device_id=unit))
        information = getattr(response, "information", None)
        if not isinstance(information, dict) or isinstance(response, ExceptionResponse):
            return {}
        identity: dict[str, str] = {}
        for key, name in _IDENTITY_NAMES.items():
            value = information.get(key)
            if isinstance(value, bytes):
                identity[name] = value.decode("utf-8", "replace").strip(" \x00")
            elif isinstance(value, str):
                identity[name] = value.strip()
        return {k: v for k, v in identity.items() if v}
