"""Bridge throughput against posting the same lines to InfluxDB 1.x `/write`, and against paho.

    .venv/bin/python bench/bridge.py [--points 200000] [--batch-size 5000] [--shapes 1x4,...]

Starts its own Mosquitto and InfluxDB 1.x on free loopback ports. Builds real gateway
payloads (`gateway.core.payload.build_json`) of several shapes, `SCANSxFIELDS`: scans per message
and fields per scan (4: two floats, an integer, a boolean; 20: a road-weather station's
scan, mostly floats). For each shape, in the same run and on the same messages:

- direct: the exact lines the bridge writes, POSTed to `/write?db=direct_<shape>` in batches
  of `batch_size` over one kept-alive HTTP connection, one request at a time; once before
  the bridge runs and once after (into another database), and the ratio is taken to their
  mean, so that InfluxDB's own drift over the run (compactions, a growing index) weighs
  on both sides.
- raw paho: a bare paho-mqtt v5 client (persistent session, QoS 1, Receive Maximum as the
  bridge's, automatic PUBACK, an `on_message` that only counts) receives every message:
  stock paho's receive rate, for comparison with the bridge's own MQTT session
  (gateway.bridge.receive; bench/bridge_receive.py compares receive paths alone).
- bridge: `gateway.bridge.service.Bridge` in this process; the clock runs from its start until
  InfluxDB accepted every point (`db=bridge_<shape>`): connect, subscribe, MQTT receive,
  decode, batching, writes, acknowledgements.

Both MQTT sessions are created first, then every message is published once and queued at
the broker for both. One JSON line per shape with the rates and both ratios (target: bridge
≥ 50 % of direct), and the CPU each process used (in cores: CPU seconds ÷ wall seconds)
during the direct write and during the bridge's drain, which shows when the machine
itself is the limit. `BENCH_PROFILE=FILE` writes a cProfile of the last shape's bridge
drain.
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
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from bench._harness import cpu_seconds  # noqa: E402
from gateway.bridge import ingest  # noqa: E402
from gateway.bridge.service import Bridge  # noqa: E402
from gateway.core.model import (  # noqa: E402
    BridgeConfig,
    BridgeMqttConfig,
    InfluxConfig,
    Reading,
    Value,
)
from gateway.core.payload import build_json, data_topic  # noqa: E402
from tests.support.influxdb import InfluxDB  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402

T0 = 1_764_000_000_000_000_000
RECEIVE_MAXIMUM = 10000  # the bridge's default (--receive-maximum to change)
DEFAULT_SHAPES = "1x4,1x20,5x4,20x4,60x4,20x20"

# a road-weather station's scan: 20 points, mostly floats
STATION = ("air_temp", "road_temp", "subsurface_temp", "dew_point", "humidity", "pressure",
           "wind_speed", "wind_gust", "wind_dir", "precip_rate", "precip_total", "visibility",
           "water_film", "ice_pct", "salinity", "friction", "solar_rad", "battery_v")


def values(k: int, n_fields: int) -> dict[str, Value]:
    if n_fields == 4:
        return {"air_temp": k * 0.01 - 20.0, "humidity": 40.0 + (k % 500) / 10,
                "count": k, "ok": k % 2 == 0}
    out: dict[str, Value] = {name: round((k % 977) * 0.37 + i, 2)
                             for i, name in enumerate(STATION[:n_fields - 2])}
    out["road_state"] = k % 7
    out["heater_on"] = k % 2 == 0
    return out


def messages(n: int, scans: int, n_fields: int, prefix: str) -> list[tuple[str, bytes]]:
    out = []
    k = 0
    for i in range(n):
        gw, dev = f"gw-{i % 20:03d}", f"dev-{i % 7}"
        readings = []
        for _ in range(scans):
            k += 1
            readings.append(Reading(dev, T0 + k * 1000, values(k, n_fields)))
        payload = build_json(gw, dev, "road_weather", {"district": "xinwu", "lane": "north"},
                             readings)
        out.append((data_topic(prefix, gw, dev), payload))
    return out


class CpuMeter:
    """Cores each process used between `start()` and `stop()`."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self.cores: dict[str, float] = {}

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._c0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._t0
        return {name: round((cpu_seconds(pid) - self._c0[name]) / wall, 2)
                for name, pid in self.pids.items()}


def direct(db: InfluxDB, database: str, lines: list[str], batch_size: int) -> float:
    url = urllib.parse.urlsplit(db.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
    path = f"/write?db={database}&precision=ns"
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


class RawPaho:
    """A bare paho v5 QoS 1 subscriber with a persistent session: the receive ceiling."""

    def __init__(self, port: int, client_id: str, prefix: str, receive_maximum: int) -> None:
        self.port = port
        self.receive_maximum = receive_maximum
        self.prefix = prefix
        self.client_id = client_id
        self.count = 0
        self.subscribed = threading.Event()

    def _client(self) -> paho.Client:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv5)
        client.on_connect = lambda c, *_: c.subscribe(f"{self.prefix}/+/+/data", qos=1)
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_message = self._on_message
        return client

    def _on_message(self, _c: object, _u: object, _m: paho.MQTTMessage) -> None:
        self.count += 1

    def _connect(self, client: paho.Client) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        props.ReceiveMaximum = self.receive_maximum
        client.connect("127.0.0.1", self.port, clean_start=False, properties=props)

    def create_session(self) -> None:
        client = self._client()
        self._connect(client)
        while not self.subscribed.is_set():
            client.loop(0.05)
        client.disconnect()

    def drain(self, n: int) -> float:
        client = self._client()
        start = time.perf_counter()
        self._connect(client)
        while self.count < n:
            client.loop(0.05)
        elapsed = time.perf_counter() - start
        client.disconnect()
        return elapsed


def bridge_config(port: int, db: InfluxDB, database: str, batch_size: int,
                  state_dir: str, client_id: str, prefix: str,
                  receive_maximum: int) -> BridgeConfig:
    return BridgeConfig(
        mqtt=BridgeMqttConfig(host="127.0.0.1", port=port, client_id=client_id,
                              subscribe=f"{prefix}/+/+/data", shared_group="bench",
                              receive_maximum=receive_maximum),
        influxdb=InfluxConfig(url=db.url, api="v1", database=database, batch_size=batch_size,
                              flush_interval=0.1),
        state_dir=state_dir,
    )


async def create_bridge_session(config: BridgeConfig) -> None:
    bridge = Bridge("(bench)", config=config)
    task = asyncio.create_task(bridge.run())
    while not bridge.stats.connected:
        await asyncio.sleep(0.02)
    bridge.should_exit.set()
    await task


async def publish(port: int, msgs: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-pub",
                              max_inflight_messages=1000) as client:
        for i in range(0, len(msgs), 500):  # aiomqtt slows down with many pending calls
            await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in msgs[i:i + 500]))


async def drain_bridge(config: BridgeConfig, n_points: int, profile_to: str | None) -> float:
    bridge = Bridge("(bench)", config=config)
    profile = None
    if profile_to:
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
    if profile is not None and profile_to:
        profile.disable()
        profile.dump_stats(profile_to)
    bridge.should_exit.set()
    await task
    return elapsed


async def run_shape(broker: Mosquitto, db: InfluxDB, scans: int, n_fields: int,
                    n_points: int, batch_size: int, receive_maximum: int,
                    profile_to: str | None) -> dict[str, object]:
    name = f"s{scans}_f{n_fields}"
    n_messages = max(1, n_points // scans)
    msgs = messages(n_messages, scans, n_fields, name)  # topics of their own per shape
    lines: list[str] = []
    for topic, payload in msgs:
        result = ingest.decode_message(topic, payload)
        assert isinstance(result, list)
        lines.extend(result)
    for database in (f"direct_{name}", f"direct_after_{name}", f"bridge_{name}"):
        db.query(f'CREATE DATABASE "{database}"', post=True)
    db.write(b"warmup x=1 1")  # shard creation of the year 1970 on the default database
    with tempfile.TemporaryDirectory() as state_dir:
        raw = RawPaho(broker.port, f"bench-raw-{name}", name, receive_maximum)
        config = bridge_config(broker.port, db, f"bridge_{name}", batch_size, state_dir,
                               f"bench-bridge-{name}", name, receive_maximum)
        await asyncio.to_thread(raw.create_session)
        await create_bridge_session(config)
        await publish(broker.port, msgs)
        assert db.proc is not None and broker.proc is not None
        meter = CpuMeter(bridge=os.getpid(), influxd=db.proc.pid, mosquitto=broker.proc.pid)
        meter.start()
        t_direct = direct(db, f"direct_{name}", lines, batch_size)
        cores_direct = meter.stop()
        t_raw = await asyncio.to_thread(raw.drain, len(msgs))
        meter.start()
        t_bridge = await drain_bridge(config, len(lines), profile_to)
        cores_bridge = meter.stop()
        t_direct_after = direct(db, f"direct_after_{name}", lines, batch_size)
    rows = db.rows(f'SELECT count("humidity") FROM "bridge_{name}".."road_weather"')
    stored = int(rows[0]["count"]) if rows else 0
    direct_rate = len(lines) / ((t_direct + t_direct_after) / 2)
    bridge_rate = len(lines) / t_bridge
    raw_rate = len(lines) / t_raw
    payload_bytes = sum(len(p) for _, p in msgs)
    return {
        "bench": "bridge", "shape": f"{scans}x{n_fields}", "scans_per_message": scans,
        "fields_per_scan": n_fields, "messages": len(msgs), "points": len(lines),
        "bytes_per_message": payload_bytes // len(msgs), "batch_size": batch_size,
        "direct_points_per_s": round(direct_rate),
        "direct_before_after_points_per_s": [round(len(lines) / t_direct),
                                             round(len(lines) / t_direct_after)],
        "raw_paho_points_per_s": round(raw_rate),
        "raw_paho_messages_per_s": round(len(msgs) / t_raw),
        "bridge_points_per_s": round(bridge_rate),
        "bridge_messages_per_s": round(len(msgs) / t_bridge),
        "ratio_vs_direct": round(bridge_rate / direct_rate, 3),
        "ratio_vs_raw_paho": round(bridge_rate / raw_rate, 3),
        "stored_points": stored,
        "receive_maximum": receive_maximum,
        "influxd_cores_direct": cores_direct["influxd"],
        "cores_during_bridge": cores_bridge,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--points", type=int, default=200000, help="points per shape")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--receive-maximum", type=int, default=RECEIVE_MAXIMUM,
                        help=f"the bridge's (and raw paho's) window (default {RECEIVE_MAXIMUM})")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES,
                        help=f"SCANSxFIELDS,... (default {DEFAULT_SHAPES})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    with Mosquitto() as broker, InfluxDB(database="bench") as db:
        for i, (scans, n_fields) in enumerate(shapes):
            profile_to = os.environ.get("BENCH_PROFILE") if i == len(shapes) - 1 else None
            result = await run_shape(broker, db, scans, n_fields, args.points,
                                     args.batch_size, args.receive_maximum, profile_to)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
