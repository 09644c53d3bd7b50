"""ASCII sensors that print one record per line on their own serial port.

Two modes (SPEC §2, ``serial-line``):

* request/response (``request`` set): each scan discards what is pending, writes the
  request, then takes the first line matching ``pattern`` within ``timeout``;
* streaming (no ``request``): a reader task keeps the latest matching record; a scan
  returns the newest record not yet returned, waiting up to ``timeout`` for one, so a
  silent sensor shows as ``bad`` instead of repeating an old value.

Each named group of ``pattern`` gives the point of that name its value, converted per the
point's type with scale and offset. A line that does not match is *noise*: counted
(``noise_lines``), logged once per change of state, never fatal. ``ts`` is when the record
was read. The port is opened lazily and reopened with capped exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Callable

import serial_asyncio_fast

from drivers.base import DeviceDriver, FailureLog, ScanResult, bus_label, where
from drivers.bus import BACKOFF_MAX, BACKOFF_MIN, describe_os_error
from gateway.core.errors import DriverError
from gateway.core.model import DeviceConfig, PointConfig, Reading, Value

MAX_LINE = 4096  # a longer "line" is noise
_TRUE = frozenset({"1", "true", "on", "yes"})
_FALSE = frozenset({"0", "false", "off", "no"})

Converter = Callable[[str], tuple[Value | None, str]]


def build_converter(point: PointConfig) -> Converter:
    """Text of a named group -> ``(value, quality)`` per the point's type, scale, offset."""
    scale = float(point.scale)
    offset = float(point.offset)
    identity = scale == 1 and offset == 0
    if point.type == "string":
        return lambda text: (text.strip(), "good")
    if point.type == "bool":

        def to_bool(text: str) -> tuple[Value | None, str]:
            word = text.strip().lower()
            if word in _TRUE:
                return True, "good"
            if word in _FALSE:
                return False, "good"
            return None, "bad"

        return to_bool
    is_float = point.type in ("float32", "float64")
    sentinels = frozenset(point.invalid_values)

    def to_number(text: str) -> tuple[Value | None, str]:
        try:
            raw: float | int = float(text) if is_float else int(text.strip(), 10)
        except ValueError:
            return None, "bad"
        if sentinels and raw in sentinels:
            return None, "invalid"
        if identity:
            value: float | int = raw
        else:
            value = raw * scale + offset
        if isinstance(value, float) and not math.isfinite(value):
            return None, "invalid"
        return value, "good"

    return to_number


class SerialLineDriver(DeviceDriver):
    def __init__(self, device: DeviceConfig) -> None:
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
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._delay = 0.0
        self._next_attempt = 0.0
        self._last_error = ""
        # streaming mode
        self._task: asyncio.Task[None] | None = None
        self._latest: tuple[int, re.Match[str]] | None = None
        self._fresh = asyncio.Event()
        self._stream_error: DriverError | None = None
        self._noise_this_scan = 0

    def _error(self, message: str, kind: str) -> DriverError:
        return DriverError(message, device=self.device.name, bus=bus_label(self.device),
                           kind=kind)

    async def _open(self) -> DriverError | None:
        if self._writer is not None:
            return None
        now = time.monotonic()
        if now < self._next_attempt:
            return self._error(
                f"cannot open {self.serial.port}: {self._last_error}; "
                f"next attempt in {self._next_attempt - now:.1f}s",
                "connection",
            )
        try:
            self._reader, self._writer = await asyncio.wait_for(
                serial_asyncio_fast.open_serial_connection(
                    url=self.serial.port,
                    baudrate=self.serial.baudrate,
                    bytesize=self.serial.bytesize,
                    parity=self.serial.parity,
                    stopbits=self.serial.stopbits,
                    limit=MAX_LINE,
                ),
                self.device.timeout,
            )
        except (OSError, TimeoutError, ValueError) as exc:
            self._last_error = "timed out" if isinstance(exc, TimeoutError) else (
                describe_os_error(exc)
            )
            self._delay = min(max(self._delay * 2, BACKOFF_MIN), BACKOFF_MAX)
            self._next_attempt = time.monotonic() + self._delay
            return self._error(f"cannot open {self.serial.port}: {self._last_error}", "connection")
        self._delay = 0.0
        if self.device.request is None:
            self._task = asyncio.create_task(self._stream(), name=f"serial-line {self.device.name}")
        return None

    def _drop(self, reason: str) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self._last_error = reason
        self._delay = min(max(self._delay * 2, BACKOFF_MIN), BACKOFF_MAX)
        self._next_attempt = time.monotonic() + self._delay

    async def _readline(self) -> str | None:
        """One line (``None`` for an over-long line, which counts as noise)."""
        assert self._reader is not None
        try:
            data = await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            await self._reader.readexactly(exc.consumed)  # drop what we have
            return None
        except asyncio.IncompleteReadError as exc:
            raise ConnectionError("port closed") from exc
        return data.decode("ascii", errors="replace").strip("\r\n")

    def _match(self, line: str | None) -> re.Match[str] | None:
        match = self.pattern.search(line) if line is not None else None
        if match is None:
            self.noise_lines += 1
            self._noise_this_scan += 1
        return match

    async def _stream(self) -> None:
        try:
            while True:
                line = await self._readline()
                ts = time.time_ns()
                match = self._match(line)
                if match is not None:
                    self._latest = (ts, match)
                    self._fresh.set()
        except (OSError, ConnectionError) as exc:
            self._stream_error = self._error(
                f"reading {self.serial.port} failed: {describe_os_error(exc)}", "connection"
            )
            self._fresh.set()

    async def _request(self) -> tuple[int, re.Match[str]] | DriverError:
        assert self._reader is not None and self._writer is not None
        request = self.device.request or b""
        timeout = self.device.timeout
        # what is pending answers an earlier request, or is noise
        pending = getattr(self._reader, "_buffer", None)
        if pending:
            pending.clear()
        self._writer.write(request)
        try:
            async with asyncio.timeout(timeout):
                await self._writer.drain()
                while True:
                    line = await self._readline()
                    ts = time.time_ns()
                    match = self._match(line)
                    if match is not None:
                        return ts, match
        except TimeoutError:
            noise = f" ({self._noise_this_scan} noise lines)" if self._noise_this_scan else ""
            return self._error(f"no matching record within {timeout:g}s{noise}", "timeout")
        except (OSError, ConnectionError) as exc:
            self._drop(describe_os_error(exc))
            return self._error(
                f"reading {self.serial.port} failed: {describe_os_error(exc)}", "connection"
            )

    async def _next_streamed(self) -> tuple[int, re.Match[str]] | DriverError:
        if not self._fresh.is_set():
            try:
                async with asyncio.timeout(self.device.timeout):
                    await self._fresh.wait()
            except TimeoutError:
                noise = f" ({self._noise_this_scan} noise lines)" if self._noise_this_scan else ""
                return self._error(
                    f"no matching record within {self.device.timeout:g}s{noise}", "timeout"
                )
        self._fresh.clear()
        if self._stream_error is not None:
            error, self._stream_error = self._stream_error, None
            self._task = None
            self._drop(str(error))
            return error
        assert self._latest is not None
        return self._latest

    async def scan(self) -> ScanResult:
        async with self._lock:
            error = await self._open()
            result: tuple[int, re.Match[str]] | DriverError
            if error is not None:
                result = error
            elif self.device.request is not None:
                result = await self._request()
            else:
                result = await self._next_streamed()
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
