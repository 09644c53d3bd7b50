"""The central side on a 3-node RabbitMQ cluster: nothing a gateway committed is lost when a
node, or a bridge, is killed -9, and two bridges share the queue.

Real processes throughout: simulated Modbus TCP devices (recording every sequence number
they serve), three `sensegate run` gateways, each connected to a different node with the
other two in `mqtt.hosts`, two `sensegate bridge` processes consuming the quorum queue
(3 replicas) over AMQP into a real InfluxDB 1.x. While readings flow, each node is killed -9
in turn (the queue leader, a bridge's node, the remaining one: every node is also a
gateway's node) and restarted, then one bridge is killed -9 mid-batch (RabbitMQ counts
unacknowledged deliveries on its connection just before). The gateways are
stopped cleanly at the end (SIGTERM drains the outbox), so every reading served before that
was committed: each must be in InfluxDB, once per (device, ts), with its own seq value.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench._harness import MEASUREMENT, Proc, SimProcess, gateway_yaml, scrape, wait_until
from tests.support import rabbitmq
from tests.support.influxdb import InfluxDB
from tests.support.ports import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not rabbitmq.available(), reason="rabbitmq-server not installed"),
]

QUEUE = "sensegate"
GATEWAYS = 3
DEVICES_PER_GATEWAY = 2


@pytest.fixture(scope="module")
def cluster() -> Iterator[rabbitmq.RabbitCluster]:
    with rabbitmq.RabbitCluster(3) as c:
        yield c


def gateway_config(path: Path, index: int, cluster: rabbitmq.RabbitCluster,
                   devices: list[tuple[str, int]]) -> None:
    """Gateway `index` connects to node `index` first, the other nodes in mqtt.hosts."""
    nodes = cluster.nodes[index:] + cluster.nodes[:index]
    text = gateway_yaml(gateway_id=f"gw{index}", state_dir=path.parent / f"state{index}",
                        mqtt_port=nodes[0].mqtt_port, metrics_port=free_port(),
                        devices=devices, interval="100ms", timeout="3s")
    hosts = ", ".join(f"'127.0.0.1:{n.mqtt_port}'" for n in nodes[1:])
    text = text.replace(f"  port: {nodes[0].mqtt_port}\n",
                        f"  port: {nodes[0].mqtt_port}\n  hosts: [{hosts}]\n", 1)
    path.write_text(text)


def bridge_config(path: Path, index: int, cluster: rabbitmq.RabbitCluster,
                  influx: InfluxDB) -> int:
    """Bridge `index` tries node `index` first; returns its metrics port."""
    nodes = cluster.nodes[index:] + cluster.nodes[:index]
    metrics_port = free_port()
    listed = ", ".join(f"'127.0.0.1:{n.amqp_port}'" for n in nodes)
    path.write_text("\n".join([
        "amqp:",
        f"  nodes: [{listed}]",
        f"  queue: {QUEUE}",
        "  prefetch: 500",
        "influxdb:",
        f"  url: {influx.url}",
        "  api: v1",
        f"  database: {influx.database}",
        "  flush_interval: 1s",
        f"state_dir: {path.parent / f'bridge-state{index}'}",
        f"metrics: {{listen: '127.0.0.1:{metrics_port}'}}",
        "",
    ]))
    return metrics_port


def read_served(path: Path) -> dict[str, dict[int, int]]:
    """device -> {seq: served_at_ns} from the simulators' record."""
    served: dict[str, dict[int, int]] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            served.setdefault(parts[0], {})[int(parts[1])] = int(parts[2])
    return served


def stored(influx: InfluxDB) -> dict[str, list[tuple[int, int]]]:
    """device -> [(ts, seq)] in InfluxDB."""
    out: dict[str, list[tuple[int, int]]] = {}
    for row in influx.rows(f'SELECT "seq" FROM "{MEASUREMENT}" GROUP BY "device"'):
        out.setdefault(row["device"], []).append((row["time"], int(row["seq"])))
    return out


def consuming(log: Path, times: int) -> bool:
    return log.exists() and log.read_text().count("consuming amqp queue") >= times


def test_node_and_bridge_kills_lose_nothing_committed(
    tmp_path: Path, cluster: rabbitmq.RabbitCluster
) -> None:
    record = tmp_path / "served.log"
    sims = SimProcess(GATEWAYS * DEVICES_PER_GATEWAY, record=record)
    influx = InfluxDB().start()
    bridges: list[Proc] = []
    gateways: list[Proc] = []
    events: list[str] = []

    def note(what: str) -> None:
        events.append(f"{time.monotonic():.1f} {what}")

    try:
        metrics = []
        for i in range(2):
            config = tmp_path / f"bridge{i}.yaml"
            metrics.append(bridge_config(config, i, cluster, influx))
            bridges.append(Proc("bridge", config, tmp_path / f"bridge{i}.log").start())
        # The queue and its binding must exist before a gateway publishes: a publish no
        # queue is bound for is confirmed and dropped.
        for bridge in bridges:
            assert wait_until(lambda b=bridge: consuming(b.log, 1), 60), bridge.log.read_text()
        assert len(cluster.queue_members(QUEUE)) == 3
        devices = sims.devices()
        for i in range(GATEWAYS):
            config = tmp_path / f"gateway{i}.yaml"
            gateway_config(config, i, cluster,
                           devices[i * DEVICES_PER_GATEWAY:(i + 1) * DEVICES_PER_GATEWAY])
            gateways.append(Proc("run", config, tmp_path / f"gateway{i}.log").start())
        assert wait_until(lambda: len(stored(influx)) == len(devices), 60), events

        # Each node in turn: the queue leader first, then a bridge's node, then the last.
        leader = cluster.queue_leader(QUEUE)
        order = [leader] + [n for n in (1, 0, 2) if n != leader]
        for index in order:
            before = sum(len(v) for v in stored(influx).values())
            note(f"kill -9 node {index} (leader {cluster.queue_leader(QUEUE)})")
            cluster.kill(index)
            time.sleep(2.0)  # readings flow through the other two meanwhile
            cluster.restart(index)
            note(f"node {index} back")
            assert wait_until(
                lambda b=before: sum(len(v) for v in stored(influx).values()) > b + 20, 60
            ), events

        # A bridge killed -9 mid-batch (flush_interval 1s: it always holds a partial
        # batch): its unacknowledged deliveries go to the other bridge.
        name = f"pid {bridges[0].pid}"
        assert wait_until(lambda: cluster.unacked_of(name) > 0, 30, step=0.1), events
        note("kill -9 bridge 0")
        bridges[0].kill()
        time.sleep(2.0)
        bridges[0].start()
        assert wait_until(lambda: consuming(bridges[0].log, 2), 60), bridges[0].log.read_text()
        note("bridge 0 back")
        time.sleep(2.0)

        # Stop the gateways cleanly: the outbox drains, so everything served was committed
        # and published.
        stop_ns = time.time_ns()
        for gateway in gateways:
            assert gateway.stop(timeout=60) == 0, gateway.log.read_text()[-3000:]
        note("gateways stopped")
        sims.close()
        served = read_served(record)

        def complete() -> bool:
            have = stored(influx)
            return all(
                {s for s, t in seqs.items() if t < stop_ns}
                <= {seq for _, seq in have.get(device, [])}
                for device, seqs in served.items()
            )

        complete_in_time = wait_until(complete, 60, step=0.5)
        shares = [scrape(port).get("sensegate_bridge_points_written_total", 0.0)
                  for port in metrics]
        have = stored(influx)
        problems = []
        for device, seqs in sorted(served.items()):
            rows = have.get(device, [])
            by_seq: dict[int, list[int]] = {}
            for ts, seq in rows:
                by_seq.setdefault(seq, []).append(ts)
            missing = sorted(s for s, t in seqs.items() if t < stop_ns and s not in by_seq)
            twice = {s: ts for s, ts in by_seq.items() if len(ts) > 1}
            never_served = sorted(set(by_seq) - set(seqs))
            if missing or twice or never_served:
                problems.append(f"{device}: {len(seqs)} served, {len(rows)} stored, missing "
                                f"{missing[:10]}, stored at two ts {list(twice)[:5]}, never "
                                f"served {never_served[:5]}")
        assert not problems and complete_in_time, "\n".join(problems + events)
        assert sum(len(v) for v in served.values()) > 500  # the test exercised something
        # Both bridges took a share of the queue.
        assert all(s > 0 for s in shares), shares
        for proc in (*gateways, *bridges):
            assert "Traceback" not in proc.log.read_text(), proc.log
    finally:
        for proc in (*gateways, *bridges):
            proc.kill()
        sims.close()
        influx.close()


def test_a_single_mosquitto_killed_9_loses_what_it_had_acknowledged(tmp_path: Path) -> None:
    """The window a single broker leaves (docs/scale-out.md §1): messages acknowledged with
    PUBACK and queued for the bridge's persistent session, then `kill -9` before Mosquitto's
    next autosave (`autosave_interval 30`): the gateways deleted them, the broker lost them."""
    from bench.cluster import window_mosquitto

    influx = InfluxDB().start()
    try:
        result = window_mosquitto(tmp_path, influx, n_messages=200, scans=5)
    finally:
        influx.close()
    assert result["acknowledged"] == 1000
    assert result["lost"] > 0, result  # if this fails, Mosquitto now keeps acknowledged messages
