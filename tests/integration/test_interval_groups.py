"""Mixed per-point intervals on one simulated RS-485 bus (a real pty): the scheduler's groups
interleave with never more than one transaction in flight, each group reading its own points."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from gateway.core.model import BusConfig, GatewayConfig, MqttConfig, Reading, SerialSettings
from gateway.edge.scheduler import Poller
from gateway.sim.simulator import ModbusRtuSimulator
from tests.support.modbus_sim import POINTS, load, rtu_device

pytestmark = pytest.mark.integration

FAST = ("seq", "temp")  # every 0.2 s
SLOW = ("energy", "level", "alarm", "model", "pump")  # every 1 s (the device's interval)


async def test_interval_groups_share_a_bus_one_transaction_at_a_time() -> None:
    sim = ModbusRtuSimulator([1, 2])
    for unit in sim.units.values():
        load(unit)
        unit.delay = 0.003  # a slow device: overlapping requests would show on the wire
    await sim.start()
    try:
        points = tuple(replace(p, interval=0.2) if p.name in FAST else p for p in POINTS)
        devices = tuple(
            replace(rtu_device("rs485-a", name=f"d{u}", unit=u, points=points), interval=1.0)
            for u in (1, 2))
        config = GatewayConfig("gw", MqttConfig("127.0.0.1", 1883, "c"), devices,
                               buses=(BusConfig("rs485-a", SerialSettings(sim.path, 19200)),))
        readings: list[Reading] = []
        poller = Poller(config, readings.append)
        sim.frames.clear()
        await poller.start()
        assert sorted(poller.stats()) == ["d1", "d1@1s", "d2", "d2@1s"]
        deadline = time.monotonic() + 20
        while (min(s.scans for s in poller.stats().values()) < 2
               and time.monotonic() < deadline):
            await asyncio.sleep(0.1)
        stats = poller.stats()
        await poller.stop()
    finally:
        await sim.stop()
    assert min(s.scans for s in stats.values()) >= 2
    for reading in readings:
        assert reading.quality == {}, reading  # no collision, no timeout on the shared line
        assert set(reading.values) in (set(FAST), set(SLOW)), reading.values
    # the fast group of each device is planned on its own: holding 0..3 (seq, temp)
    fast = [r for r in readings if set(r.values) == set(FAST)]
    slow = [r for r in readings if set(r.values) == set(SLOW)]
    assert len(fast) > len(slow)  # counts of scans performed, not timings
    # Between two answers the gateway sent exactly one 8-byte request: never a second one
    # before the first was answered, whichever group or device it came from.
    requests: list[bytes] = []
    pending = b""
    for frame in sim.frames:
        if frame.direction == "rx":
            pending += frame.data
        else:
            requests.append(pending)
            pending = b""
    assert requests and all(len(r) == 8 for r in requests), requests
    # each group planned on its own: the fast group is one read of holding 0..3 (seq, temp),
    # the slow group the rest; no request mixes the two
    shapes = {(r[1], int.from_bytes(r[2:4], "big"), int.from_bytes(r[4:6], "big"))
              for r in requests}
    assert shapes == {(3, 0, 4), (3, 4, 9), (4, 100, 1), (1, 5, 1)}
