"""Simulated field devices for the demo and the test suites.

Modbus devices are served by a small Modbus server of our own (TCP, RTU on a pty, RTU
over TCP) built on `gateway.core.modbus` (CRC, MBAP), not on a library's server: the
gateway talks to them through pymodbus's client, so every frame crosses two independent
implementations, and the simulators do not depend on any library's server internals (which
change from one pymodbus minor release to the next). A simulator holds several units
(Modbus unit ids), each with its own register and bit tables, values settable at any time,
optional per-read hooks (e.g. a sequence number that increments at every read) and a
*fault* that makes it misbehave:

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
exception 2 (illegal data address), as real devices do for holes in their map; a read of
0 or more than 125 registers (2000 bits) exception 3; an unknown function exception 1.
Writes (function codes 5, 6, 15, 16) change the tables.

`SerialLineSimulator` prints ASCII records on a pty, streaming or answering a request, and
can print noise. Every simulator keeps a log of the frames it received and sent with their
monotonic times (``frames``; TCP simulators only when ``record_frames``), which tests use
to prove bus discipline.

All simulators are async: ``await sim.start()`` / ``await sim.stop()``, or ``async with``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.core.decode import encode_registers
from gateway.core.modbus import TABLE_OF_FUNCTION, crc_ok, mbap_frame, rtu_frame
from gateway.core.model import BIT_TABLES, PointConfig, Value

FAULTS = ("silent", "exception", "garbage", "truncated", "crc", "bytecount")
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3
_MAX_REGISTERS, _MAX_BITS = 125, 2000
_RTU_QUIET = 0.1  # a partial RTU request older than this is dropped (line silence)

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


def _pack_bits(bits: Sequence[bool]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def _unpack_bits(data: bytes, count: int) -> list[bool]:
    return [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]


def _exception(function: int, code: int) -> bytes:
    return bytes([function | 0x80, code])


def serve_pdu(unit: SimUnit, pdu: bytes) -> bytes:
    """The response PDU a healthy device gives to request ``pdu`` (faults aside)."""
    function = pdu[0]
    if len(pdu) < 5:
        return _exception(function, ILLEGAL_VALUE)
    address = int.from_bytes(pdu[1:3], "big")
    table = TABLE_OF_FUNCTION.get(function)
    if table is not None:  # a read
        count = int.from_bytes(pdu[3:5], "big")
        bits = table in BIT_TABLES
        if not 1 <= count <= (_MAX_BITS if bits else _MAX_REGISTERS):
            return _exception(function, ILLEGAL_VALUE)
        unit.reads += 1
        values = unit.read(table, address, count)
        if isinstance(values, int):
            return _exception(function, values)
        data = _pack_bits(values) if bits else b"".join(v.to_bytes(2, "big") for v in values)
        return bytes([function, len(data)]) + data
    if function in (5, 6):
        value = int.from_bytes(pdu[3:5], "big")
        if address >= unit.size:
            return _exception(function, ILLEGAL_ADDRESS)
        if function == 5:
            unit.coil[address] = value == 0xFF00
        else:
            unit.holding[address] = value
        return pdu[:5]
    if function in (15, 16) and len(pdu) >= 6:
        count = int.from_bytes(pdu[3:5], "big")
        data = pdu[6 : 6 + pdu[5]]
        if address + count > unit.size:
            return _exception(function, ILLEGAL_ADDRESS)
        if function == 15:
            unit.set_bits("coil", address, _unpack_bits(data, count))
        else:
            unit.set_registers("holding", address, [int.from_bytes(data[i : i + 2], "big")
                                                     for i in range(0, 2 * count, 2)])
        return pdu[:5]
    return _exception(function, ILLEGAL_FUNCTION)


def rtu_request_size(buffer: bytes | bytearray, at: int) -> int | None:
    """Bytes of the RTU request starting at ``at``, ``0`` when more bytes are needed to
    tell, ``None`` when no request starts there (an unknown function code)."""
    if len(buffer) - at < 2:
        return 0
    function = buffer[at + 1]
    if 1 <= function <= 6:
        return 8
    if function in (15, 16):
        return 9 + buffer[at + 6] if len(buffer) - at >= 7 else 0
    return None


def corrupt(frame: bytes, fault: str) -> bytes:
    """A deliberately broken copy of a correct ``frame``."""
    if fault == "truncated":
        return frame[: max(1, len(frame) // 2)]
    if fault == "crc":
        return frame[:-1] + bytes([frame[-1] ^ 0xFF])
    if fault == "garbage":
        return bytes((0x5A ^ (i * 37)) & 0xFF for i in range(len(frame)))
    return frame


class ModbusSimulator:
    """Common part of the Modbus simulators: units, faults, frame log."""

    framing = "socket"  # socket | rtu

    def __init__(self, units: Sequence[int] | None = None, *, size: int = 1000) -> None:
        self.units: dict[int, SimUnit] = {u: SimUnit(u, size=size) for u in (units or [1])}
        self.frames: list[Frame] = []
        self.record_frames = True

    def unit(self, unit: int = 1) -> SimUnit:
        return self.units[unit]

    def add_unit(self, unit: int, *, size: int = 1000) -> SimUnit:
        self.units[unit] = SimUnit(unit, size=size)
        return self.units[unit]

    async def answer(self, unit_id: int, pdu: bytes, transaction: int = 0) -> bytes | None:
        """The frame to send back for request ``pdu`` to ``unit_id`` (``None``: silence),
        in this simulator's framing, with the unit's fault applied."""
        unit = self.units.get(unit_id)
        if unit is None or unit.fault == "silent" or not pdu:
            return None
        async with unit.busy:  # one request at a time, as a real device
            if unit.delay:
                await asyncio.sleep(unit.delay)
            if unit.fault == "exception":
                unit.reads += 1
                response = _exception(pdu[0], unit.exception_code)
            else:
                response = serve_pdu(unit, pdu)
        if unit.fault == "bytecount" and len(response) >= 2 and not response[0] & 0x80:
            response = bytes([response[0], (response[1] + 2) & 0xFF]) + response[2:]
        if self.framing == "rtu":
            frame = rtu_frame(unit_id, response)
        else:
            frame = mbap_frame(transaction, unit_id, response)
        return corrupt(frame, unit.fault or "")

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> ModbusSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        raise NotImplementedError


class _RtuReceiver:
    """Cuts RTU requests out of a byte stream (hunting past bytes that start none, or fail
    their CRC) and answers each in turn through ``send``."""

    def __init__(self, sim: ModbusSimulator, send: Callable[[bytes], None]) -> None:
        self._sim = sim
        self._send = send
        self._buffer = bytearray()
        self._last = 0.0
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._task = asyncio.create_task(self._serve(), name="modbus rtu simulator")

    def feed(self, data: bytes) -> None:
        now = time.monotonic()
        if now - self._last > _RTU_QUIET:
            self._buffer.clear()  # a new frame after line silence
        self._last = now
        self._buffer += data
        at = 0
        while at < len(self._buffer):
            size = rtu_request_size(self._buffer, at)
            if size == 0 or (size is not None and len(self._buffer) - at < size):
                break  # wait for the rest
            if size is not None and crc_ok(bytes(self._buffer[at : at + size])):
                self._queue.put_nowait(bytes(self._buffer[at : at + size]))
                at += size
            else:
                at += 1
        del self._buffer[:at]

    async def _serve(self) -> None:
        while True:
            frame = await self._queue.get()
            if frame[0] == 0:
                continue  # broadcast: no answer
            reply = await self._sim.answer(frame[0], frame[1:-2])
            if reply is not None:
                self._send(reply)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


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
        self.record_frames = False
        self.host = host
        self.port = port  # 0: a free port, known after start (and kept across restarts)
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    @property
    def connections(self) -> int:
        """Clients connected now."""
        return len(self._clients)

    def _log(self, direction: str, data: bytes) -> None:
        if self.record_frames:
            self.frames.append(Frame(direction, time.monotonic(), data))

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            if self.framing == "rtu":
                await self._rtu_connection(reader, writer)
            else:
                await self._socket_connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _socket_connection(self, reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        while True:
            header = await reader.readexactly(7)
            length = int.from_bytes(header[4:6], "big")
            pdu = await reader.readexactly(max(0, length - 1))
            self._log("rx", header + pdu)
            reply = await self.answer(header[6], pdu, int.from_bytes(header[:2], "big"))
            if reply is not None:
                self._log("tx", reply)
                writer.write(reply)

    async def _rtu_connection(self, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        def send(reply: bytes) -> None:
            self._log("tx", reply)
            writer.write(reply)

        receiver = _RtuReceiver(self, send)
        try:
            while data := await reader.read(4096):
                self._log("rx", data)
                receiver.feed(data)
        finally:
            await receiver.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._clients):
            writer.close()
        await server.wait_closed()
        self._clients.clear()


class ModbusRtuOverTcpSimulator(ModbusTcpSimulator):
    """RTU frames (with CRC) on a TCP socket, as serial device servers forward them."""

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
    """Modbus RTU devices sharing one simulated RS-485 line: a pty, gateway side at ``path``."""

    framing = "rtu"

    def __init__(self, units: Sequence[int] | None = None, *, size: int = 1000) -> None:
        super().__init__(units, size=size)
        self.pty = PtyPair()
        self.path = self.pty.path
        self._receiver: _RtuReceiver | None = None

    def _send(self, data: bytes) -> None:
        if self.record_frames:
            self.frames.append(Frame("tx", time.monotonic(), data))
        with contextlib.suppress(OSError):  # a full or hung-up line loses the frame
            os.write(self.pty.master, data)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.pty.master, 4096)
        except OSError:  # EAGAIN, or EIO: nobody has the other side open
            return
        if data and self._receiver is not None:
            if self.record_frames:
                self.frames.append(Frame("rx", time.monotonic(), data))
            self._receiver.feed(data)

    async def start(self) -> None:
        self._receiver = _RtuReceiver(self, self._send)
        asyncio.get_running_loop().add_reader(self.pty.master, self._on_readable)

    def noise(self, data: bytes) -> None:
        """Put raw bytes on the line now (a glitch, another master, a babbling device)."""
        os.write(self.pty.master, data)

    async def stop(self) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            asyncio.get_running_loop().remove_reader(self.pty.master)
            await receiver.close()
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
