"""Modbus RTU on a pty (one simulated RS-485 bus, several devices) and RTU over TCP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from drivers import BusRegistry, create_driver
from gateway.core.model import BusConfig, SerialSettings
from gateway.sim.simulator import ModbusRtuOverTcpSimulator, ModbusRtuSimulator
from tests.support.modbus_sim import EXPECTED, POINTS, load, rtu_device, tcp_device

pytestmark = pytest.mark.integration


@pytest.fixture
async def line() -> AsyncIterator[ModbusRtuSimulator]:
    sim = ModbusRtuSimulator([1, 2, 3])
    for unit in sim.units.values():
        load(unit)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def buses(line: ModbusRtuSimulator) -> AsyncIterator[BusRegistry]:
    registry = BusRegistry([BusConfig("rs485-a", SerialSettings(line.path, baudrate=19200))])
    yield registry
    await registry.close()


async def test_rtu_reads_every_type(line: ModbusRtuSimulator, buses: BusRegistry) -> None:
    driver = create_driver(rtu_device("rs485-a", unit=2), None, buses)
    first = await driver.scan()
    second = await driver.scan()
    assert first.errors == []
    assert {k: v for k, v in first.reading.values.items() if k != "seq"} == pytest.approx(EXPECTED)
    assert second.reading.values["seq"] == first.reading.values["seq"] + 1


@pytest.mark.parametrize(
    ("fault", "kind", "message"),
    [
        pytest.param("crc", "crc", "crc error in response reading holding 0..12", id="crc"),
        pytest.param("truncated", "frame", "truncated or garbled response reading holding 0..12",
                     id="truncated"),
        pytest.param("garbage", "frame", "truncated or garbled response reading holding 0..12",
                     id="garbage"),
        pytest.param("silent", "timeout", "no response within 0.2s reading holding 0..12",
                     id="silent"),
        pytest.param("exception", "exception",
                     "modbus exception 2 (illegal data address) reading holding 0..12",
                     id="exception"),
    ],
)
async def test_rtu_faults(
    line: ModbusRtuSimulator, buses: BusRegistry, fault: str, kind: str, message: str
) -> None:
    line.unit(1).fault = fault
    driver = create_driver(rtu_device("rs485-a", unit=1, timeout=0.2, retries=0), None, buses)
    healthy = create_driver(rtu_device("rs485-a", name="other", unit=3), None, buses)
    result = await driver.scan()
    assert result.reading.values == {}
    assert result.errors[0].kind == kind
    assert str(result.errors[0]).startswith(message)
    assert result.errors[0].where() == "device 'dev' unit 1 bus 'rs485-a'"
    if kind == "exception":
        assert result.errors[0].code == 2
    # the bus is still usable by the other devices
    assert (await healthy.scan()).errors == []


async def test_noise_on_the_bus_is_survived(line: ModbusRtuSimulator, buses: BusRegistry) -> None:
    driver = create_driver(rtu_device("rs485-a", unit=1, timeout=0.2), None, buses)
    line.noise(b"\x00\xff\x13\x37 noise")
    results = [await driver.scan() for _ in range(3)]
    assert results[-1].errors == []


async def test_one_transaction_in_flight_per_bus(
    line: ModbusRtuSimulator, buses: BusRegistry
) -> None:
    for unit in line.units.values():
        unit.delay = 0.005  # a slow device: overlapping requests would show on the wire
    drivers = [
        create_driver(rtu_device("rs485-a", name=f"d{u}", unit=u), None, buses) for u in (1, 2, 3)
    ]
    line.frames.clear()
    results = await asyncio.gather(*(d.scan() for d in drivers for _ in range(3)))
    assert all(r.errors == [] for r in results)
    # Between two answers the gateway sent exactly one 8-byte read request: never a second
    # request before the first was answered.
    requests: list[bytes] = []
    pending = b""
    for frame in line.frames:
        if frame.direction == "rx":
            pending += frame.data
        else:
            requests.append(pending)
            pending = b""
    assert len(requests) == 9 * 3
    assert all(len(r) == 8 for r in requests), requests
    # and each answer went out after its request arrived, before the next request began
    times = [(f.direction, f.t) for f in line.frames]
    assert [d for d, _ in times if d == "tx"] == ["tx"] * 27
    assert buses.bus("rs485-a").transactions == 27


async def test_rtu_over_tcp() -> None:
    sim = ModbusRtuOverTcpSimulator([4])
    load(sim.unit(4))
    await sim.start()
    buses = BusRegistry()
    try:
        driver = create_driver(
            tcp_device(sim.port, unit=4, driver="modbus-rtu-over-tcp", timeout=0.2, retries=0),
            None, buses,
        )
        result = await driver.scan()
        assert result.errors == []
        assert result.reading.values["temp"] == 21.5
        sim.unit(4).fault = "crc"
        result = await driver.scan()
        assert [e.kind for e in result.errors][:1] == ["crc"]
        sim.unit(4).fault = None
        assert (await driver.scan()).errors == []
    finally:
        await buses.close()
        await sim.stop()


async def test_missing_port_is_a_connection_error() -> None:
    buses = BusRegistry([BusConfig("gone", SerialSettings("/dev/does-not-exist-sensegate"))])
    driver = create_driver(rtu_device("gone", timeout=0.2), None, buses)
    result = await driver.scan()
    await buses.close()
    assert result.errors[0].kind == "connection"
    assert str(result.errors[0]).startswith("cannot connect to gone: ")
    assert set(result.reading.quality.values()) == {"bad"}


async def _late_answer_is_discarded(driver: object, unit: object) -> None:
    """A unit answers once after the timeout; the next identical request must get its own
    answer, not the late one. The sequence number at holding 0 tells them apart: every
    read the unit answers increments it."""
    first = await driver.scan()  # type: ignore[attr-defined]
    assert first.errors == []
    seq = first.reading.values["seq"]
    unit.delay = 0.35  # type: ignore[attr-defined]
    late = await driver.scan()  # type: ignore[attr-defined]
    unit.delay = 0.0  # type: ignore[attr-defined]
    assert [e.kind for e in late.errors] == ["timeout"]
    assert str(late.errors[0]).endswith(
        "; an answer came too late and was discarded (timeout 0.2s too short?)")
    assert "seq" not in late.reading.values
    fresh = await driver.scan()  # type: ignore[attr-defined]
    assert fresh.errors == []
    # seq + 1 went out late and was discarded; this scan's own answer carries seq + 2
    assert fresh.reading.values["seq"] == seq + 2
    assert unit.reads == 3  # type: ignore[attr-defined]


LATE_POINTS = tuple(p for p in POINTS if p.table == "holding")  # one request per scan


async def test_late_rtu_answer_is_not_taken_for_the_next_request(
    line: ModbusRtuSimulator, buses: BusRegistry
) -> None:
    driver = create_driver(
        rtu_device("rs485-a", unit=1, timeout=0.2, retries=0, points=LATE_POINTS), None, buses
    )
    await _late_answer_is_discarded(driver, line.unit(1))


async def test_late_rtu_answer_is_not_taken_for_the_retry(
    line: ModbusRtuSimulator, buses: BusRegistry
) -> None:
    """With a retry the late answer would arrive while the retry waits: discarded too."""
    unit = line.unit(1)
    driver = create_driver(
        rtu_device("rs485-a", unit=1, timeout=0.2, retries=1, points=LATE_POINTS), None, buses
    )
    seq = (await driver.scan()).reading.values["seq"]
    unit.delay = 0.35
    task = asyncio.ensure_future(driver.scan())
    while unit.reads < 2:  # the first attempt is being answered late
        await asyncio.sleep(0.01)
    unit.delay = 0.0  # the retry is answered at once
    result = await task
    assert result.errors == []
    assert result.reading.values["seq"] == seq + 2


async def test_late_rtu_over_tcp_answer_is_discarded() -> None:
    sim = ModbusRtuOverTcpSimulator([4])
    load(sim.unit(4))
    await sim.start()
    buses = BusRegistry()
    try:
        driver = create_driver(
            tcp_device(sim.port, unit=4, driver="modbus-rtu-over-tcp", timeout=0.2, retries=0,
                       points=LATE_POINTS),
            None, buses,
        )
        await _late_answer_is_discarded(driver, sim.unit(4))
    finally:
        await buses.close()
        await sim.stop()
