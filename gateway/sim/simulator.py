"""Simulated field devices for the demo and the test suites.

Modbus devices are served by pymodbus's own servers (TCP, RTU on a pty, RTU over TCP), so
every frame on the wire is built by pymodbus, not here. A simulator holds several units
(Modbus unit ids), each with its own register and bit tables, values settable at any time,
optional per-read hooks (e.g. a sequence number that increments at every read) and a
*fault* that makes it misbehave:

* ``silent``: never answers;
* ``exception``: answers a Modbus exception (``exception_code``, default 2 illegal data
  address);
* ``garbage``: answers bytes that are no Modbus frame;
* ``truncated``: answers the first half of a correct frame;
* ``crc``: answers a correct frame with its last byte flipped (a CRC error in RTU);
* ``delay`` (any fault or none): waits this long before answering.

A unit answers one request at a time, as a real device does: a request that arrives while
the unit is still working on an earlier one (e.g. a late answer after the gateway's
timeout) is answered after it, in order.

Reads that touch an address outside ``0..size-1`` or listed in ``illegal`` answer
exception 2 (illegal data address), as real devices do for holes in their map.

`SerialLineSimulator` prints ASCII records on a pty, streaming or answering a request, and
can print noise. Every simulator keeps a log of the frames it received and sent with their
monotonic times (``frames``), which tests use to prove bus discipline.

All simulators are async: ``await sim.start()`` / ``await sim.stop()``, or ``async with``.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from gateway.core.decode import encode_registers
from gateway.core.model import PointConfig, Value

FAULTS = ("silent", "exception", "garbage", "truncated", "crc")
_FUNCTION_TABLES = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
_BIT_TABLES = ("coil", "discrete")

ReadHook = Callable[["SimUnit", str, int, int], None]


@dataclass(slots=True)
class Frame:
    """One chunk of bytes on the simulated wire: ``rx`` from the gateway, ``tx`` to it."""

    direction: str  # rx | tx
    t: float  # time.monotonic()
    data: bytes


@dataclass(eq=False)
class SimUnit:
    """One simulated Modbus unit: four tables, hooks and a fault."""

    unit: int
    size: int = 1000
    holding: list[int] = field(default_factory=list)
    input: list[int] = field(default_factory=list)
    coil: list[bool] = field(default_factory=list)
    discrete: list[bool] = field(default_factory=list)
    illegal: set[tuple[str, int]] = field(default_factory=set)
    hooks: list[ReadHook] = field(default_factory=list)
    fault: str | None = None
    exception_code: int = 2
    delay: float = 0.0
    reads: int = 0  # read requests answered or refused (not counted when silent)
    busy: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def __post_init__(self) -> None:
        for name, zero in (("holding", 0), ("input", 0), ("coil", False), ("discrete", False)):
            table = getattr(self, name)
            table.extend([zero] * (self.size - len(table)))

    def table(self, name: str) -> list[Any]:
        if name not in ("holding", "input", "coil", "discrete"):
            raise ValueError(f"unknown table {name!r}")
        return getattr(self, name)  # type: ignore[no-any-return]

    def set_registers(self, table: str, address: int, values: Sequence[int]) -> None:
        self.table(table)[address : address + len(values)] = [int(v) & 0xFFFF for v in values]

    def set_bits(self, table: str, address: int, values: Sequence[bool]) -> None:
        self.table(table)[address : address + len(values)] = [bool(v) for v in values]

    def set_point(self, point: PointConfig, value: Value) -> None:
        """Store ``value`` (raw, before scale/offset) where ``point`` reads it."""
        if point.table is None or point.address is None:
            raise ValueError(f"point {point.name!r} has no modbus table and address")
        if point.table in _BIT_TABLES:
            self.set_bits(point.table, point.address, [bool(value)])
        else:
            self.set_registers(point.table, point.address, encode_registers(point, value))

    def add_counter(self, table: str = "holding", address: int = 0) -> None:
        """Make the register at ``address`` increment (mod 2**16) at every read covering it."""

        def bump(unit: SimUnit, read_table: str, start: int, count: int) -> None:
            if read_table == table and start <= address < start + count:
                values = unit.table(table)
                values[address] = (values[address] + 1) & 0xFFFF

        self.hooks.append(bump)

    def refuse(self, table: str, address: int) -> None:
        """Answer exception 2 (illegal data address) to any read covering ``address``."""
        self.illegal.add((table, address))

    def read(self, table: str, address: int, count: int) -> list[Any] | ExcCodes:
        if address < 0 or address + count > self.size:
            return ExcCodes.ILLEGAL_ADDRESS
        illegal = self.illegal
        if illegal and any((table, a) in illegal for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        for hook in self.hooks:
            hook(self, table, address, count)
        return self.table(table)[address : address + count]


class _Context(ModbusServerContext):
    """A pymodbus datastore that asks a `ModbusSimulator` for every read.

    pymodbus calls ``async_getValues`` for each request; a silent unit raises
    `NoSuchIdException`, which the server (``ignore_missing_devices``) answers with nothing.
    """

    def __init__(self, sim: ModbusSimulator) -> None:  # no super(): that one only warns
        self._sim = sim
        self.old_simulator = True  # route requests to async_getValues below
        self.simdevices = []

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        return await self._sim._read(device_id, func_code, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        unit = self._sim.units.get(device_id)
        table = {5: "coil", 15: "coil", 6: "holding", 16: "holding"}.get(func_code)
        if unit is None or table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        unit.table(table)[address : address + len(values)] = list(values)
        return None

    def device_ids(self) -> list[int]:
        return list(self._sim.units)


class ModbusSimulator:
    """Common part of the Modbus simulators: units, faults, frame log."""

    framer: FramerType = FramerType.SOCKET

    def __init__(self, units: Sequence[int] | None = None, *, size: int = 1000) -> None:
        self.units: dict[int, SimUnit] = {u: SimUnit(u, size=size) for u in (units or [1])}
        self.frames: list[Frame] = []
        self.record_frames = True
        self._context = _Context(self)
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._outgoing_fault: SimUnit | None = None

    def unit(self, unit: int = 1) -> SimUnit:
        return self.units[unit]

    def add_unit(self, unit: int, *, size: int = 1000) -> SimUnit:
        self.units[unit] = SimUnit(unit, size=size)
        return self.units[unit]

    async def _read(
        self, device_id: int, func_code: int, address: int, count: int
    ) -> list[int] | list[bool] | ExcCodes:
        unit = self.units.get(device_id)
        if unit is None or unit.fault == "silent":
            raise NoSuchIdException(f"unit {device_id} does not answer")
        async with unit.busy:  # one request at a time, as a real device
            if unit.delay:
                await asyncio.sleep(unit.delay)
            return self._answer(unit, func_code, address, count)

    def _answer(
        self, unit: SimUnit, func_code: int, address: int, count: int
    ) -> list[int] | list[bool] | ExcCodes:
        table = _FUNCTION_TABLES.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        unit.reads += 1
        if unit.fault == "exception":
            return ExcCodes(unit.exception_code)
        # the response is sent right after this returns, with no await in between
        self._outgoing_fault = unit if unit.fault in ("garbage", "truncated", "crc") else None
        return unit.read(table, address, count)

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending:
            unit, self._outgoing_fault = self._outgoing_fault, None
            if unit is not None:
                data = corrupt(data, unit.fault or "")
        return data

    def _server_kwargs(self) -> dict[str, Any]:
        return {
            "framer": self.framer,
            "ignore_missing_devices": True,
            "trace_packet": self._trace,
        }

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def __aenter__(self) -> ModbusSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        raise NotImplementedError


def corrupt(frame: bytes, fault: str) -> bytes:
    """A deliberately broken copy of a correct ``frame``."""
    if fault == "truncated":
        return frame[: max(1, len(frame) // 2)]
    if fault == "crc":
        return frame[:-1] + bytes([frame[-1] ^ 0xFF])
    if fault == "garbage":
        return bytes((0x5A ^ (i * 37)) & 0xFF for i in range(len(frame)))
    return frame


class ModbusTcpSimulator(ModbusSimulator):
    """Modbus TCP devices on a free loopback port (``host``, ``port`` after start)."""

    def __init__(
        self,
        units: Sequence[int] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        size: int = 1000,
    ) -> None:
        super().__init__(units, size=size)
        self.host = host
        self.port = port  # 0: a free port, known after start (and kept across restarts)

    @property
    def connections(self) -> int:
        """Clients connected now."""
        return len(self._server.active_connections) if self._server is not None else 0

    async def start(self) -> None:
        address = (self.host, self.port)
        server = ModbusTcpServer(self._context, address=address, **self._server_kwargs())
        await server.serve_forever(background=True)
        self._server = server
        self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]


class ModbusRtuOverTcpSimulator(ModbusTcpSimulator):
    """RTU frames (with CRC) on a TCP socket, as serial device servers forward them."""

    framer = FramerType.RTU


class PtyPair:
    """A pseudo-terminal: the simulator keeps ``master``; the gateway opens ``path``."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing before the gateway configures it
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)

    def close(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class _PtyTransport(asyncio.Transport):
    """An asyncio transport on the master side of a pty, logging every chunk."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        protocol: asyncio.Protocol,
        frames: list[Frame] | None,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._fd = fd
        self._protocol = protocol
        self._frames = frames
        self._closing = False
        loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: nobody has the other side open
            return
        if data:
            if self._frames is not None:
                self._frames.append(Frame("rx", time.monotonic(), data))
            self._protocol.data_received(data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        if self._frames is not None:
            self._frames.append(Frame("tx", time.monotonic(), bytes(data)))
        try:
            os.write(self._fd, data)
        except OSError:
            pass  # a full or hung-up line loses the frame, as a real wire would

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._loop.remove_reader(self._fd)


class ModbusRtuSimulator(ModbusSimulator):
    """Modbus RTU devices sharing one simulated RS-485 line: a pty, gateway side at ``path``."""

    framer = FramerType.RTU

    def __init__(self, units: Sequence[int] | None = None, *, size: int = 1000) -> None:
        super().__init__(units, size=size)
        self.pty = PtyPair()
        self.path = self.pty.path

    async def start(self) -> None:
        server = ModbusSerialServer(self._context, port=self.path, **self._server_kwargs())
        loop = asyncio.get_running_loop()

        async def create() -> tuple[asyncio.Transport, asyncio.Protocol]:
            protocol = server.handle_new_connection()
            transport = _PtyTransport(
                loop, self.pty.master, protocol, self.frames if self.record_frames else None
            )
            protocol.connection_made(transport)
            return transport, protocol

        server.call_create = create  # serve the pty master instead of opening a port by name
        await server.serve_forever(background=True)
        self._server = server

    def noise(self, data: bytes) -> None:
        """Put raw bytes on the line now (a glitch, another master, a babbling device)."""
        os.write(self.pty.master, data)

    async def stop(self) -> None:
        await super().stop()
        self.pty.close()


class SerialLineSimulator:
    """An ASCII sensor printing one record per line on a pty (gateway side at ``path``).

    ``template`` is formatted with ``values`` for each record. With ``request`` set, a
    record is printed only after the request bytes arrive; otherwise one record is printed
    every ``period`` seconds. ``noise(...)`` prints a line of garbage; ``silent`` stops
    answering; ``noisy`` prints a garbage line before every record; ``records`` counts the
    records printed.
    """

    def __init__(
        self,
        template: str,
        values: dict[str, Any] | None = None,
        *,
        request: bytes | None = None,
        period: float = 0.05,
        newline: bytes = b"\r\n",
    ) -> None:
        self.template = template
        self.values: dict[str, Any] = dict(values or {})
        self.request = request
        self.period = period
        self.newline = newline
        self.silent = False
        self.noisy: bytes | None = None  # a garbage line printed before every record
        self.records = 0
        self.frames: list[Frame] = []
        self.pty = PtyPair()
        self.path = self.pty.path
        self._task: asyncio.Task[None] | None = None
        self._inbox = bytearray()
        self._requests: asyncio.Queue[None] = asyncio.Queue()

    def record(self) -> bytes:
        return self.template.format(**self.values).encode("ascii") + self.newline

    def send(self, data: bytes) -> None:
        self.frames.append(Frame("tx", time.monotonic(), data))
        try:
            os.write(self.pty.master, data)
        except OSError:
            pass

    def noise(self, data: bytes = b"\x00\xff#?!garbage line\x7f") -> None:
        self.send(data + self.newline)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.pty.master, 4096)
        except OSError:
            return
        self.frames.append(Frame("rx", time.monotonic(), data))
        self._inbox += data
        if self.request:
            while (i := self._inbox.find(self.request)) >= 0:
                del self._inbox[: i + len(self.request)]
                self._requests.put_nowait(None)
        else:
            self._inbox.clear()

    async def _run(self) -> None:
        while True:
            if self.request:
                await self._requests.get()
            else:
                await asyncio.sleep(self.period)
            if not self.silent:
                if self.noisy is not None:
                    self.noise(self.noisy)
                self.send(self.record())
                self.records += 1

    async def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.pty.master, self._on_readable)
        self._task = asyncio.create_task(self._run(), name="serial-line simulator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
            asyncio.get_running_loop().remove_reader(self.pty.master)
        self.pty.close()

    async def __aenter__(self) -> SerialLineSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def pattern_for(template: str) -> str:
    """A regex with one named group per ``{name...}`` field of ``template`` (for configs)."""
    parts = re.split(r"\{(\w+)[^}]*\}", template)
    out = []
    for i, part in enumerate(parts):
        out.append(re.escape(part) if i % 2 == 0 else rf"(?P<{part}>[-+\w.]+)")
    return "".join(out)
