"""Commands under load: publish -> result latency while 50 RTU devices on one RS-485 bus and
100 Modbus TCP devices are polled, and the polling overruns the commands cause.

    .venv/bin/python bench/commands.py [--seconds 30] [--rate 2] [--baud 38400]

Real parts on this machine: Mosquitto, ``sensegate run`` (a process) with ``commands``
enabled and an Ed25519 key, 100 TCP devices in a simulator process (bench/_harness.py), 50
RTU units on one pty bus served in this process (a pymodbus serial server), "the centre"
(a paho MQTT 5 client in its own thread) signing and publishing commands and timing the
results. Every device is polled each second; the bus's load is printed by the gateway's
``check`` arithmetic.

Two windows of ``--seconds`` each after a warm-up: without commands (the baseline overruns)
and with ``--rate`` commands per second, alternating between an RTU device (the write waits
for the transaction in flight, then goes ahead of the polls waiting for the bus) and a TCP
device. Latency is publish -> result arrival at the centre (signature check, id store fsync,
write, read-back, audit fsync, result publish). One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402

from bench._harness import (  # noqa: E402
    Proc,
    machine,
    metric,
    scrape,
    start_simulators,
    wait_until,
)
from gateway.core.signing import canonical, sign_body  # noqa: E402
from gateway.runtime.signing import PrivateKey, write_key_pair  # noqa: E402
from gateway.sim.simulator import ModbusRtuSimulator  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

GW = "bench-gw"
RTU_DEVICES = 50
TCP_DEVICES = 100


def config(state: Path, mqtt_port: int, metrics_port: int, key: Path, bus_path: str,
           baud: int, tcp: list[tuple[str, int]]) -> str:
    lines = [
        f"gateway: {{id: {GW}, state_dir: {state}}}",
        f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}",
        f"metrics: {{listen: '127.0.0.1:{metrics_port}'}}",
        f"commands: {{enabled: true, public_key: {key}, max_age: 30s}}",
        f"buses: [{{name: rs485, port: {bus_path}, baudrate: {baud}}}]",
        "devices:",
    ]
    point = ("      - {name: dim, table: holding, address: 4, writable: true, min: 0, "
             "max: 1000}")
    for n in range(1, RTU_DEVICES + 1):
        lines += [f"  - name: rtu-{n:02d}", "    driver: modbus-rtu", "    bus: rs485",
                  f"    unit: {n}", "    interval: 1s", "    timeout: 200ms", "    points:",
                  "      - {name: seq, table: holding, address: 0}", point]
    for name, port in tcp:
        lines += [f"  - name: {name}", "    driver: modbus-tcp", "    host: 127.0.0.1",
                  f"    port: {port}", "    interval: 1s", "    timeout: 1s", "    points:",
                  "      - {name: seq, table: holding, address: 0, type: uint32}", point]
    return "\n".join(lines) + "\n"


class Centre:
    def __init__(self, port: int, key: PrivateKey) -> None:
        self.key = key
        self.sent: dict[str, float] = {}
        self.latency: dict[str, float] = {}
        self.status: dict[str, str] = {}
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="centre",
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(f"sensegate/{GW}/+/set/result", qos=1)

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        now = time.monotonic()
        body = json.loads(msg.payload)
        with self.lock:
            sent = self.sent.get(body["id"])
            if sent is not None and body["id"] not in self.latency:
                self.latency[body["id"]] = now - sent
                self.status[body["id"]] = body["status"]

    def command(self, device: str, msg_id: str, value: int) -> None:
        topic = f"sensegate/{GW}/{device}/set"
        body = {"id": msg_id, "ts": time.time_ns(), "values": {"dim": value}}
        payload = sign_body(body, self.key.sign(canonical(topic, body)))
        with self.lock:
            self.sent[msg_id] = time.monotonic()
        self.client.publish(topic, payload, qos=1)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(seconds: float, rate: float, baud: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="sensegate-bench-commands-"))
    write_key_pair(str(tmp / "centre.key"))
    key = PrivateKey.load(str(tmp / "centre.key"))
    broker = Mosquitto(persistence=False)
    broker.start()
    rtu = ModbusRtuSimulator(list(range(1, RTU_DEVICES + 1)), size=16)
    rtu.record_frames = False
    await rtu.start()
    sims = start_simulators(TCP_DEVICES)
    tcp = [d for s in sims for d in s.devices()]
    metrics_port = free_port()
    path = tmp / "gateway.yaml"
    path.write_text(config(tmp / "state", broker.port, metrics_port, tmp / "centre.key.pub",
                           rtu.path, baud, tcp))
    gateway = Proc("run", path, tmp / "gateway.log").start()
    centre = Centre(broker.port, key)
    loop = asyncio.get_running_loop()
    try:
        def scans() -> float:
            try:
                return metric(scrape(metrics_port), "sensegate_scans_total")
            except OSError:
                return 0.0

        up = await loop.run_in_executor(None, lambda: wait_until(
            lambda: scans() > 3 * (RTU_DEVICES + TCP_DEVICES), 60))
        if not up:
            raise RuntimeError(f"gateway did not come up; see {tmp / 'gateway.log'}")
        await asyncio.sleep(3)
        m0 = scrape(metrics_port)
        await asyncio.sleep(seconds)  # baseline: polling only
        m1 = scrape(metrics_port)
        n = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            device = f"rtu-{n % RTU_DEVICES + 1:02d}" if n % 2 == 0 else tcp[n % TCP_DEVICES][0]
            centre.command(device, f"b-{n}", n % 1000)
            n += 1
            await asyncio.sleep(1.0 / rate)
        await loop.run_in_executor(None, lambda: wait_until(
            lambda: len(centre.latency) == n, 15))
        m2 = scrape(metrics_port)
    finally:
        centre.client.loop_stop()
        gateway.stop()
        for sim in sims:
            sim.close()
        await rtu.stop()
        broker.close()
    rtu_lat = [v for k, v in centre.latency.items() if int(k[2:]) % 2 == 0]
    tcp_lat = [v for k, v in centre.latency.items() if int(k[2:]) % 2 == 1]

    def overruns(a: dict[str, float], b: dict[str, float]) -> float:
        name = "sensegate_scan_overruns_total"
        return metric(b, name) - metric(a, name)

    def ms(values: list[float]) -> dict[str, float]:
        return {"p50_ms": round(1000 * statistics.median(values), 1) if values else None,
                "p99_ms": round(1000 * pct(values, 0.99), 1),
                "max_ms": round(1000 * max(values), 1) if values else None,
                "n": len(values)}

    return {
        "bench": "commands", "seconds": seconds, "rate_per_s": rate, "baud": baud,
        "rtu_devices": RTU_DEVICES, "tcp_devices": TCP_DEVICES, "commands": n,
        "answered": len(centre.latency),
        "statuses": {s: list(centre.status.values()).count(s)
                     for s in set(centre.status.values())},
        "latency_rtu": ms(rtu_lat), "latency_tcp": ms(tcp_lat),
        "latency_all": ms(rtu_lat + tcp_lat),
        "overruns_baseline": overruns(m0, m1), "overruns_with_commands": overruns(m1, m2),
        "scans_with_commands": metric(m2, "sensegate_scans_total")
        - metric(m1, "sensegate_scans_total"),
        "machine": machine(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=2.0, help="commands per second")
    parser.add_argument("--baud", type=int, default=38400)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.seconds, args.rate, args.baud))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
