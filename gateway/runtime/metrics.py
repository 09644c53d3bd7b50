"""Prometheus metrics of the gateway and the bridge, and the tiny HTTP server that serves them.

Each daemon builds its own `GatewayMetrics` or `BridgeMetrics`, which owns a dedicated
``CollectorRegistry`` (never the process-global one), so tests and the demo can run several
side by side. The object is always there, whether or not ``metrics.listen`` serves it: every
part updates it the same one way (``metrics.<name>.inc()``), with no "are metrics on?" test.
`serve_metrics` answers ``GET /metrics`` (Prometheus text, or OpenMetrics when
the scraper asks for it) and ``GET /healthz`` (200 ``ok`` / 503 ``unhealthy``) from the
daemon's own asyncio loop through gateway/runtime/http.py, which bounds connections, request
time and size; the text is rendered in a worker thread at a bounded rate (`MetricsText`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import choose_encoder

from gateway.runtime.http import HttpServer, Request, Response

log = logging.getLogger("sensegate.metrics")


class GatewayMetrics:
    """Metrics of ``sensegate run``: scans, device errors, outbox depth, publishing."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
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
        for labels in [s.labels for m in self.device_errors_total.collect() for s in m.samples
                       if s.name.endswith("_total") and s.labels.get("device") == device]:
            with contextlib.suppress(KeyError):
                self.device_errors_total.remove(device, labels["kind"])


class BridgeMetrics:
    """Metrics of ``sensegate bridge``: messages in, points written, dead letters."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
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
    """The registry rendered for ``/metrics``, off the loop, at a bounded cost.

    Rendering 1,000 devices' series takes tens of milliseconds, so it runs in a worker
    thread, one render at a time: requests that arrive during a render wait for that render,
    and a text younger than ``max(RENDER_GAP_MIN, render time / RENDER_SHARE)`` is served
    again. Whatever the scrape rate, rendering takes at most about a tenth of the process's
    time, and a scraper sees values at most that old.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.renders = 0
        self._texts: dict[str, tuple[float, bytes, str]] = {}  # Accept -> (at, body, type)
        self._inflight: dict[str, asyncio.Task[tuple[bytes, str]]] = {}
        self._cost = 0.0  # seconds the last render took

    def _render(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    async def get(self, accept: str) -> tuple[bytes, str]:
        loop = asyncio.get_running_loop()
        cached = self._texts.get(accept)
        if cached is not None and loop.time() - cached[0] < max(
                RENDER_GAP_MIN, self._cost / RENDER_SHARE):
            return cached[1], cached[2]
        task = self._inflight.get(accept)
        if task is None:  # one render at a time, of its own: a request that goes away
            task = loop.create_task(self._refresh(accept))  # does not cancel it
            self._inflight[accept] = task
            task.add_done_callback(lambda t: self._done(accept, t))
        return await asyncio.shield(task)

    async def _refresh(self, accept: str) -> tuple[bytes, str]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        body, content_type = await asyncio.to_thread(self._render, accept)
        self.renders += 1
        self._cost = loop.time() - started
        self._texts = {accept: (loop.time(), body, content_type)}  # keep one flavour only
        return body, content_type

    def _done(self, accept: str, task: asyncio.Task[tuple[bytes, str]]) -> None:
        self._inflight.pop(accept, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: no warning when every requester left


async def serve_metrics(
    registry: CollectorRegistry,
    host: str,
    port: int,
    healthy: Callable[[], bool],
) -> HttpServer:
    """Serve ``/metrics`` and ``/healthz`` on ``host:port`` (port 0: any free port).

    ``/metrics`` is Prometheus text, or OpenMetrics when the scraper asks for it;
    ``/healthz`` is 200 ``ok`` or 503 ``unhealthy`` as ``healthy()`` says (a check that
    raises is unhealthy). Returns the started server; the caller closes it (``close()`` then
    ``await wait_closed()``). Raises ``OSError`` if the address cannot be bound.
    """
    text = MetricsText(registry)

    async def metrics(request: Request) -> Response:
        try:
            body, content_type = await text.get(request.headers.get("accept", ""))
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

    server = await HttpServer({"/metrics": metrics, "/healthz": health}).start(host, port)
    log.info("metrics listening on %s", ", ".join(server.addresses()))
    return server
