"""Line settings on ptys: a port that refuses parity, Modbus ASCII framing, and how a test
observes the settings the gateway asked for (drivers.line, SENSEGATE_SERIAL_TRACE)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers import BusRegistry, create_driver
from drivers.line import TRACE_ENV
from gateway.core.model import BusConfig, SerialSettings
from gateway.sim.simulator import ModbusAsciiSimulator, ModbusRtuSimulator
from tests.support.modbus_sim import EXPECTED, load, rtu_device

pytestmark = pytest.mark.integration


@pytest.fixture
async def line() -> AsyncIterator[ModbusRtuSimulator]:
    sim = ModbusRtuSimulator([1])
    load(sim.unit(1))
    await sim.start()
    yield sim
    await sim.stop()


def _values(values: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in values.items() if k != "seq"}


async def test_even_parity_on_a_pty_falls_back_with_a_warning(
    line: ModbusRtuSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    trace = tmp_path / "line.trace"
    monkeypatch.setenv(TRACE_ENV, str(trace))
    line.listen_at(19200, "E", str(trace))  # devices set to 19200 8E1
    buses = BusRegistry([BusConfig("a", SerialSettings(line.path, baudrate=19200,
                                                        parity="E"))])
    try:
        with caplog.at_level(logging.WARNING, logger="sensegate.drivers"):
            result = await create_driver(rtu_device("a"), None, buses).scan()
    finally:
        await buses.close()
    assert result.errors == []
    assert _values(result.reading.values) == pytest.approx(EXPECTED)
    assert trace.read_text().splitlines()[-1] == f"{line.path} 19200 8 E 1"
    [warning] = [r.getMessage() for r in caplog.records]
    assert f"serial port {line.path} does not keep parity E" in warning
    assert "opened without parity" in warning


async def test_devices_at_another_speed_stay_silent(
    line: ModbusRtuSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    trace = tmp_path / "line.trace"
    monkeypatch.setenv(TRACE_ENV, str(trace))
    line.listen_at(19200, "N", str(trace))
    for baudrate, parity, answers in ((9600, "N", False), (19200, "O", False),
                                      (19200, "N", True)):
        buses = BusRegistry([BusConfig("a", SerialSettings(line.path, baudrate=baudrate,
                                                            parity=parity))])  # type: ignore[arg-type]
        try:
            result = await create_driver(rtu_device("a", timeout=0.2, retries=0), None,
                                         buses).scan()
        finally:
            await buses.close()
        assert (result.errors == []) is answers, (baudrate, parity)


async def test_modbus_ascii_framing() -> None:
    sim = ModbusAsciiSimulator([3])
    load(sim.unit(3))
    sim.record_frames = True
    await sim.start()
    buses = BusRegistry([BusConfig("a", SerialSettings(sim.path, baudrate=9600),
                                   framing="ascii")])
    try:
        result = await create_driver(rtu_device("a", unit=3), None, buses).scan()
    finally:
        await buses.close()
        await sim.stop()
    assert result.errors == []
    assert _values(result.reading.values) == pytest.approx(EXPECTED)
    first = next(f for f in sim.frames if f.direction == "rx")
    assert first.data.startswith(b":03") and first.data.endswith(b"\r\n")
