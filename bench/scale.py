"""Scale: N Modbus TCP devices end to end into InfluxDB, with the raw limits of the same run.

    .venv/bin/python bench/scale.py [--devices 100,500,1000] [--seconds 30] [--interval 1s]

For each N, fresh servers and real processes, all on this machine, on free loopback ports:
simulated devices (pymodbus servers, 250 devices per simulator process, one TCP port per
device as separate field devices would have) → ``sensegate run`` → Mosquitto → ``sensegate
bridge`` (default batch_size and flush_interval) → InfluxDB 1.x. Each device has one point, a
uint32 counter, polled every ``--interval``.

After a warm-up (every device has a point in InfluxDB), a measurement window of ``--seconds``:

* **readings/s sustained**: points in InfluxDB whose ``ts`` lies in the window (counted after
  the window, once the pipeline caught up), divided by the window; beside it what the devices
  offered (N / interval).
* **poll → stored latency**: a sample of devices (every N/25-th) is polled in InfluxDB every
  0.25 s (``SELECT seq, device ... WHERE time > now() - 15s``); a point's latency is the wall
  time at which a query first returned it minus its ``ts`` (the time the gateway read the
  scan). This is an upper bound: the point became visible at some moment during the previous
  cycle (``resolution_s``, the mean poll cycle) at the earliest. p50, p99, max.
* **CPU** of the gateway and the bridge processes alone over the window (``/proc/<pid>/stat``,
  percent of one core), and their **peak RSS** (``VmHWM``) at the end.
* **raw limits**, measured right after against the same broker and InfluxDB with the
  gateway and bridge stopped: QoS 1 publishes/s from one paho client (payload the size of a
  real gateway message, 100 in flight, no subscriber) and points/s through InfluxDB's
  ``/write`` (5000-line batches of the same shape as the bridge writes, one connection).
  Ratios: readings/s to raw publishes/s, and stored points/s to raw write points/s.

One JSON line per N on stdout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (
    MEASUREMENT,
    Proc,
    bridge_yaml,
    device_name,
    gateway_yaml,
    machine,
    metric,
    scrape,
    start_simulators,
    wait_until,
)
from gateway.core.units import parse_duration
from tests.support.influxdb import InfluxDB
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port

SAMPLED_DEVICES = 25
SAMPLE_EVERY = 0.25
RAW_SECONDS = 5.0


class LatencySampler(threading.Thread):
    """Polls InfluxDB for the newest points of a few devices; first-seen time per point."""

    def __init__(self, influx: InfluxDB, devices: list[str]) -> None:
        super().__init__(daemon=True)
        self.influx = influx
        alternatives = "|".join(devices)
        self.query = (f"SELECT seq, device FROM {MEASUREMENT} WHERE time > now() - 15s "
                      f"AND device =~ /^({alternatives})$/")
        self.seen: dict[tuple[str, int], int] = {}  # (device, ts) -> wall ns first returned
        self.cycles: list[float] = []
        self.stop_event = threading.Event()
        self.errors = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            start = time.monotonic()
            try:
                rows = self.influx.rows(self.query)
            except Exception:  # an outage or a slow answer: count it, keep sampling
                self.errors += 1
                rows = []
            now = time.time_ns()
            for row in rows:
                self.seen.setdefault((row["device"], int(row["time"])), now)
            elapsed = time.monotonic() - start
            self.stop_event.wait(max(0.0, SAMPLE_EVERY - elapsed))
            self.cycles.append(time.monotonic() - start)

    def latencies(self, t0_ns: int, t1_ns: int) -> list[float]:
        return sorted((seen - ts) / 1e9 for (_, ts), seen in self.seen.items()
                      if t0_ns <= ts < t1_ns)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(p / 100 * len(values)) - 1))
    return round(values[k], 3)


def raw_publish_rate(port: int, payload_bytes: int, seconds: float = RAW_SECONDS) -> float:
    """QoS 1 PUBACKs per second from one paho client, 100 in flight."""
    import paho.mqtt.client as paho

    acked = [0]
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="sensegate-rawbench")
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    client.on_publish = lambda *_: acked.__setitem__(0, acked[0] + 1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    payload = b"x" * payload_bytes
    start = time.monotonic()
    deadline = start + seconds
    sent = 0
    while time.monotonic() < deadline:
        if sent - acked[0] < 1000:  # keep a bounded backlog in the client
            client.publish("rawbench/data", payload, qos=1)
            sent += 1
        else:
            time.sleep(0.0005)
    elapsed = time.monotonic() - start
    done = acked[0]
    client.loop_stop()
    client.disconnect()
    return done / elapsed


def raw_write_rate(influx: InfluxDB, batch: int = 5000, seconds: float = RAW_SECONDS) -> float:
    """Points per second through /write, batches of ``batch`` lines, one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", influx.port, timeout=30)
    params = urllib.parse.urlencode({"db": influx.database, "precision": "ns"})
    base = time.time_ns()
    written = 0
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        lines = "\n".join(
            f"rawbench,device={device_name(k % 1000)},gateway=scale seq={i * batch + k}i "
            f"{base + (i * batch + k) * 1000}" for k in range(batch))
        conn.request("POST", f"/write?{params}", body=lines.encode())
        resp = conn.getresponse()
        resp.read()
        if resp.status != 204:
            raise RuntimeError(f"raw /write answered {resp.status}")
        written += batch
        i += 1
    elapsed = time.monotonic() - start
    conn.close()
    return written / elapsed


def run_scale(devices: int, *, seconds: float = 30.0, interval: str = "1s",
              work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    sims = start_simulators(devices)
    broker = Mosquitto()
    influx = InfluxDB()
    gateway = bridge = None
    try:
        broker.start()
        influx.start()
        gw_metrics, br_metrics = free_port(), free_port()
        gw_conf, br_conf = work / "gateway.yaml", work / "bridge.yaml"
        gw_conf.write_text(gateway_yaml(
            gateway_id="scale", state_dir=work / "gateway-state", mqtt_port=broker.port,
            metrics_port=gw_metrics, devices=[d for s in sims for d in s.devices()],
            interval=interval))
        br_conf.write_text(bridge_yaml(
            state_dir=work / "bridge-state", mqtt_port=broker.port, influx_url=influx.url,
            database=influx.database, metrics_port=br_metrics))
        gateway = Proc("run", gw_conf, work / "gateway.log").start()
        bridge = Proc("bridge", br_conf, work / "bridge.log").start()

        def all_reporting() -> bool:
            rows = influx.rows(f'SHOW TAG VALUES EXACT CARDINALITY FROM {MEASUREMENT} '
                               f'WITH KEY = "device"')
            return bool(rows) and int(rows[0].get("count", 0)) >= devices

        warm_start = time.monotonic()
        warmed = wait_until(all_reporting, 90.0, step=1.0)
        warmup_s = time.monotonic() - warm_start
        time.sleep(3.0)
        step = max(1, devices // SAMPLED_DEVICES)
        sampled = [device_name(i) for i in range(0, devices, step)][:SAMPLED_DEVICES]
        sampler = LatencySampler(influx, sampled)
        sampler.start()
        time.sleep(2.0)
        gw_m0 = scrape(gw_metrics)
        gw_cpu0, br_cpu0 = gateway.cpu_seconds(), bridge.cpu_seconds()
        t0_ns, w0 = time.time_ns(), time.monotonic()
        time.sleep(seconds)
        gw_cpu1, br_cpu1 = gateway.cpu_seconds(), bridge.cpu_seconds()
        t1_ns, w1 = time.time_ns(), time.monotonic()
        gw_m1 = scrape(gw_metrics)
        window = w1 - w0
        time.sleep(8.0)  # let the window's points arrive (latency is measured separately)
        sampler.stop_event.set()
        sampler.join()
        rows = influx.rows(f"SELECT count(seq) FROM {MEASUREMENT} "
                           f"WHERE time >= {t0_ns} AND time < {t1_ns}")
        stored = int(rows[0]["count"]) if rows else 0
        gw_rss, br_rss = gateway.status_mb("VmHWM"), bridge.status_mb("VmHWM")
        messages = (metric(gw_m1, "sensegate_published_messages_total")
                    - metric(gw_m0, "sensegate_published_messages_total"))
        readings = (metric(gw_m1, "sensegate_published_readings_total")
                    - metric(gw_m0, "sensegate_published_readings_total"))
        scans = (metric(gw_m1, "sensegate_scans_total") - metric(gw_m0, "sensegate_scans_total"))
        overruns = (metric(gw_m1, "sensegate_scan_overruns_total")
                    - metric(gw_m0, "sensegate_scan_overruns_total"))
        pending = metric(gw_m1, "sensegate_outbox_pending_readings")
        lat = sampler.latencies(t0_ns, t1_ns)
        gateway.stop()
        bridge.stop()
        # A gateway message for one device with one reading, as the raw publish payload.
        payload = len(json.dumps({
            "gateway": "scale", "device": device_name(0), "measurement": MEASUREMENT,
            "tags": {}, "readings": [{"ts": t0_ns, "values": {"seq": 123456}}]}))
        raw_pub = raw_publish_rate(broker.port, payload)
        raw_write = raw_write_rate(influx)
        offered = devices / parse_duration(interval)
        stored_rate = stored / window
        return {
            "devices": devices,
            "interval_s": parse_duration(interval),
            "window_s": round(window, 1),
            "warmup_s": round(warmup_s, 1),
            "all_devices_reporting": warmed,
            "offered_readings_per_s": round(offered, 1),
            "stored_readings_per_s": round(stored_rate, 1),
            "stored_of_offered_pct": round(100 * stored_rate / offered, 2),
            "gateway_scans_per_s": round(scans / window, 1),
            "gateway_scan_overruns": int(overruns),
            "gateway_messages_per_s": round(messages / window, 1),
            "readings_per_message": round(readings / messages, 2) if messages else None,
            "outbox_pending_at_end": int(pending),
            "latency_samples": len(lat),
            "latency_p50_s": percentile(lat, 50),
            "latency_p99_s": percentile(lat, 99),
            "latency_max_s": round(lat[-1], 3) if lat else None,
            "latency_resolution_s": round(statistics.fmean(sampler.cycles), 3)
            if sampler.cycles else None,
            "latency_sampled_devices": len(sampled),
            "gateway_cpu_pct": round(100 * (gw_cpu1 - gw_cpu0) / window, 1),
            "bridge_cpu_pct": round(100 * (br_cpu1 - br_cpu0) / window, 1),
            "gateway_peak_rss_mb": round(gw_rss, 1),
            "bridge_peak_rss_mb": round(br_rss, 1),
            "raw_publish_msgs_per_s": round(raw_pub),
            "raw_publish_payload_bytes": payload,
            "raw_write_points_per_s": round(raw_write),
            "readings_to_raw_publish": round(readings / window / raw_pub, 4),
            "messages_to_raw_publish": round(messages / window / raw_pub, 4),
            "stored_to_raw_write": round(stored_rate / raw_write, 4),
            "machine": machine(),
        }
    finally:
        for proc in (gateway, bridge):
            if proc is not None:
                proc.kill()
        for sim in sims:
            sim.close()
        broker.close()
        influx.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="100,500,1000",
                        help="comma-separated device counts (default: 100,500,1000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window")
    parser.add_argument("--interval", default="1s", help="poll interval of every device")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep configs and logs here (default: a temp dir, removed)")
    args = parser.parse_args()
    base = args.workdir or Path(tempfile.mkdtemp(prefix="sensegate-scale-"))
    try:
        for n in (int(x) for x in args.devices.split(",")):
            result = run_scale(n, seconds=args.seconds, interval=args.interval,
                               work=base / f"n{n}")
            print(json.dumps(result), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
