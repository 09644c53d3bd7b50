"""Shared Modbus connections: one client and one lock per RS-485 bus or TCP endpoint.

Every Modbus transaction goes through a `Link`. A link owns one pymodbus client and a lock
(`PriorityLock`, used like an ``asyncio.Lock``): a device holds the lock for a whole
transaction (request, response or timeout, retries, then the bus's silence), so exactly one
transaction is in flight on a bus whatever the number of devices on it. A command's write
takes the lock `urgently` (`drivers.modbus.ModbusWriter`): after the transaction in flight,
ahead of the polls waiting. Devices behind the same TCP endpoint (a Modbus TCP gateway, a
serial device server running RTU over TCP) share its link the same way.

A link connects lazily and reconnects with capped exponential backoff; while it waits to
retry, transactions fail at once with a ``connection`` error instead of blocking the
devices' scan loops.

RTU frames carry no transaction id: an answer that arrives after the timeout would be
taken for the answer to the next request to the same unit (the retry, or the next
identical request). So after a transaction that got no valid answer, an RTU link
(`Link.discard_late`) keeps listening for up to the timeout once more, and drops whatever
arrives before the next request goes out.

Only pymodbus's public API is used (see `Link`): no attribute of the client's internals
is read or replaced, so a pymodbus release that reorganises them changes nothing here.

Drivers `acquire` their link and `release` it when closed; a TCP endpoint no device uses
any more is closed at once (a reload that removes its devices), an RS-485 bus link when
the bus itself changes or goes (`BusRegistry.update`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any, TypeVar

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from drivers.answer import Sent, check_answer
from drivers.base import BACKOFF_MAX, BACKOFF_MIN, describe_os_error
from drivers.line import usable_settings
from gateway.core.bustime import frame_silence
from gateway.core.model import BusConfig

_NEVER_DISCONNECT = 1 << 30  # pymodbus otherwise drops a TCP link after a few timeouts
_LIBRARY_TIMEOUT = 3600.0  # pymodbus's own timeouts; sensegate's (per device) come first
_CONNECT_PAUSE = 0.1  # pymodbus before 3.16 sleeps this long after connecting: not the peer's
LATE_QUIET = 0.05  # a late answer is over once the line was silent this long

T = TypeVar("T")
log = logging.getLogger("sensegate.drivers")
TracePacket = Callable[[bool, bytes], bytes]
TracePdu = Callable[[bool, ModbusPDU], ModbusPDU]
MakeClient = Callable[[TracePacket, TracePdu], ModbusBaseClient]


IN_FLIGHT: ContextVar[str | None] = ContextVar("sensegate_modbus_in_flight", default=None)
"""Who a library log line is about: the device whose transaction is in flight (set by the
driver), or, in the transport's own callbacks, the link (set while connecting)."""


class NameFromContext(logging.Filter):
    """Prefixes a library's log line with who it is about, read from a context variable
    (``device 'x' unit 1 bus 'y': ...``), so that no line about a device's traffic goes out
    without its name. Public logging API only: a filter on the library's loggers, nothing of
    the library changed. The simulators use it with their own variable."""

    def __init__(self, who: ContextVar[str | None]) -> None:
        super().__init__()
        self.who = who

    def filter(self, record: logging.LogRecord) -> bool:
        who = self.who.get()
        if who and not getattr(record, "sensegate_named", False):
            record.msg = f"{who}: {record.getMessage()}"
            record.args = None
            record.sensegate_named = True
        return True


_LIBRARY_LOGGERS = ("pymodbus", "pymodbus.logging", "asyncio")
_NAMER = NameFromContext(IN_FLIGHT)


def quiet_pymodbus() -> None:
    """pymodbus logs every timeout and failed connect; sensegate logs those itself, once
    per state change and naming the device, so its own lines are dropped unless debugging.
    Whatever pymodbus (or asyncio, about a Modbus transport) still logs names the device or
    link it is about (`NameFromContext`)."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _NAMER not in logger.filters:
            logger.addFilter(_NAMER)


class PriorityLock:
    """An ``asyncio.Lock`` whose `urgent` waiters go before the others: a command's write
    goes ahead of the polls waiting for the bus, never in parallel with the transaction in
    flight. The lock is handed over on release (no waiter can overtake the next in line)."""

    def __init__(self) -> None:
        self._locked = False
        self._urgent: collections.deque[asyncio.Future[None]] = collections.deque()
        self._normal: collections.deque[asyncio.Future[None]] = collections.deque()

    def locked(self) -> bool:
        return self._locked

    async def acquire(self, *, urgent: bool = False) -> bool:
        if not self._locked and not self._urgent and not self._normal:
            self._locked = True
            return True
        queue = self._urgent if urgent else self._normal
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed over as we were cancelled: pass it on
            raise
        finally:
            if waiter in queue:
                queue.remove(waiter)
        return True

    def release(self) -> None:
        if not self._locked:
            raise RuntimeError("release of an unlocked PriorityLock")
        for queue in (self._urgent, self._normal):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # ownership passes on: stays locked
                    return
        self._locked = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    @contextlib.asynccontextmanager
    async def urgent(self) -> AsyncIterator[None]:
        """Hold the lock, ahead of the ordinary waiters."""
        await self.acquire(urgent=True)
        try:
            yield
        finally:
            self.release()


class Refused(Exception):
    """An answer whose bytes contradict the request (`drivers.answer.check_answer`):
    kept from pymodbus's decoder, which would raise inside the transport."""


class Link:
    """One pymodbus client, its lock and its reconnect state.

    Only public pymodbus API: the client is built with a ``trace_pdu`` callback (which
    sees every request before it is sent) and a ``trace_packet`` callback (which sees every
    frame sent and the receive buffer before pymodbus decodes it), timeouts are
    sensegate's own (``asyncio.timeout`` around connect and each request, one per device on
    a shared bus), and a failed connect is explained by `diagnose` (pymodbus only says it
    failed).
    """

    def __init__(
        self,
        name: str,
        make_client: MakeClient,
        *,
        bus: str | None = None,
        gap: float = 0.0,
        framing: str = "socket",
        diagnose: Callable[[float], Awaitable[str]] | None = None,
    ) -> None:
        self.name = name  # "rs485-a", "10.0.0.21:502"
        self.bus = bus  # bus name for log lines, None for TCP endpoints
        self.gap = gap  # silence after each transaction
        self.framing = framing  # socket | rtu | ascii
        self.lock = PriorityLock()
        self.transactions = 0
        self._make_client = make_client
        self._diagnose = diagnose
        self._client: ModbusBaseClient | None = None
        self._delay = 0.0
        self._next_attempt = 0.0
        self._last_error = ""
        self.sent: Sent | None = None  # the read request in flight
        self.received = b""  # bytes received during the current transaction
        self.refused: str | None = None  # why the answer received was refused
        self.users = 0  # drivers holding this link (`BusRegistry.acquire`)
        self.late_answers = 0  # answers (or bytes) discarded because they came too late
        self._arrived = asyncio.Event()
        self._deadline: asyncio.Timeout | None = None
        self._awaiting = False  # a request was sent and its exchange is not over

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            self.sent = Sent.of(self.framing, pdu)
        return pdu

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self._awaiting = True
            return data
        self.received = data  # pymodbus hands over its whole receive buffer
        self._arrived.set()
        if not self._awaiting:
            return b""  # no request waits for these (late) bytes: nothing to decode
        if self.sent is not None and self.refused is None:
            reason = check_answer(self.sent, data)
            if reason is not None:
                self.refused = reason
                if self._deadline is not None:  # end the wait now: no answer is coming
                    self._deadline.reschedule(asyncio.get_running_loop().time())
        # a refused answer is not decoded: pymodbus's decoder would raise in the transport
        return b"" if self.refused is not None else data

    async def connect(self, timeout: float) -> str | None:
        """Connect if needed; ``None`` when connected, else why not (call under the lock)."""
        if self.connected:
            return None
        now = time.monotonic()
        if now < self._next_attempt:
            return f"{self._last_error}; next attempt in {self._next_attempt - now:.1f}s"
        if self._client is None:
            self._client = self._make_client(self._trace_packet, self._trace_pdu)
            self._client.set_max_no_responses(_NEVER_DISCONNECT)
        self._last_error = "timed out"
        ok = False
        # the transport's callbacks keep this context: their log lines name the link
        token = IN_FLIGHT.set(f"bus '{self.bus}'" if self.bus else f"tcp {self.name}")
        try:
            async with asyncio.timeout(timeout + _CONNECT_PAUSE):
                ok = await self._client.connect()
                if not ok and self._diagnose is not None:
                    self._last_error = await self._diagnose(timeout)
        except TimeoutError:
            pass
        except Exception as exc:  # pyserial raises its own errors for bad ports
            self._last_error = describe_os_error(exc)
        finally:
            IN_FLIGHT.reset(token)
        if ok and self._client.connected:
            self._delay = 0.0
            return None
        self._client.close()
        self._delay = min(max(self._delay * 2, BACKOFF_MIN), BACKOFF_MAX)
        self._next_attempt = time.monotonic() + self._delay
        return self._last_error

    @property
    def client(self) -> ModbusBaseClient:
        """The connected client (after `connect`)."""
        assert self._client is not None
        return self._client

    async def exchange(self, call: Awaitable[T], timeout: float) -> T:
        """Await ``call`` (one pymodbus request) within ``timeout``: its response, or
        `Refused` when the answer's bytes contradict the request (the deadline is then
        brought forward to now), or ``TimeoutError`` (`received` then holds whatever bytes
        came). Call under the lock."""
        self.sent = None
        self.received = b""
        self.refused = None
        try:
            async with asyncio.timeout(timeout) as deadline:
                self._deadline = deadline
                return await call
        except (TimeoutError, ModbusIOException):
            # pymodbus before 3.11 turns the cancellation into a ModbusIOException
            if self.refused is not None:
                raise Refused(self.refused) from None
            raise
        finally:
            self._deadline = None
            self._awaiting = False

    async def discard_late(self, window: float) -> bool:
        """After a transaction without a valid answer: wait up to ``window`` for bytes that
        arrive late (and, once some came, until the line is quiet), so the next request
        cannot take a late answer for its own (pymodbus empties its receive buffer when it
        sends the next request). Only RTU framing needs this (Modbus TCP answers carry a
        transaction id). Call under the lock; returns whether anything arrived late."""
        if self.framing != "rtu" or self._client is None:
            return False
        loop = asyncio.get_running_loop()
        quiet = max(self.gap, LATE_QUIET)
        deadline = loop.time() + window
        seen = bool(self.received)  # a frame cut short: its rest may still be coming
        late = False
        self.sent = None  # whatever comes now answers nothing
        self._arrived.clear()
        while True:
            now = loop.time()
            wait = quiet if seen else deadline - now
            if wait <= 0 or now > deadline + window:  # babbling: give up after 2 windows
                break
            try:
                await asyncio.wait_for(self._arrived.wait(), wait)
            except TimeoutError:
                break
            self._arrived.clear()
            seen = late = True
        if late:
            self.late_answers += 1
        self.received = b""
        return late

    def drop(self, reason: str) -> None:
        """Close the connection; the next transaction reconnects (after the backoff)."""
        if self._client is not None:
            self._client.close()
        self._last_error = reason
        self._delay = min(max(self._delay * 2, BACKOFF_MIN), BACKOFF_MAX)
        self._next_attempt = time.monotonic() + self._delay

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


async def diagnose_tcp(host: str, port: int, timeout: float) -> str:
    """Why a TCP connect to ``host:port`` fails (``connection refused``), by trying once."""
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return describe_os_error(exc)
    writer.close()
    return "connection failed"


async def diagnose_serial(port: str, _timeout: float) -> str:
    """Why a serial port cannot be opened (``no such file or directory``), by trying once."""
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        return describe_os_error(exc)
    os.close(fd)
    return "cannot open the port"


_WARNED: set[tuple[str, str]] = set()


def serial_client(config: BusConfig, packet: TracePacket, pdu: TracePdu) -> ModbusBaseClient:
    """The pymodbus client of an RS-485 bus, at the line settings the port accepts
    (`drivers.line.usable_settings`: a port that refuses parity is opened without it, with
    a warning once per port and parity)."""
    serial, warning = usable_settings(config.serial)
    if warning is not None and (serial.port, config.serial.parity) not in _WARNED:
        _WARNED.add((serial.port, config.serial.parity))
        log.warning("bus '%s': %s", config.name, warning)
    return AsyncModbusSerialClient(
        serial.port,
        framer=FramerType.ASCII if config.framing == "ascii" else FramerType.RTU,
        baudrate=serial.baudrate,
        bytesize=serial.bytesize,
        parity=serial.parity,
        stopbits=serial.stopbits,
        timeout=_LIBRARY_TIMEOUT,
        retries=0,
        reconnect_delay=0,
        trace_packet=packet,
        trace_pdu=pdu,
    )


class BusRegistry:
    """The links of a gateway: one per RS-485 bus, one per TCP endpoint and framing."""

    def __init__(self, buses: Iterable[BusConfig] = ()) -> None:
        self._configs: dict[str, BusConfig] = {b.name: b for b in buses}
        self._links: dict[tuple[Any, ...], Link] = {}
        quiet_pymodbus()

    def bus_config(self, name: str) -> BusConfig:
        try:
            return self._configs[name]
        except KeyError:
            raise ValueError(f"unknown bus {name!r}") from None

    def acquire(self, link: Link) -> Link:
        """Count a driver as a user of ``link`` (until it calls `release`)."""
        link.users += 1
        return link

    def release(self, link: Link) -> None:
        """A driver is done with ``link``: a TCP endpoint no device uses is closed."""
        link.users = max(0, link.users - 1)
        if link.users == 0 and link.bus is None:
            for key, known in list(self._links.items()):
                if known is link:
                    del self._links[key]
            link.close()

    def bus(self, name: str) -> Link:
        """The link of RS-485 bus ``name``, shared by every device on it."""
        key = ("bus", name)
        link = self._links.get(key)
        if link is None:
            config = self.bus_config(name)
            serial = config.serial
            link = Link(
                name,
                lambda packet, pdu: serial_client(config, packet, pdu),
                bus=name,
                gap=max(config.frame_gap, frame_silence(serial)),
                framing=config.framing,
                diagnose=lambda timeout: diagnose_serial(serial.port, timeout),
            )
            self._links[key] = link
        return link

    def tcp(self, host: str, port: int, *, rtu: bool = False) -> Link:
        """The link to a TCP endpoint; ``rtu`` for RTU framing over TCP."""
        key = ("tcp", host, port, rtu)
        link = self._links.get(key)
        if link is None:
            link = Link(
                f"{host}:{port}",
                lambda packet, pdu: AsyncModbusTcpClient(
                    host,
                    port=port,
                    framer=FramerType.RTU if rtu else FramerType.SOCKET,
                    timeout=_LIBRARY_TIMEOUT,
                    retries=0,
                    reconnect_delay=0,
                    trace_packet=packet,
                    trace_pdu=pdu,
                ),
                framing="rtu" if rtu else "socket",
                diagnose=lambda timeout: diagnose_tcp(host, port, timeout),
            )
            self._links[key] = link
        return link

    def update(self, buses: Iterable[BusConfig]) -> None:
        """Take a reloaded bus list: links of changed or removed buses are closed, and so
        are TCP links no device uses any more."""
        new = {b.name: b for b in buses}
        for name, old in self._configs.items():
            if new.get(name) != old:
                link = self._links.pop(("bus", name), None)
                if link is not None:
                    link.close()
        self._configs = new
        for key, link in list(self._links.items()):
            if link.bus is None and link.users == 0:
                del self._links[key]
                link.close()

    @property
    def links(self) -> list[Link]:
        """The links open or ready to open (one per bus or TCP endpoint in use)."""
        return list(self._links.values())

    async def close(self) -> None:
        for link in self._links.values():
            async with link.lock:
                link.close()
        self._links.clear()
