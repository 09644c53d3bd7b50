"""Bridge throughput against posting the same line protocol straight to InfluxDB 1.x `/write`.

    .venv/bin/python bench/bridge.py [--messages 10000] [--scans 20] [--batch-size 5000]

Starts its own Mosquitto and InfluxDB 1.x on free loopback ports. Builds real gateway
payloads (`gateway.payload.build_json`, several scans per message, four fields per scan).

- direct: the exact lines the bridge writes, POSTed to `/write?db=direct` in batches of
  `batch_size` over one kept-alive HTTP connection, one request at a time.
- bridge: the messages are queued at the broker in the bridge's persistent session while
  it is stopped; then the bridge starts and the clock runs until InfluxDB accepted every
  point (`db=bridge`): MQTT receive, decode, batching, writes, acknowledgements.

Prints one JSON line with both rates and their ratio (target: bridge ≥ 50 % of direct).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import os
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from gateway import ingest  # noqa: E402
from gateway.bridge import Bridge  # noqa: E402
from gateway.model import (  # noqa: E402
    BridgeConfig,
    BridgeMqttConfig,
    InfluxConfig,
    Reading,
)
from gateway.payload import build_json, data_topic  # noqa: E402
from tests.support.influxdb import InfluxDB  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402

T0 = 1_764_000_000_000_000_000


def messages(n: int, scans: int) -> list[tuple[str, bytes]]:
    out = []
    k = 0
    for i in range(n):
        gw, dev = f"gw-{i % 20:03d}", f"dev-{i % 7}"
        readings = []
        for _ in range(scans):
            k += 1
            readings.append(Reading(dev, T0 + k * 1000, {
                "air_temp": k * 0.01 - 20.0, "humidity": 40.0 + (k % 500) / 10,
                "count": k, "ok": k % 2 == 0,
            }))
        payload = build_json(gw, dev, "road_weather", {"district": "xinwu", "lane": "north"},
                             readings)
        out.append((data_topic("sensegate", gw, dev), payload))
    return out


def direct(db: InfluxDB, lines: list[str], batch_size: int) -> float:
    url = urllib.parse.urlsplit(db.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
    path = "/write?db=direct&precision=ns"
    start = time.perf_counter()
    for i in range(0, len(lines), batch_size):
        body = "\n".join(lines[i:i + batch_size]).encode()
        conn.request("POST", path, body=body)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 204:
            raise RuntimeError(f"direct write failed: {resp.status}")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


async def through_bridge(
    broker: Mosquitto, db: InfluxDB, msgs: list[tuple[str, bytes]], n_points: int,
    batch_size: int, state_dir: str,
) -> float:
    config = BridgeConfig(
        mqtt=BridgeMqttConfig(host="127.0.0.1", port=broker.port, client_id="bench-bridge",
                              shared_group="bench"),
        influxdb=InfluxConfig(url=db.url, api="v1", database="bridge", batch_size=batch_size,
                              flush_interval=0.1),
        state_dir=state_dir,
    )
    # 1. create the persistent session, then leave
    bridge = Bridge("(bench)", config=config)
    task = asyncio.create_task(bridge.run())
    while not bridge.stats.connected:
        await asyncio.sleep(0.02)
    bridge.should_exit.set()
    await task
    # 2. queue every message at the broker while the bridge is away
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-pub",
                              max_inflight_messages=1000) as client:
        for i in range(0, len(msgs), 500):  # aiomqtt slows down with many pending calls
            await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in msgs[i:i + 500]))
    # 3. drain through the bridge
    bridge = Bridge("(bench)", config=config)
    profile = None
    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    start = time.perf_counter()
    task = asyncio.create_task(bridge.run())
    while bridge.stats.points_written < n_points:
        await asyncio.sleep(0.005)
        if task.done():
            raise RuntimeError("bridge stopped early")
    elapsed = time.perf_counter() - start
    if profile is not None:
        profile.disable()
        profile.dump_stats(os.environ["BENCH_PROFILE"])
    bridge.should_exit.set()
    await task
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--scans", type=int, default=20, help="scans (points) per message")
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mqtt").setLevel(logging.ERROR)

    msgs = messages(args.messages, args.scans)
    lines: list[str] = []
    for topic, payload in msgs:
        result = ingest.decode_message(topic, payload)
        assert isinstance(result, list)
        lines.extend(result)
    n_points = len(lines)

    with Mosquitto() as broker, InfluxDB(database="bridge") as db, \
            tempfile.TemporaryDirectory() as state_dir:
        db.query('CREATE DATABASE "direct"', post=True)
        # warm up both paths' shard creation with one point each
        db.write(lines[0].encode())
        t_direct = direct(db, lines, args.batch_size)
        t_bridge = await through_bridge(broker, db, msgs, n_points, args.batch_size, state_dir)
        stored = db.count("road_weather", "air_temp")
    direct_rate = n_points / t_direct
    bridge_rate = n_points / t_bridge
    print(json.dumps({
        "bench": "bridge",
        "messages": len(msgs),
        "points": n_points,
        "fields_per_point": 4,
        "batch_size": args.batch_size,
        "direct_points_per_s": round(direct_rate),
        "bridge_points_per_s": round(bridge_rate),
        "ratio": round(bridge_rate / direct_rate, 3),
        "stored_points": stored,
    }))


if __name__ == "__main__":
    asyncio.run(main())
