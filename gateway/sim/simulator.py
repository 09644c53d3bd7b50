"""Simulated field devices for the demo and the test suites.

Modbus devices are served by pymodbus's own servers, through their public API only:
`pymodbus.server.ModbusTcpServer` (Modbus TCP), the same with the RTU framer (RTU over
TCP) and `pymodbus.server.ModbusSerialServer` on a pty (RTU). pymodbus builds and parses
every frame; the simulator plugs in where the servers offer it (`ModbusSimulator`): a
datastore that calls back for each request, and the ``trace_pdu``, ``trace_packet`` and
``trace_connect`` hooks. A simulator holds several units (Modbus unit ids), each with its
own register and bit tables, values settable at any time, optional per-read hooks (e.g. a
sequence number that increments at every read) and a *fault* that makes it misbehave:

* ``silent``: never answers;
* ``exception``: answers a Modbus exception (``exception_code``, default 2 illegal data
  address);
* ``garbage``: answers bytes that are no Modbus frame;
* ``truncated``: answers the first half of a correct frame;
* ``crc``: answers a correct frame with its last byte flipped (a CRC error in RTU);
* ``bytecount``: answers a frame whose byte count lies (two more than the data it carries;
  on TCP the MBAP length matches the bytes sent, in RTU the CRC is right);
* ``delay`` (any fault or none): waits this long before answering.

A unit answers one request at a time, as a real device does: a request that arrives while
the unit is still working on an earlier one (e.g. a late answer after the gateway's
timeout) is answered after it, in order. Requests for units the simulator does not hold
get no answer (as on a multi-drop line).

Reads that touch an address outside ``0..size-1`` or listed in ``illegal`` answer
exception 2 (illegal data address), as real devices do for holes in their map; requests
pymodbus itself refuses (a read of 0 or more than 125 registers, an unknown function) get
pymodbus's answer. Writes (function codes 5, 6, 15, 16) change the tables and are logged in
``writes``; a unit can refuse some function codes (``refuse_functions``: exception 1, e.g. a
device that refuses FC 6), answer every write with an exception (``write_exception``) or
acknowledge writes and change nothing (``ignore_writes``).

`SerialLineSimulator` prints ASCII records on a pty, streaming or answering a request, and
can print noise. Every simulator keeps a log of the frames it received and sent with their
monotonic times (``frames``; TCP simulators only when ``record_frames``), which tests use
to prove bus discipline.

All simulators are async: ``await sim.start()`` / ``await sim.stop()``, or ``async with``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import termios
import time
import tty
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pymodbus import ModbusDeviceIdentification
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerRTU, FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from drivers.bus import NameFromContext
from gateway.core.decode import encode_registers
from gateway.core.modbus import TABLE_OF_FUNCTION
from gateway.core.model import BIT_TABLES, PointConfig, Value
from gateway.sim.ports import free_port

FAULTS = ("silent", "exception", "garbage", "truncated", "crc", "bytecount")
_WIRE_FAULTS = ("garbage", "truncated", "crc", "bytecount")  # applied to the frame built
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3
SERVER_BUSY = 6
_MAX_REGISTERS, _MAX_BITS = 125, 2000
_BYTE_COUNT_AT = {FramerType.SOCKET: 8, FramerType.RTU: 2}  # after MBAP or unit, and code

# pymodbus 3.10 serves a ModbusServerContext of device contexts whose documented
# async_getValues/async_setValues can be overridden; newer releases turn such a context
# into SimDevices (their datablocks keep no getValues), which take an ``action`` instead.
_SIM_DEVICES = not hasattr(ModbusSequentialDataBlock, "getValues")

ReadHook = Callable[["SimUnit", str, int, int], None]

SERVING: ContextVar[str | None] = ContextVar("sensegate_simulator", default=None)
"""The simulator whose server is running the current callback: the server's transport
callbacks keep the context it was started in (`serve_named`)."""


# pymodbus's *server* lines name the simulator they are about (``simulator tcp
# 127.0.0.1:5020: ...``): in one process (the demo, the tests) they are never taken for the
# gateway's.
_NAMER = NameFromContext(SERVING)


async def serve_named(name: str, serve: Awaitable[None]) -> None:
    """Await ``serve`` (a server's start or shutdown) with `SERVING` set to ``name`` (also
    for the callbacks the server registers meanwhile, and so for its connections)."""
    for logger_name in ("pymodbus", "pymodbus.logging"):
        logger = logging.getLogger(logger_name)
        if _NAMER not in logger.filters:
            logger.addFilter(_NAMER)
    token = SERVING.set(name)
    try:
        await serve
    finally:
        SERVING.reset(token)


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
    busy_for: int = 0  # answer the next reads with exception 6 (server device busy)
    bit_size: int | None = None  # coils and discretes the server accepts (default: size)
    refuse_functions: set[int] = field(default_factory=set)  # e.g. {6}: exception 1
    write_exception: int | None = None  # answer every write with this exception code
    ignore_writes: bool = False  # acknowledge writes, change nothing
    writes: list[tuple[int, int, list[Any]]] = field(default_factory=list)  # applied
    on_write: Callable[[SimUnit], None] | None = None  # called after each applied write
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
        if point.table in BIT_TABLES:
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

    def read(self, table: str, address: int, count: int) -> list[Any] | int:
        """The values, or the exception code a device answers."""
        if address < 0 or address + count > self.size:
            return ILLEGAL_ADDRESS
        illegal = self.illegal
        if illegal and any((table, a) in illegal for a in range(address, address + count)):
            return ILLEGAL_ADDRESS
        for hook in self.hooks:
            hook(self, table, address, count)
        return self.table(table)[address : address + count]


class _Serving:
    """The request a unit accepted, from its datastore hook to its response (`_Store`)."""

    __slots__ = ("address", "function", "unit")

    def __init__(self, unit: SimUnit, function: int, address: int) -> None:
        self.unit = unit
        self.function = function
        self.address = address


def corrupt(frame: bytes, fault: str, framer: FramerType) -> bytes:
    """A deliberately broken copy of a correct ``frame`` (as pymodbus built it)."""
    if fault == "truncated":
        return frame[: max(1, len(frame) // 2)]
    if fault == "crc":
        return frame[:-1] + bytes([frame[-1] ^ 0xFF])
    if fault == "garbage":
        return bytes((0x5A ^ (i * 37)) & 0xFF for i in range(len(frame)))
    if fault == "bytecount":
        at = _BYTE_COUNT_AT[framer]
        if len(frame) <= at:
            return frame
        lie = frame[:at] + bytes([(frame[at] + 2) & 0xFF]) + frame[at + 1 :]
        if framer == FramerType.RTU:  # a right CRC: only the byte count lies
            body = lie[:-2]
            return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")
        return lie
    return frame


class ModbusSimulator:
    """Common part of the Modbus simulators: units, faults, frame log, pymodbus hooks.

    The server's datastore calls `accept` (async: the unit's turn, its delay, silence) for
    every request; the server's ``trace_pdu`` hook then gives the response its values or
    exception (`_Store.respond`), and its ``trace_packet`` hook breaks the frame pymodbus
    built for a unit with a wire fault.
    """

    framer: FramerType = FramerType.SOCKET
    framing = "socket"  # socket | rtu

    def __init__(self, units: Sequence[int] | None = None, *, size: int = 1000) -> None:
        self.units: dict[int, SimUnit] = {u: SimUnit(u, size=size) for u in (units or [1])}
        self.frames: list[Frame] = []
        self.record_frames = True
        self._serving: _Serving | None = None  # set by `accept`, taken by the response
        self._packet: str | None = None  # what to do to the next frame sent: a fault, "drop"
        self._trace_frames = True  # log frames in trace_packet (the pty relay logs its own)
        self.identity: ModbusDeviceIdentification | None = None  # FC 43/14, `identify_as`

    def unit(self, unit: int = 1) -> SimUnit:
        return self.units[unit]

    def add_unit(self, unit: int, *, size: int = 1000) -> SimUnit:
        """A new unit (before `start`: the server's datastore is built when it starts)."""
        self.units[unit] = SimUnit(unit, size=size)
        return self.units[unit]

    async def accept(
        self, unit_id: int, function: int, address: int, values: Sequence[Any] | None
    ) -> int | None:
        """Called by the datastore for each request to ``unit_id``: waits for the unit's
        turn and delay, applies a write (``values``), and returns an exception code for a
        write it refuses. Raises `NoSuchIdException` for a unit that does not answer (the
        server, ``ignore_missing_devices``, then sends nothing)."""
        unit = self.units.get(unit_id)
        if unit is None or unit.fault == "silent":
            raise NoSuchIdException(f"unit {unit_id} does not answer")
        async with unit.busy:  # one request at a time, as a real device
            if unit.delay:
                await asyncio.sleep(unit.delay)
        # from here to the response going out pymodbus does not yield to the event loop
        self._serving = _Serving(unit, function, address)
        if function in unit.refuse_functions:
            return ILLEGAL_FUNCTION
        if values is None or unit.fault == "exception":
            return None
        if unit.write_exception is not None:
            return unit.write_exception
        if unit.ignore_writes:
            return None
        table = "coil" if function in (5, 15) else "holding"
        if address < 0 or address + len(values) > unit.size:
            return ILLEGAL_ADDRESS
        if table == "coil":
            unit.set_bits(table, address, [bool(v) for v in values])
        else:
            unit.set_registers(table, address, [int(v) for v in values])
        unit.writes.append((function, address, list(values)))
        if unit.on_write is not None:
            unit.on_write(unit)
        return None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            return pdu
        serving, self._serving = self._serving, None
        unit = self.units.get(pdu.dev_id)
        if unit is None or unit.fault == "silent":
            self._packet = "drop"  # pymodbus's own answer (a unit of no device here)
            return pdu
        if serving is None or serving.unit is not unit:
            return pdu  # pymodbus's own answer (e.g. illegal data value): as it is
        response = self._respond(serving, pdu)
        fault = unit.fault
        if fault in _WIRE_FAULTS and not (fault == "bytecount" and response.isError()):
            self._packet = fault
        return response

    def _respond(self, serving: _Serving, pdu: ModbusPDU) -> ModbusPDU:
        """The response to the request ``serving`` describes, from the unit's tables."""
        unit, function = serving.unit, serving.function
        table = TABLE_OF_FUNCTION.get(function)
        if unit.fault == "exception":
            unit.reads += 1
            return self._exception(pdu, function, unit.exception_code)
        if unit.busy_for > 0 and table is not None:
            unit.busy_for -= 1
            unit.reads += 1
            return self._exception(pdu, function, SERVER_BUSY)
        if table is None or pdu.isError():
            return pdu  # a write (applied by `accept`), or an exception pymodbus chose
        unit.reads += 1
        bits = table in BIT_TABLES
        count = len(pdu.bits) if bits else len(pdu.registers)
        values = unit.read(table, serving.address, count)
        if isinstance(values, int):
            return self._exception(pdu, function, values)
        if bits:
            pdu.bits = values
        else:
            pdu.registers = values
        return pdu

    @staticmethod
    def _exception(pdu: ModbusPDU, function: int, code: int) -> ModbusPDU:
        return ExceptionResponse(
            function, exception_code=code, device_id=pdu.dev_id, transaction=pdu.transaction_id
        )

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending:
            action, self._packet = self._packet, None
            if action == "drop":
                return b""
            if action is not None:
                data = corrupt(data, action, self.framer)
        if self.record_frames and self._trace_frames and data:
            self.frames.append(Frame("tx" if sending else "rx", time.monotonic(), data))
        return data

    def _datastore(self) -> Any:
        """The server's ``context``: one datastore per unit, each calling `accept`."""
        if _SIM_DEVICES:
            return _sim_devices(self)
        return ModbusServerContext(
            devices={u: _UnitContext(self, u) for u in self.units}, single=False
        )

    def identify_as(self, vendor: str, product: str, revision: str = "1.0") -> None:
        """Answer FC 43/14 (read device identification) with these, for every unit."""
        self.identity = ModbusDeviceIdentification(info_name={  # type: ignore[no-untyped-call]
            "VendorName": vendor, "ProductCode": product, "MajorMinorRevision": revision})

    def _server_options(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "framer": self.framer,
            "ignore_missing_devices": True,
            "trace_packet": self._trace_packet,
            "trace_pdu": self._trace_pdu,
        }

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> ModbusSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class _UnitContext(ModbusDeviceContext):
    """pymodbus's device datastore (before SimDevice) for one unit: its documented
    ``async_getValues``/``async_setValues`` ask the simulator (`ModbusSimulator.accept`)."""

    def __init__(self, sim: ModbusSimulator, unit_id: int) -> None:
        tiny: Any = ModbusSequentialDataBlock  # never read: the unit's own tables are
        super().__init__(di=tiny(0, [False]), co=tiny(0, [False]), ir=tiny(0, [0]),
                         hr=tiny(0, [0]))
        self.sim = sim
        self.unit_id = unit_id

    async def async_getValues(
        self, fc_as_hex: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | int:
        await self.sim.accept(self.unit_id, fc_as_hex, address, None)
        unit = self.sim.units[self.unit_id]
        table = unit.table("coil" if fc_as_hex in (1, 5, 15) else
                           TABLE_OF_FUNCTION.get(fc_as_hex, "holding"))
        values = table[address : address + count]  # the response gets its values later
        return values + [values[-1] if values else 0] * (count - len(values))

    async def async_setValues(
        self, fc_as_hex: int, address: int, values: list[int] | list[bool]
    ) -> int | None:
        return await self.sim.accept(self.unit_id, fc_as_hex, address, list(values))


def _sim_devices(sim: ModbusSimulator) -> list[Any]:
    """pymodbus's SimDevice datastore: one device per unit whose ``action`` asks the
    simulator (`ModbusSimulator.accept`), and a catch-all device 0 that answers nothing."""
    from pymodbus.constants import ExcCodes  # SimDevice releases only
    from pymodbus.simulator import DataType, SimData, SimDevice

    async def action(unit_id: int, function: int, _start: int, address: int, _count: int,
                     _registers: list[int], values: list[Any] | None) -> Any:
        code = await sim.accept(unit_id, function, address, values)
        return None if code is None else ExcCodes(code)

    def device(unit_id: int, size: int, bit_size: int) -> Any:
        registers = size + _MAX_REGISTERS  # any legal read starting in the map reaches us
        # pymodbus builds bit tables slowly (seconds for 20,000 bits): only as many as used
        bits = (bit_size + _MAX_BITS + 15) // 16 * 16
        return SimDevice(
            unit_id,
            simdata=(
                [SimData(0, count=bits, values=False, datatype=DataType.BITS)],
                [SimData(0, count=bits, values=False, datatype=DataType.BITS)],
                [SimData(0, count=registers, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=registers, values=0, datatype=DataType.REGISTERS)],
            ),
            action=functools.partial(action, unit_id),
        )

    devices = [device(u, unit.size, unit.size if unit.bit_size is None else unit.bit_size)
               for u, unit in sim.units.items() if u != 0]
    return [*devices, device(0, 1, 1)]


class ModbusTcpSimulator(ModbusSimulator):
    """Modbus TCP devices on a free loopback port (``host``, ``port`` after start), served
    by `pymodbus.server.ModbusTcpServer`."""

    def __init__(
        self,
        units: Sequence[int] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        size: int = 1000,
    ) -> None:
        super().__init__(units, size=size)
        self.record_frames = False
        self.host = host
        self.port = port  # 0: a free port, known after start (and kept across restarts)
        self._server: ModbusTcpServer | None = None
        self._connections = 0

    @property
    def connections(self) -> int:
        """Clients connected now."""
        return self._connections

    def _trace_connect(self, connected: bool) -> None:
        self._connections = max(0, self._connections + (1 if connected else -1))

    async def start(self) -> None:
        if not self.port:
            self.port = free_port(self.host)
        server = ModbusTcpServer(
            self._datastore(),
            address=(self.host, self.port),
            trace_connect=self._trace_connect,
            **self._server_options(),
        )
        await serve_named(self._name(), server.serve_forever(background=True))
        self._server = server

    def _name(self) -> str:
        kind = "rtu-over-tcp" if self.framing == "rtu" else "tcp"
        return f"simulator {kind} {self.host}:{self.port}"

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await serve_named(self._name(), server.shutdown())  # type: ignore[no-untyped-call]
        self._connections = 0


class ModbusRtuOverTcpSimulator(ModbusTcpSimulator):
    """RTU frames (with CRC) on a TCP socket, as serial device servers forward them:
    `pymodbus.server.ModbusTcpServer` with the RTU framer."""

    framer = FramerType.RTU
    framing = "rtu"


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


class ModbusRtuSimulator(ModbusSimulator):
    """Modbus RTU devices sharing one simulated RS-485 line, gateway side at ``path``.

    The devices are a `pymodbus.server.ModbusSerialServer` on a second pty (pyserial opens
    its slave); the simulator copies bytes between the two ptys' masters, which is where it
    logs the frames on the line and where `noise` is put on it.
    """

    framer = FramerType.RTU
    framing = "rtu"

    def __init__(self, units: Sequence[int] | None = None, *, size: int = 1000) -> None:
        super().__init__(units, size=size)
        self.pty = PtyPair()  # the gateway's side
        self.path = self.pty.path
        self._device_side: PtyPair | None = None  # the server's side, from `start`
        self._trace_frames = False
        self._server: ModbusSerialServer | None = None
        self._line: tuple[int, str, str | None] | None = None

    def listen_at(self, baudrate: int, parity: str = "N", trace: str | None = None) -> None:
        """Answer only a gateway that opened the line at ``baudrate`` and ``parity``, as
        devices set to them do (others see garbage, and stay silent). The speed is read
        from the pty with termios; a pty keeps no parity, so the parity asked for is read
        from the gateway's `drivers.line` trace file ``trace`` (its last line for this
        port); without one, parity is not checked."""
        self._line = (baudrate, parity, trace)

    def _line_matches(self) -> bool:
        if self._line is None:
            return True
        baudrate, parity, trace = self._line
        speed = termios.tcgetattr(self.pty.master)[4]
        if speed != getattr(termios, f"B{baudrate}", None):
            return False
        if trace is None:
            return True
        try:
            with open(trace, encoding="utf-8") as lines:
                asked = [line.split() for line in lines if line.startswith(self.path + " ")]
        except OSError:
            return False
        return bool(asked) and asked[-1][3] == parity

    def _copy(self, source: int, target: int, direction: str) -> None:
        try:
            data = os.read(source, 4096)
        except OSError:  # EAGAIN, or EIO: nobody has the other side open
            return
        if not data:
            return
        if direction == "rx" and not self._line_matches():
            return  # at another speed or parity the devices hear only noise
        if self.record_frames:
            self.frames.append(Frame(direction, time.monotonic(), data))
        with contextlib.suppress(OSError):  # a full or hung-up line loses the bytes
            os.write(target, data)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        device_side = self._device_side = PtyPair()
        gateway, devices = self.pty.master, device_side.master
        loop.add_reader(gateway, self._copy, gateway, devices, "rx")
        loop.add_reader(devices, self._copy, devices, gateway, "tx")
        server = ModbusSerialServer(
            self._datastore(), port=device_side.path, baudrate=115200,
            **self._server_options(),
        )
        await serve_named(f"simulator rtu {self.path}", server.serve_forever(background=True))
        self._server = server

    def noise(self, data: bytes) -> None:
        """Put raw bytes on the line now (a glitch, another master, a babbling device)."""
        os.write(self.pty.master, data)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            shutdown = server.shutdown()  # type: ignore[no-untyped-call]
            await serve_named(f"simulator rtu {self.path}", shutdown)
        device_side, self._device_side = self._device_side, None
        if device_side is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.pty.master)
            loop.remove_reader(device_side.master)
            device_side.close()
        self.pty.close()


class ModbusAsciiSimulator(ModbusRtuSimulator):
    """Modbus ASCII devices on a simulated line (`pymodbus.server.ModbusSerialServer` with
    the ASCII framer): for buses with ``framing: ascii``."""

    framer = FramerType.ASCII
    framing = "ascii"


class SerialLineSimulator:
    """An ASCII sensor printing one record per line on a pty (gateway side at ``path``).

    ``template`` is formatted with ``values`` for each record. With ``request`` set, a
    record is printed only after the request bytes arrive; otherwise one record is printed
    every ``period`` seconds. ``noise(...)`` prints a line of garbage; ``silent`` stops
    answering; ``noisy`` prints a garbage line before every record; ``records`` counts the
    records printed; ``record_frames`` (default on) keeps what was sent and received in
    ``frames``.
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
        self.record_frames = True
        self.pty = PtyPair()
        self.path = self.pty.path
        self._task: asyncio.Task[None] | None = None
        self._inbox = bytearray()
        self._requests: asyncio.Queue[None] = asyncio.Queue()

    def record(self) -> bytes:
        return self.template.format(**self.values).encode("ascii") + self.newline

    def send(self, data: bytes) -> None:
        if self.record_frames:
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
        if self.record_frames:
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
