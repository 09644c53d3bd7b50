"""ASCII sensors that print one record per line on their own serial port.

Two modes (SPEC §2, ``serial-line``):

* request/response (``request`` set): each scan discards what is pending, writes the
  request, then takes the first line matching ``pattern`` within ``timeout``;
* streaming (no ``request``): the port's protocol keeps the latest matching record; a scan
  returns the newest record not yet returned, waiting up to ``timeout`` for one, so a
  silent sensor shows as ``bad`` instead of repeating an old value.

Lines end with CR, LF or CRLF; a line longer than ``MAX_LINE`` (4096) bytes is noise, never
a record, however long it goes on (`gateway.core.textline`). Each named group of
``pattern`` gives the point of that name its value, converted per the point's type with
scale and offset (`gateway.core.textline.build_converter`; a string with control
characters has quality ``invalid``). A line that does not match is *noise*: counted
(``noise_lines``), logged once per change of state, never fatal. ``ts`` is when the record
was read. The port is opened lazily and reopened with capped exponential backoff.
"""

from __future__ import annotations

import asyncio
import re
import time

import serial_asyncio_fast

from drivers.base import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    DeviceDriver,
    FailureLog,
    ScanResult,
    bus_label,
    describe_os_error,
    where,
)
from gateway.core.errors import DriverError
from gateway.core.model import DeviceConfig, Reading, Value
from gateway.core.textline import MAX_LINE, LineSplitter, build_converter, decode_line

__all__ = ["MAX_LINE", "SerialLineDriver", "build_converter"]


class _Lines(asyncio.Protocol):
    """The port's bytes cut into lines (`gateway.core.textline.LineSplitter`), each handed
    to the driver as it completes; the driver owns the buffer, so discarding what is pending
    needs nothing of asyncio's stream internals."""

    def __init__(self, driver: SerialLineDriver) -> None:
        self._driver = driver
        self.splitter = LineSplitter(MAX_LINE)

    def data_received(self, data: bytes) -> None:
        if self._driver.current(self):
            for line in self.splitter.feed(data):
                self._driver.on_line(line)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._driver.current(self):
            self._driver.on_lost(exc)


class SerialLineDriver(DeviceDriver):
    """A sensor on its own port: it shares no link, so ``buses`` is not used."""

    def __init__(self, device: DeviceConfig, buses: object = None) -> None:
        if device.serial is None or not device.pattern:
            raise ValueError(f"device {device.name!r} needs a serial port and a pattern")
        self.device = device
        self.serial = device.serial
        self.pattern = re.compile(device.pattern)
        self.converters = tuple((p.name, build_converter(p)) for p in device.points)
        self.where = where(device)
        self.noise_lines = 0
        self.records = 0
        self._log = FailureLog()
        self._transport: asyncio.Transport | None = None
        self._protocol: _Lines | None = None
        self._lock = asyncio.Lock()
        self._delay = 0.0
        self._next_attempt = 0.0
        self._last_error = ""
        self._listening = device.request is None  # request mode: only while a request waits
        self._latest: tuple[int, re.Match[str]] | None = None
        self._fresh = asyncio.Event()
        self._stream_error: DriverError | None = None
        self._noise_this_scan = 0

    def _error(self, message: str, kind: str) -> DriverError:
        return DriverError(message, device=self.device.name, bus=bus_label(self.device),
                           kind=kind)

    async def _open(self) -> DriverError | None:
        if self._transport is not None:
            return None
        now = time.monotonic()
        if now < self._next_attempt:
            return self._error(
                f"cannot open {self.serial.port}: {self._last_error}; "
                f"next attempt in {self._next_attempt - now:.1f}s",
                "connection",
            )
        protocol = self._protocol = _Lines(self)  # current before its first bytes arrive
        try:
            self._transport, _ = await asyncio.wait_for(
                serial_asyncio_fast.create_serial_connection(
                    asyncio.get_running_loop(),
                    lambda: protocol,
                    self.serial.port,
                    baudrate=self.serial.baudrate,
                    bytesize=self.serial.bytesize,
                    parity=self.serial.parity,
                    stopbits=self.serial.stopbits,
                ),
                self.device.timeout,
            )
        except (OSError, TimeoutError, ValueError) as exc:
            self._last_error = "timed out" if isinstance(exc, TimeoutError) else (
                describe_os_error(exc)
            )
            self._delay = min(max(self._delay * 2, BACKOFF_MIN), BACKOFF_MAX)
            self._next_attempt = time.monotonic() + self._delay
            self._protocol = None
            return self._error(f"cannot open {self.serial.port}: {self._last_error}", "connection")
        self._delay = 0.0
        return None

    def _drop(self, reason: str) -> None:
        if self._transport is not None:
            self._transport.close()
        self._transport = self._protocol = None
        self._last_error = reason
        self._delay = min(max(self._delay * 2, BACKOFF_MIN), BACKOFF_MAX)
        self._next_attempt = time.monotonic() + self._delay

    def current(self, protocol: asyncio.Protocol) -> bool:
        """Whether ``protocol`` is the open port's (not one closed or replaced since)."""
        return protocol is self._protocol

    def on_line(self, line: bytes | None) -> None:
        """A complete line (``None``: one over-long line, dropped): noise or a record."""
        if not self._listening:
            return  # request mode, between requests: answers nothing, dropped
        ts = time.time_ns()
        match = self.pattern.search(decode_line(line)) if line is not None else None
        if match is None:
            self.noise_lines += 1
            self._noise_this_scan += 1
            return
        if self.device.request is not None:
            self._listening = False  # the first record after the request answers it
        self._latest = (ts, match)
        self._fresh.set()

    def on_lost(self, exc: Exception | None) -> None:
        reason = describe_os_error(exc) if exc is not None else "port closed"
        self._stream_error = self._error(
            f"reading {self.serial.port} failed: {reason}", "connection"
        )
        self._fresh.set()

    async def _next_record(self) -> tuple[int, re.Match[str]] | DriverError:
        """Request mode: discard what is pending, send the request, take the first record
        after it. Streaming: the newest record not yet returned. Within ``timeout``."""
        timeout = self.device.timeout
        request = self.device.request
        if request is not None:
            assert self._transport is not None and self._protocol is not None
            self._protocol.splitter.clear()  # answers an earlier request, or is noise
            self._latest = None
            self._fresh.clear()
            self._listening = True
            self._transport.write(request)
        try:
            if not self._fresh.is_set():
                try:
                    async with asyncio.timeout(timeout):
                        await self._fresh.wait()
                except TimeoutError:
                    noise = (f" ({self._noise_this_scan} noise lines)"
                             if self._noise_this_scan else "")
                    return self._error(f"no matching record within {timeout:g}s{noise}",
                                       "timeout")
        finally:
            if request is not None:
                self._listening = False
        self._fresh.clear()
        if self._stream_error is not None:
            error, self._stream_error = self._stream_error, None
            self._drop(str(error))
            return error
        assert self._latest is not None
        return self._latest

    async def scan(self) -> ScanResult:
        async with self._lock:
            error = await self._open()
            result = error if error is not None else await self._next_record()
            return self._result(result)

    def _result(self, result: tuple[int, re.Match[str]] | DriverError) -> ScanResult:
        errors: list[DriverError] = []
        if self._noise_this_scan:
            noise = self._error(
                f"{self._noise_this_scan} line(s) not matching the pattern", "parse"
            )
            self._log.failed("noise", noise)
        else:
            self._log.succeeded("noise", self.where, "no more noise on the line")
        self._noise_this_scan = 0  # streaming: noise counts from one scan to the next
        if isinstance(result, DriverError):
            self._log.failed("read", result)
            errors.append(result)
            reading = Reading(
                self.device.name, time.time_ns(), {}, {name: "bad" for name, _ in self.converters}
            )
            return ScanResult(reading, {}, errors)
        self._log.succeeded("read", self.where, "records arrive again")
        self.records += 1
        ts, match = result
        groups = match.groupdict()
        values: dict[str, Value] = {}
        quality: dict[str, str] = {}
        failed: list[str] = []
        for name, convert in self.converters:
            text = groups.get(name)
            if text is None:
                quality[name] = "bad"
                failed.append(name)
                continue
            value, q = convert(text)
            if q == "good":
                values[name] = value  # type: ignore[assignment]
            else:
                quality[name] = q
                if q == "bad":
                    failed.append(name)
        if failed:
            error = self._error(
                f"cannot convert {', '.join(repr(n) for n in failed)} in {match.group(0)!r}",
                "parse",
            )
            errors.append(error)
            self._log.failed("convert", error)
        else:
            self._log.succeeded("convert", self.where, "records convert again")
        return ScanResult(Reading(self.device.name, ts, values, quality), {}, errors)

    async def close(self) -> None:
        transport, self._transport, self._protocol = self._transport, None, None
        if transport is not None:
            transport.close()
