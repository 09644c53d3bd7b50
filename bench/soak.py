"""Soak under faults: nothing committed is lost, nothing is stored twice.

    .venv/bin/python bench/soak.py [--seconds 300] [--seed 1] [--devices 8] [--interval 250ms]

Real processes end to end: simulated Modbus TCP devices (a process of their own) → ``sensegate
run`` → Mosquitto → ``sensegate bridge`` → InfluxDB 1.x, all on free loopback ports. Each
device serves a uint32 sequence number (holding 0-1) that increments at every read, and the
simulator records every (device, seq, served_at) it served; the gateway config maps it as the
point ``seq``, so it reaches InfluxDB as a field.

During the run, at seeded random moments (the schedule is printed first), one fault at a
time: ``kill -9`` of the gateway then a restart, a stop and restart of the broker, of
InfluxDB, and ``kill -9`` of the bridge then a restart. At the end the gateway is stopped
cleanly (SIGTERM), the simulators stop, everything drains into InfluxDB, and the harness
compares, per device, the sequence numbers served with those stored:

* ``missing``: served, never stored. The design allows one loss only: readings polled but not
  yet committed when the gateway was killed (the outbox commits at most
  ``outbox.commit_interval`` apart). So each missing seq must have been served within
  ``commit_interval + interval + margin`` before a gateway kill (``explained``); any other is
  ``unexplained``, a bug.
* ``duplicates``: one seq stored under two timestamps, a bug (a resent reading carries the
  same ``ts``, so InfluxDB keeps one point).

Prints the report as one JSON document (and ``--json-out`` writes it to a file); exit status
1 when there is an unexplained loss or a duplicate.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import (
    MEASUREMENT,
    Proc,
    bridge_yaml,
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

FAULTS = ("gateway-kill", "broker-restart", "influxdb-restart", "bridge-kill")
DOWN_FOR = {  # seconds the faulted component stays down, drawn uniformly in this range
    "gateway-kill": (0.3, 3.0),
    "broker-restart": (1.0, 6.0),
    "influxdb-restart": (1.0, 8.0),
    "bridge-kill": (0.3, 4.0),
}
KILL_MARGIN = 1.0  # seconds added to commit_interval + interval for the allowed-loss window


@dataclass
class Fault:
    at: float  # seconds after the start of the run
    kind: str
    down_for: float
    done_at_ns: int = 0  # wall clock when the component was stopped/killed


def schedule(seconds: float, seed: int) -> list[Fault]:
    """Faults one at a time from 5 s to `seconds - 10` s, every fault kind in each round."""
    rng = random.Random(seed)
    start, end = 5.0, max(6.0, seconds - 10.0)
    gap = min(20.0, (end - start) / 8)
    faults: list[Fault] = []
    t = start + rng.uniform(0, gap)
    kinds: list[str] = []
    while t < end:
        if not kinds:
            kinds = list(FAULTS)
            rng.shuffle(kinds)
        kind = kinds.pop()
        lo, hi = DOWN_FOR[kind]
        fault = Fault(round(t, 2), kind, round(rng.uniform(lo, hi), 2))
        faults.append(fault)
        t += fault.down_for + gap * rng.uniform(0.5, 1.5)
    return faults


def read_served(path: Path) -> dict[str, dict[int, int]]:
    served: dict[str, dict[int, int]] = {}
    with path.open() as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                served.setdefault(parts[0], {})[int(parts[1])] = int(parts[2])
    return served


def read_stored(influx: InfluxDB, devices: list[str]) -> dict[str, list[tuple[int, int]]]:
    """Device -> [(ts, seq)] of every point in InfluxDB."""
    stored: dict[str, list[tuple[int, int]]] = {}
    for device in devices:
        rows = influx.rows(f"SELECT seq FROM {MEASUREMENT} WHERE device = '{device}'")
        stored[device] = [(int(r["time"]), int(r["seq"])) for r in rows]
    return stored


def blame(t_ns: int, faults: list[Fault]) -> str:
    """The fault closest to a lost reading served at ``t_ns`` (for diagnosis only)."""
    near = [(abs(t_ns - f.done_at_ns), f.kind) for f in faults if f.done_at_ns
            and f.done_at_ns - 5e9 <= t_ns <= f.done_at_ns + (f.down_for + 15) * 1e9]
    return min(near)[1] if near else "none"


def ranges(seqs: list[int]) -> list[str]:
    """[1, 2, 3, 7] -> ['1-3', '7']."""
    out: list[str] = []
    for s in seqs:
        if out and int(out[-1].rsplit("-", 1)[-1]) == s - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{s}"
        else:
            out.append(str(s))
    return out


def analyse(served: dict[str, dict[int, int]], stored: dict[str, list[tuple[int, int]]],
            kills_ns: list[int], window_s: float, faults: list[Fault]) -> dict[str, Any]:
    per_device: dict[str, Any] = {}
    window_ns = int(window_s * 1e9)
    late_ns = int(0.2 * 1e9)  # a request sent just before the kill may be served just after
    lost_ages: list[float] = []
    unexplained_near: Counter[str] = Counter()
    stored_dupes: dict[str, list[int]] = {}
    never: dict[str, list[int]] = {}
    for device in sorted(served):
        seqs = served[device]
        points = stored.get(device, [])
        counts = Counter(seq for _, seq in points)
        missing = sorted(set(seqs) - set(counts))
        explained, unexplained = [], []
        for seq in missing:
            t = seqs[seq]
            kill = next((k for k in kills_ns if k - window_ns <= t <= k + late_ns), None)
            if kill is None:
                unexplained.append(seq)
                unexplained_near[blame(t, faults)] += 1
            else:
                explained.append(seq)
                lost_ages.append((kill - t) / 1e9)
        stored_dupes[device] = [s for s, c in counts.items() if c > 1]
        never[device] = sorted(set(counts) - set(seqs))
        per_device[device] = {
            "served": len(seqs),
            "stored": len(counts),
            "points": len(points),
            "missing": len(missing),
            "missing_explained": len(explained),
            "missing_unexplained": ranges(unexplained),
            "duplicates": ranges(sorted(s for s, c in counts.items() if c > 1)),
            "never_served": ranges(sorted(set(counts) - set(seqs))),
        }
    total = {k: sum(d[k] for d in per_device.values())
             for k in ("served", "stored", "missing", "missing_explained")}
    total["missing_unexplained"] = sum(unexplained_near.values())
    total["missing_unexplained_nearest_fault"] = dict(unexplained_near)
    total["duplicates"] = sum(len(stored_dupes[d]) for d in per_device)
    total["never_served"] = sum(len(never[d]) for d in per_device)
    total["lost_max_age_before_kill_s"] = round(max(lost_ages), 3) if lost_ages else None
    return {"total": total, "devices": per_device}


def run_soak(*, seconds: float = 300.0, seed: int = 1, devices: int = 8,
             interval: str = "250ms", commit_interval: str = "200ms",
             workdir: Path | None = None, drain_timeout: float = 180.0,
             say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the soak and return its report (see the module docstring)."""
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="sensegate-soak-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    faults = schedule(seconds, seed)
    say(f"soak: seed {seed}, {seconds:.0f}s, {devices} devices at {interval}, "
        f"commit_interval {commit_interval}, work dir {work}")
    for f in faults:
        say(f"  scheduled t={f.at:7.2f}s {f.kind:<17} down {f.down_for:.2f}s")
    record = work / "served.log"
    record.unlink(missing_ok=True)
    sims = start_simulators(devices, record=record)
    # tests/support/mosquitto.py keeps a root-started broker root, so sessions and queued
    # messages really are saved across the broker restarts.
    broker = Mosquitto()
    influx = InfluxDB()
    gateway = bridge = None
    try:
        broker.start()
        influx.start()
        gw_metrics, br_metrics = free_port(), free_port()
        gw_conf, br_conf = work / "gateway.yaml", work / "bridge.yaml"
        gw_conf.write_text(gateway_yaml(
            gateway_id="soak", state_dir=work / "gateway-state", mqtt_port=broker.port,
            metrics_port=gw_metrics, devices=[d for s in sims for d in s.devices()],
            interval=interval, commit_interval=commit_interval))
        br_conf.write_text(bridge_yaml(
            state_dir=work / "bridge-state", mqtt_port=broker.port, influx_url=influx.url,
            database=influx.database, metrics_port=br_metrics))
        gateway = Proc("run", gw_conf, work / "gateway.log").start()
        bridge = Proc("bridge", br_conf, work / "bridge.log").start()
        t0 = time.monotonic()
        kills_ns: list[int] = []
        for fault in faults:
            time.sleep(max(0.0, t0 + fault.at - time.monotonic()))
            if fault.kind == "gateway-kill":
                gateway.kill()
                fault.done_at_ns = time.time_ns()
                kills_ns.append(fault.done_at_ns)
                time.sleep(fault.down_for)
                gateway.start()
            elif fault.kind == "bridge-kill":
                bridge.kill()
                fault.done_at_ns = time.time_ns()
                time.sleep(fault.down_for)
                bridge.start()
            elif fault.kind == "broker-restart":
                broker.stop()
                fault.done_at_ns = time.time_ns()
                time.sleep(fault.down_for)
                broker.start()
            else:
                influx.stop()
                fault.done_at_ns = time.time_ns()
                time.sleep(fault.down_for)
                influx.start()
            say(f"  t={time.monotonic() - t0:7.2f}s {fault.kind} done "
                f"(down {fault.down_for:.2f}s)")
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))
        say(f"  t={time.monotonic() - t0:7.2f}s stopping the gateway (SIGTERM) and draining")
        if not gateway.alive():
            raise RuntimeError(f"the gateway died on its own; see {gateway.log}")
        gateway_exit = gateway.stop()
        for sim in sims:
            sim.close()
        served = read_served(record)
        names = sorted(served)
        expected = sum(len(v) for v in served.values())

        def stored_count() -> int:
            rows = influx.rows(f"SELECT count(seq) FROM {MEASUREMENT}")
            return int(rows[0]["count"]) if rows else 0

        drain_start = time.monotonic()
        last = [-1, time.monotonic()]

        def drained() -> bool:
            n = stored_count()
            if n != last[0]:
                last[:] = [n, time.monotonic()]
            m = scrape(br_metrics) if bridge.alive() else {}
            quiet = time.monotonic() - last[1] > 8.0
            return n >= expected or (quiet and metric(m, "sensegate_bridge_messages_total") > 0)

        wait_until(drained, drain_timeout, step=1.0)
        drain_s = time.monotonic() - drain_start
        stored = read_stored(influx, names)
        bridge_stats = scrape(br_metrics)
        bridge.stop()
        window = parse_duration(commit_interval) + parse_duration(interval) + KILL_MARGIN
        report = {
            "seed": seed,
            "seconds": seconds,
            "device_count": devices,
            "interval": interval,
            "commit_interval": commit_interval,
            "allowed_loss_window_s": round(window, 3),
            "machine": machine(),
            "faults": [asdict(f) for f in faults],
            "fault_counts": dict(Counter(f.kind for f in faults)),
            "gateway_starts": gateway.starts,
            "bridge_starts": bridge.starts,
            "gateway_exit_on_sigterm": gateway_exit,
            "drain_s": round(drain_s, 1),
            "bridge_messages": metric(bridge_stats, "sensegate_bridge_messages_total"),
            "bridge_dead_letters": metric(bridge_stats, "sensegate_bridge_dead_letters_total"),
            **analyse(served, stored, kills_ns, window, faults),
        }
        report["ok"] = (report["total"]["missing_unexplained"] == 0
                        and report["total"]["duplicates"] == 0
                        and report["total"]["never_served"] == 0)
        return report
    finally:
        for proc in (gateway, bridge):
            if proc is not None:
                proc.kill()
        for sim in sims:
            sim.close()
        broker.close()
        influx.close()
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--interval", default="250ms")
    parser.add_argument("--commit-interval", default="200ms")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep configs, logs and the served record here")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    report = run_soak(seconds=args.seconds, seed=args.seed, devices=args.devices,
                      interval=args.interval, commit_interval=args.commit_interval,
                      workdir=args.workdir)
    summary = {k: v for k, v in report.items() if k not in ("devices", "faults")}
    summary["devices"] = report["devices"] if args.devices <= 16 else "(see --json-out)"
    print(json.dumps(summary, indent=1))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
