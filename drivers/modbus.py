"""Modbus TCP, RTU (over an RS-485 bus) and RTU over TCP: one driver, three links.

A scan performs exactly the requests ``gateway.core.plan.plan_device`` makes, in order, each
one a transaction on the device's `drivers.bus.Link` (holding its lock). A request that
fails costs only the points it carried: they get quality ``bad`` and the scan gets one
`DriverError`. Failure kinds:

* ``connection``: the link is down (refused, no such port); the device fails fast while
  the link waits out its reconnect backoff;
* ``timeout``: no answer within ``timeout`` after ``1 + retries`` attempts;
* ``crc``: a whole RTU answer arrived whose CRC does not match (`drivers.answer.crc_error`,
  pymodbus's CRC);
* ``frame``: bytes arrived but no valid answer (truncated, garbage, wrong function or
  length, a byte count that contradicts the request: refused before pymodbus decodes it,
  `drivers.answer.check_answer`);
* ``exception``: a Modbus exception response, with its code (``code``) and meaning
  (``modbus exception 2 (illegal data address)``). It is an answer: the device is there,
  so it does not make the device *down* (below) nor, in the scheduler, back it off.

Timeouts, CRC errors and bad frames are retried ``retries`` times; exception responses
and connection failures are not. A device that answered nothing in its previous scan is
*down*: it gets one attempt, and after its first request times out the rest of the scan
is skipped, so a dead device costs a bus one timeout per scan, not one per request.

Late answers (RTU, RTU over TCP): RTU frames carry no transaction id, so an answer that
arrives after ``timeout`` would be taken for the answer to the next request to the unit.
So after an attempt without a valid answer, before the retry, the rest of the scan or
the next device's turn on the bus, the link listens up to ``timeout`` more and discards
whatever arrives (`drivers.bus.Link.discard_late`); the error then says an answer came
late, a hint to raise ``timeout``. A device that is down (nothing answered in its previous
scan) skips the rest of its scan instead, so the wait costs a live device that fails up to
one more timeout, and a dead one nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse

from drivers.answer import Sent, crc_error
from drivers.base import DeviceDriver, FailureLog, ScanResult, bus_label, where
from drivers.bus import IN_FLIGHT, BusRegistry, Link, Refused
from gateway.core.decode import Decoder, apply_scale_factors, build_decoder, scale_factors
from gateway.core.encode import BitWrite, Write, survives, write_function
from gateway.core.errors import DriverError
from gateway.core.modbus import FUNCTION_CODES, describe_exception
from gateway.core.model import (
    BIT_TABLES,
    DEFAULT_MODBUS_TCP_PORT,
    TCP_DRIVERS,
    DeviceConfig,
    PointConfig,
    Reading,
    Value,
)
from gateway.core.plan import ReadRequest, plan_device


@contextlib.contextmanager
def _in_flight(who: str) -> Iterator[None]:
    """Library log lines while this device's transaction runs name the device."""
    token = IN_FLIGHT.set(who)
    try:
        yield
    finally:
        IN_FLIGHT.reset(token)


class _Prepared:
    """A request with, per point, its decoder and where it sits in the response."""

    __slots__ = ("bits", "describe", "fc", "points", "request")

    def __init__(self, request: ReadRequest) -> None:
        self.request = request
        self.fc = FUNCTION_CODES[request.table]
        self.bits = request.table in BIT_TABLES
        self.points: tuple[tuple[str, Decoder, int, int], ...] = tuple(
            (p.name, build_decoder(p), (p.address or 0) - request.address, p.register_count)
            for p in request.points
        )
        last = request.address + request.count - 1
        self.describe = f"reading {request.table} {request.address}..{last}"


class ModbusDriver(DeviceDriver):
    """modbus-tcp, modbus-rtu and modbus-rtu-over-tcp devices."""

    def __init__(self, device: DeviceConfig, buses: BusRegistry) -> None:
        self.device = device
        if device.driver == "modbus-rtu":
            if device.bus is None:
                raise ValueError(f"device {device.name!r} has no bus")
            link: Link = buses.bus(device.bus)
        elif device.driver in TCP_DRIVERS:
            if device.host is None:
                raise ValueError(f"device {device.name!r} has no host")
            link = buses.tcp(
                device.host,
                device.port or DEFAULT_MODBUS_TCP_PORT,
                rtu=device.driver == "modbus-rtu-over-tcp",
            )
        else:
            raise ValueError(f"device {device.name!r} is not a modbus device")
        self.unit = device.unit
        self.requests = tuple(_Prepared(r) for r in plan_device(device))
        self._factors = scale_factors(device.points)  # SunSpec-style sunssf points
        self.link = buses.acquire(link)
        self.bus = bus_label(device)
        self.where = where(device)
        self._buses = buses
        self._closed = False
        self._log = FailureLog()
        self._alive = True  # answered anything in the previous scan

    def _error(self, message: str, kind: str, code: int | None = None) -> DriverError:
        return DriverError(
            message, device=self.device.name, unit=self.unit, bus=self.bus, kind=kind,
            code=code,
        )

    async def scan(self) -> ScanResult:
        values: dict[str, Value] = {}
        quality: dict[str, str] = {}
        raw: dict[str, Sequence[int] | Sequence[bool]] = {}
        errors: list[DriverError] = []
        answered = False
        skip: DriverError | None = None
        ts = 0
        for index, prepared in enumerate(self.requests):
            if skip is not None:
                data: Sequence[Any] | DriverError = skip
            else:
                if index and self.device.pause:  # quirk: the bus is free meanwhile
                    await asyncio.sleep(self.device.pause)
                data = await self._transact(
                    prepared, retries=self.device.retries if self._alive else 0,
                    guard_late=self._alive or answered,
                )
                ts = ts or time.time_ns()
            if isinstance(data, DriverError):
                if data.kind == "late":
                    answered = True  # slow, not dead: keep retrying and guarding the bus
                    data = self._error(str(data), "timeout")
                elif data.kind == "exception":
                    answered = True  # the device refused the request: it is there
                errors.append(data)
                for name, _decoder, _offset, _size in prepared.points:
                    quality[name] = "bad"
                if data is not skip:
                    self._log.failed(index, data)
                    if data.kind == "connection" or (
                        data.kind == "timeout" and not answered and not self._alive
                    ):
                        failure = "no connection" if data.kind == "connection" else "no answer"
                        skip = self._error(
                            f"not read: {failure} earlier in this scan", data.kind
                        )
                continue
            answered = True
            self._log.succeeded(index, self.where, f"{prepared.describe} works again")
            for name, decoder, offset, size in prepared.points:
                chunk = data[offset : offset + size]
                raw[name] = chunk
                value, q = decoder(chunk)
                if q == "good":
                    values[name] = value  # type: ignore[assignment]
                else:
                    quality[name] = q
        self._alive = answered or not self.requests
        if self.device.close_after_scan:  # quirk: one connection per scan
            async with self.link.lock:
                self.link.close()
        if self._factors:
            apply_scale_factors(values, quality, self._factors)
        reading = Reading(self.device.name, ts or time.time_ns(), values, quality)
        return ScanResult(reading, raw, errors)

    async def _transact(
        self, prepared: _Prepared, retries: int, *, guard_late: bool = True
    ) -> Sequence[Any] | DriverError:
        """One request under the link's lock: registers/bits, or why not.

        With ``guard_late`` (another request to this unit may follow), an attempt without a
        valid answer is followed by `Link.discard_late`; an error whose answer came late has
        kind ``late`` (the scan reports it as a ``timeout``).
        """
        async with self.link.lock:
            with _in_flight(self.where):
                return await self._locked(prepared, retries, guard_late)

    async def _locked(
        self, prepared: _Prepared, retries: int, guard_late: bool
    ) -> Sequence[Any] | DriverError:
        link = self.link
        device = self.device
        timeout = device.timeout
        fresh = not link.connected
        reason = await link.connect(timeout)
        if reason is not None:
            return self._error(f"cannot connect to {link.name}: {reason}", "connection")
        if fresh and device.pause_after_connect:  # quirk: the device is not ready at once
            await asyncio.sleep(device.pause_after_connect)
        silence = max(link.gap, device.turnaround_delay)  # quirk: slow transceivers
        error: DriverError | None = None
        late = False
        try:
            for attempt in range(retries + 1):
                result = await self._once(link, prepared, timeout)
                if not isinstance(result, DriverError):
                    return result
                error = result
                if result.kind == "exception" and result.code in device.retry_exceptions:
                    if attempt < retries:  # quirk: "busy", try again shortly
                        await asyncio.sleep(max(device.retry_wait, silence))
                    continue
                if result.kind in ("exception", "connection"):
                    break
                if guard_late and await link.discard_late(timeout):
                    late = True
                elif silence:
                    await asyncio.sleep(silence)
        finally:
            link.transactions += 1
            if silence:
                await asyncio.sleep(silence)
        assert error is not None
        if error.kind == "exception" and error.code in device.retry_exceptions and retries:
            error = self._error(f"{error} ({retries + 1} attempts)", "exception", error.code)
        if error.kind == "timeout" and retries:
            error = self._error(f"{error} ({retries + 1} attempts)", "timeout")
        if late and error.kind == "timeout":
            error = self._error(f"{error}; an answer came too late and was discarded "
                                f"(timeout {timeout:g}s too short?)", "late")
        return error

    async def _once(
        self, link: Link, prepared: _Prepared, timeout: float
    ) -> Sequence[Any] | DriverError:
        request = prepared.request
        client = link.client
        read = (
            client.read_coils,
            client.read_discrete_inputs,
            client.read_holding_registers,
            client.read_input_registers,
        )[prepared.fc - 1]
        try:
            response = await link.exchange(
                read(request.address, count=request.count, device_id=self.unit), timeout
            )
        except TimeoutError:
            return self._no_answer(link, prepared, timeout)
        except Refused as exc:
            return self._error(f"unreadable response {prepared.describe}: {exc}", "frame")
        except ConnectionException:
            link.drop("connection lost")
            return self._error(f"connection to {link.name} lost {prepared.describe}", "connection")
        except ModbusIOException:
            return self._no_answer(link, prepared, timeout)
        except (ModbusException, ValueError, IndexError) as exc:
            return self._error(f"unreadable response {prepared.describe}: {exc}", "frame")
        if response.isError():
            code = response.exception_code if isinstance(response, ExceptionResponse) else 0
            return self._error(
                f"modbus {describe_exception(code)} {prepared.describe}", "exception", code
            )
        if response.function_code != prepared.fc:
            return self._error(
                f"answer with function code {response.function_code} to function code "
                f"{prepared.fc} {prepared.describe}",
                "frame",
            )
        if prepared.bits:
            data: Sequence[Any] = response.bits
        else:
            data = response.registers
        if len(data) < request.count or (not prepared.bits and len(data) != request.count):
            return self._error(
                f"answer with {len(data)} values, expected {request.count} {prepared.describe}",
                "frame",
            )
        return data[: request.count] if prepared.bits else data

    def _no_answer(self, link: Link, prepared: _Prepared, timeout: float) -> DriverError:
        """A timeout: nothing came, a frame with a bad CRC, or some other bytes."""
        received = link.received
        if not received:
            return self._error(f"no response within {timeout:g}s {prepared.describe}", "timeout")
        request = prepared.request
        sent = Sent("rtu", self.unit, prepared.fc, request.count)
        if link.framing == "rtu" and crc_error(sent, received):
            return self._error(
                f"crc error in response {prepared.describe} ({len(received)} bytes)", "crc"
            )
        return self._error(
            f"truncated or garbled response {prepared.describe} "
            f"({len(received)} bytes: {received[:16].hex(' ')})",
            "frame",
        )

    async def close(self) -> None:
        """Let go of the shared link (the `BusRegistry` closes a TCP link nobody uses)."""
        if not self._closed:
            self._closed = True
            self._buses.release(self.link)


class WriteFailed(Exception):
    """A write that did not happen or could not be confirmed; ``status`` is ``failed``
    (Modbus exception, timeout, read-back differs) or ``refused`` (a bit's register
    changed between the reads of a read-modify-write: nothing was written)."""

    def __init__(self, message: str, status: str = "failed") -> None:
        super().__init__(message)
        self.status = status


class ModbusWriter:
    """Writes points of one device (SPEC §6) on its shared link: each write holds the link's
    lock *urgently* (ahead of the polls waiting, never during another transaction), then
    the point is read back and compared."""

    def __init__(self, device: DeviceConfig, buses: BusRegistry) -> None:
        self.reader = ModbusDriver(device, buses)
        self.device = device

    async def close(self) -> None:
        await self.reader.close()

    async def write(self, point: PointConfig, write: Write) -> Value:
        """Write ``write`` to ``point``; the value read back, or `WriteFailed`."""
        link = self.reader.link
        async with link.lock.urgent():
            with _in_flight(self.reader.where):
                try:
                    return await self._locked(link, point, write)
                finally:
                    link.transactions += 1
                    if link.gap:
                        await asyncio.sleep(link.gap)

    async def _locked(self, link: Link, point: PointConfig, write: Write) -> Value:
        timeout = self.device.timeout
        reason = await link.connect(timeout)
        if reason is not None:
            raise WriteFailed(f"cannot connect to {link.name}: {reason}")
        address = write.address
        unit = self.reader.unit
        client = link.client
        multiple = self.device.write_multiple
        if isinstance(write, BitWrite):
            before = await self._read(link, point)
            again = await self._read(link, point)
            if before != again:
                raise WriteFailed(f"register {address} changed between reads "
                                  f"({int(before[0]):04x} -> {int(again[0]):04x}): "
                                  "nothing written", "refused")
            value = write.apply(int(before[0]))
            call = (client.write_registers(address, [value], device_id=unit) if multiple
                    else client.write_register(address, value, device_id=unit))
        elif point.table == "coil":
            call = (client.write_coils(address, list(write.bits), device_id=unit)
                    if multiple else client.write_coil(address, write.bits[0], device_id=unit))
        elif write_function(point, multiple=multiple) == 6:
            call = client.write_register(address, write.registers[0], device_id=unit)
        else:
            call = client.write_registers(address, list(write.registers), device_id=unit)
        await self._exchange(link, call, f"writing {point.table} {address}")
        back, quality = build_decoder(point)(await self._read(link, point))
        if quality != "good" or back is None:
            raise WriteFailed(f"read-back of {point.name} is {quality}")
        if not survives(point, write.value, back):
            raise WriteFailed(f"read-back differs: wrote {write.value!r}, the device holds "
                              f"{back!r} (write ignored?)")
        return back

    async def _read(self, link: Link, point: PointConfig) -> Sequence[Any]:
        client = link.client
        unit = self.reader.unit
        address = point.address or 0
        count = point.register_count
        call = (client.read_coils(address, count=1, device_id=unit) if point.table == "coil"
                else client.read_holding_registers(address, count=count, device_id=unit))
        response = await self._exchange(link, call, f"reading back {point.table} {address}")
        data: Sequence[Any] = response.bits[:1] if point.table == "coil" else response.registers
        if len(data) < (1 if point.table == "coil" else count):
            raise WriteFailed(f"read-back of {point.name}: {len(data)} values")
        return data

    async def _exchange(self, link: Link, call: Any, what: str) -> Any:
        timeout = self.device.timeout
        try:
            response = await link.exchange(call, timeout)
        except (TimeoutError, ModbusIOException):
            await link.discard_late(timeout)
            raise WriteFailed(f"no response within {timeout:g}s {what}") from None
        except Refused as exc:
            raise WriteFailed(f"unreadable response {what}: {exc}") from None
        except ConnectionException:
            link.drop("connection lost")
            raise WriteFailed(f"connection to {link.name} lost {what}") from None
        except (ModbusException, ValueError, IndexError) as exc:
            raise WriteFailed(f"unreadable response {what}: {exc}") from None
        if response.isError():
            code = response.exception_code if isinstance(response, ExceptionResponse) else 0
            raise WriteFailed(f"modbus {describe_exception(code)} {what}")
        return response
