"""Writes on an RS-485 bus (a pty): one transaction at a time, a write ahead of the polls
already waiting for the bus, never in parallel with one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from drivers import BusRegistry, create_driver
from drivers.modbus import ModbusWriter
from gateway.core.encode import encode
from gateway.core.model import BusConfig, PointConfig, SerialSettings
from gateway.sim.simulator import ModbusRtuSimulator
from tests.support.modbus_sim import load, rtu_device

pytestmark = pytest.mark.integration

DIM = PointConfig("dim_pct", "uint16", "holding", 40, writable=True)
LAMP = PointConfig("lamp", "bool", "holding", 8, bit=5, writable=True)


@pytest.fixture
async def line() -> AsyncIterator[ModbusRtuSimulator]:
    sim = ModbusRtuSimulator([1, 2, 3])
    for unit in sim.units.values():
        load(unit)
        unit.delay = 0.005  # a slow device: overlapping requests would show on the wire
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def buses(line: ModbusRtuSimulator) -> AsyncIterator[BusRegistry]:
    registry = BusRegistry([BusConfig("rs485-a", SerialSettings(line.path, baudrate=19200))])
    yield registry
    await registry.close()


def requests_between_answers(sim: ModbusRtuSimulator) -> list[bytes]:
    """What the gateway sent between two answers: one request, if it never overlapped."""
    requests: list[bytes] = []
    pending = b""
    for frame in sim.frames:
        if frame.direction == "rx":
            pending += frame.data
        else:
            requests.append(pending)
            pending = b""
    return requests


async def test_a_write_goes_ahead_of_waiting_polls_and_never_overlaps_one(
    line: ModbusRtuSimulator, buses: BusRegistry
) -> None:
    device = rtu_device("rs485-a", name="d2", unit=2)
    device = replace(device, points=(*device.points, DIM))
    drivers = [create_driver(rtu_device("rs485-a", name=f"d{u}", unit=u), None, buses)
               for u in (1, 2, 3)]
    writer = ModbusWriter(device, buses)
    line.frames.clear()
    scans = [asyncio.ensure_future(d.scan()) for d in drivers for _ in range(3)]
    await asyncio.sleep(0)  # every scan queued on the bus, the first one in flight
    assert buses.bus("rs485-a").lock.locked()
    back = await writer.write(DIM, encode(DIM, 1234))
    results = await asyncio.gather(*scans)
    await writer.close()
    assert back == 1234
    assert line.unit(2).holding[40] == 1234
    assert all(r.errors == [] for r in results)
    requests = requests_between_answers(line)
    assert all(len(r) in (8, 11) for r in requests), requests  # one whole request each
    functions = [(r[0], r[1]) for r in requests]
    # the poll in flight, then the write and its read-back, then the 9 x 3 polls
    assert functions[1:3] == [(2, 6), (2, 3)]
    assert len(requests) == 27 + 2


async def test_a_bit_is_written_by_read_modify_write(
    line: ModbusRtuSimulator, buses: BusRegistry
) -> None:
    device = replace(rtu_device("rs485-a", unit=3), points=(LAMP,))
    writer = ModbusWriter(device, buses)
    line.unit(3).set_registers("holding", 8, [0b1000_0001])
    try:
        assert await writer.write(LAMP, encode(LAMP, True)) is True
        assert line.unit(3).holding[8] == 0b1010_0001
        assert await writer.write(LAMP, encode(LAMP, False)) is False
        assert line.unit(3).holding[8] == 0b1000_0001
    finally:
        await writer.close()


async def test_a_bit_whose_register_changes_meanwhile_is_refused(
    line: ModbusRtuSimulator, buses: BusRegistry
) -> None:
    from drivers.modbus import WriteFailed

    device = replace(rtu_device("rs485-a", unit=3), points=(LAMP,))
    writer = ModbusWriter(device, buses)
    unit = line.unit(3)
    unit.add_counter("holding", 8)  # the device changes the register at every read
    try:
        with pytest.raises(WriteFailed, match="changed between reads") as caught:
            await writer.write(LAMP, encode(LAMP, True))
        assert caught.value.status == "refused"
        assert unit.writes == []
    finally:
        await writer.close()
