"""Report by exception end to end: `sensegate run`, Mosquitto, `sensegate bridge`, InfluxDB 1.x.

A simulated device's holding 0-1 count its reads (every scan reads a new value, recorded by
the simulator); the gateway publishes it with a deadband of 2.5, so central gets every third
value, across a clean restart in the middle (the report state is saved at the stop and taken
back at the start). The series is read back from InfluxDB and reconstructed the way a central
query does (the last value published holds until the next one): no true value is further
than the deadband from it. A second point never changes: only its first reading and its
heartbeats reach InfluxDB.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench._harness import MEASUREMENT, Proc, SimProcess, bridge_yaml, gateway_yaml, wait_until
from tests.support.influxdb import InfluxDB
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

NS = 1_000_000_000


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as b:
        yield b


@pytest.fixture
def influx() -> Iterator[InfluxDB]:
    with InfluxDB() as db:
        yield db


def served(record: Path) -> list[int]:
    """Every value the simulator served, in order (one per scan)."""
    if not record.exists():
        return []
    return [int(line.split()[1]) for line in record.read_text().splitlines() if line.strip()]


def published(influx: InfluxDB, field: str) -> list[tuple[int, int]]:
    rows = influx.rows(f'SELECT "{field}" FROM "{MEASUREMENT}"')
    return sorted((int(r["time"]), int(r[field])) for r in rows if r.get(field) is not None)


def test_deadband_and_heartbeat_through_the_bridge_into_influxdb(
    tmp_path: Path, broker: Mosquitto, influx: InfluxDB
) -> None:
    record = tmp_path / "served.txt"
    sim = SimProcess(1, record=record)
    state = tmp_path / "state"
    config = tmp_path / "gateway.yaml"
    text = gateway_yaml(gateway_id="gw-rbe", state_dir=state, mqtt_port=broker.port,
                        metrics_port=free_port(), devices=sim.devices(), interval="200ms",
                        timeout="5s")
    seq = "{name: seq, table: holding, address: 0, type: uint32}"
    assert seq in text
    config.write_text(text.replace(seq, (
        "{name: seq, table: holding, address: 0, type: uint32, deadband: 2.5}\n"
        "      - {name: idle, table: holding, address: 5, heartbeat: 1s}")))
    bridge_config = tmp_path / "bridge.yaml"
    bridge_config.write_text(bridge_yaml(
        state_dir=tmp_path / "bridge-state", mqtt_port=broker.port, influx_url=influx.url,
        database=influx.database, metrics_port=free_port()))
    log = tmp_path / "gateway.log"
    bridge = Proc("bridge", bridge_config, tmp_path / "bridge.log").start()
    gateway = Proc("run", config, log).start()
    try:
        assert wait_until(lambda: len(served(record)) >= 15, 60), log.read_text()
        assert gateway.stop(timeout=30) == 0
        assert (state / "report-state.json").exists()  # saved after the last commit
        gateway.start()
        assert wait_until(lambda: "2 points continue from before the restart"
                          in log.read_text(), 30), log.read_text()
        assert not (state / "report-state.json").exists()  # consumed: a crash starts afresh
        before = len(served(record))
        assert wait_until(lambda: len(served(record)) >= before + 15, 60)
        assert gateway.stop(timeout=30) == 0
        truth = served(record)
        # the last value read may be held back: central holds one within 2.5 of it
        assert wait_until(lambda: bool(published(influx, "seq")) and
                          truth[-1] - published(influx, "seq")[-1][1] <= 2.5, 30)
    finally:
        gateway.kill()
        bridge.stop()
        sim.close()

    values = [v for _, v in published(influx, "seq")]
    assert values[0] == truth[0]  # the first reading after the start is always published
    # Across the restart too, each value published is exactly 3 on from the previous one:
    # the saved state held back the first reads after the restart as it would have anyway.
    assert [b - a for a, b in itertools.pairwise(values)] == [3] * (len(values) - 1)
    # Reconstructed as central does (the last value published holds until the next one),
    # in the order the values were read: never further from the truth than the deadband.
    assert set(values) <= set(truth)
    shown = None
    for true in truth:
        if true in values:
            shown = true
        assert shown is not None and abs(true - shown) <= 2.5
    # and InfluxQL's fill(previous) gives a value for every 200 ms of the run
    first, last = published(influx, "seq")[0][0], published(influx, "seq")[-1][0]
    filled = influx.rows(f'SELECT last("seq") FROM "{MEASUREMENT}" WHERE time >= {first} AND '
                         f'time <= {last} GROUP BY time(200ms) fill(previous)')
    assert filled and all(r["last"] is not None for r in filled)
    assert [r["last"] for r in filled] == sorted(r["last"] for r in filled)

    # The point that never changes: its first reading, then heartbeats, at least 0.9 s apart
    # (1 s less half an interval of slack), never once per scan.
    idle = published(influx, "idle")
    assert idle and all(v == 0 for _, v in idle)
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(idle)]
    assert all(gap >= 0.9 * NS for gap in gaps), gaps
    assert len(idle) < len(truth) / 2
