"""The outbox on real broken disks, under a real `sensegate run`, with a real Mosquitto.

* a 2 MiB tmpfs (issue 13, item 2): the outbox keeps within the room actually there, drops
  its oldest readings (counted) instead of failing every commit, and recovers by itself when
  the broker comes back;
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench._harness import Proc, SimProcess, metric, scrape, wait_until
from tests.integration.test_daemon import Collector
from tests.support.mosquitto import Mosquitto
from tests.support.outbox import committed_readings
from tests.support.ports import free_port
from tests.support.tmpfs import Tmpfs, gateway_yaml

pytestmark = pytest.mark.integration

GATEWAY_ID = "gw-disk"


@pytest.fixture
def sims() -> Iterator[SimProcess]:
    sim = SimProcess(4)
    try:
        yield sim
    finally:
        sim.close()


def metrics_of(port: int) -> dict[str, float]:
    try:
        return scrape(port)
    except OSError:
        return {}


def newest_ts(collector: Collector) -> int:
    received = collector.keys()
    return max((ts for _, ts in received), default=0)


def test_small_disk_keeps_within_room_drops_oldest_and_recovers(
    tmp_path: Path, sims: SimProcess
) -> None:
    with Tmpfs(tmp_path / "small", "2m") as fs:
        # Someone else's file takes most of the 2 MiB: the outbox has ~600 KiB, far less
        # than the default max_bytes (512 MiB).
        (fs.path / "ballast").write_bytes(b"\0" * (1400 * 1024))
        state = fs.path / "state"
        broker = Mosquitto()  # not started: the broker is down
        port = free_port()
        config = tmp_path / "gateway.yaml"
        config.write_text(gateway_yaml(
            gateway_id=GATEWAY_ID, state_dir=state, mqtt_port=broker.port, metrics_port=port,
            devices=sims.devices(),
        ))
        log_path = tmp_path / "gateway.log"
        gateway = Proc("run", config, log_path).start()
        collector: Collector | None = None
        try:
            # The disk fills: the oldest are dropped and counted, commits never fail.
            assert wait_until(
                lambda: metric(metrics_of(port), "sensegate_outbox_dropped_total") > 500, 90
            ), log_path.read_text()[-3000:]
            time.sleep(3.0)  # keep filling at the bound
            m = metrics_of(port)
            assert metric(m, "sensegate_outbox_commit_errors_total") == 0, log_path.read_text()
            free = os.statvfs(fs.path)
            assert free.f_bavail * free.f_frsize > 0
            assert "the file system has room for" in log_path.read_text()
            dropped_before = metric(m, "sensegate_outbox_dropped_total")

            # The broker returns: the backlog goes out, its deletes commit, new readings
            # flow and are deleted as they are acknowledged.
            broker.start()
            collector = Collector(broker.port)
            since = time.time_ns()
            assert wait_until(
                lambda: newest_ts(collector) > since + 2_000_000_000, 60
            ), log_path.read_text()[-3000:]
            assert wait_until(
                lambda: metric(metrics_of(port), "sensegate_outbox_pending_readings") < 400, 60
            ), log_path.read_text()[-3000:]
            m = metrics_of(port)
            assert metric(m, "sensegate_outbox_commit_errors_total") == 0
            assert metric(m, "sensegate_outbox_dropped_total") >= dropped_before
            assert gateway.stop(timeout=30) == 0
            assert committed_readings(str(state)) == set()  # everything delivered
            assert "Traceback" not in log_path.read_text()
        finally:
            gateway.kill()
            if collector is not None:
                collector.close()
            broker.close()
