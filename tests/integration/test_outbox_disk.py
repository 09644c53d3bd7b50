"""The outbox on real broken disks, under a real `sensegate run`, with a real Mosquitto.

* a 2 MiB tmpfs (issue 13, item 2): the outbox keeps within the room actually there, drops
  its oldest readings (counted) instead of failing every commit, and recovers by itself when
  the broker comes back;
* a damaged outbox.db at start (item 4): moved aside, a new outbox, polling goes on;
* outbox.db deleted under a running gateway (item 5): noticed, rebuilt, nothing lost;
* the file system turning read-only under a running gateway (items 6 and 7): readings in
  memory are published directly (at most once, counted), /healthz says unhealthy, and a
  stop that throws readings away exits 1 saying how many.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench._harness import Proc, SimProcess, metric, scrape, wait_until
from tests.integration.test_daemon import Collector
from tests.support.filesystems import Ext4Image, Tmpfs, gateway_yaml
from tests.support.mosquitto import Mosquitto
from tests.support.outbox import committed_readings
from tests.support.ports import free_port

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


def damage_interior_pages(db: Path) -> None:
    """Garbage over every page but the header page, as a failing disk might leave it."""
    data = bytearray(db.read_bytes())
    for offset in range(4096, len(data), 4096):
        data[offset:offset + 4096] = bytes((offset // 4096 * 37 + i) % 251 for i in range(4096))
    db.write_bytes(bytes(data))


def test_damaged_outbox_at_start_is_set_aside_and_polling_goes_on(
    tmp_path: Path, sims: SimProcess
) -> None:
    state = tmp_path / "state"
    with Mosquitto() as broker:
        port = free_port()
        config = tmp_path / "gateway.yaml"
        config.write_text(gateway_yaml(
            gateway_id=GATEWAY_ID, state_dir=state, mqtt_port=free_port(),  # no broker yet
            metrics_port=port, devices=sims.devices()[:2], interval="100ms",
        ))
        log_path = tmp_path / "gateway.log"
        gateway = Proc("run", config, log_path).start()
        collector = Collector(broker.port)
        try:
            assert wait_until(lambda: len(committed_readings(str(state))) > 200, 60)
            assert gateway.stop(timeout=30) == 0
            damage_interior_pages(state / "outbox.db")
            config.write_text(gateway_yaml(
                gateway_id=GATEWAY_ID, state_dir=state, mqtt_port=broker.port,
                metrics_port=port, devices=sims.devices()[:2], interval="100ms",
            ))
            gateway.start()
            assert wait_until(lambda: len(collector.keys()) > 20, 60), log_path.read_text()
            [aside] = [p for p in state.iterdir() if ".damaged-" in p.name]
            text = log_path.read_text()
            assert f"is damaged (database disk image is malformed): moved it to '{aside}'" in text
            m = metrics_of(port)
            assert m.get('sensegate_outbox_files_replaced_total{reason="damaged"}') == 1
            assert gateway.stop(timeout=30) == 0
            assert "Traceback" not in log_path.read_text()
        finally:
            gateway.kill()
            collector.close()


def test_outbox_deleted_under_a_running_gateway_is_rebuilt_and_nothing_is_lost(
    tmp_path: Path, sims: SimProcess
) -> None:
    state = tmp_path / "state"
    broker = Mosquitto()  # down at first: a backlog builds
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(gateway_yaml(
        gateway_id=GATEWAY_ID, state_dir=state, mqtt_port=broker.port, metrics_port=port,
        devices=sims.devices()[:2], interval="100ms",
    ))
    log_path = tmp_path / "gateway.log"
    gateway = Proc("run", config, log_path).start()
    collector: Collector | None = None
    try:
        assert wait_until(lambda: len(committed_readings(str(state))) > 200, 60)
        before = committed_readings(str(state))
        for suffix in ("", "-wal", "-shm"):
            (state / f"outbox.db{suffix}").unlink(missing_ok=True)
        assert wait_until(lambda: "was deleted or replaced while the gateway ran" in
                          log_path.read_text(), 30), log_path.read_text()
        assert wait_until(lambda: metrics_of(port).get(
            'sensegate_outbox_files_replaced_total{reason="vanished"}') == 1, 10)
        broker.start()
        collector = Collector(broker.port)
        assert wait_until(lambda: before <= collector.keys(), 90), (
            f"{len(before - collector.keys())} readings committed before the delete never "
            "arrived"
        )
        assert gateway.stop(timeout=30) == 0
        assert metric(metrics_of(port), "sensegate_outbox_dropped_total") == 0
    finally:
        gateway.kill()
        if collector is not None:
            collector.close()
        broker.close()


def healthz(port: int) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_read_only_disk_mid_run_publishes_from_memory_and_says_what_it_lost(
    tmp_path: Path, sims: SimProcess
) -> None:
    with Ext4Image(tmp_path / "disk") as fs, Mosquitto() as broker:
        state = fs.path / "state"
        port = free_port()
        config = tmp_path / "gateway.yaml"
        config.write_text(gateway_yaml(
            gateway_id=GATEWAY_ID, state_dir=state, mqtt_port=broker.port, metrics_port=port,
            devices=sims.devices()[:2], interval="100ms",
        ))
        log_path = tmp_path / "gateway.log"
        gateway = Proc("run", config, log_path).start()
        collector = Collector(broker.port)
        try:
            assert wait_until(lambda: len(collector.keys()) > 20, 30), log_path.read_text()
            assert healthz(port) == 200
            fs.go_read_only()  # as the kernel does after an I/O error (emergency_ro)
            since = time.time_ns()
            # Nothing can be stored, yet new readings keep reaching the broker.
            assert wait_until(lambda: newest_ts(collector) > since + 3_000_000_000, 30), (
                log_path.read_text()[-3000:]
            )
            text = log_path.read_text()
            assert "cannot commit to outbox" in text
            assert "publishing readings straight from memory, at most once" in text
            m = metrics_of(port)
            assert metric(m, "sensegate_outbox_unstored_published_total") > 10
            assert metric(m, "sensegate_outbox_commit_errors_total") >= 1
            assert metric(m, "sensegate_outbox_healthy") == 0
            assert healthz(port) == 503

            # The broker goes too: readings pile up in memory, and a stop throws them away.
            broker.stop()
            time.sleep(2.0)
            assert gateway.stop(timeout=30) == 1
            text = log_path.read_text()
            assert "stopped having thrown away" in text, text[-3000:]
            assert "Traceback" not in text
        finally:
            gateway.kill()
            collector.close()


def test_outbox_on_a_full_small_disk_never_fails_a_commit_and_drains(tmp_path: Path) -> None:
    """In process, the same small disk: fill far past the room, then drain while adding.
    Every commit succeeds (drops make room first), the files never outgrow the disk, and
    a drained outbox holds only what came after."""
    from gateway.core.model import OutboxConfig, Reading
    from gateway.edge.outbox import Outbox
    from gateway.runtime.metrics import GatewayMetrics

    with Tmpfs(tmp_path / "small", "2m") as fs:
        (fs.path / "ballast").write_bytes(b"\0" * (1400 * 1024))
        metrics = GatewayMetrics()
        box = Outbox.open(str(fs.path / "state"), OutboxConfig(), "gw", metrics=metrics)
        values = {f"p{i:02d}": i for i in range(16)}
        ts = 0
        try:
            for round_ in range(80):
                for _ in range(80):
                    ts += 1
                    box.add(Reading("d", ts, dict(values)), measurement="m", tags={})
                box.flush()  # raises StorageError if a commit fails
                if round_ >= 40:  # the broker is back: everything offered is acked
                    while batch := box.take(100):
                        for message in batch:
                            box.ack(message)
                assert os.statvfs(fs.path).f_bavail > 0
            box.flush()
            assert metrics.outbox_commit_errors_total.value == 0
            assert box.stats().dropped > 0
            assert box.stats().pending_readings == 0
        finally:
            box.close()
