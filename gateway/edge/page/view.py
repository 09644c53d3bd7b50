"""The technician's page as data: what each table shows, as text, from the daemon's stats.

Pure: no I/O, no HTML. `main_view` and `device_view` turn a `PageState` (a snapshot the
daemon assembles: config, scheduler stats, outbox stats, publisher state, the scan journal
and the last warnings) into rows of already formatted text; gateway/edge/page/render.py
makes HTML of them. Nothing here reads a secret: the views are built from names, addresses,
counters and driver error messages only; the free texts (error messages, warnings, the
broker's last error) pass through the secret scrubber here, before any escaping, and the
routes scrub the whole answer again.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.core.bustime import estimate_bus
from gateway.core.decode import decode_all_orders, format_raw, is_multi_register
from gateway.core.model import BYTE_ORDERS, DeviceConfig, GatewayConfig, PointConfig
from gateway.core.plan import plan_device
from gateway.core.secrets import scrub
from gateway.core.units import format_age as age

from .journal import HOUR, DeviceJournal, ErrorEntry, WarningEntry

MAX_VALUES = 300  # points shown on the main page; the rest are on the device pages

# What an error means for the technician on site, by DriverError.kind.
KIND_MEANINGS: dict[str, str] = {
    "timeout": "no answer: check the unit id, the wiring (A/B swapped?), baud rate and "
               "parity, and that the device is powered",
    "late": "the answer came after the timeout: raise the device's timeout",
    "connection": "cannot reach the device: check its address and port, the cable, and "
                  "that no other master holds its only connection",
    "crc": "the frame arrived damaged: wiring, termination or grounding of the line, or "
           "two devices with the same unit id",
    "frame": "an answer that is not a valid Modbus response: another device with the same "
             "unit id, or the wrong protocol (RTU vs TCP)",
    "noise": "bytes on the line that belong to no frame: wiring, termination, or another "
             "master on the bus",
    "parse": "a record that does not match the device's pattern",
    "hang": "the scan did not finish: see the log",
    "exception": "the device refused the request (Modbus exception)",
    "io": "input/output error: see the log",
}
# Modbus exception codes (Modbus Application Protocol V1.1b3, §7) and what to check.
EXCEPTION_MEANINGS: dict[int, str] = {
    1: "illegal function: the device does not support reading this table",
    2: "illegal data address: the device has no register there; check the point's table "
       "and 0-based address (register 40001 is holding 0)",
    3: "illegal data value: the device refuses this request size; lower max_registers or "
       "max_gap",
    4: "server device failure: the device failed while answering",
    5: "acknowledge: the device accepted a long-running request",
    6: "server device busy: poll it less often",
    7: "negative acknowledge: the device cannot perform the request",
    8: "memory parity error: the device's memory is faulty",
    10: "gateway path unavailable: the Modbus gateway has no route to this unit",
    11: "gateway target device failed to respond: check the unit id and the serial side "
        "of the Modbus gateway",
}

STATE_CLASSES = {"ok": "ok", "partial": "warn", "failing": "bad", "backed off": "bad",
                 "waiting": "idle"}


def meaning(kind: str, code: int | None) -> str:
    """What an error of ``kind`` (with Modbus exception ``code``) means on site."""
    if kind == "exception" and code is not None and code in EXCEPTION_MEANINGS:
        return EXCEPTION_MEANINGS[code]
    return KIND_MEANINGS.get(kind, "")


# -- the snapshot the daemon hands over ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceCounters:
    """The scheduler's figures of one device (a subset of edge.scheduler.DeviceStats)."""

    scans: int = 0
    last_ok: float | None = None  # wall time of the last scan that got an answer
    consecutive_failures: int = 0
    backoff: int = 1  # 1 = polled every interval


@dataclass(frozen=True, slots=True)
class BrokerState:
    address: str  # host:port
    connected: bool
    since: float  # wall time of the last connect or disconnect
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxState:
    pending_readings: int
    oldest_age_s: float | None
    dropped: int
    bytes: int
    problem: str | None = None  # why the outbox is unhealthy now (commits fail, losses)


@dataclass(frozen=True, slots=True)
class ConfigFacts:
    """What the page derives from the config alone: computed once per config (planning
    1,000 devices' requests takes a good part of a second), not per request."""

    requests: Mapping[str, str]  # device -> read requests per scan ("stream" for a sensor)
    bus_utilisation: Mapping[str, float]  # bus -> estimated share of the line's time


def config_facts(config: GatewayConfig) -> ConfigFacts:
    return ConfigFacts(
        requests={d.name: requests_per_scan(d) for d in config.devices},
        bus_utilisation={b.name: estimate_bus(b, config.devices).utilisation
                         for b in config.buses},
    )


@dataclass(frozen=True, slots=True)
class PageState:
    now: float  # wall time
    config: GatewayConfig
    version: str
    started_at: float  # wall time the daemon started
    config_hash: str  # sha256 hex of the config file
    broker: BrokerState
    outbox: OutboxState
    counters: Mapping[str, DeviceCounters]
    journal: Mapping[str, DeviceJournal]
    warnings: Sequence[WarningEntry] = ()
    refresh: float = 2.0  # seconds between the page's refreshes
    facts: ConfigFacts | None = None  # config_facts(config), when the caller keeps it

    def config_facts(self) -> ConfigFacts:
        return self.facts if self.facts is not None else config_facts(self.config)


def refresh_interval(config: GatewayConfig) -> float:
    """Seconds between the page's refreshes: the fastest device's interval, 1 to 5 s."""
    fastest = min((d.interval for d in config.devices), default=5.0)
    return min(5.0, max(1.0, fastest))


# -- text ------------------------------------------------------------------------------------


def clock(at: float) -> str:
    """``2026-12-02 10:55:19Z``: wall time in UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))


def value_text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def size_text(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} B"


def percent(share: float) -> str:
    return "∞" if math.isinf(share) else f"{share * 100:.0f} %"


# -- the views -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fact:
    label: str
    text: str
    cls: str = ""  # ok | warn | bad | idle | ""
    title: str = ""  # the full text when ``text`` is shortened


@dataclass(frozen=True, slots=True)
class DeviceRow:
    name: str
    driver: str
    where: str
    state: str
    cls: str
    last_good: str  # age of the last good scan
    errors_hour: int
    last_error: str
    last_meaning: str
    requests: str  # per scan
    response: str  # the last scan's duration


@dataclass(frozen=True, slots=True)
class BusRow:
    name: str
    port: str
    devices: int
    estimated: str  # utilisation from the Modbus serial timing (core.bustime)
    measured: str  # Σ last scan time / interval of its devices
    cls: str


@dataclass(frozen=True, slots=True)
class ValueCell:
    point: str
    text: str
    unit: str
    quality: str


@dataclass(frozen=True, slots=True)
class ValueGroup:
    device: str
    values: tuple[ValueCell, ...]


@dataclass(frozen=True, slots=True)
class WarningRow:
    at: str
    level: str
    message: str


@dataclass(frozen=True, slots=True)
class MainView:
    gateway_id: str
    facts: tuple[Fact, ...]
    devices: tuple[DeviceRow, ...]
    buses: tuple[BusRow, ...]
    values: tuple[ValueGroup, ...]
    values_left_out: int
    warnings: tuple[WarningRow, ...]
    layout: str  # changes when the set of rows changes (the page then reloads whole)
    refresh: float


@dataclass(frozen=True, slots=True)
class PointRow:
    name: str
    location: str  # ``holding 2`` (+ ``bit 3``), or ``pattern`` for serial-line points
    type: str  # ``float32 CDAB``
    raw: str
    value: str
    unit: str
    quality: str
    byte_order: str  # the configured one
    orders: tuple[tuple[str, str], ...]  # (byte order, value) when the order matters


@dataclass(frozen=True, slots=True)
class ErrorRow:
    at: str
    kind: str
    message: str
    meaning: str


@dataclass(frozen=True, slots=True)
class DeviceView:
    gateway_id: str
    name: str
    facts: tuple[Fact, ...]
    points: tuple[PointRow, ...]
    raw_at: str  # when the raw registers shown were read
    errors: tuple[ErrorRow, ...]
    layout: str
    refresh: float
    byte_orders: tuple[str, ...] = field(default=())


def device_where(device: DeviceConfig) -> str:
    """Where the device is reached: ``rs485-a unit 7``, ``10.0.0.21:502 unit 1``, a port."""
    if device.driver == "modbus-rtu":
        return f"{device.bus} unit {device.unit}"
    if device.driver in ("modbus-tcp", "modbus-rtu-over-tcp"):
        return f"{device.host}:{device.port or 502} unit {device.unit}"
    return device.serial.port if device.serial is not None else ""


def requests_per_scan(device: DeviceConfig) -> str:
    if device.driver == "serial-line":
        return "1" if device.request else "stream"
    return str(len(plan_device(device)))


def device_state(counters: DeviceCounters | None, journal: DeviceJournal | None) -> str:
    if journal is None or journal.reading is None:
        return "waiting"
    if counters is not None and counters.backoff > 1:
        return "backed off"
    if journal.last_errors == 0:
        return "ok"
    reading = journal.reading
    answered = bool(reading.values) or any(q != "bad" for q in reading.quality.values())
    return "partial" if answered else "failing"


def _last_error(journal: DeviceJournal | None) -> ErrorEntry | None:
    if journal is None or not journal.errors:
        return None
    return journal.errors[-1]


def device_row(state: PageState, device: DeviceConfig,
               facts: ConfigFacts | None = None) -> DeviceRow:
    counters = state.counters.get(device.name)
    journal = state.journal.get(device.name)
    status = device_state(counters, journal)
    last_ok = counters.last_ok if counters is not None else None
    error = _last_error(journal)
    failing_now = journal is not None and journal.last_errors > 0
    last_error = ""
    if error is not None:
        last_error = scrub(error.message) if failing_now else \
            f"{scrub(error.message)} ({age(state.now - error.at)} ago)"
    return DeviceRow(
        name=device.name,
        driver=device.driver,
        where=device_where(device),
        state=status if counters is None or counters.backoff <= 1
        else f"backed off (every {counters.backoff * device.interval:g} s)",
        cls=STATE_CLASSES[status],
        last_good="never" if last_ok is None else f"{age(state.now - last_ok)} ago",
        errors_hour=journal.errors_since(state.now - HOUR) if journal is not None else 0,
        last_error=last_error,
        last_meaning="" if error is None else meaning(error.kind, error.code),
        requests=facts.requests.get(device.name, "—") if facts is not None
        else requests_per_scan(device),
        response="—" if journal is None or journal.duration is None
        else f"{journal.duration * 1000:.0f} ms",
    )


def bus_rows(state: PageState, facts: ConfigFacts) -> tuple[BusRow, ...]:
    rows = []
    for bus in state.config.buses:
        estimated = facts.bus_utilisation.get(bus.name, 0.0)
        on_bus = [d for d in state.config.devices
                  if d.driver == "modbus-rtu" and d.bus == bus.name]
        measured = 0.0
        seen = False
        for device in on_bus:
            journal = state.journal.get(device.name)
            if journal is not None and journal.duration is not None and device.interval > 0:
                measured += journal.duration / device.interval
                seen = True
        worst = max(estimated, measured)
        rows.append(BusRow(
            name=bus.name, port=bus.serial.port, devices=len(on_bus),
            estimated=percent(estimated),
            measured=percent(measured) if seen else "—",
            cls="bad" if worst > 1.0 else "warn" if worst > 0.7 else "ok",
        ))
    return tuple(rows)


def value_groups(state: PageState) -> tuple[tuple[ValueGroup, ...], int]:
    groups = []
    shown = 0
    left_out = 0
    for device in state.config.devices:
        journal = state.journal.get(device.name)
        reading = journal.reading if journal is not None else None
        cells = []
        for point in device.points:
            if shown >= MAX_VALUES:
                left_out += 1
                continue
            shown += 1
            if reading is None:
                cells.append(ValueCell(point.name, "—", point.unit or "", "waiting"))
                continue
            cells.append(ValueCell(
                point.name, value_text(reading.values.get(point.name)), point.unit or "",
                reading.quality.get(point.name, "good"),
            ))
        if cells:
            groups.append(ValueGroup(device.name, tuple(cells)))
    return tuple(groups), left_out


def layout_key(*parts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update("\x1f".join(part).encode("utf-8"))
        digest.update(b"\x1e")
    return digest.hexdigest()[:16]


def devices_fact(rows: Sequence[DeviceRow]) -> Fact:
    """``3 devices: 2 ok, 1 partial``: the first thing to read on a phone."""
    counts: dict[str, int] = {}
    for row in rows:
        key = "backed off" if row.state.startswith("backed off") else row.state
        counts[key] = counts.get(key, 0) + 1
    parts = [f"{counts[s]} {s}" for s in STATE_CLASSES if s in counts]
    worst = next((STATE_CLASSES[s] for s in ("failing", "backed off", "partial")
                  if s in counts), "ok")
    return Fact("devices", f"{len(rows)}: " + ", ".join(parts) if rows else "none", worst)


def gateway_facts(state: PageState, rows: Sequence[DeviceRow] = ()) -> tuple[Fact, ...]:
    broker = state.broker
    outbox = state.outbox
    if broker.connected:
        link = Fact("broker", f"connected to {broker.address} for "
                    f"{age(state.now - broker.since)}", "ok")
    else:
        why = f": {scrub(broker.last_error)}" if broker.last_error else ""
        link = Fact("broker", f"disconnected from {broker.address} for "
                    f"{age(state.now - broker.since)}{why}", "bad")
    backlog = outbox.pending_readings
    if backlog:
        oldest = age(outbox.oldest_age_s) if outbox.oldest_age_s is not None else "—"
        queued = f"{backlog} readings pending, oldest {oldest}"
    else:
        queued = "empty"
    return (
        devices_fact(rows),
        Fact("version", state.version),
        Fact("uptime", age(state.now - state.started_at), title=clock(state.started_at)),
        Fact("config", state.config_hash[:12], title=f"sha256 {state.config_hash}"),
        link,
        Fact("outbox", f"{outbox.problem}; {queued}" if outbox.problem
             else f"{queued}, {size_text(outbox.bytes)} on disk",
             "bad" if outbox.problem else "ok" if backlog < 1000 else "warn"),
        Fact("dropped", str(outbox.dropped), "ok" if outbox.dropped == 0 else "warn"),
    )


def main_view(state: PageState) -> MainView:
    config = state.config
    values, left_out = value_groups(state)
    warnings = tuple(
        WarningRow(clock(w.at), w.level, scrub(w.message)) for w in reversed(state.warnings)
    )
    facts = state.config_facts()
    rows = tuple(device_row(state, d, facts) for d in config.devices)
    return MainView(
        gateway_id=config.id,
        facts=gateway_facts(state, rows),
        devices=rows,
        buses=bus_rows(state, facts),
        values=values,
        values_left_out=left_out,
        warnings=warnings,
        layout=layout_key(
            [d.name for d in config.devices], [b.name for b in config.buses],
            [f"{g.device}.{v.point}" for g in values for v in g.values],
        ),
        refresh=state.refresh,
    )


def point_location(point: PointConfig) -> str:
    if point.table is None:
        return "pattern"
    where = f"{point.table} {point.address}"
    if point.bit is not None:
        where += f" bit {point.bit}"
    return where


def point_type(point: PointConfig) -> str:
    if point.type == "string":
        return f"string[{point.length or 1}]"
    if point.table in ("holding", "input") and point.bit is None and point.type != "bool":
        return f"{point.type} {point.byte_order}"
    return point.type


def point_row(point: PointConfig, journal: DeviceJournal | None) -> PointRow:
    reading = journal.raw_reading if journal is not None else None
    raw = journal.raw.get(point.name) if journal is not None else None
    orders: tuple[tuple[str, str], ...] = ()
    if raw is not None and is_multi_register(point):
        decoded = decode_all_orders(point, raw, four_only=True)
        orders = tuple((order, value_text(v)) for order, v in decoded.items())
    if reading is None:
        value, quality = "—", "waiting"
    else:
        value = value_text(reading.values.get(point.name))
        quality = reading.quality.get(point.name, "good")
    return PointRow(
        name=point.name, location=point_location(point), type=point_type(point),
        raw=format_raw(point, raw) if raw is not None else "—",
        value=value, unit=point.unit or "", quality=quality, byte_order=point.byte_order,
        orders=orders,
    )


def device_view(state: PageState, name: str) -> DeviceView | None:
    """The page of device ``name``; None when the config has no such device."""
    device = next((d for d in state.config.devices if d.name == name), None)
    if device is None:
        return None
    row = device_row(state, device)
    journal = state.journal.get(name)
    raw_reading = journal.raw_reading if journal is not None else None
    facts = (
        Fact("state", row.state, row.cls),
        Fact("driver", device.driver),
        Fact("where", row.where),
        Fact("interval", f"{device.interval:g} s"),
        Fact("timeout", f"{device.timeout:g} s, retries {device.retries}"),
        Fact("last good scan", row.last_good),
        Fact("errors in the last hour", str(row.errors_hour),
             "ok" if row.errors_hour == 0 else "bad"),
        Fact("requests per scan", row.requests),
        Fact("response time", row.response),
    )
    errors = tuple(
        ErrorRow(clock(e.at), e.kind if e.code is None else f"{e.kind} {e.code}",
                 scrub(e.message), meaning(e.kind, e.code))
        for e in reversed(journal.errors if journal is not None else ())
    )
    return DeviceView(
        gateway_id=state.config.id,
        name=name,
        facts=facts,
        points=tuple(point_row(p, journal) for p in device.points),
        raw_at="" if raw_reading is None else clock(raw_reading.ts / 1e9),
        errors=errors,
        layout=layout_key([name], [p.name for p in device.points]),
        refresh=state.refresh,
        byte_orders=tuple(BYTE_ORDERS),
    )
