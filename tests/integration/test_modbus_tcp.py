"""Modbus TCP driver against simulated devices (gateway.sim.simulator)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from drivers import BusRegistry, create_driver
from gateway.core.model import GatewayConfig, MqttConfig, Reading
from gateway.edge.scheduler import Poller
from gateway.sim.simulator import ModbusTcpSimulator
from tests.support.modbus_sim import EXPECTED, load, tcp_device

pytestmark = pytest.mark.integration


@pytest.fixture
async def sim() -> AsyncIterator[ModbusTcpSimulator]:
    simulator = ModbusTcpSimulator([1, 2])
    load(simulator.unit(1))
    load(simulator.unit(2))
    await simulator.start()
    yield simulator
    await simulator.stop()


async def test_every_type_reads_good(sim: ModbusTcpSimulator, buses: BusRegistry) -> None:
    driver = create_driver(tcp_device(sim.port), None, buses)
    first = await driver.scan()
    second = await driver.scan()
    assert first.errors == []
    assert first.reading.quality == {}
    assert {k: v for k, v in first.reading.values.items() if k != "seq"} == pytest.approx(EXPECTED)
    assert second.reading.values["seq"] == first.reading.values["seq"] + 1
    assert second.reading.ts >= first.reading.ts
    assert first.raw["temp"] == [0x41AC, 0x0000]
    assert first.raw["pump"] == [True]


async def test_two_units_share_one_connection(sim: ModbusTcpSimulator, buses: BusRegistry) -> None:
    one = create_driver(tcp_device(sim.port, name="a", unit=1), None, buses)
    two = create_driver(tcp_device(sim.port, name="b", unit=2), None, buses)
    results = await asyncio.gather(*(d.scan() for d in (one, two, one, two)))
    assert all(r.errors == [] for r in results)
    assert sim.unit(1).reads == sim.unit(2).reads == 2 * 3  # three requests per scan
    assert buses.tcp("127.0.0.1", sim.port).transactions == 12


async def test_exception_costs_only_its_request(
    sim: ModbusTcpSimulator, buses: BusRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    sim.unit(1).refuse("input", 100)
    driver = create_driver(tcp_device(sim.port), None, buses)
    with caplog.at_level(logging.WARNING, logger="sensegate.drivers"):
        results = [await driver.scan() for _ in range(3)]
    result = results[0]
    assert result.reading.quality == {"level": "bad"}
    assert "level" not in result.reading.values
    assert result.reading.values["temp"] == 21.5
    [error] = result.errors
    assert (error.kind, error.code) == ("exception", 2)
    assert str(error) == "modbus exception 2 (illegal data address) reading input 100..100"
    # the bus of a TCP device is its endpoint, in the error and in the log line
    assert error.where() == f"device 'dev' unit 1 bus 'tcp 127.0.0.1:{sim.port}'"
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"device 'dev' unit 1 bus 'tcp 127.0.0.1:{sim.port}': modbus exception 2 "
                     "(illegal data address) reading input 100..100"]


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        pytest.param("silent", "timeout", id="silent"),
        pytest.param("garbage", "frame", id="garbage"),
        pytest.param("truncated", "frame", id="truncated"),
    ],
)
async def test_faults_make_points_bad(
    sim: ModbusTcpSimulator, buses: BusRegistry, fault: str, kind: str
) -> None:
    sim.unit(1).fault = fault
    driver = create_driver(tcp_device(sim.port, timeout=0.2, retries=0), None, buses)
    result = await driver.scan()
    assert result.reading.values == {}
    assert set(result.reading.quality.values()) == {"bad"}
    assert len(result.reading.quality) == 7
    assert result.errors[0].kind == kind
    # the device recovers on the same connection
    sim.unit(1).fault = None
    for _ in range(5):
        result = await driver.scan()
        if not result.errors:
            break
    assert result.errors == []


async def test_dead_device_costs_one_timeout_per_scan_and_logs_once(
    sim: ModbusTcpSimulator, buses: BusRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    driver = create_driver(tcp_device(sim.port, timeout=0.1), None, buses)
    assert (await driver.scan()).errors == []
    sim.unit(1).fault = "silent"
    reads = sim.unit(1).reads
    with caplog.at_level(logging.INFO, logger="sensegate.drivers"):
        await driver.scan()
        caplog.clear()
        later = [await driver.scan() for _ in range(3)]
        assert caplog.records == []  # no new state, no new line
        sim.unit(1).fault = None
        back = await driver.scan()
    assert sim.unit(1).reads > reads
    for result in later:
        assert result.errors[0].kind == "timeout"
        assert [e.kind for e in result.errors[1:]] == ["timeout", "timeout"]
        assert str(result.errors[1]) == "not read: no answer earlier in this scan"
    assert back.errors == []
    assert any("works again" in r.getMessage() for r in caplog.records)


async def test_refused_then_reconnects(buses: BusRegistry) -> None:
    sim = ModbusTcpSimulator([1])
    load(sim.unit(1))
    await sim.start()
    port = sim.port
    await sim.stop()
    driver = create_driver(tcp_device(port), None, buses)
    first = await driver.scan()
    assert first.errors[0].kind == "connection"
    assert str(first.errors[0]) == f"cannot connect to 127.0.0.1:{port}: connection refused"
    second = await driver.scan()  # fails fast while the backoff runs
    assert "next attempt in" in str(second.errors[0])
    await sim.start()
    try:
        for _ in range(100):
            result = await driver.scan()
            if not result.errors:
                break
            await asyncio.sleep(0.05)
        assert result.errors == []
        assert result.reading.values["temp"] == 21.5
    finally:
        await sim.stop()


async def test_server_gone_mid_run(sim: ModbusTcpSimulator, buses: BusRegistry) -> None:
    driver = create_driver(tcp_device(sim.port, timeout=0.2), None, buses)
    assert (await driver.scan()).errors == []
    await sim.stop()
    result = await driver.scan()
    assert result.errors and result.errors[0].kind in ("connection", "timeout")
    assert set(result.reading.quality.values()) == {"bad"}


async def test_link_closes_when_its_last_device_closes(
    sim: ModbusTcpSimulator, buses: BusRegistry
) -> None:
    one = create_driver(tcp_device(sim.port, name="a", unit=1), None, buses)
    two = create_driver(tcp_device(sim.port, name="b", unit=2), None, buses)
    assert (await one.scan()).errors == [] and (await two.scan()).errors == []
    link = buses.tcp("127.0.0.1", sim.port)
    await one.close()
    assert link.connected and buses.links == [link]  # still used by "b"
    await two.close()
    assert not link.connected and buses.links == []
    await _until(lambda: sim.connections == 0)


async def _until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    for _ in range(int(limit / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    assert condition()


async def test_reload_closes_the_link_of_a_removed_device(buses: BusRegistry) -> None:
    """A reload that removes the only device behind an endpoint closes its connection now,
    not at shutdown; the other endpoint's connection stays up."""
    async with ModbusTcpSimulator([1]) as kept, ModbusTcpSimulator([1]) as removed:
        devices = (replace(tcp_device(kept.port, name="kept"), interval=0.05),
                   replace(tcp_device(removed.port, name="removed"), interval=0.05))
        config = GatewayConfig("gw", MqttConfig("127.0.0.1", 1883, "c"), devices)
        readings: list[Reading] = []
        poller = Poller(config, readings.append, bus_factory=lambda _config: buses)
        await poller.start()
        try:
            await _until(lambda: {r.device for r in readings} == {"kept", "removed"})
            assert kept.connections == removed.connections == 1
            await poller.apply(replace(config, devices=devices[:1]))
            await _until(lambda: removed.connections == 0)
            assert [link.name for link in buses.links] == [f"127.0.0.1:{kept.port}"]
            assert kept.connections == 1
        finally:
            await poller.stop()


async def test_scale_factor_registers_scale_their_points(buses: BusRegistry) -> None:
    """SunSpec-style `W` and `W_SF` on a real server: the value read is W x 10^W_SF, and a
    factor the device marks not implemented (0x8000) makes its points invalid."""
    from gateway.core.model import PointConfig

    points = (
        PointConfig("power", "int16", "holding", 0, unit="W", scale_factor="power_sf"),
        PointConfig("voltage", "uint16", "holding", 1, unit="V", scale_factor="voltage_sf"),
        PointConfig("power_sf", "int16", "holding", 2, invalid_values=(-32768,)),
        PointConfig("voltage_sf", "int16", "holding", 3, invalid_values=(-32768,)),
    )
    simulator = ModbusTcpSimulator([1])
    unit = simulator.unit(1)
    for point, raw in zip(points, (-2301, 2305, -1, -32768), strict=True):
        unit.set_point(point, raw)
    await simulator.start()
    try:
        driver = create_driver(tcp_device(simulator.port, points=points), None, buses)
        result = await driver.scan()
        assert result.errors == []
        assert result.reading.values == {"power": -230.1, "power_sf": -1}
        assert result.reading.quality == {"voltage": "invalid", "voltage_sf": "invalid"}
        unit.set_point(points[3], 1)
        result = await driver.scan()
        assert result.reading.values["voltage"] == 23050.0
        assert type(result.reading.values["voltage"]) is float
    finally:
        await simulator.stop()
