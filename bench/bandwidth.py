"""MQTT bytes per day before and after report by exception and aggregation (issue 17).

Runs every shipped example site (config/*.yaml gateway configs) for a simulated day,
time-compressed: each device's interval groups are "polled" on their grid with realistic
signals (slow temperature drifts with a daily cycle, noisy wind direction, step changes of
precipitation type and load current, monotonically increasing energy counters, sensor noise,
every value rounded to its register's resolution), and each scan goes through the same code
the daemon uses: `gateway.core.report.Reporter` then `gateway.core.payload.build_payload`.

*before* publishes every scan (no deadband, no heartbeat, no aggregation: what the gateway
did until now); *after* uses the site as configured. Reported per device and per device kind
(its profile, else its driver), for one day:

* ``payload_bytes``: the MQTT payloads;
* ``wire_bytes``: an estimate of what the cellular link carries: payload + MQTT PUBLISH
  header and topic (QoS 1: packet id) + PUBACK, each in a TLS 1.3 record (22 bytes), in
  TCP/IPv4 segments with timestamps (52 bytes; PUBLISH, PUBACK and the ACK of the PUBACK);
  a site's total adds the keepalive PINGREQ/PINGRESP exchanges its one connection needs
  when it is silent for ``mqtt.keepalive`` (a quieter link needs more of them);
* for each point by exception, the largest difference between the true value at each scan
  and what a central query reconstructs (the last value published, InfluxQL
  ``fill(previous)``) and the bound its deadband promises (``deadband``, or
  ``deadband_pct`` of the last value published); ``within_deadband`` is False if any
  reconstructed value is further from the truth than that.

Prints one JSON line. ``--hours`` shortens the day (the figures are still per day).
The target (issue 17): ``road_weather.reduction_pct`` >= 80 with ``within_deadband``.

    python bench/bandwidth.py [--hours 24] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config.load import load_gateway_config  # noqa: E402
from gateway.core.decode import rounding  # noqa: E402
from gateway.core.errors import ConfigError  # noqa: E402
from gateway.core.model import DeviceConfig, GatewayConfig, PointConfig, Reading, Value  # noqa: E402
from gateway.core.payload import build_payload, data_topic  # noqa: E402
from gateway.core.plan import interval_groups  # noqa: E402
from gateway.core.report import Reporter, rule_of  # noqa: E402

DAY = 86400.0
T0 = 1_764_000_000  # a midnight-ish epoch second, whole minute
NS = 1_000_000_000
ROAD_SITE = "site-xinwu-road.yaml"
ENV = {"MQTT_USER": "sensegate", "MQTT_PASSWORD": "secret", "INFLUX_TOKEN": "token"}

# Per message on the wire, besides the payload and topic (see the module docstring).
TLS_RECORD = 22  # TLS 1.3: 5 header + 1 content type + 16 AEAD tag
TCP_IP = 52  # IPv4 20 + TCP 20 + timestamps option 12
PUBACK = 4
PING = 2  # PINGREQ and PINGRESP are 2 bytes each


def mqtt_publish_overhead(topic: str, payload: int) -> int:
    """PUBLISH header: type byte, remaining length, topic (2 + n), packet id (QoS 1)."""
    remaining = 2 + len(topic.encode()) + 2 + payload
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3
    return 1 + length_bytes + 2 + len(topic.encode()) + 2


def wire_bytes(topic: str, payload: int) -> int:
    """One QoS 1 message: PUBLISH and PUBACK in a TLS record each, three TCP segments."""
    return (payload + mqtt_publish_overhead(topic, payload) + PUBACK + 2 * TLS_RECORD
            + 3 * TCP_IP)


def ping_bytes() -> int:
    return 2 * (PING + TLS_RECORD) + 3 * TCP_IP


# -- signals ---------------------------------------------------------------------------------


class Signal:
    """A realistic value of one point at time t (seconds since the start of the day)."""

    def __init__(self, point: PointConfig, rng: random.Random, interval: float) -> None:
        self.point = point
        self.rng = rng
        self.state = 0.0
        self.interval = interval
        self.make = self._pick(point.name.lower(), (point.unit or "").lower())

    def _pick(self, name: str, unit: str) -> Callable[[float], float]:
        rng = self.rng
        day = 2 * math.pi / DAY
        steps: dict[str, float] = {}

        def walk(sigma: float, pull: float = 0.001) -> float:
            self.state += rng.gauss(0, sigma) - pull * self.state
            return self.state

        def stepped(every: float, choices: list[float], key: str = "s") -> float:
            if key not in steps or rng.random() < self.interval / every:
                steps[key] = rng.choice(choices)
            return steps[key]

        if "dew" in name:
            return lambda t: 6 + 4 * math.sin(day * (t - 32400)) + walk(0.01) + rng.gauss(0, .05)
        if "temp" in name or unit == "degc":
            noise = 0.02 if "avg" in name else 0.05
            return lambda t: (12 + 6 * math.sin(day * (t - 32400)) + walk(0.01)
                              + rng.gauss(0, noise))
        if "humid" in name or "%rh" in unit:
            return lambda t: min(100.0, max(0.0, 70 - 20 * math.sin(day * (t - 32400))
                                            + walk(0.03) + rng.gauss(0, 0.3)))
        if "pressure" in name or unit == "hpa":
            return lambda t: 1013 + 4 * math.sin(day * t / 2) + walk(0.005) + rng.gauss(0, .05)
        if "wind_direction" in name:
            sigma = 2.0 if "avg" in name else 8.0
            return lambda t: (200 + walk(sigma, 0.0005) + rng.gauss(0, sigma)) % 360
        if "precipitation" in name:
            return lambda t: stepped(6 * 3600, [0, 0, 0, 60, 70])
        if "quality" in name:
            return lambda t: stepped(3 * 3600, [100, 100, 100, 90, 80])
        if "noise" in name or unit == "db":
            return lambda t: (45 + 12 * max(0.0, math.sin(day * (t - 21600)))
                              + rng.gauss(0, 3))
        if name.startswith(("pm", "tsp")):
            return lambda t: max(0.0, 15 * (1 + 0.4 * math.sin(day * (t - 28800)))
                                 * (1 + walk(0.01, 0.01)) + rng.gauss(0, 0.8))
        if "status" in name:
            return lambda t: 0
        if "voltage" in name:
            return lambda t: 230 + 2 * math.sin(day * t) + walk(0.02) + rng.gauss(0, 0.3)
        if "current" in name:
            return lambda t: stepped(900, [8, 12, 20, 25, 32]) + rng.gauss(0, 0.2)
        if "power_factor" in name:
            return lambda t: 0.92 + rng.gauss(0, 0.004)
        if "reactive" in name:
            return lambda t: 0.4 * 230 * stepped(900, [8, 12, 20, 25, 32]) + rng.gauss(0, 20)
        if "power" in name:
            scale = 3 if "total" in name else 1
            return lambda t: (scale * 230 * stepped(900, [8, 12, 20, 25, 32])
                              + rng.gauss(0, 15))
        if "frequency" in name:
            return lambda t: 50 + rng.gauss(0, 0.01)
        if "energy" in name or unit in ("kwh", "wh"):
            rate = rng.uniform(5, 30) / 3600  # kWh per second
            return lambda t: 12345.0 + rate * t
        if "level" in name:
            return lambda t: 2 + 0.5 * math.sin(day * t * 3) + rng.gauss(0, 0.005)
        return lambda t: 50 + 10 * math.sin(day * t) + rng.gauss(0, 0.5)

    def value(self, t: float) -> Value:
        p = self.point
        if p.type == "string":
            return "WXT536"
        if p.type == "bool":
            return self.rng.random() < 0.0005 if p.name != "alarm" else False
        v = self.make(t)
        if p.type.startswith(("int", "uint")) and p.scale == 1 and p.offset == 0:
            return round(v)
        decimals = rounding(p)
        if decimals is None:  # a float register: what a float32 holds, 3 decimals here
            decimals = 3
        return round(v, decimals)


# -- one site -----------------------------------------------------------------------------------


def plain(device: DeviceConfig) -> DeviceConfig:
    """The device as the gateway published it until now: every scan."""
    points = tuple(replace(p, deadband=None, deadband_pct=None, heartbeat=None)
                   for p in device.points)
    return replace(device, points=points, deadband=None, deadband_pct=None, heartbeat=None,
                   publish_interval=None, aggregate=())


def kind(device: DeviceConfig) -> str:
    return device.profile or device.driver


def simulate(config: GatewayConfig, device: DeviceConfig, hours: float, seed: int
             ) -> dict[str, Any]:
    rng = random.Random(f"{seed}-{config.id}-{device.name}")
    seconds = hours * 3600
    scans: list[tuple[float, DeviceConfig]] = []
    for group in interval_groups(device):
        n = int(seconds / group.interval)
        scans += [(k * group.interval, group) for k in range(n)]
    scans.sort(key=lambda s: s[0])
    signals = {p.name: Signal(p, rng, (p.interval or device.interval)) for p in device.points}
    topic = data_topic(config.mqtt.topic_prefix, config.id, device.name)
    tags = {**config.tags, **device.tags}
    measurement = device.measurement or device.name
    fmt = config.mqtt.format
    out: dict[str, Any] = {"kind": kind(device)}
    rules = {p.name: rule_of(device, p) for p in device.points}
    truth = [(t, {p.name: signals[p.name].value(t) for p in group.points}) for t, group in scans]
    for label, dev in (("before", plain(device)), ("after", device)):
        reporter = Reporter([dev])
        messages = payload = wire = 0
        times: list[float] = []
        recon: dict[str, Value] = {}
        worst: dict[str, list[float]] = {}
        for t, values in truth:
            ts = T0 * NS + int(t * NS)
            for published in reporter.process(Reading(device.name, ts, values, {})):
                body = len(build_payload(fmt, config.id, device.name, measurement, tags,
                                         [published]))
                if body == 0:
                    continue
                messages += 1
                payload += body
                wire += wire_bytes(topic, body)
                times.append(published.ts / NS - T0)
                recon.update(published.values)
            if label == "after" and dev.publish_interval is None:
                for name, true in values.items():
                    rule = rules[name]
                    if not rule.by_exception or isinstance(true, (str, bool)):
                        continue
                    got = recon.get(name)
                    assert isinstance(got, (int, float))
                    err = abs(float(true) - float(got))
                    bound = (rule.deadband if rule.deadband is not None else
                             abs(float(got)) * (rule.deadband_pct or 0) / 100)
                    entry = worst.setdefault(name, [0.0, bound])
                    if err > entry[0]:
                        entry[0] = err
                    entry[1] = bound if rule.deadband is not None else max(entry[1], bound)
                    if err > bound + 1e-9 * max(1.0, abs(float(true))):
                        entry.append(float("nan"))  # marks a breach
        out[f"_{label}_times"] = times
        per_day = DAY / seconds
        out[label] = {"messages": round(messages * per_day),
                      "payload_bytes": round(payload * per_day),
                      "wire_bytes": round(wire * per_day)}
        if label == "after" and worst:
            out["max_error"] = {name: {"error": round(e[0], 6), "deadband": round(e[1], 6)}
                                for name, e in worst.items()}
            out["within_deadband"] = all(len(e) == 2 for e in worst.values())
        if label == "after" and dev.publish_interval is not None:
            out["aggregated"] = f"every {dev.publish_interval:g}s: {', '.join(dev.aggregate)}"
    return out


def pings(times: list[float], keepalive: float, seconds: float) -> int:
    """PINGREQ/PINGRESP exchanges of the site's one connection: one per keepalive of silence."""
    count = 0
    last = 0.0
    for t in sorted(times):
        count += int((t - last) // keepalive)
        last = t
    return count + int((seconds - last) // keepalive)


def reduction(before: int, after: int) -> float:
    return round(100.0 * (1 - after / before), 1) if before else 0.0


def run(hours: float, seed: int) -> dict[str, Any]:
    sites: dict[str, Any] = {}
    kinds: dict[str, dict[str, int]] = {}
    for path in sorted((ROOT / "config").glob("*.yaml")):
        try:
            config = load_gateway_config(str(path), env=ENV)
        except ConfigError:
            continue  # the bridge example
        devices = {d.name: simulate(config, d, hours, seed) for d in config.devices}
        total = {f"{label}_{key}": sum(d[label][key] for d in devices.values())
                 for label in ("before", "after") for key in ("payload_bytes", "wire_bytes")}
        for label in ("before", "after"):
            times = [t for d in devices.values() for t in d.pop(f"_{label}_times")]
            n = round(pings(times, config.mqtt.keepalive, hours * 3600) * DAY / (hours * 3600))
            total[f"{label}_pings"] = n
            total[f"{label}_wire_bytes"] += n * ping_bytes()
        within = all(d.get("within_deadband", True) for d in devices.values())
        sites[path.name] = {
            "devices": devices, **total,
            "reduction_pct": reduction(total["before_wire_bytes"], total["after_wire_bytes"]),
            "payload_reduction_pct": reduction(total["before_payload_bytes"],
                                               total["after_payload_bytes"]),
            "within_deadband": within,
        }
        for d in devices.values():
            k = kinds.setdefault(d["kind"], {"before_wire_bytes": 0, "after_wire_bytes": 0,
                                             "before_payload_bytes": 0,
                                             "after_payload_bytes": 0, "devices": 0})
            k["devices"] += 1
            for label in ("before", "after"):
                for key in ("payload_bytes", "wire_bytes"):
                    k[f"{label}_{key}"] += d[label][key]
    for k in kinds.values():
        k["reduction_pct"] = reduction(k["before_wire_bytes"], k["after_wire_bytes"])  # type: ignore[assignment]
    road = sites[ROAD_SITE]
    return {
        "bench": "bandwidth", "hours_simulated": hours, "seed": seed,
        "road_weather": {"site": ROAD_SITE, "reduction_pct": road["reduction_pct"],
                         "payload_reduction_pct": road["payload_reduction_pct"],
                         "within_deadband": road["within_deadband"],
                         "target_met": road["reduction_pct"] >= 80 and road["within_deadband"]},
        "kinds": kinds, "sites": sites,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(run(args.hours, args.seed), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
