"""serial-line driver against an ASCII sensor simulated on a pty."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

import pytest

from drivers import create_driver
from drivers.bus import BusRegistry
from drivers.serial_line import SerialLineDriver
from gateway.core.model import DeviceConfig, PointConfig, SerialSettings
from gateway.sim.simulator import SerialLineSimulator

pytestmark = pytest.mark.integration

TEMPLATE = "PM25={pm25},PM10={pm10},N={n}"
PATTERN = r"PM25=(?P<pm25>[-\w.]+),PM10=(?P<pm10>[\w.]+),N=(?P<n>\w+)"
POINTS = (
    PointConfig("pm25", "float64", unit="ug/m3"),
    PointConfig("pm10", "float64", unit="ug/m3", scale=0.5),
    PointConfig("n", "int32"),
)


def device(path: str, *, request: bytes | None = None, timeout: float = 0.5) -> DeviceConfig:
    return DeviceConfig("pm-1", "serial-line", POINTS, serial=SerialSettings(path),
                        request=request, pattern=PATTERN, timeout=timeout)


@pytest.fixture
async def streaming() -> AsyncIterator[SerialLineSimulator]:
    sim = SerialLineSimulator(TEMPLATE, {"pm25": 12.5, "pm10": 30, "n": 7}, period=0.02)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def polled() -> AsyncIterator[SerialLineSimulator]:
    sim = SerialLineSimulator(TEMPLATE, {"pm25": 1.5, "pm10": 4, "n": 1}, request=b"R\r\n")
    await sim.start()
    yield sim
    await sim.stop()


async def scan_driver(dev: DeviceConfig) -> SerialLineDriver:
    driver = create_driver(dev, None, BusRegistry())
    assert isinstance(driver, SerialLineDriver)
    return driver


async def test_streaming_keeps_the_latest_record(streaming: SerialLineSimulator) -> None:
    driver = await scan_driver(device(streaming.path))
    try:
        first = await driver.scan()
        streaming.values["n"] = 8
        for _ in range(50):
            second = await driver.scan()
            if second.reading.values.get("n") == 8:
                break
        assert first.errors == []
        assert first.reading.values == {"pm25": 12.5, "pm10": 15.0, "n": 7}
        assert second.reading.values["n"] == 8
        assert second.reading.ts > first.reading.ts
    finally:
        await driver.close()


async def test_request_response(polled: SerialLineSimulator) -> None:
    driver = await scan_driver(device(polled.path, request=b"R\r\n"))
    try:
        results = [await driver.scan() for _ in range(3)]
        assert [r.reading.values for r in results] == [{"pm25": 1.5, "pm10": 2.0, "n": 1}] * 3
        assert polled.records == 3
        assert sum(f.data.count(b"R\r\n") for f in polled.frames if f.direction == "rx") == 3
    finally:
        await driver.close()


async def test_noise_is_counted_and_logged_once(
    polled: SerialLineSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    driver = await scan_driver(device(polled.path, request=b"R\r\n"))
    try:
        polled.noisy = b"\x00\xff#?! garbage \x7f"
        with caplog.at_level(logging.INFO, logger="sensegate.drivers"):
            results = [await driver.scan() for _ in range(3)]
            polled.noisy = None
            clean = await driver.scan()
        assert driver.noise_lines == 3
        for result in results:  # the record after the noise is read
            assert result.reading.values == {"pm25": 1.5, "pm10": 2.0, "n": 1}
            assert result.errors == []
        assert clean.errors == []
        where = f"device 'pm-1' bus '{polled.path}'"  # a sensor's bus is its serial port
        assert [r.getMessage() for r in caplog.records] == [
            f"{where}: 1 line(s) not matching the pattern",
            f"{where}: no more noise on the line",
        ]
    finally:
        await driver.close()


async def test_silent_sensor_is_bad(polled: SerialLineSimulator) -> None:
    polled.silent = True
    driver = await scan_driver(device(polled.path, request=b"R\r\n", timeout=0.2))
    try:
        result = await driver.scan()
        assert result.reading.values == {}
        assert result.reading.quality == {"pm25": "bad", "pm10": "bad", "n": "bad"}
        assert [str(e) for e in result.errors] == ["no matching record within 0.2s"]
    finally:
        await driver.close()


async def test_streaming_silence_is_bad_not_stale(streaming: SerialLineSimulator) -> None:
    driver = await scan_driver(device(streaming.path, timeout=0.2))
    try:
        assert (await driver.scan()).errors == []
        streaming.silent = True
        await driver.scan()  # may still take one record printed meanwhile
        result = await driver.scan()
        assert result.errors[0].kind == "timeout"
        assert set(result.reading.quality.values()) == {"bad"}
    finally:
        await driver.close()


async def test_unconvertible_value_is_bad_others_good(polled: SerialLineSimulator) -> None:
    polled.values["n"] = "x7"
    driver = await scan_driver(device(polled.path, request=b"R\r\n"))
    try:
        result = await driver.scan()
        assert result.reading.values == {"pm25": 1.5, "pm10": 2.0}
        assert result.reading.quality == {"n": "bad"}
        assert [e.kind for e in result.errors] == ["parse"]
        assert str(result.errors[0]) == "cannot convert 'n' in 'PM25=1.5,PM10=4,N=x7'"
    finally:
        await driver.close()


async def test_missing_port() -> None:
    driver = await scan_driver(device("/dev/no-such-sensegate-port", timeout=0.2))
    result = await driver.scan()
    await driver.close()
    assert result.errors[0].kind == "connection"
    assert str(result.errors[0]).startswith("cannot open /dev/no-such-sensegate-port: ")


async def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to a pty master however full its buffer gets (the reader drains it)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view[:65536]):]
        except BlockingIOError:
            await asyncio.sleep(0.001)


async def test_five_mib_line_is_noise_not_a_record(streaming: SerialLineSimulator) -> None:
    """A line far past the 4096-byte limit, even one that contains a matching record, is one
    noise line; the record after it is read, and memory stays bounded."""
    streaming.silent = True
    driver = await scan_driver(device(streaming.path, timeout=5))
    try:
        await driver.scan()  # opens the port (a streamed record or a timeout)
        record = b"PM25=9.5,PM10=8,N=1"
        await _write_all(streaming.pty.master, record * (5 * 1024 * 1024 // len(record)))
        await _write_all(streaming.pty.master, b"\r\nPM25=1.5,PM10=8,N=2\r\n")
        result = await driver.scan()
        assert result.reading.values == {"pm25": 1.5, "pm10": 4.0, "n": 2}
        assert driver.noise_lines == 1
    finally:
        await driver.close()


async def test_cr_only_separates_records() -> None:
    sim = SerialLineSimulator(TEMPLATE, {"pm25": 3.5, "pm10": 6, "n": 5}, period=0.02,
                              newline=b"\r")
    async with sim:
        driver = await scan_driver(device(sim.path))
        try:
            results = [await driver.scan() for _ in range(3)]
        finally:
            await driver.close()
    for result in results:
        assert result.errors == []
        assert result.reading.values == {"pm25": 3.5, "pm10": 3.0, "n": 5}
    assert driver.noise_lines == 0


@pytest.mark.parametrize("control", ["\x00", "\x1b", "\x07"], ids=["NUL", "ESC", "BEL"])
async def test_control_characters_make_a_string_invalid(control: str) -> None:
    points = (PointConfig("id", "string"), PointConfig("n", "int32"))
    sim = SerialLineSimulator("ID={id},N={n}", {"id": f"AB{control}C", "n": 4},
                              request=b"R\r\n")
    async with sim:
        dev = DeviceConfig("pm-1", "serial-line", points, serial=SerialSettings(sim.path),
                           request=b"R\r\n", pattern=r"ID=(?P<id>[^,]*),N=(?P<n>\d+)",
                           timeout=0.5)
        driver = await scan_driver(dev)
        try:
            bad = await driver.scan()
            sim.values["id"] = "ABC"
            good = await driver.scan()
        finally:
            await driver.close()
    assert bad.reading.values == {"n": 4}
    assert bad.reading.quality == {"id": "invalid"}
    assert good.reading.values == {"id": "ABC", "n": 4}


async def test_port_gone_is_a_connection_error_then_reopened() -> None:
    sim = SerialLineSimulator(TEMPLATE, {"pm25": 3.5, "pm10": 6, "n": 5}, period=0.02)
    await sim.start()
    driver = await scan_driver(device(sim.path, timeout=0.5))
    try:
        assert (await driver.scan()).errors == []
        await sim.stop()  # the other side of the line goes away
        errors = []
        for _ in range(5):
            errors = (await driver.scan()).errors
            if errors and errors[0].kind == "connection":
                break
        assert errors and errors[0].kind == "connection"
    finally:
        await driver.close()
