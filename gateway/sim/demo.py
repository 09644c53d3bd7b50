"""`sensegate demo`: a complete simulated site on this machine, with no external service.

What runs, all in one process and one asyncio loop:

* simulated field devices from `gateway.sim.simulator`: three Modbus TCP devices (a Vaisala
  WXT530 road weather station, a traffic counter, an Eastron SDM630 energy meter), one
  RS-485 bus on a pty with two XY-MD02 T/H transmitters (units 1 and 2), and a Met One
  Aerocet 531S particle monitor streaming CSV records on a pty; their values move over time;
* the real gateway: a YAML config written to a temp dir (``state_dir`` inside it), loaded by
  the real loader and run by `gateway.edge.daemon.Daemon`, embedded;
* an embedded MQTT broker (amqtt) on a free loopback port; ``--outage 20s`` stops it for
  that long and then starts a new one on the same port;
* with ``--influx URL``, the bridge (`gateway.bridge.service`) into database ``sensegate_demo``.

An independent MQTT subscriber (`Counter`, its own client and session) counts the readings
that arrive at the broker, each once. The gateway reaches the broker through a relay
(`Gate`) that lets it in only while the counter (and the bridge) are subscribed: amqtt keeps
no sessions across its restart, so what the gateway published before that would be missed.

The view (rich ``Live`` on a terminal, a status line every few seconds otherwise) shows
readings per device, readings polled, delivered (acknowledged by the broker) and received
(by the counter), the outbox and the broker. At the end polling stops, the outbox drains,
and the summary compares polled with received per device; its last line is
``demo: polled=N delivered=N received=N lost=N`` and the exit status is 1 when anything was
lost. Everything started is stopped and the temp dir removed, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import math
import random
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gateway.core.errors import ConfigError
from gateway.core.model import DeviceConfig, PointConfig, Reading, Value
from gateway.edge.daemon import Daemon
from gateway.runtime.exitcodes import ExitCode
from gateway.sim.ports import free_port

if TYPE_CHECKING:
    from gateway.sim.simulator import ModbusSimulator, SerialLineSimulator

log = logging.getLogger("sensegate.demo")

GATEWAY_ID = "demo-site"
INFLUX_DB = "sensegate_demo"
OUTAGE_AT = 10.0  # seconds after start, without --duration (else a third of it)
STATUS_EVERY = 5.0  # seconds between status lines without the live view
DRAIN_TIMEOUT = 30.0  # seconds to wait at the end for the outbox to empty
CATCH_UP_TIMEOUT = 10.0  # then for the counter (and the bridge) to have everything
VIEW_WIDTH = 80  # the live view is laid out for an 80-column terminal
BAR_WIDTH = 40  # cells of the outbox backlog bar
TICK = 0.5  # seconds between simulator value updates and view refreshes
RECONNECT_CAP = 2.0  # the demo's broker comes back on cue: retry often, not every 30 s
# amqtt keeps no sessions across its restart, so after an outage the bridge must subscribe
# again before the gateway publishes its backlog, or InfluxDB misses that part: it retries
# more often than the gateway does.
BRIDGE_RECONNECT_CAP = 0.5

# Points shown first in the view's narrow "last values" column; the rest follow.
HEADLINE = {
    "rws-1": ("air_temperature", "humidity", "pressure", "wind_direction", "dew_point"),
    "meter-1": ("power_total", "voltage_l1", "current_l1", "frequency", "energy_import"),
    "aq-1": ("pm2_5", "pm10", "pm1"),
}

AEROCET_RECORD = (
    "{time},{pm1:05.1f},{pm2_5:05.1f},{pm4:05.1f},{pm7:05.1f},{pm10:05.1f},{tsp:05.1f},"
    "{at:+04.0f},{rh:03.0f},001,060,000"
)


STOP_TIMEOUT = 10.0  # seconds each part of the demo gets to stop at the end

# --- the site ------------------------------------------------------------------------


def gateway_yaml(state_dir: str, mqtt_port: int, tcp_ports: dict[str, int], rtu_path: str,
                 aq_path: str) -> str:
    return f"""\
# written by `sensegate demo`; loaded by the real config loader
gateway:
  id: {GATEWAY_ID}
  tags: {{site: demo}}
  state_dir: {state_dir}

mqtt:
  host: 127.0.0.1
  port: {mqtt_port}
  client_id: sensegate-{GATEWAY_ID}
  keepalive: 5s

buses:
  - {{name: rs485-demo, port: {rtu_path}, baudrate: 9600}}

devices:
  - name: rws-1
    driver: modbus-tcp
    host: 127.0.0.1
    port: {tcp_ports["rws-1"]}
    profile: vaisala-wxt530
    interval: 1s
    measurement: road_weather
  - name: traffic-1
    driver: modbus-tcp
    host: 127.0.0.1
    port: {tcp_ports["traffic-1"]}
    interval: 1s
    measurement: traffic
    points:
      - {{name: vehicles, table: input, address: 0, type: uint32}}
      - {{name: occupancy, table: input, address: 2, type: uint16, scale: 0.1, unit: "%"}}
      - {{name: speed_avg, table: input, address: 3, type: uint16, scale: 0.1, unit: km/h}}
      - {{name: heavy_vehicles, table: input, address: 4, type: uint32}}
  - name: meter-1
    driver: modbus-tcp
    host: 127.0.0.1
    port: {tcp_ports["meter-1"]}
    profile: eastron-sdm630
    interval: 1s
    measurement: energy
  - {{name: th-cabinet, driver: modbus-rtu, bus: rs485-demo, unit: 1, profile: xy-md02,
     interval: 2s, measurement: climate}}
  - {{name: th-outdoor, driver: modbus-rtu, bus: rs485-demo, unit: 2, profile: xy-md02,
     interval: 2s, measurement: climate}}
  - name: aq-1
    driver: serial-line
    port: {aq_path}
    profile: metone-aerocet-531s
    interval: 2s
    timeout: 3s
    measurement: air_quality
"""


def bridge_yaml(state_dir: str, mqtt_port: int, influx_url: str) -> str:
    return f"""\
# written by `sensegate demo --influx`
mqtt:
  host: 127.0.0.1
  port: {mqtt_port}
  client_id: sensegate-demo-bridge
  subscribe: sensegate/{GATEWAY_ID}/+/data
influxdb:
  url: {influx_url}
  api: v1
  database: {INFLUX_DB}
  flush_interval: 500ms
state_dir: {state_dir}
"""


def raw_for(point: PointConfig, value: float) -> Value:
    """The register value a device stores so that `point` decodes to ``value``."""
    raw = (value - point.offset) / point.scale
    if point.type.startswith(("int", "uint")):
        n = round(raw)
        return max(n, 0) if point.type.startswith("uint") else n
    return raw


class Site:
    """The simulated devices and the values they show, moving plausibly over time."""

    def __init__(self) -> None:
        from gateway.sim.simulator import (
            ModbusRtuSimulator,
            ModbusTcpSimulator,
            SerialLineSimulator,
        )

        self.tcp = {name: ModbusTcpSimulator([1]) for name in ("rws-1", "traffic-1", "meter-1")}
        self.rtu = ModbusRtuSimulator([1, 2])
        self.aq = SerialLineSimulator(AEROCET_RECORD, period=1.0)
        self.devices: dict[str, DeviceConfig] = {}
        self._t0 = time.monotonic()
        self._rng = random.Random(7)
        self._wind = 220.0
        self._vehicles = 0.0
        self._heavy = 0.0
        self._energy = 18_432.5
        self._started: list[Any] = []
        self.update(0.0)  # the serial template needs every field before its first record

    async def start(self) -> None:
        sims: list[ModbusSimulator | SerialLineSimulator] = [*self.tcp.values(), self.rtu, self.aq]
        for sim in sims:
            sim.frames = _NoFrames()  # a long demo must not keep every frame on the wire
            await sim.start()
            self._started.append(sim)

    async def stop(self) -> None:
        for sim in reversed(self._started):
            with contextlib.suppress(Exception):
                await sim.stop()
        self._started.clear()
        # ptys are opened in __init__: close those of simulators that never started
        for sim in (self.rtu, self.aq):
            sim.pty.close()

    @property
    def tcp_ports(self) -> dict[str, int]:
        return {name: sim.port for name, sim in self.tcp.items()}

    def _put(self, device: str, values: dict[str, float]) -> None:
        config = self.devices.get(device)
        if config is None:
            return
        unit = self.tcp[device].unit(1) if device in self.tcp else self.rtu.unit(config.unit)
        for point in config.points:
            if point.name in values:
                unit.set_point(point, raw_for(point, values[point.name]))

    def update(self, dt: float) -> None:
        """Move every simulated value on by ``dt`` seconds."""
        t = time.monotonic() - self._t0
        rng = self._rng
        wave = math.sin(2 * math.pi * t / 120)  # a two-minute "day" so the demo shows change

        air = 4.0 + 3.0 * wave + rng.gauss(0, 0.05)
        rh = 72.0 - 12.0 * wave + rng.gauss(0, 0.2)
        self._wind = (self._wind + rng.gauss(0, 4)) % 360
        dew = air - (100 - rh) / 5  # the usual rule of thumb, good enough for a demo
        self._put("rws-1", {
            "humidity": rh, "humidity_avg": 72.0 - 12.0 * wave, "pressure": 1013.2 + 0.4 * wave,
            "wind_direction": self._wind, "wind_direction_avg": self._wind,
            "precipitation_type": 60 if wave < -0.6 else 0, "wind_quality": 100,
            "air_temperature": air, "air_temperature_avg": 4.0 + 3.0 * wave, "dew_point": dew,
        })

        self._vehicles += dt * max(0.0, rng.gauss(0.6, 0.3))
        self._heavy += dt * max(0.0, rng.gauss(0.05, 0.03))
        self._put("traffic-1", {
            "vehicles": self._vehicles, "heavy_vehicles": self._heavy,
            "occupancy": max(0.0, 14 + 8 * wave + rng.gauss(0, 1)),
            "speed_avg": max(0.0, 52 - 10 * wave + rng.gauss(0, 1.5)),
        })

        meter: dict[str, float] = {}
        total = 0.0
        for phase, shift in (("l1", 0.0), ("l2", 2.1), ("l3", 4.2)):
            volts = 230.0 + rng.gauss(0, 0.4)
            amps = 12.0 + 5.0 * math.sin(2 * math.pi * t / 90 + shift) + rng.gauss(0, 0.1)
            pf = 0.95 + rng.gauss(0, 0.003)
            meter |= {f"voltage_{phase}": volts, f"current_{phase}": amps,
                      f"power_{phase}": volts * amps * pf, f"power_factor_{phase}": pf}
            total += volts * amps * pf
        apparent = total / 0.95
        self._energy += total * dt / 3_600_000
        meter |= {"power_total": total, "apparent_power_total": apparent,
                  "reactive_power_total": math.sqrt(max(0.0, apparent**2 - total**2)),
                  "power_factor_total": total / apparent,
                  "frequency": 50.0 + rng.gauss(0, 0.01),
                  "energy_import": self._energy, "energy_export": 0.0}
        self._put("meter-1", meter)

        self._put("th-cabinet", {"temperature": 27.5 + 1.5 * wave + rng.gauss(0, 0.05),
                                 "humidity": 38.0 - 3 * wave + rng.gauss(0, 0.2)})
        self._put("th-outdoor", {"temperature": air + 0.3, "humidity": rh})

        pm25 = max(1.0, 14.0 + 6.0 * math.sin(2 * math.pi * t / 75) + rng.gauss(0, 0.8))
        self.aq.values.update(
            time=datetime.now().strftime("%Y-%m-%d %H:%M:%S"), pm1=0.6 * pm25, pm2_5=pm25,
            pm4=1.2 * pm25, pm7=1.5 * pm25, pm10=1.8 * pm25, tsp=2.2 * pm25, at=air, rh=rh,
        )


class _NoFrames(list[Any]):
    """A frame log that keeps nothing: the demo may run for hours."""

    def append(self, item: Any) -> None:
        pass


# --- the broker ----------------------------------------------------------------------


class EmbeddedBroker:
    """amqtt on a fixed loopback port; stopping and starting it again simulates an outage."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._broker: Any = None
        self.state = "stopped"
        self.outages = 0

    async def start(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }
        self._broker = Broker(config)
        await self._broker.start()
        self.state = "up"

    async def stop(self) -> None:
        if self._broker is not None:
            broker, self._broker = self._broker, None
            with contextlib.suppress(Exception):
                await broker.shutdown()
        self.state = "stopped"


def reading_stamps(payload: bytes) -> list[int] | None:
    """The ``ts`` of every reading in a JSON data payload (SPEC §3); None when malformed."""
    try:
        doc = json.loads(payload)
        return [int(r["ts"]) for r in doc["readings"]]
    except (ValueError, TypeError, KeyError):
        return None


class Counter:
    """An MQTT subscriber of its own: counts, per device, the readings that reached the broker.

    It is what proves the summary: the gateway's own count of acknowledged readings says
    what the broker accepted, this says what a subscriber got. A reading counts once
    (device and ``ts``), however often QoS 1 redelivered it.
    """

    def __init__(self, port: int, topic: str) -> None:
        self.port = port
        self.topic = topic
        self.received: dict[str, set[int]] = {}
        self.messages = 0
        self.malformed = 0
        self.subscribed = False
        self._task: asyncio.Task[None] | None = None

    def count(self, device: str) -> int:
        return len(self.received.get(device, ()))

    def total(self) -> int:
        return sum(len(s) for s in self.received.values())

    def take(self, topic: str, payload: bytes) -> None:
        """Count one data message (topic ``prefix/gateway/device/data``)."""
        self.messages += 1
        stamps = reading_stamps(payload)
        parts = topic.split("/")
        if stamps is None or len(parts) < 2:
            self.malformed += 1
            return
        self.received.setdefault(parts[-2], set()).update(stamps)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="demo-counter")
        until = time.monotonic() + 10
        while not self.subscribed and time.monotonic() < until and not self._task.done():
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        import aiomqtt

        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, keepalive=5, timeout=5,
                                          identifier="sensegate-demo-counter") as client:
                    await client.subscribe(self.topic, qos=1)
                    self.subscribed = True
                    async for message in client.messages:
                        payload = message.payload
                        self.take(message.topic.value,
                                  payload if isinstance(payload, bytes) else str(payload).encode())
            except aiomqtt.MqttError:
                pass
            finally:
                self.subscribed = False
            await asyncio.sleep(0.2)  # the broker is down: try again soon, it comes back on cue


class Gate:
    """A TCP relay between the gateway and the broker that listens only while ``is_open()``.

    It holds the gateway back (connection refused) until the counter (and, with
    ``--influx``, the bridge) has subscribed again after an outage: amqtt keeps no sessions
    across its restart, so what the gateway published before that would reach nobody.
    """

    def __init__(self, target_port: int, is_open: Any) -> None:
        self.target_port = target_port
        self._is_open = is_open
        self.cut_off = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._task: asyncio.Task[None] | None = None

    def is_open(self) -> bool:
        return not self.cut_off and bool(self._is_open())

    async def start(self) -> None:
        await self._listen()
        self._task = asyncio.create_task(self._follow(), name="demo-gate")

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            for writer in list(self._writers):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def _follow(self) -> None:
        while True:
            if self.is_open() and self._server is None:
                with contextlib.suppress(OSError):
                    await self._listen()
            elif not self.is_open() and self._server is not None:
                await self._close()
            await asyncio.sleep(0.1)

    def cut(self) -> None:
        """Drop the gateway's connections and refuse new ones until `cut_off` is cleared."""
        self.cut_off = True
        for writer in list(self._writers):
            writer.close()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if not self.is_open():
                return
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers.add(upstream)
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


# --- the gateway, instrumented --------------------------------------------------------


@dataclass
class Tally:
    """What the demo counts for one device."""

    polled: int = 0
    delivered: int = 0
    bad_points: int = 0
    last: Reading | None = None


@dataclass
class DemoDaemon(Daemon):
    """The real daemon, counting readings per device as they are polled and acknowledged."""

    tallies: dict[str, Tally] = field(default_factory=dict)

    async def startup(self) -> None:
        await super().startup()
        # Counts readings the broker acknowledged, each once (resends are not counted
        # again); nothing can have been acked yet, the outbox was empty at start.
        self.outbox.on_ack(self._delivered)

    def _delivered(self, device: str, readings: int) -> None:
        self.tally(device).delivered += readings

    def tally(self, device: str) -> Tally:
        return self.tallies.setdefault(device, Tally())

    def _sink(self, reading: Reading) -> None:
        self.tally(reading.device).last = reading
        super()._sink(reading)

    def _add(self, reading: Reading, envelope: Any) -> None:
        # Counted as the outbox takes them: with report by exception (the shipped profiles
        # set deadbands) a scan held back is not a reading to deliver.
        tally = self.tally(reading.device)
        tally.polled += 1
        tally.bad_points += len(reading.quality)
        super()._add(reading, envelope)


def make_bridge(path: str) -> Any:
    """The bridge, speaking MQTT 3.1.1: amqtt (the embedded broker) has no MQTT 5."""
    from gateway.bridge.receive import Protocol
    from gateway.bridge.service import Bridge

    return Bridge(path, protocol=Protocol.V311,
                  reconnect_max=BRIDGE_RECONNECT_CAP)  # back soon after an outage


def create_influx_database(url: str) -> None:
    """``CREATE DATABASE sensegate_demo`` over InfluxDB 1.x ``/query`` (no-op if it exists)."""
    body = urllib.parse.urlencode({"q": f'CREATE DATABASE "{INFLUX_DB}"'}).encode()
    request = urllib.request.Request(url.rstrip("/") + "/query", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


# --- the view --------------------------------------------------------------------------


def fmt_value(value: Value, unit: str | None) -> str:
    if isinstance(value, float):
        a = abs(value)
        text = f"{value:.0f}" if a >= 1000 else f"{value:.1f}" if a >= 10 else f"{value:.2f}"
    else:
        text = str(value)
    return f"{text} {unit}" if unit else text


def fmt_age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


@dataclass
class Snapshot:
    """Everything the view shows, taken on the event loop (the outbox is not thread-safe)."""

    elapsed: float
    broker: str  # up | stopping | down | stopped
    mqtt_connected: bool
    polled: int
    delivered: int
    published_messages: int
    pending: int
    outbox_bytes: int
    oldest_age: float | None
    dropped: int
    devices: list[tuple[str, str, int, Tally]]  # name, driver, scans, tally
    bridge: str | None
    received: dict[str, int] = field(default_factory=dict)  # device -> readings the counter got
    peak_pending: int = 0  # the outbox bar's full scale
    back_in: float | None = None  # seconds until the broker returns from an outage
    broker_port: int = 0
    duration: float | None = None

    @property
    def received_total(self) -> int:
        return sum(self.received.values())


@dataclass
class Drain:
    """How the end of the demo went: did the outbox empty, and how long was waited."""

    drained: bool
    waited: float  # seconds
    forced: bool  # a second Ctrl-C: not waited


def outbox_bar(pending: int, peak: int, width: int = BAR_WIDTH) -> str:
    """``outbox backlog ████████░░░░ 123 readings``: the backlog against its peak so far."""
    full = 0 if pending <= 0 else max(1, round(width * pending / max(peak, pending, 1)))
    return f"outbox backlog {'█' * full}{'░' * (width - full)} {pending} readings"


class Demo:
    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.duration: float | None = args.duration  # seconds (the CLI parsed the units)
        self.outage: float | None = args.outage
        self.influx: str | None = args.influx
        self.out = out
        self.live = not args.no_live and out.isatty()
        self.stop = asyncio.Event()
        self.force = False
        self.t0 = time.monotonic()
        self.logs: collections.deque[str] = collections.deque(maxlen=6)
        self.daemon: DemoDaemon | None = None
        self.bridge: Any = None
        self.broker: EmbeddedBroker | None = None
        self.outage_note = ""
        self.outage_started: float | None = None
        self.outage_until: float | None = None
        self.gate: Gate | None = None
        self.counter: Counter | None = None
        self.peak_pending = 0
        self.ran_for = 0.0

    # -- timeline ----------------------------------------------------------------------

    async def run(self) -> int:
        tmp = tempfile.mkdtemp(prefix="sensegate-demo-")
        site: Site | None = None
        daemon_task: asyncio.Task[int] | None = None
        bridge_task: asyncio.Task[None] | None = None
        outage_task: asyncio.Task[None] | None = None
        restore_logs = self._capture_logs() if self.live else _quiet_libraries()
        self._install_signals()
        try:
            site = Site()
            await site.start()
            self.broker = EmbeddedBroker(free_port())
            await self.broker.start()
            self.counter = Counter(self.broker.port, f"sensegate/{GATEWAY_ID}/+/data")
            await self.counter.start()
            counter = self.counter
            if self.influx:
                create_influx_database(self.influx)
                bpath = Path(tmp) / "bridge.yaml"
                bpath.write_text(bridge_yaml(str(Path(tmp) / "bridge"), self.broker.port,
                                             self.influx))
                self.bridge = make_bridge(str(bpath))
                await self.bridge.startup()
                bridge_task = asyncio.create_task(self.bridge.main_loop(), name="demo-bridge")
                bridge = self.bridge
                until = time.monotonic() + 10
                while not bridge.stats.connected and time.monotonic() < until:
                    await asyncio.sleep(0.05)
            bridge = self.bridge
            self.gate = Gate(self.broker.port, lambda: counter.subscribed and (
                bridge is None or bridge.stats.connected))
            await self.gate.start()
            gateway_port = self.gate.port

            path = Path(tmp) / "gateway.yaml"
            path.write_text(gateway_yaml(str(Path(tmp) / "state"), gateway_port,
                                         site.tcp_ports, site.rtu.path, site.aq.path))
            from gateway.config.load import load_gateway_config

            config = load_gateway_config(str(path))  # the daemon loads it again, the same way
            site.devices = {d.name: d for d in config.devices}
            site.update(0.0)
            self.units = {d.name: {p.name: p.unit for p in d.points} for d in config.devices}
            self.drivers = {d.name: d.driver for d in config.devices}

            self.daemon = DemoDaemon(str(path), install_signals=False,
                                     publisher_options={"reconnect_max": RECONNECT_CAP})
            daemon_task = asyncio.create_task(self.daemon.run(), name="demo-gateway")
            while not self.daemon.started and not daemon_task.done():
                await asyncio.sleep(0.05)
            if daemon_task.done():
                print(f"demo: the gateway failed to start (exit {daemon_task.result()})",
                      file=sys.stderr)
                return ExitCode.FAILED
            self.t0 = time.monotonic()
            if self.outage:
                at = self.duration / 3 if self.duration else OUTAGE_AT
                outage_task = asyncio.create_task(self._outage(at, self.outage))
            await self._watch(site)
            if outage_task is not None:
                outage_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await outage_task
                if self.broker.state != "up":  # cut short: the drain needs the broker
                    self.outage_note += " (cut short by the end of the demo)"
                    await self.broker.start()
            drain = await self._finish(site)
            ok = await self._stop_gateway(daemon_task)
            daemon_task = None
            if self.bridge is not None:
                await self._stop_bridge(bridge_task)
                bridge_task = None
            lost = self._summary(drain)
            return exit_status(stopped_cleanly=ok, lost=lost, drain=drain)
        except ConfigError as exc:  # a bug in the demo's own YAML: show it as the CLI would
            for issue in exc.issues:
                print(issue, file=sys.stderr)
            return ExitCode.FAILED
        finally:
            self._remove_signals()
            if daemon_task is not None and self.daemon is not None:
                self.daemon.force_exit = True
                self.daemon.should_exit.set()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(daemon_task, 15)
            if bridge_task is not None:
                bridge_task.cancel()
                with contextlib.suppress(BaseException):
                    await self.bridge.shutdown()
            # Each part gets a bounded time to stop: the demo ends even if one of them (an
            # embedded broker's client handlers, a simulator) does not.
            for part in (self.gate, self.counter, self.broker, site):
                if part is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(part.stop(), STOP_TIMEOUT)
            restore_logs()
            shutil.rmtree(tmp, ignore_errors=True)

    async def _outage(self, at: float, length: float) -> None:
        assert self.broker is not None
        await asyncio.sleep(at)
        log.warning("stopping the mqtt broker for %gs", length)
        self.outage_started = time.monotonic()
        self.outage_until = self.outage_started + length
        self.broker.state = "stopping"
        if self.gate is not None:
            # amqtt forgets what it has not yet delivered when it stops (a broker with
            # persistence would not): cut the gateway off first and let the counter and the
            # bridge catch up.
            self.gate.cut()
            await self._caught_up(5.0)
        await self.broker.stop()
        self.broker.state = "down"
        self.broker.outages += 1
        self.outage_note = f"broker outage of {length:g}s at {at:.1f}s"
        await asyncio.sleep(max(0.0, self.outage_until - time.monotonic()))
        await self.broker.start()
        if self.gate is not None:
            self.gate.cut_off = False
        self.outage_until = None
        log.warning("mqtt broker back on port %d", self.broker.port)

    async def _watch(self, site: Site) -> None:
        """Refresh values and the view until --duration or Ctrl-C."""
        end = None if self.duration is None else self.t0 + self.duration
        last_line = time.monotonic()
        live = self._open_live()
        last = time.monotonic()
        try:
            while not self.stop.is_set():
                if end is not None and time.monotonic() >= end:
                    break
                assert self.daemon is not None
                now = time.monotonic()
                site.update(now - last)
                last = now
                if live is not None:
                    live.update(self._render(self._snapshot()), refresh=True)
                elif now - last_line >= STATUS_EVERY:
                    last_line = now
                    print(self._status_line(self._snapshot()), file=self.out, flush=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), TICK)
                task_error = self._failed_task()
                if task_error:
                    log.error("%s", task_error)
                    break
        finally:
            self.ran_for = time.monotonic() - self.t0
            if live is not None:
                live.update(self._render(self._snapshot()), refresh=True)
                live.stop()

    def _failed_task(self) -> str | None:
        assert self.daemon is not None
        if self.daemon.should_exit.is_set():
            return "the gateway stopped on its own"
        return None

    async def _finish(self, site: Site) -> Drain:
        """Stop polling, commit, and wait until the broker acknowledged every reading and
        the counter (and the bridge) received them; a second Ctrl-C stops the wait."""
        assert self.daemon is not None
        print("demo: stopping polling; waiting for the outbox to drain", file=self.out,
              flush=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.daemon.poller.stop(), 10)
        with contextlib.suppress(Exception):
            self.daemon.outbox.flush()
        start = time.monotonic()
        deadline = start + DRAIN_TIMEOUT
        while time.monotonic() < deadline and not self.force and self._pending() != 0:
            await asyncio.sleep(0.1)
        drain = Drain(drained=self._pending() == 0, waited=time.monotonic() - start,
                      forced=self.force)
        if drain.drained and not self.force:
            await self._caught_up(CATCH_UP_TIMEOUT)
        return drain

    async def _caught_up(self, timeout: float) -> None:
        """Wait until the counter received, and the bridge stored (or dead-lettered), every
        reading the broker acknowledged."""
        if self.daemon is None:
            return
        until = time.monotonic() + timeout
        while time.monotonic() < until and not self.force:
            want = sum(t.delivered for t in self.daemon.tallies.values())
            counted = self.counter is None or self.counter.total() >= want
            stored = True
            if self.bridge is not None:
                stats = self.bridge.stats
                stored = stats.points_written + sum(stats.dead_letters.values()) >= want
            if counted and stored:
                return
            await asyncio.sleep(0.1)

    def _pending(self) -> int:
        assert self.daemon is not None
        try:
            return int(self.daemon.outbox.unacked_readings())
        except Exception:
            return -1

    async def _stop_gateway(self, task: asyncio.Task[int]) -> bool:
        assert self.daemon is not None
        self.daemon.force_exit = self.force
        self.daemon.should_exit.set()
        try:
            code = await asyncio.wait_for(task, 30)
        except TimeoutError:
            log.error("the gateway did not stop within 30s")
            return False
        return code == 0

    async def _stop_bridge(self, task: asyncio.Task[None] | None) -> None:
        self.bridge.should_exit.set()
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.bridge.shutdown(), 20)

    # -- signals -----------------------------------------------------------------------

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stop.is_set() and sig == signal.SIGINT:
            self.force = True  # a second Ctrl-C: do not wait for the drain
            print("demo: second interrupt: not waiting for the drain", file=sys.stderr)
        self.stop.set()

    # -- logs --------------------------------------------------------------------------

    def _capture_logs(self) -> Any:
        """Send log lines into the live view instead of across it."""
        root = logging.getLogger()
        saved = root.handlers[:]
        logs = self.logs

        class ToView(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                with contextlib.suppress(Exception):
                    logs.append(f"{time.strftime('%H:%M:%S')} {record.levelname.lower()} "
                                f"{record.name}: {record.getMessage()}")

        handler = ToView(level=logging.INFO)
        formatter = saved[0].formatter if saved else None
        if formatter is not None:
            handler.setFormatter(formatter)
        root.handlers[:] = [handler]
        restore_quiet = _quiet_libraries()

        def restore() -> None:
            root.handlers[:] = saved
            restore_quiet()

        return restore

    def _open_live(self) -> Any:
        if not self.live:
            return None
        from rich.console import Console
        from rich.live import Live

        live = Live(console=Console(file=self.out), auto_refresh=False, transient=False,
                    redirect_stdout=False, redirect_stderr=False)
        live.start()
        return live

    # -- snapshot and rendering ---------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        assert self.daemon is not None and self.broker is not None
        d = self.daemon
        stats = d.outbox.stats()
        scans = {name: s.scans for name, s in d.poller.stats().items()}
        devices = [(name, self.drivers.get(name, "?"), scans.get(name, t.polled), t)
                   for name, t in sorted(d.tallies.items())]
        for name in self.drivers:
            if name not in d.tallies:
                devices.append((name, self.drivers[name], 0, Tally()))
        bridge = None
        if self.bridge is not None:
            b = self.bridge.stats
            bridge = (f"bridge: mqtt {'connected' if b.connected else 'disconnected'} · "
                      f"influxdb {'ok' if b.store_ok else 'failing'} · "
                      f"{b.points_written} points written")
        back_in = None
        if self.broker.state == "down" and self.outage_until is not None:
            back_in = max(0.0, self.outage_until - time.monotonic())
        self.peak_pending = max(self.peak_pending, stats.pending_readings)
        counter = self.counter
        return Snapshot(
            elapsed=time.monotonic() - self.t0,
            broker=self.broker.state,
            mqtt_connected=d.publisher.connected,
            polled=sum(t.polled for t in d.tallies.values()),
            delivered=sum(t.delivered for t in d.tallies.values()),
            published_messages=int(getattr(d.publisher, "published_messages", 0)),
            pending=stats.pending_readings,
            outbox_bytes=stats.bytes,
            oldest_age=stats.oldest_age_s,
            dropped=stats.dropped,
            devices=devices,
            bridge=bridge,
            received={name: counter.count(name) for name, *_ in devices} if counter else {},
            peak_pending=self.peak_pending,
            back_in=back_in,
            broker_port=self.broker.port,
            duration=self.duration,
        )

    def _status_line(self, s: Snapshot) -> str:
        return status_line(s)

    def _render(self, s: Snapshot) -> Any:
        return render_view(s, self.units, list(self.logs))

    def _summary(self, drain: Drain) -> int:
        """Print the summary; the number of readings lost (polled, never received)."""
        assert self.daemon is not None
        s = self._snapshot()
        stored = None
        if self.bridge is not None:
            b = self.bridge.stats
            stored = (b.points_written, sum(b.dead_letters.values()))
        lines = summary_lines(s, drain, ran_for=self.ran_for, outage=self.outage_note,
                              pending=max(0, self._pending()), influx=self.influx,
                              stored=stored)
        for line in lines:
            print(line, file=self.out)
        self.out.flush()
        return lost_readings(s)


# --- what the view and the summary say (pure: a Snapshot in, text out) -------------------


def exit_status(*, stopped_cleanly: bool, lost: int, drain: Drain) -> ExitCode:
    """0 only when the gateway stopped cleanly, the outbox drained and the independent
    subscriber received every reading polled."""
    if stopped_cleanly and drain.drained and lost == 0:
        return ExitCode.OK
    return ExitCode.FAILED


def status_line(s: Snapshot) -> str:
    """The line printed every few seconds without the live view."""
    return (f"demo: t={s.elapsed:.0f}s broker={s.broker} "
            f"mqtt={'connected' if s.mqtt_connected else 'disconnected'} "
            f"polled={s.polled} delivered={s.delivered} received={s.received_total} "
            f"outbox={s.pending} messages={s.published_messages}")


def lost_readings(s: Snapshot) -> int:
    """Readings polled that the independent subscriber never received."""
    return sum(t.polled - s.received.get(name, 0) for name, _d, _s, t in s.devices)


def summary_lines(s: Snapshot, drain: Drain, *, ran_for: float, outage: str, pending: int,
                  influx: str | None = None, stored: tuple[int, int] | None = None
                  ) -> list[str]:
    """The summary at the end; its lines are meant for scripts, the last one is the total."""
    lines = [f"\nsensegate demo: {ran_for:.1f}s, {len(s.devices)} devices"
             + (f", {outage}" if outage else "")]
    if drain.forced:
        lines.append(f"demo: stopped without waiting for the outbox to drain (second Ctrl-C); "
                     f"{pending} readings still pending")
    elif not drain.drained:
        lines.append(f"demo: the outbox did not drain within {drain.waited:.0f}s "
                     f"({pending} readings still pending)")
    for name, driver, _scans, t in s.devices:
        received = s.received.get(name, 0)
        lines.append(f"demo: device={name} driver={driver} polled={t.polled} "
                     f"delivered={t.delivered} received={received} "
                     f"lost={t.polled - received} bad_points={t.bad_points}")
    if stored is not None:
        lines.append(f"demo: influxdb={influx} database={INFLUX_DB} points_written={stored[0]} "
                     f"dead_letters={stored[1]}")
    lines.append(f"demo: messages={s.published_messages} outbox_pending={pending} "
                 f"dropped={s.dropped}")
    lost = lost_readings(s)
    if lost:
        lines.append(f"demo: {lost} readings polled were never received by the subscriber")
    lines.append(f"demo: polled={s.polled} delivered={s.delivered} "
                 f"received={s.received_total} lost={lost}")
    return lines


def render_view(s: Snapshot, units: dict[str, dict[str, str | None]], logs: list[str]) -> Any:
    """The live view, laid out for an 80-column terminal (wider ones give the values room)."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    of = f" of {s.duration:g}s" if s.duration else " (Ctrl-C to stop)"
    head = Text(no_wrap=True, overflow="ellipsis")
    head.append(f"sensegate demo · gateway {GATEWAY_ID} · {s.elapsed:.0f}s{of}\n", "bold")
    up = s.broker == "up"
    head.append(f"broker 127.0.0.1:{s.broker_port} ", "dim")
    state = s.broker if s.back_in is None else f"down, back in {s.back_in:.0f}s"
    head.append(f"{'●' if up else '○'} {state}", "green" if up else "bold red")
    head.append(" · gateway mqtt ", "dim")
    head.append("connected" if s.mqtt_connected else "disconnected",
                "green" if s.mqtt_connected else "red")
    head.append("\npolled ", "dim")
    head.append(str(s.polled), "bold")
    head.append(" · acked by broker ", "dim")
    head.append(str(s.delivered), "bold")
    head.append(" · received ", "dim")
    head.append(str(s.received_total), "bold")
    head.append(" · messages ", "dim")
    head.append(str(s.published_messages))
    head.append(f"\noutbox: oldest {fmt_age(s.oldest_age)} · {s.outbox_bytes / 1024:.0f} KiB on "
                f"disk · dropped {s.dropped}", "dim")
    head.append("\n" + outbox_bar(s.pending, s.peak_pending),
                "bold yellow" if s.pending > 20 else "")
    if s.bridge:
        head.append("\n" + s.bridge, "cyan")

    table = Table(expand=True, box=None, header_style="bold", pad_edge=False)
    for col, kw in (("device", {"no_wrap": True}),
                    ("driver", {"style": "dim", "no_wrap": True}),
                    ("scans", {"justify": "right"}), ("bad", {"justify": "right"}),
                    ("polled", {"justify": "right"}), ("acked", {"justify": "right"}),
                    ("received", {"justify": "right"}),
                    ("last values", {"ratio": 1, "overflow": "ellipsis", "no_wrap": True})):
        table.add_column(col, **kw)
    for name, driver, scans, t in s.devices:
        values = ""
        if t.last is not None:
            device_units = units.get(name, {})
            first = [k for k in HEADLINE.get(name, ()) if k in t.last.values]
            keys = first + [k for k in t.last.values if k not in first]
            values = "  ".join(f"{k}={fmt_value(t.last.values[k], device_units.get(k))}"
                               for k in keys)
        table.add_row(name, driver, str(scans), str(t.bad_points), str(t.polled),
                      str(t.delivered), str(s.received.get(name, 0)), values)
    parts: list[Any] = [Panel(head, expand=True), table]
    if logs:
        parts.append(Panel(Text("\n".join(logs), style="dim", no_wrap=True,
                                overflow="ellipsis"), title="log", expand=True))
    return Group(*parts)


def _quiet_libraries() -> Any:
    """amqtt logs every client connect and disconnect; keep only its errors, and restore."""
    names = ("amqtt", "transitions", "pymodbus", "asyncio")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.CRITICAL if n in ("amqtt", "transitions")
                                      else logging.ERROR)

    def restore() -> None:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)

    return restore


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Entry point of `sensegate demo`: 0 after a clean stop (--duration or Ctrl-C)."""
    try:
        return asyncio.run(Demo(args, out or sys.stdout).run())
    except KeyboardInterrupt:
        return ExitCode.OK
