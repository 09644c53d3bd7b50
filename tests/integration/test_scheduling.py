"""Real drivers against pymodbus-served simulators: a dead device never costs the others.

Assertions are on counts and ratios (scans performed against slots that came round), never
on wall-clock durations, so a loaded machine cannot make them flaky.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.core.model import (
    BusConfig,
    DeviceConfig,
    GatewayConfig,
    MqttConfig,
    PointConfig,
    Reading,
    SerialSettings,
)
from gateway.edge.scheduler import Poller
from gateway.sim.simulator import ModbusRtuSimulator, ModbusTcpSimulator

pytestmark = pytest.mark.integration

INTERVAL = 0.25
RUN_FOR = 10.0
POINTS = (
    PointConfig("temp", "int16", "holding", 0, scale=0.1),
    PointConfig("flow", "float32", "holding", 1),
    PointConfig("count", "uint32", "input", 10),
)


def device(name: str, port: int, *, timeout: float = 0.5) -> DeviceConfig:
    return DeviceConfig(name, "modbus-tcp", POINTS, interval=INTERVAL, timeout=timeout,
                        retries=1, host="127.0.0.1", port=port, unit=1)


class Blackhole:
    """A TCP server that accepts connections and reads requests but never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while await reader.read(4096):
            pass
        writer.close()

    async def __aenter__(self) -> Blackhole:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()


@pytest.fixture
async def simulators() -> AsyncIterator[list[ModbusTcpSimulator]]:
    sims = [ModbusTcpSimulator([1]) for _ in range(5)]
    for i, sim in enumerate(sims):
        sim.record_frames = False
        sim.unit(1).set_registers("holding", 0, [215 + i])
        await sim.start()
    yield sims
    for sim in sims:
        await sim.stop()


async def test_dead_and_slow_devices_do_not_delay_the_others(
    simulators: list[ModbusTcpSimulator],
) -> None:
    slow = ModbusTcpSimulator([1])
    slow.record_frames = False
    slow.unit(1).delay = 0.4  # answers, but each scan takes longer than the interval
    async with Blackhole() as hole, slow:
        good = [device(f"good-{i}", sim.port) for i, sim in enumerate(simulators)]
        dead = device("dead", hole.port, timeout=1.0)
        sluggish = device("sluggish", slow.port, timeout=2.0)
        config = GatewayConfig("gw", MqttConfig("127.0.0.1", 1883, "c"),
                               (*good, dead, sluggish))
        readings: list[Reading] = []
        poller = Poller(config, readings.append)
        await poller.start()
        await asyncio.sleep(RUN_FOR)
        stats = poller.stats()
        await poller.stop()

    slots = sum(stats[d.name].slots for d in good)
    scans = sum(stats[d.name].scans for d in good)
    assert slots >= 0.5 * len(good) * RUN_FOR / INTERVAL  # the loop was not starved
    assert scans >= 0.99 * slots, {d.name: stats[d.name] for d in good}
    for i, d in enumerate(good):
        assert stats[d.name].failures == {}
        mine = [r for r in readings if r.device == d.name]
        assert stats[d.name].scans <= len(mine) <= stats[d.name].scans + 1
        assert all(r.values["temp"] == pytest.approx((215 + i) * 0.1) for r in mine)

    assert hole.connections >= 1
    assert stats["dead"].backed_off and stats["dead"].failures.get("timeout", 0) >= 3
    assert stats["dead"].scans < 0.25 * stats["dead"].slots
    dead_readings = [r for r in readings if r.device == "dead"]
    # stop() lets a scan in flight finish and delivers its reading
    assert stats["dead"].scans <= len(dead_readings) <= stats["dead"].scans + 1
    assert all(r.values == {} and set(r.quality) == {"temp", "flow", "count"}
               for r in dead_readings)

    # The sluggish device overruns (skips, never queues) but keeps answering.
    assert stats["sluggish"].overruns >= stats["sluggish"].scans // 2
    assert stats["sluggish"].failures == {} and not stats["sluggish"].backed_off


async def test_dead_rtu_device_backs_off_and_leaves_the_shared_bus_to_the_others() -> None:
    rtu = ModbusRtuSimulator([1, 2, 3])
    rtu.record_frames = False
    rtu.unit(3).fault = "silent"
    for unit in (1, 2):
        rtu.unit(unit).set_registers("holding", 0, [100 * unit])
    bus = BusConfig("rs485-a", SerialSettings(rtu.path, 19200))
    interval = 0.5
    devices = tuple(
        DeviceConfig(name, "modbus-rtu", POINTS[:2], interval=interval, timeout=0.3, retries=1,
                     bus="rs485-a", unit=unit)
        for name, unit in (("loop-1", 1), ("loop-2", 2), ("loop-dead", 3))
    )
    config = GatewayConfig("gw", MqttConfig("127.0.0.1", 1883, "c"), devices, buses=(bus,))
    readings: list[Reading] = []
    async with rtu:
        poller = Poller(config, readings.append)
        await poller.start()
        await asyncio.sleep(4.0)  # the dead device fails its first scans and backs off
        settled = poller.stats()
        await asyncio.sleep(6.0)
        stats = poller.stats()
        await poller.stop()

    assert stats["loop-dead"].backed_off
    assert stats["loop-dead"].scans - settled["loop-dead"].scans <= 2
    for name in ("loop-1", "loop-2"):
        scans = stats[name].scans - settled[name].scans
        slots = stats[name].slots - settled[name].slots
        assert slots >= 6  # the loop was not starved
        # A backed-off dead device costs the bus one timeout per 8 s, not one per scan.
        assert scans >= 0.8 * slots, (name, stats[name])
        assert stats[name].failures == {}
    good = [r for r in readings if r.device == "loop-1"]
    assert good and all(r.values["temp"] == pytest.approx(10.0) for r in good)
