"""The central side on a 3-node RabbitMQ cluster: throughput with one and two bridges, and
what a broker `kill -9` right after its PUBACKs loses, single Mosquitto against the cluster.

    python bench/cluster.py [--messages 20000] [--scans 20] [--window 1000]

Starts its own 3-node RabbitMQ cluster (tests/support/rabbitmq.py), InfluxDB 1.x and
Mosquitto on free loopback ports; the bridges are real `sensegate bridge` processes
(`amqp:` source). Prints one JSON line.

* throughput: `--messages` gateway payloads (`--scans` scans of 4 fields each, built by
  bench/bridge.py's `messages`) are published with MQTT QoS 1 through the three nodes into
  the quorum queue (3 replicas) while no bridge runs; then 1 bridge (and, for a second
  backlog, 2 bridges) start and the clock runs from the moment every bridge consumes until
  InfluxDB holds every point. Readings/s end to end (queue → bridge → InfluxDB), the ratio
  two ÷ one, and the cores (CPU seconds ÷ wall seconds) of RabbitMQ (3 nodes), the bridges
  and influxd during the drain, and the bridges' CPU microseconds per reading.
* window: `--window` messages are published QoS 1 and all acknowledged while the bridge is
  away, then the broker is killed -9 at once and restarted and the bridge drains. Single
  Mosquitto (persistence on, `autosave_interval 30`, the bridge's session saved by a clean
  restart before): what it had acknowledged but not yet saved is gone. Cluster: the queue
  leader is killed -9; the other two nodes hold every acknowledged message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from bench._harness import Proc, cpu_seconds, machine, wait_until  # noqa: E402
from bench.bridge import messages  # noqa: E402
from tests.support.influxdb import InfluxDB  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402
from tests.support.rabbitmq import RabbitCluster  # noqa: E402

QUEUE = "sensegate"
MEASUREMENT = "road_weather"


def group_pids(pgid: int) -> list[int]:
    """Every process of a process group (a RabbitMQ node: its shell, beam, helpers)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def amqp_bridge_yaml(path: Path, cluster: RabbitCluster, influx: InfluxDB, database: str,
                     first: int) -> None:
    nodes = cluster.nodes[first:] + cluster.nodes[:first]
    listed = ", ".join(f"'127.0.0.1:{n.amqp_port}'" for n in nodes)
    path.write_text("\n".join([
        "amqp:", f"  nodes: [{listed}]", f"  queue: {QUEUE}", "  prefetch: 5000",
        "influxdb:", f"  url: {influx.url}", "  api: v1", f"  database: {database}",
        f"state_dir: {path.parent / (path.stem + '-state')}", "",
    ]))


def mqtt_bridge_yaml(path: Path, broker: Mosquitto, influx: InfluxDB, database: str) -> None:
    path.write_text("\n".join([
        "mqtt:", "  host: 127.0.0.1", f"  port: {broker.port}",
        "  client_id: bench-window-bridge",
        "influxdb:", f"  url: {influx.url}", "  api: v1", f"  database: {database}",
        f"state_dir: {path.parent / (path.stem + '-state')}", "",
    ]))


def _count(influx: InfluxDB, database: str) -> int:
    saved = influx.database
    influx.database = database
    try:
        return influx.count(MEASUREMENT, "count")
    except Exception:
        return 0
    finally:
        influx.database = saved


def publish_through(ports: list[int], msgs: list[tuple[str, bytes]]) -> None:
    """Publish QoS 1, a share through each port; returns once every PUBACK came."""
    shares = [msgs[i::len(ports)] for i in range(len(ports))]

    async def one(port: int, share: list[tuple[str, bytes]]) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-pub-{port}",
                                  max_inflight_messages=500) as client:
            client.pending_calls_threshold = 1000
            for i in range(0, len(share), 500):
                await asyncio.gather(*(client.publish(t, p, qos=1)
                                       for t, p in share[i:i + 500]))

    async def run() -> None:
        await asyncio.gather(*(one(port, share) for port, share in zip(ports, shares,
                                                                       strict=True)))

    asyncio.run(run())


def start_bridges(work: Path, cluster: RabbitCluster, influx: InfluxDB, database: str,
                  n: int) -> list[Proc]:
    procs = []
    for i in range(n):
        config = work / f"{database}-bridge{i}.yaml"
        amqp_bridge_yaml(config, cluster, influx, database, i)
        procs.append(Proc("bridge", config, work / f"{database}-bridge{i}.log").start())
    return procs


def consuming(proc: Proc) -> bool:
    return proc.log.exists() and "consuming amqp queue" in proc.log.read_text()


def throughput(work: Path, cluster: RabbitCluster, influx: InfluxDB, n_messages: int,
               scans: int, bridges: int) -> dict[str, float]:
    database = f"through{bridges}"
    msgs = messages(n_messages, scans, 4, "sensegate")
    expected = n_messages * scans
    t = time.perf_counter()
    publish_through([node.mqtt_port for node in cluster.nodes], msgs)
    publish_s = time.perf_counter() - t
    procs = start_bridges(work, cluster, influx, database, bridges)
    try:
        assert wait_until(lambda: all(consuming(p) for p in procs), 60, step=0.02)
        rabbit = [pid for node in cluster.nodes if node.proc is not None
                  for pid in group_pids(node.proc.pid)]
        assert influx.proc is not None
        influx_pid = influx.proc.pid

        def sample() -> tuple[float, int, float, float, float]:
            return (time.perf_counter(), _count(influx, database), cpu_of(rabbit),
                    sum(p.cpu_seconds() for p in procs), cpu_seconds(influx_pid))

        samples = [sample()]
        deadline = time.monotonic() + 600
        while samples[-1][1] < expected and time.monotonic() < deadline:
            time.sleep(0.2)
            samples.append(sample())
    finally:
        for p in procs:
            p.stop()
    # 0: every delivery was acknowledged (list_queues counts lag a few seconds behind)
    wait_until(lambda: cluster.queue_messages(QUEUE) == 0, 15, step=1.0)
    left = cluster.queue_messages(QUEUE)
    if left:
        cluster.purge(QUEUE)
    # The rate between 20 % and 80 % of the points: neither the bridges' start nor the
    # last partial batch (flushed after flush_interval) is in it.
    a = next(x for x in samples if x[1] >= 0.2 * expected)
    b = next((x for x in samples if x[1] >= 0.8 * expected), samples[-1])
    wall, points = b[0] - a[0], b[1] - a[1]
    return {
        "complete": samples[-1][1] >= expected,
        "left_in_queue": left,
        "readings": expected,
        "publish_readings_per_s": round(expected / publish_s),
        "readings_per_s": round(points / wall),
        "measured_s": round(wall, 2),
        "cores_rabbitmq": round((b[2] - a[2]) / wall, 2),
        "cores_bridges": round((b[3] - a[3]) / wall, 2),
        "cores_influxd": round((b[4] - a[4]) / wall, 2),
        "bridge_cpu_us_per_reading": round((b[3] - a[3]) / points * 1e6, 1),
    }


def settle(influx: InfluxDB, database: str, seconds: float = 5.0) -> int:
    """The point count once it stopped growing for `seconds`."""
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = _count(influx, database)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            break
        time.sleep(0.25)
    return last


def window_mosquitto(work: Path, influx: InfluxDB, n_messages: int, scans: int) -> dict[str, int]:
    database = "window_mosquitto"
    broker = Mosquitto()
    broker.conf.write_text(broker.conf.read_text().replace("autosave_interval 1",
                                                           "autosave_interval 30"))
    broker.start()
    config = work / "window-mosquitto-bridge.yaml"
    mqtt_bridge_yaml(config, broker, influx, database)
    bridge = Proc("bridge", config, work / "window-mosquitto-bridge.log")
    try:
        bridge.start()
        assert wait_until(lambda: "subscribed to" in bridge.log.read_text(), 60)
        bridge.stop()
        broker.stop()  # SIGTERM: the bridge's session is saved
        broker.start()
        publish_through([broker.port], messages(n_messages, scans, 4, "sensegate"))
        broker.stop(kill=True)  # kill -9 right after the last PUBACK
        broker.start()
        bridge.start()
        stored = settle(influx, database)
    finally:
        bridge.kill()
        broker.close()
    acked = n_messages * scans
    return {"acknowledged": acked, "stored": stored, "lost": acked - stored}


def window_cluster(work: Path, cluster: RabbitCluster, influx: InfluxDB, n_messages: int,
                   scans: int) -> dict[str, int]:
    database = "window_cluster"
    leader = cluster.queue_leader(QUEUE)
    through = [n.mqtt_port for n in cluster.nodes if n.index != leader]
    publish_through(through, messages(n_messages, scans, 4, "sensegate"))
    cluster.kill(leader)  # kill -9 the queue leader right after the last PUBACK
    procs = start_bridges(work, cluster, influx, database, 1)
    try:
        stored = settle(influx, database)
    finally:
        for p in procs:
            p.stop()
        cluster.restart(leader)
    acked = n_messages * scans
    return {"acknowledged": acked, "stored": stored, "lost": acked - stored,
            "killed": "queue leader"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--window", type=int, default=1000, help="messages of the kill runs")
    parser.add_argument("--skip-window", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sensegate-bench-cluster-"))
    report: dict[str, object] = {"bench": "cluster", "machine": machine(),
                                 "messages": args.messages, "scans_per_message": args.scans,
                                 "fields_per_scan": 4}
    influx = InfluxDB().start()
    t = time.perf_counter()
    cluster = RabbitCluster(3)
    try:
        cluster.start()
        report["cluster_start_s"] = round(time.perf_counter() - t, 1)
        # Declare the queue (a bridge does it at start) before anything is published.
        procs = start_bridges(work, cluster, influx, "declare", 1)
        assert wait_until(lambda: consuming(procs[0]), 60), procs[0].log.read_text()
        procs[0].stop()
        one = throughput(work, cluster, influx, args.messages, args.scans, 1)
        two = throughput(work, cluster, influx, args.messages, args.scans, 2)
        report["one_bridge"] = one
        report["two_bridges"] = two
        report["ratio_two_over_one"] = round(two["readings_per_s"] / one["readings_per_s"], 2)
        if not args.skip_window:
            report["window_cluster"] = window_cluster(work, cluster, influx, args.window,
                                                      args.scans)
            report["window_mosquitto"] = window_mosquitto(work, influx, args.window,
                                                          args.scans)
    finally:
        cluster.close()
        influx.close()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
