"""Shared parts of the soak and scale benchmarks (bench/soak.py, bench/scale.py).

Everything here drives the *real* processes, as an operator would run them:

* `SimProcess`: simulated Modbus TCP devices in a process of their own (never the gateway's),
  one loopback port per device, each device's holding registers 0-1 a uint32 sequence number
  that increments at every read. With ``record`` set, every served (device, seq, served_at)
  is appended to a file, so nothing the gateway read can go unaccounted for.
* `Proc`: ``python -m gateway run -c FILE`` / ``python -m gateway bridge -c FILE`` as a
  subprocess; ``kill()`` is ``kill -9`` on that process, ``stop()`` is SIGTERM; CPU and peak
  RSS come from ``/proc/<pid>``.
* YAML configs written as an operator would write them (SPEC §2, §4).
* Prometheus text scraping of the gateway's and bridge's ``/metrics``.

Servers (Mosquitto, influxd) come from tests/support, on free loopback ports.

Run as ``python -m bench._harness sim --devices N [--record FILE]`` it is the simulator
process: it prints one JSON line with the ports, then serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
MEASUREMENT = "bench"


# -- simulator process ---------------------------------------------------------------------------


async def _serve(count: int, first: int, out: IO[str] | None) -> None:
    from gateway.sim.simulator import ModbusTcpSimulator, SimUnit

    sims = []
    for n in range(first, first + count):
        sim = ModbusTcpSimulator([1], size=16)
        sim.record_frames = False
        name = device_name(n)
        seq = [0]

        def bump(unit: SimUnit, table: str, start: int, length: int,
                 name: str = name, seq: list[int] = seq) -> None:
            if table == "holding" and start <= 0 < start + length:
                seq[0] = (seq[0] + 1) & 0xFFFFFFFF
                unit.holding[0] = seq[0] >> 16
                unit.holding[1] = seq[0] & 0xFFFF
                if out is not None:
                    out.write(f"{name} {seq[0]} {time.time_ns()}\n")

        sim.unit(1).hooks.append(bump)
        await sim.start()
        sims.append(sim)
    print(json.dumps([s.port for s in sims]), flush=True)

    async def flusher() -> None:
        while out is not None:
            await asyncio.sleep(0.5)
            out.flush()

    task = asyncio.create_task(flusher())
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    task.cancel()
    if out is not None:
        out.flush()
        out.close()
    for sim in sims:
        await sim.stop()


def device_name(n: int) -> str:
    return f"dev-{n:04d}"


class SimProcess:
    """Simulated devices ``first .. first+count-1`` in a separate Python process."""

    def __init__(self, count: int, *, first: int = 0, record: Path | None = None) -> None:
        cmd = [PYTHON, "-m", "bench._harness", "sim", "--devices", str(count),
               "--first", str(first)]
        if record is not None:
            cmd += ["--record", str(record)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("simulator process exited before serving")
        self.ports: list[int] = json.loads(line)
        self.first = first

    def devices(self) -> list[tuple[str, int]]:
        return [(device_name(self.first + i), p) for i, p in enumerate(self.ports)]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_simulators(devices: int, *, per_process: int = 250,
                     record: Path | None = None) -> list[SimProcess]:
    sims = []
    for first in range(0, devices, per_process):
        sims.append(SimProcess(min(per_process, devices - first), first=first, record=record))
    return sims


# -- configs -------------------------------------------------------------------------------------


def gateway_yaml(*, gateway_id: str, state_dir: Path, mqtt_port: int, metrics_port: int,
                 devices: list[tuple[str, int]], interval: str, commit_interval: str = "200ms",
                 timeout: str = "1s") -> str:
    lines = [
        "gateway:",
        f"  id: {gateway_id}",
        f"  state_dir: {state_dir}",
        "mqtt:",
        "  host: 127.0.0.1",
        f"  port: {mqtt_port}",
        "  qos: 1",
        "outbox:",
        f"  commit_interval: {commit_interval}",
        f"metrics: {{listen: '127.0.0.1:{metrics_port}'}}",
        "devices:",
    ]
    for name, port in devices:
        lines += [
            f"  - name: {name}",
            "    driver: modbus-tcp",
            "    host: 127.0.0.1",
            f"    port: {port}",
            "    unit: 1",
            f"    interval: {interval}",
            f"    timeout: {timeout}",
            "    retries: 0",  # one request per scan, no retry: every served seq is one scan
            f"    measurement: {MEASUREMENT}",
            "    points:",
            "      - {name: seq, table: holding, address: 0, type: uint32}",
        ]
    return "\n".join(lines) + "\n"


def bridge_yaml(*, state_dir: Path, mqtt_port: int, influx_url: str, database: str,
                metrics_port: int, client_id: str = "sensegate-bridge-bench") -> str:
    return "\n".join([
        "mqtt:",
        "  host: 127.0.0.1",
        f"  port: {mqtt_port}",
        f"  client_id: {client_id}",
        "  subscribe: sensegate/+/+/data",
        "influxdb:",
        f"  url: {influx_url}",
        "  api: v1",
        f"  database: {database}",
        f"state_dir: {state_dir}",
        f"metrics: {{listen: '127.0.0.1:{metrics_port}'}}",
        "",
    ])


# -- the measured processes ----------------------------------------------------------------------


class Proc:
    """``python -m gateway <command> -c FILE`` as a child process, logs appended to a file."""

    def __init__(self, command: str, config: Path, log: Path) -> None:
        self.command = command
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Proc:
        with self.log.open("ab") as logf:
            logf.write(f"--- start {self.command} at {time.time():.3f}\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "gateway", "--log-level", "info", self.command,
                 "-c", str(self.config)],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            )
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9``: no shutdown, no final commit, no goodbye to the broker."""
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (a clean stop); ``kill -9`` if it does not stop in time."""
        if not self.alive():
            return self.proc.returncode if self.proc is not None else None
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def status_mb(self, key: str = "VmHWM") -> float:
        """A ``kB`` field of /proc/<pid>/status in MiB (VmHWM: peak RSS, VmRSS: now)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def scrape(port: int, timeout: float = 2.0) -> dict[str, float]:
    """Prometheus text from ``/metrics``: ``name{labels}`` -> value, plus per-name sums."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            v = float(value)
        except ValueError:
            continue
        out[key] = v
        name = key.split("{", 1)[0]
        if "{" in key:
            out[name + "[sum]"] = out.get(name + "[sum]", 0.0) + v
    return out


def metric(metrics: dict[str, float], name: str) -> float:
    return metrics.get(name, metrics.get(name + "[sum]", 0.0))


def machine() -> dict[str, Any]:
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "mem_gib": round(mem_kb / 1024 / 1024, 1), "cpu": model}


def wait_until(predicate: Any, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def _main() -> None:
    parser = argparse.ArgumentParser(prog="bench._harness")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sim = sub.add_parser("sim", help="serve simulated Modbus TCP devices until stdin closes")
    sim.add_argument("--devices", type=int, required=True)
    sim.add_argument("--first", type=int, default=0)
    sim.add_argument("--record", default=None, help="append 'device seq served_at_ns' lines")
    args = parser.parse_args()
    from drivers.bus import quiet_pymodbus

    quiet_pymodbus()
    out = open(args.record, "a", buffering=1 << 16) if args.record else None  # noqa: SIM115
    asyncio.run(_serve(args.devices, args.first, out))


if __name__ == "__main__":
    _main()
