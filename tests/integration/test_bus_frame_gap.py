"""A bus's `frame_gap` is real silence on the wire between transactions.

Measured on the simulator's side of the pty: from the moment it wrote an answer to the moment
the next request arrived. Load can only lengthen that silence, so the lower bound is a
correctness property, not a timing assertion.
"""

from __future__ import annotations

import asyncio

import pytest

from drivers import BusRegistry, create_driver
from gateway.core.model import BusConfig, SerialSettings
from gateway.sim.simulator import ModbusRtuSimulator
from tests.support.modbus_sim import load, rtu_device

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("frame_gap", [0.0, 0.08], ids=["no-gap", "80ms"])
async def test_frame_gap_is_silence_between_transactions(frame_gap: float) -> None:
    sim = ModbusRtuSimulator([1, 2])
    for unit in sim.units.values():
        load(unit)
    await sim.start()
    buses = BusRegistry(
        [BusConfig("rs485-a", SerialSettings(sim.path, baudrate=19200), frame_gap=frame_gap)]
    )
    try:
        drivers = [create_driver(rtu_device("rs485-a", name=f"d{u}", unit=u), None, buses)
                   for u in (1, 2)]
        sim.frames.clear()
        results = await asyncio.gather(*(d.scan() for d in drivers for _ in range(3)))
        assert all(r.errors == [] for r in results)
        silences = []
        last_answer = None
        for frame in sim.frames:
            if frame.direction == "tx":
                last_answer = frame.t
            elif last_answer is not None:
                silences.append(frame.t - last_answer)
                last_answer = None
        assert len(silences) >= 5
        # Modbus RTU's own 3.5-character silence at 19200 baud is ~1.8 ms; frame_gap adds more.
        assert min(silences) >= max(frame_gap, 0.0018) * 0.95, silences
    finally:
        await buses.close()
        await sim.stop()
