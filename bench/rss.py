"""Peak RSS of a real `sensegate run`: 100 Modbus TCP devices x 20 points.

    .venv/bin/python bench/rss.py [--devices 100] [--points 20] [--scans 10] [--interval 1s]

All on this machine, on free loopback ports: simulated devices (pymodbus servers in a process
of their own, one port per device) → ``python -m gateway run`` (``--log-level info``,
``/metrics`` on, scraped as Prometheus would) → a local Mosquitto. Each device has 20 points:
8 uint16 and 4 float32 in holding registers, 8 uint16 in input registers (two requests a
scan), polled every ``--interval``. After every device has done ``--scans`` scans
(``sensegate_scans_total``), the gateway's ``VmHWM`` (peak RSS) and ``VmRSS`` are read from
/proc and it is stopped.

Measured in the same run, beside it:

* **baseline**: peak RSS of the same interpreter running ``asyncio.run(asyncio.sleep(0.2))``
  (asyncio also loads ssl), the floor any asyncio daemon pays here;
* **imports**: RSS after importing each dependency and each part of the daemon in the order
  ``sensegate run`` loads them, in a fresh interpreter (MiB added by each);
* **importtime_top**: the modules with the largest cumulative import time
  (``python -X importtime``) of the daemon's import path.

One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import PYTHON, ROOT, Proc, machine, metric, scrape, wait_until
from gateway.core.units import parse_duration
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port

# What `sensegate run` imports, in its order: the stdlib and libraries, then its own parts.
IMPORTS = (
    "asyncio", "sqlite3", "yaml", "paho.mqtt.client", "aiomqtt",
    "pymodbus.client", "serial_asyncio_fast", "gateway.commands.cli", "gateway.config.load",
    "gateway.edge.outbox", "gateway.edge.publish", "drivers", "gateway.edge.scheduler",
    "gateway.runtime.metrics", "gateway.edge.daemon",
)
SIM_SIZE = 16  # registers per table in each simulated device


# -- the simulator process -----------------------------------------------------------------


async def _serve(count: int) -> None:
    from gateway.sim.simulator import ModbusTcpSimulator

    sims = []
    for _ in range(count):
        sim = ModbusTcpSimulator([1], size=SIM_SIZE)
        sim.record_frames = False
        unit = sim.unit(1)
        unit.set_registers("holding", 0, list(range(100, 100 + SIM_SIZE)))
        unit.set_registers("input", 0, list(range(200, 200 + SIM_SIZE)))
        await sim.start()
        sims.append(sim)
    print(json.dumps([s.port for s in sims]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    for sim in sims:
        await sim.stop()


# -- measuring -----------------------------------------------------------------------------


def child(code: str) -> str:
    out = subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return out.stdout


STATUS = ("def status(key):\n"
          "    for line in open('/proc/self/status'):\n"
          "        if line.startswith(key + ':'):\n"
          "            return int(line.split()[1]) / 1024\n")


def baseline_mib() -> float:
    code = STATUS + ("import asyncio\nasyncio.run(asyncio.sleep(0.2))\n"
                     "print(status('VmHWM'))\n")
    return round(float(child(code)), 1)


def import_breakdown() -> dict[str, Any]:
    code = STATUS + (
        "import importlib, json, sys\n"
        "out = {'interpreter': status('VmRSS')}\n"
        "prev = out['interpreter']\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "    now = status('VmRSS')\n"
        "    out[name] = now - prev\n"
        "    prev = now\n"
        "out['total'] = prev\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run([PYTHON, "-c", code, *IMPORTS], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return {k: round(v, 1) for k, v in json.loads(out.stdout).items()}


def importtime_top(count: int = 12) -> list[tuple[str, float]]:
    """Top-level packages by cumulative import time (ms) on the daemon's import path."""
    out = subprocess.run([PYTHON, "-X", "importtime", "-c", "import gateway.edge.daemon, "
                          "gateway.edge.outbox, gateway.edge.publish, gateway.edge.scheduler, "
                          "gateway.runtime.metrics"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    tops: dict[str, float] = {}
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        if name == name.lstrip():  # a top-level import (no indentation): its whole subtree
            tops[name] = tops.get(name, 0.0) + int(cumulative) / 1000
    return sorted(((k, round(v, 1)) for k, v in tops.items()), key=lambda kv: -kv[1])[:count]


def config_yaml(state: Path, mqtt_port: int, metrics_port: int, ports: list[int],
                points: int, interval: str) -> str:
    kinds = ([("uint16", "holding", a) for a in range(8)]
             + [("float32", "holding", 8 + 2 * i) for i in range(4)]
             + [("uint16", "input", a) for a in range(8)])
    while len(kinds) < points:  # more points than the layout: repeat it under new names
        kinds += kinds[: points - len(kinds)]
    lines = ["gateway:", "  id: gw-rss", f"  state_dir: {state}", "mqtt:", "  host: 127.0.0.1",
             f"  port: {mqtt_port}", "  qos: 1",
             f"metrics: {{listen: '127.0.0.1:{metrics_port}'}}", "devices:"]
    for n, port in enumerate(ports):
        lines += [f"  - name: dev-{n:04d}", "    driver: modbus-tcp", "    host: 127.0.0.1",
                  f"    port: {port}", "    unit: 1", f"    interval: {interval}",
                  "    timeout: 1s", "    retries: 0", "    points:"]
        lines += [f"      - {{name: p{i:02d}, table: {table}, address: {address}, type: {kind}}}"
                  for i, (kind, table, address) in enumerate(kinds[:points])]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    interval = parse_duration(args.interval)
    sim = subprocess.Popen([PYTHON, str(Path(__file__).resolve()), "sim", "--devices",
                            str(args.devices)], cwd=ROOT, stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    assert sim.stdout is not None and sim.stdin is not None
    ports: list[int] = json.loads(sim.stdout.readline())
    tmp = Path(tempfile.mkdtemp(prefix="sensegate-rss-"))
    try:
        with Mosquitto() as broker:
            metrics_port = free_port()
            config = tmp / "gateway.yaml"
            config.write_text(config_yaml(tmp / "state", broker.port, metrics_port, ports,
                                          args.points, args.interval))
            gateway = Proc("run", config, tmp / "gateway.log").start()
            try:
                def scans() -> float:
                    try:
                        return metric(scrape(metrics_port), "sensegate_scans_total")
                    except OSError:
                        return 0.0

                target = args.devices * args.scans
                started = time.monotonic()
                timeout = 60 + args.scans * interval * 3
                if not wait_until(lambda: scans() >= target, timeout, step=interval / 2):
                    raise RuntimeError(f"{scans():.0f} of {target} scans; see {tmp}/gateway.log")
                peak, now = gateway.status_mb("VmHWM"), gateway.status_mb("VmRSS")
                seconds = time.monotonic() - started
                errors = metric(scrape(metrics_port), "sensegate_device_errors_total")
            finally:
                code = gateway.stop()
    finally:
        sim.stdin.close()
        sim.wait(timeout=30)
    return {
        "bench": "rss", "devices": args.devices, "points": args.points, "scans": args.scans,
        "interval_s": interval, "peak_rss_mib": round(peak, 1), "rss_end_mib": round(now, 1),
        "baseline_asyncio_mib": baseline_mib(), "device_errors": errors,
        "seconds": round(seconds, 1), "exit_code": code, "imports_mib": import_breakdown(),
        "importtime_top_ms": importtime_top(), "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/rss.py")
    sub = parser.add_subparsers(dest="cmd")
    sim = sub.add_parser("sim", help="serve simulated devices until stdin closes")
    sim.add_argument("--devices", type=int, required=True)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--scans", type=int, default=10)
    parser.add_argument("--interval", default="1s")
    args = parser.parse_args()
    if args.cmd == "sim":
        from drivers.bus import quiet_pymodbus

        quiet_pymodbus()
        asyncio.run(_serve(args.devices))
        return
    print(json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
