"""Acquisition benchmark: N Modbus TCP devices x 20 points at 1 s, gateway CPU and memory.

    .venv/bin/python bench/acquisition.py [--devices 50,200,500] [--seconds 30]

For each N it starts simulator processes (pymodbus servers from `gateway.sim.simulator`, one
port per device, so every device has its own TCP link as separate field devices would),
then the measured gateway process: a `gateway.edge.scheduler.Poller` with the real drivers and a
sink that only counts. CPU and peak RSS are read in the gateway process alone
(``resource.getrusage`` and ``/proc/self/status``), over a window that starts after a warm-up
(connections made), so the simulators' CPU is never counted. One JSON line per N.

"On time" counts the scans performed against the slots that came round on each device's
grid: a scan that could not start within the scheduler's tolerance (``late_tolerance``,
250 ms at 1 s) is an overrun and is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

POINTS_PER_DEVICE = 20
INTERVAL = 1.0
WARMUP = 4.0
PORTS_PER_SIMULATOR_PROCESS = 250


def _points() -> tuple[Any, ...]:
    from gateway.core.model import PointConfig

    points = []
    address = 0
    for i in range(10):
        points.append(PointConfig(f"f{i}", "float32", "holding", address))
        address += 2
    for i in range(6):
        points.append(PointConfig(f"s{i}", "int16", "holding", address, scale=0.1))
        address += 1
    for i in range(4):
        points.append(PointConfig(f"u{i}", "uint32", "holding", address, byte_order="CDAB"))
        address += 2
    assert len(points) == POINTS_PER_DEVICE
    return tuple(points)


# -- simulator process ---------------------------------------------------------------------------


async def _serve(count: int) -> None:
    from gateway.core.decode import encode_registers
    from gateway.sim.simulator import ModbusTcpSimulator

    points = _points()
    sims = []
    for n in range(count):
        sim = ModbusTcpSimulator([1], size=64)
        sim.record_frames = False
        unit = sim.unit(1)
        for i, p in enumerate(points):
            raw: float | int = (n + i) * 1.5 if p.type == "float32" else n + i
            unit.set_registers("holding", p.address or 0, encode_registers(p, raw))
        await sim.start()
        sims.append(sim)
    print(json.dumps([s.port for s in sims]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    for sim in sims:
        await sim.stop()


# -- measured gateway process --------------------------------------------------------------------


def _cpu() -> tuple[float, float]:
    """User and system CPU seconds of this (the gateway) process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _proc_status(field: str) -> float:
    """A ``kB`` field of /proc/self/status, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def _poll(ports: list[int], seconds: float) -> dict[str, Any]:
    from gateway.core.model import DeviceConfig, GatewayConfig, MqttConfig, Reading
    from gateway.edge.scheduler import Poller

    points = _points()
    devices = tuple(
        DeviceConfig(f"dev-{i}", "modbus-tcp", points, interval=INTERVAL, timeout=1.0,
                     host="127.0.0.1", port=port, unit=1)
        for i, port in enumerate(ports)
    )
    config = GatewayConfig("bench", MqttConfig("127.0.0.1", 1883, "bench"), devices)
    counts = {"readings": 0, "values": 0, "bad": 0}

    def sink(reading: Reading) -> None:
        counts["readings"] += 1
        counts["values"] += len(reading.values)
        counts["bad"] += len(reading.quality)

    poller = Poller(config, sink)
    await poller.start()
    await asyncio.sleep(WARMUP)
    before = poller.stats()
    counts0 = dict(counts)
    cpu0, wall0 = _cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, wall1 = _cpu(), time.monotonic()
    after = poller.stats()
    counts1 = dict(counts)
    await poller.stop()

    def delta(field: str) -> int:
        return sum(getattr(after[n], field) - getattr(before[n], field) for n in after)

    scans = delta("scans")
    slots = delta("slots")
    lateness = sum(after[n].total_lateness - before[n].total_lateness for n in after)
    values = counts1["values"] - counts0["values"]
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    cpu = user + system
    return {
        "devices": len(devices),
        "points_per_device": POINTS_PER_DEVICE,
        "interval_s": INTERVAL,
        "seconds": round(wall1 - wall0, 2),
        "scans_expected": round(len(devices) * (wall1 - wall0) / INTERVAL),
        "slots": slots,
        "scans": scans,
        "scans_on_time_pct": round(100.0 * scans / slots, 3) if slots else None,
        "overruns": delta("overruns"),
        "failed_scans": delta("failed_scans"),
        "values": values,
        "bad_values": counts1["bad"] - counts0["bad"],
        "values_per_s": round(values / (wall1 - wall0)),
        "cpu_s": round(cpu, 3),
        "cpu_user_s": round(user, 3),
        "cpu_system_s": round(system, 3),
        "cpu_s_per_1000_values": round(1000 * cpu / values, 5) if values else None,
        "cpu_us_per_value": round(1e6 * cpu / values, 2) if values else None,
        "cpu_pct_of_one_core": round(100 * cpu / (wall1 - wall0), 1),
        "mean_lateness_ms": round(1000 * lateness / scans, 2) if scans else None,
        "max_lateness_ms": round(1000 * max(s.max_lateness for s in after.values()), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "vm_hwm_mb": round(_proc_status("VmHWM"), 1),
    }


# -- driver --------------------------------------------------------------------------------------


def _loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def run_one(n: int, seconds: float, profile: str | None = None) -> dict[str, Any]:
    me = os.path.abspath(__file__)
    chunks = [min(PORTS_PER_SIMULATOR_PROCESS, n - i)
              for i in range(0, n, PORTS_PER_SIMULATOR_PROCESS)]
    sims = [subprocess.Popen([sys.executable, me, "--serve", str(c)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True) for c in chunks]
    try:
        ports: list[int] = []
        for sim in sims:
            assert sim.stdout is not None
            line = sim.stdout.readline()
            if not line:
                raise RuntimeError("simulator process exited before serving")
            ports.extend(json.loads(line))
        load0 = _loadavg()
        command = [sys.executable, me, "--poll", ",".join(map(str, ports)),
                   "--seconds", str(seconds)]
        if profile:
            command += ["--profile", f"{profile}.{n}"]
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
        result["loadavg_before"] = load0
        result["loadavg_after"] = _loadavg()
        result["cpus"] = os.cpu_count()
        return result
    finally:
        for sim in sims:
            if sim.stdin is not None:
                sim.stdin.close()
        for sim in sims:
            try:
                sim.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sim.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", default="50,200,500", help="comma-separated Ns")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window per N")
    parser.add_argument("--profile", metavar="FILE",
                        help="run the gateway process under cProfile, dump stats to FILE and "
                             "print the top functions (the CPU figures then include the "
                             "profiler's overhead)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--poll", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(_serve(args.serve))
        return
    if args.poll is not None:
        import logging

        from gateway.runtime import logs

        logs.setup("warning")
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        ports = [int(p) for p in args.poll.split(",")]
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            result = profiler.runcall(asyncio.run, _poll(ports, args.seconds))
            profiler.dump_stats(args.profile)
            stats = pstats.Stats(args.profile, stream=sys.stderr)
            stats.sort_stats("tottime").print_stats(25)
        else:
            result = asyncio.run(_poll(ports, args.seconds))
        print(json.dumps(result), flush=True)
        return
    for n in (int(x) for x in args.devices.split(",")):
        print(json.dumps(run_one(n, args.seconds, args.profile)), flush=True)


if __name__ == "__main__":
    main()
