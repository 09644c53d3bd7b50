"""Prometheus metrics of the gateway and the bridge, and how they are served.

Each daemon builds its own `GatewayMetrics` or `BridgeMetrics`, which owns a dedicated
`Registry`, so tests and the demo can run several side by side. The object is always there,
whether or not ``metrics.listen`` serves it: every part updates it the same one way
(``metrics.<name>.inc()``), with no "are metrics on?" test.

The counters and gauges are this module's own, not prometheus_client's: the daemons need
two metric types, labels and the two text formats, and prometheus_client brings an HTTP
server, WSGI, urllib and multiprocess support into every gateway process (about 1 MB of
RSS and 20 ms of start-up for code never run; see docs/benchmarks.md). The output is the
Prometheus text format 0.0.4, or OpenMetrics 1.0.0 when the scraper asks for it; the unit
tests parse both with prometheus_client's own parsers.

`serve_metrics` answers ``GET /metrics`` and ``GET /healthz`` (200 ``ok`` / 503
``unhealthy``) from the daemon's own asyncio loop through gateway/runtime/http.py, which
bounds connections, request time and size; the text is rendered at a bounded rate
(`MetricsText`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from gateway.runtime.http import HttpServer, Request, Response, Route

log = logging.getLogger("sensegate.metrics")

TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_FORMAT = "application/openmetrics-text; version=1.0.0; charset=utf-8"


# -- the metric types ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    name: str  # as exposed: a counter's ends in _total
    labels: dict[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # without a counter's _total
    type: str  # "counter" or "gauge"
    documentation: str
    samples: list[Sample] = field(default_factory=list)


class _Child:
    """One labelled series: a number that is only ever replaced (atomic under the GIL)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount

    def set(self, value: float) -> None:
        self.value = float(value)


class _Metric:
    type = ""
    suffix = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        namespace: str = "",
        registry: Registry,
    ) -> None:
        self.name = f"{namespace}_{name}" if namespace else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _Child] = {}
        self._lock = threading.Lock()  # the set of series; values are plain floats
        if not self.labelnames:
            self._children[()] = _Child()
        registry.register(self)

    def labels(self, *values: str, **by_name: str) -> _Child:
        if by_name:
            if values:
                raise ValueError("labels by position or by name, not both")
            values = tuple(by_name[n] for n in self.labelnames)
        if len(values) != len(self.labelnames) or not values:
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, _Child())
        return child

    def remove(self, *values: str) -> None:
        """Drop one series; KeyError when there is no such series."""
        with self._lock:
            del self._children[tuple(str(v) for v in values)]

    @property
    def value(self) -> float:
        """The current value of an unlabelled metric (``.labels(...).value`` for a series)."""
        return self._only().value

    def _only(self) -> _Child:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {self.labelnames}: use .labels()")
        return self._children[()]

    def collect(self) -> Family:
        with self._lock:
            series = list(self._children.items())
        return Family(self.name, self.type, self.documentation, [
            Sample(self.name + self.suffix, dict(zip(self.labelnames, key, strict=True)),
                   child.value)
            for key, child in series
        ])


class Counter(_Metric):
    type = "counter"
    suffix = "_total"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 *, namespace: str = "", registry: Registry) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames,
                         namespace=namespace, registry=registry)

    def inc(self, amount: float = 1.0) -> None:
        self._only().inc(amount)


class Gauge(_Metric):
    type = "gauge"

    def set(self, value: float) -> None:
        self._only().set(value)


class Registry:
    """The metrics of one daemon, and their text."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def register(self, metric: _Metric) -> None:
        if any(m.name == metric.name for m in self._metrics):
            raise ValueError(f"duplicate metric {metric.name}")
        self._metrics.append(metric)

    def collect(self) -> list[Family]:
        return [m.collect() for m in self._metrics]

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The value of one exposed sample (``sensegate_scans_total``), None if absent."""
        for family in self.collect():
            for sample in family.samples:
                if sample.name == name and sample.labels == (labels or {}):
                    return sample.value
        return None


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _sample_lines(samples: Iterable[Sample]) -> Iterable[str]:
    for s in samples:
        if s.labels:
            labels = ",".join(f'{k}="{_label_value(v)}"' for k, v in s.labels.items())
            yield f"{s.name}{{{labels}}} {_number(s.value)}\n"
        else:
            yield f"{s.name} {_number(s.value)}\n"


def render(registry: Registry, *, openmetrics: bool = False) -> bytes:
    """The registry as Prometheus text 0.0.4, or as OpenMetrics 1.0.0."""
    out: list[str] = []
    for family in registry.collect():
        # Prometheus text names a counter's family as its samples; OpenMetrics without _total.
        counter_text = family.type == "counter" and not openmetrics
        name = family.name + "_total" if counter_text else family.name
        out.append(f"# HELP {name} {_help(family.documentation)}\n")
        out.append(f"# TYPE {name} {family.type}\n")
        out.extend(_sample_lines(family.samples))
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8")


def wants_openmetrics(accept: str) -> bool:
    return any(part.split(";", 1)[0].strip() == "application/openmetrics-text"
               for part in accept.split(","))


class GatewayMetrics:
    """Metrics of ``sensegate run``: scans, device errors, outbox depth, publishing."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else Registry()
        ns, reg = "sensegate", self.registry
        self.scans_total = Counter(
            "scans", "Device scans completed", ["device"], namespace=ns, registry=reg)
        self.scan_overruns_total = Counter(
            "scan_overruns", "Scans started late or skipped because the previous one overran",
            ["device"], namespace=ns, registry=reg)
        self.device_errors_total = Counter(
            "device_errors", "Failed device requests by kind (timeout, crc, exception, ...)",
            ["device", "kind"], namespace=ns, registry=reg)
        self.outbox_pending_readings = Gauge(
            "outbox_pending_readings", "Readings in the offline buffer not yet acknowledged",
            namespace=ns, registry=reg)
        self.outbox_pending_messages = Gauge(
            "outbox_pending_messages", "Messages in the offline buffer not yet acknowledged",
            namespace=ns, registry=reg)
        self.outbox_bytes = Gauge(
            "outbox_bytes", "Bytes used by the offline buffer", namespace=ns, registry=reg)
        self.outbox_oldest_age_seconds = Gauge(
            "outbox_oldest_age_seconds", "Age of the oldest pending reading (0 when empty)",
            namespace=ns, registry=reg)
        self.outbox_dropped_total = Counter(
            "outbox_dropped", "Readings dropped because the offline buffer was full",
            namespace=ns, registry=reg)
        self.published_messages_total = Counter(
            "published_messages", "Messages acknowledged by the broker",
            namespace=ns, registry=reg)
        self.published_readings_total = Counter(
            "published_readings", "Readings in messages acknowledged by the broker",
            namespace=ns, registry=reg)
        self.publish_errors_total = Counter(
            "publish_errors", "Failed publish attempts and lost broker connections",
            namespace=ns, registry=reg)
        self.mqtt_connected = Gauge(
            "mqtt_connected", "1 while connected to the MQTT broker", namespace=ns, registry=reg)
        self.outbox_commit_errors_total = Counter(
            "outbox_commit_errors", "Outbox commits that failed (disk full, read-only)",
            namespace=ns, registry=reg)
        self.outbox_files_replaced_total = Counter(
            "outbox_files_replaced",
            "Outbox files replaced by a new one while running or at start, by reason "
            "(damaged: moved aside; vanished: deleted or replaced under the gateway)",
            ["reason"], namespace=ns, registry=reg)
        self.outbox_unstored_published_total = Counter(
            "outbox_unstored_published",
            "Readings published straight from memory, at most once, because the disk "
            "refused to store them", namespace=ns, registry=reg)
        self.outbox_healthy = Gauge(
            "outbox_healthy",
            "1 while the outbox commits and loses nothing; 0 while commits fail or readings "
            "were lost in the last minute", namespace=ns, registry=reg)
        self.outbox_healthy.set(1)
        self.commands_total = Counter(
            "commands", "Commands (SPEC §6) by device and outcome: done, refused, failed, "
            "expired, duplicate (answered from the stored result)",
            ["device", "status"], namespace=ns, registry=reg)
        self._dropped_seen = 0

    def set_outbox(
        self,
        *,
        pending_readings: int,
        pending_messages: int,
        size_bytes: int,
        dropped_total: int,
        oldest_age: float = 0.0,
    ) -> None:
        """Update the outbox gauges; ``dropped_total`` is the outbox's cumulative count.

        The counter advances by the difference to the last call, so the outbox may keep
        its own running total (a smaller total, after an outbox reset, is taken as the
        new base).
        """
        self.outbox_pending_readings.set(pending_readings)
        self.outbox_pending_messages.set(pending_messages)
        self.outbox_bytes.set(size_bytes)
        self.outbox_oldest_age_seconds.set(oldest_age)
        if dropped_total > self._dropped_seen:
            self.outbox_dropped_total.inc(dropped_total - self._dropped_seen)
        self._dropped_seen = dropped_total

    def forget_device(self, device: str) -> None:
        """Remove the series of a device a reload took away."""
        for metric in (self.scans_total, self.scan_overruns_total):
            with contextlib.suppress(KeyError):
                metric.remove(device)
        # device_errors_total has a second label: drop every kind of that device
        for sample in self.device_errors_total.collect().samples:
            if sample.labels["device"] == device:
                with contextlib.suppress(KeyError):
                    self.device_errors_total.remove(device, sample.labels["kind"])


class BridgeMetrics:
    """Metrics of ``sensegate bridge``: messages in, points written, dead letters."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else Registry()
        ns, reg = "sensegate_bridge", self.registry
        self.messages_total = Counter(
            "messages", "MQTT messages received", namespace=ns, registry=reg)
        self.points_written_total = Counter(
            "points_written", "Points accepted by InfluxDB", namespace=ns, registry=reg)
        self.write_errors_total = Counter(
            "write_errors", "Failed InfluxDB writes (each retry counts)",
            namespace=ns, registry=reg)
        self.write_batches_total = Counter(
            "write_batches", "Batches accepted by InfluxDB", namespace=ns, registry=reg)
        self.dead_letters_total = Counter(
            "dead_letters", "Messages dead-lettered, by reason", ["reason"],
            namespace=ns, registry=reg)
        self.influx_up = Gauge(
            "influx_up", "1 while the last InfluxDB write succeeded", namespace=ns, registry=reg)
        self.mqtt_connected = Gauge(
            "mqtt_connected", "1 while connected to the MQTT broker", namespace=ns, registry=reg)
        self.pending_points = Gauge(
            "pending_points", "Points in batches waiting for or in an InfluxDB write",
            namespace=ns, registry=reg)
        self.reading_paused = Gauge(
            "reading_paused", "1 while reading the broker is paused for InfluxDB to catch up",
            namespace=ns, registry=reg)

    def connected(self, up: bool) -> None:
        self.mqtt_connected.set(1 if up else 0)

    def write_error(self) -> None:
        self.write_errors_total.inc()
        self.influx_up.set(0)

    def backpressure(self, pending_points: int, paused: bool) -> None:
        self.pending_points.set(pending_points)
        self.reading_paused.set(1 if paused else 0)

    def batch_written(self, points: int) -> None:
        self.points_written_total.inc(points)
        self.write_batches_total.inc()
        self.influx_up.set(1)


# --- serving ---------------------------------------------------------------------------

RENDER_GAP_MIN = 0.1  # seconds: a text rendered less than this long ago is served again ...
RENDER_SHARE = 0.1  # ... and so is one younger than its render time / this share


class MetricsText:
    """The registry rendered for ``/metrics`` at a bounded cost.

    A text younger than ``max(RENDER_GAP_MIN, render time / RENDER_SHARE)`` is served
    again: whatever the scrape rate, rendering takes at most about a tenth of the loop's
    time (1,000 devices render in a few milliseconds), and a scraper sees values at most
    that old.
    """

    def __init__(self, registry: Registry, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.clock = clock
        self.renders = 0
        self._texts: dict[bool, tuple[float, bytes]] = {}  # openmetrics? -> (at, body)
        self._cost = 0.0  # seconds the last render took

    def get(self, accept: str) -> tuple[bytes, str]:
        openmetrics = wants_openmetrics(accept)
        content_type = OPENMETRICS_FORMAT if openmetrics else TEXT_FORMAT
        now = self.clock()
        cached = self._texts.get(openmetrics)
        if cached is not None and now - cached[0] < max(RENDER_GAP_MIN,
                                                        self._cost / RENDER_SHARE):
            return cached[1], content_type
        body = render(self.registry, openmetrics=openmetrics)
        self._cost = self.clock() - now
        self.renders += 1
        self._texts[openmetrics] = (now, body)
        return body, content_type


def metrics_routes(registry: Registry, healthy: Callable[[], bool]) -> dict[str, Route]:
    """The ``/metrics`` and ``/healthz`` routes, for a server that serves more (the page).

    ``/metrics`` is Prometheus text, or OpenMetrics when the scraper asks for it;
    ``/healthz`` is 200 ``ok`` or 503 ``unhealthy`` as ``healthy()`` says (a check that
    raises is unhealthy).
    """
    text = MetricsText(registry)

    async def metrics(request: Request) -> Response:
        try:
            body, content_type = text.get(request.headers.get("accept", ""))
        except Exception:
            log.exception("cannot render metrics")
            return Response(500, b"cannot render metrics\n")
        return Response(200, body, content_type)

    async def health(request: Request) -> Response:
        try:
            ok = bool(healthy())
        except Exception:
            log.exception("health check failed")
            ok = False
        return Response(200, b"ok\n") if ok else Response(503, b"unhealthy\n")

    return {"/metrics": metrics, "/healthz": health}


async def serve_metrics(
    registry: Registry,
    host: str,
    port: int,
    healthy: Callable[[], bool],
) -> HttpServer:
    """Serve ``/metrics`` and ``/healthz`` (`metrics_routes`) on ``host:port`` (port 0: any
    free port).

    Returns the started server; the caller closes it (``close()`` then ``await
    wait_closed()``). Raises ``OSError`` if the address cannot be bound.
    """
    server = await HttpServer(metrics_routes(registry, healthy)).start(host, port)
    log.info("metrics listening on %s", ", ".join(server.addresses()))
    return server
