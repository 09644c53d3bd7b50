"""Outbox benchmark: one command, one JSON line.

    .venv/bin/python bench/outbox.py [--readings 100000] [--devices 200] [--points 10]

Measures, against a real Mosquitto started on a free loopback port in the same run:

* ``commit``: readings per second through ``Outbox.add`` + commit (WAL, synchronous=FULL),
  in batches of ``--batch`` readings per commit (one fsync each);
* ``drain``: readings per second from a backlog of ``--readings`` readings, filled while no
  broker runs, to the broker once it is up, until every message is acknowledged (PUBACK;
  the deletes ride on the next commit, in the committer thread, during the drain);
* ``raw``: raw paho-mqtt QoS 1 publishing (network thread, 100 in flight, as the publisher's
  window) of the very payloads the drain sent (same count and sizes), until every PUBACK;

and reports both outbox rates as ratios to the raw rate. The pieces are importable
(`fill`, `drain`, `raw_publish`, `mosquitto`) for the crash tests of `sensegate run`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as paho

from gateway.core.model import GatewayConfig, MqttConfig, OutboxConfig, Reading
from gateway.core.payload import data_topic
from gateway.edge.outbox import Outbox
from gateway.edge.publish import STAGE_MESSAGES, Publisher
from tests.support.mosquitto import Mosquitto

TAGS = {"district": "xinwu", "site": "bench"}


@contextlib.contextmanager
def mosquitto() -> Iterator[Mosquitto]:
    """A broker on a free port (tests.support.mosquitto stays root when run as root)."""
    broker = Mosquitto(persistence=False)
    try:
        yield broker
    finally:
        broker.close()


def reading(device: int, ts: int, points: int) -> Reading:
    values = {f"p{i}": 20.0 + i + (ts % 97) / 10 for i in range(points)}
    return Reading(f"dev-{device:04d}", ts, values)


def fill(
    outbox: Outbox, readings: int, devices: int, points: int, batch: int, start_ts: int = 0
) -> float:
    """Add and commit ``readings`` readings, ``batch`` per commit; returns seconds taken."""
    t0 = time.perf_counter()
    ts = start_ts or time.time_ns()
    for n in range(readings):
        outbox.add(reading(n % devices, ts + n, points), measurement="bench", tags=TAGS)
        if (n + 1) % batch == 0:
            outbox.flush()
    outbox.flush()
    return time.perf_counter() - t0


def config(port: int, state_dir: str, max_message_bytes: int) -> GatewayConfig:
    return GatewayConfig(
        id="bench", devices=(), state_dir=state_dir,
        mqtt=MqttConfig(host="127.0.0.1", port=port, client_id="sensegate-bench", qos=1),
        outbox=OutboxConfig(max_bytes=4 * 1024**3, max_message_bytes=max_message_bytes),
    )


def payloads(outbox: Outbox, cfg: GatewayConfig) -> list[tuple[str, bytes]]:
    """The messages the publisher will send for what is in the outbox (then rewound):
    taken as the publisher takes them, built by the publisher's own payload code."""
    publisher = Publisher(cfg, outbox)
    out = []
    while batch := outbox.take(STAGE_MESSAGES, max_bytes=publisher._stage_bytes):
        for m in batch:
            out.append((data_topic(cfg.mqtt.topic_prefix, cfg.id, m.device),
                        publisher._payload(m)))
    outbox.rewind()
    return out


async def drain(outbox: Outbox, cfg: GatewayConfig) -> tuple[float, int]:
    """Run a Publisher until the outbox is empty; returns (seconds, messages published)."""
    publisher = Publisher(cfg, outbox, reconnect_min=0.05, reconnect_max=0.2)
    committer = asyncio.create_task(outbox.run_committer())
    t0 = time.perf_counter()
    task = asyncio.create_task(publisher.run())
    while outbox.unacked_readings() > 0:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    await publisher.stop(5.0)
    await asyncio.gather(task, return_exceptions=True)
    committer.cancel()
    await asyncio.gather(committer, return_exceptions=True)
    return elapsed, publisher.published_messages


def raw_publish(port: int, messages: list[tuple[str, bytes]], window: int = 100) -> float:
    """Raw paho QoS 1 publishing of ``messages``; seconds until the last PUBACK."""
    done = threading.Event()
    acked = 0

    def on_publish(client: paho.Client, userdata: object, mid: int, rc: object,
                   props: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(messages):
            done.set()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-raw")
    client.max_inflight_messages_set(window)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        t0 = time.perf_counter()
        for topic, payload in messages:
            client.publish(topic, payload, qos=1)
        if not done.wait(600):
            raise RuntimeError("raw publish: not every message was acknowledged")
        return time.perf_counter() - t0
    finally:
        client.disconnect()
        client.loop_stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readings", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--points", type=int, default=10, help="values per reading")
    ap.add_argument("--batch", type=int, default=1000, help="readings per commit")
    ap.add_argument("--max-message-bytes", type=int, default=256 * 1024)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="sensegate-bench-") as tmp, mosquitto() as broker:
        # 1. commit rate (no broker involved)
        box = Outbox.open(os.path.join(tmp, "commit"), OutboxConfig(), "bench")
        commit_s = fill(box, args.readings, args.devices, args.points, args.batch)
        box.close()

        # 2. backlog filled while the broker is down, drained once it is up
        state = os.path.join(tmp, "drain")
        cfg = config(broker.port, state, args.max_message_bytes)
        box = Outbox.open(state, cfg.outbox, cfg.id)
        fill(box, args.readings, args.devices, args.points, args.batch)
        disk = box.disk_bytes()
        msgs = payloads(box, cfg)
        broker.start()
        drain_s, published = asyncio.run(drain(box, cfg))
        left = box.stats().pending_readings
        box.close()

        # 3. raw paho, same payloads, same broker
        raw_s = raw_publish(broker.port, msgs)

    raw_rate = args.readings / raw_s  # readings per second carried by the same messages
    result = {
        "bench": "outbox",
        "readings": args.readings,
        "devices": args.devices,
        "points_per_reading": args.points,
        "commit_batch": args.batch,
        "backlog_disk_bytes": disk,
        "messages": published,
        "avg_message_bytes": round(sum(len(p) for _, p in msgs) / max(1, len(msgs))),
        "commit_readings_per_s": round(args.readings / commit_s),
        "commits_per_s": round(args.readings / args.batch / commit_s, 1),
        "drain_readings_per_s": round(args.readings / drain_s),
        "drain_messages_per_s": round(published / drain_s, 1),
        "raw_paho_readings_per_s": round(raw_rate),
        "raw_paho_messages_per_s": round(len(msgs) / raw_s, 1),
        "commit_vs_raw": round(commit_s and raw_s / commit_s, 3),
        "drain_vs_raw": round(raw_s / drain_s, 3),
        "left_in_outbox": left,
    }
    print(json.dumps(result))
    return 0 if left == 0 and published == len(msgs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
