"""Device quirk switches (docs/drivers.md, "Device quirks") against pymodbus simulators."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from drivers import BusRegistry, create_driver
from gateway.core.model import PointConfig
from gateway.sim.simulator import ModbusTcpSimulator
from tests.support.modbus_sim import EXPECTED, load, tcp_device

pytestmark = pytest.mark.integration


@pytest.fixture
async def sim() -> AsyncIterator[ModbusTcpSimulator]:
    simulator = ModbusTcpSimulator([1])
    load(simulator.unit(1))
    simulator.record_frames = True
    await simulator.start()
    yield simulator
    await simulator.stop()


def _values(values: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in values.items() if k != "seq"}


async def test_one_request_per_point(sim: ModbusTcpSimulator, buses: BusRegistry) -> None:
    device = replace(tcp_device(sim.port), one_request_per_point=True)
    result = await create_driver(device, None, buses).scan()
    assert result.errors == []
    assert _values(result.reading.values) == pytest.approx(EXPECTED)
    # seq, temp, energy, alarm, model: five holding requests; level (input); pump (coil)
    assert sim.unit(1).reads == 7
    sim.unit(1).reads = 0
    await create_driver(tcp_device(sim.port, name="grouped"), None, buses).scan()
    assert sim.unit(1).reads == 3


async def test_busy_answers_are_retried(sim: ModbusTcpSimulator, buses: BusRegistry) -> None:
    points = (PointConfig("temp", "float32", "holding", 2),)
    device = replace(tcp_device(sim.port, points=points, retries=2), retry_exceptions=(6,),
                     retry_wait=0.01)
    sim.unit(1).busy_for = 2
    result = await create_driver(device, None, buses).scan()
    assert result.errors == []
    assert result.reading.values == {"temp": 21.5}
    assert sim.unit(1).reads == 3


async def test_busy_without_the_quirk_is_an_error(
    sim: ModbusTcpSimulator, buses: BusRegistry
) -> None:
    points = (PointConfig("temp", "float32", "holding", 2),)
    sim.unit(1).busy_for = 1
    result = await create_driver(tcp_device(sim.port, points=points, retries=2), None,
                                 buses).scan()
    [error] = result.errors
    assert (error.kind, error.code) == ("exception", 6)
    assert sim.unit(1).reads == 1  # an exception is an answer: not retried


async def test_busy_past_the_retries_names_the_attempts(
    sim: ModbusTcpSimulator, buses: BusRegistry
) -> None:
    points = (PointConfig("temp", "float32", "holding", 2),)
    device = replace(tcp_device(sim.port, points=points, retries=1), retry_exceptions=(6,),
                     retry_wait=0.01)
    sim.unit(1).busy_for = 5
    [error] = (await create_driver(device, None, buses).scan()).errors
    assert (error.kind, error.code) == ("exception", 6)
    assert str(error).endswith("(2 attempts)")
    assert sim.unit(1).reads == 2


async def test_close_after_scan_reconnects_every_scan(
    sim: ModbusTcpSimulator, buses: BusRegistry
) -> None:
    device = replace(tcp_device(sim.port), close_after_scan=True, pause_after_connect=0.01,
                     pause=0.01, turnaround_delay=0.01)
    driver = create_driver(device, None, buses)
    for _ in range(3):
        result = await driver.scan()
        assert result.errors == []
        assert _values(result.reading.values) == pytest.approx(EXPECTED)
        assert not buses.tcp("127.0.0.1", sim.port).connected
    kept = create_driver(tcp_device(sim.port, name="kept"), None, buses)
    await kept.scan()
    assert buses.tcp("127.0.0.1", sim.port).connected
