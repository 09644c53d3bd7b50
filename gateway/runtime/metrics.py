"""Prometheus metrics of the gateway and the bridge, and the tiny HTTP server that serves them.

Each daemon builds its own `GatewayMetrics` or `BridgeMetrics`, which owns a dedicated
``CollectorRegistry`` (never the process-global one), so tests and the demo can run several
side by side. The object is always there, whether or not ``metrics.listen`` serves it: every
part updates it the same one way (``metrics.<name>.inc()``), with no "are metrics on?" test.
`serve_metrics` answers ``GET /metrics`` (Prometheus text, or OpenMetrics when
the scraper asks for it) and ``GET /healthz`` (200 ``ok`` / 503 ``unhealthy``) from the
daemon's own asyncio loop: no thread, no extra dependency. Connections are one request each
(HTTP/1.0 semantics, ``Connection: close``), with a time and size limit on the request head.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("sensegate.metrics")

REQUEST_TIMEOUT = 10.0  # seconds to send the request head
MAX_HEAD_BYTES = 16 * 1024


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


# --- HTTP -----------------------------------------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}


def _response(status: int, body: bytes, content_type: str, *, head: bool = False) -> bytes:
    lines = [
        f"HTTP/1.0 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("ascii") + (b"" if head else body)


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    """Request line and headers; None on a malformed, oversized or too slow request."""
    size = 0
    lines: list[str] = []
    while True:
        line = await reader.readline()
        size += len(line)
        if size > MAX_HEAD_BYTES or not line.endswith(b"\n"):
            return None
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            break
        lines.append(text)
    if not lines:
        return None
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


def _handler(
    registry: CollectorRegistry, healthy: Callable[[], bool]
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(_read_head(reader), REQUEST_TIMEOUT)
            except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError):
                head = None
            writer.write(_respond(head, registry, healthy))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return handle


def _respond(
    head: tuple[str, str, dict[str, str]] | None,
    registry: CollectorRegistry,
    healthy: Callable[[], bool],
) -> bytes:
    text = "text/plain; charset=utf-8"
    if head is None:
        return _response(400, b"bad request\n", text)
    method, target, headers = head
    if method not in ("GET", "HEAD"):
        return _response(405, b"method not allowed\n", text)
    is_head = method == "HEAD"
    path = target.split("?", 1)[0]
    if path == "/metrics":
        try:
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            return _response(200, encoder(registry), content_type, head=is_head)
        except Exception:
            log.exception("cannot render metrics")
            return _response(500, b"cannot render metrics\n", text, head=is_head)
    if path == "/healthz":
        try:
            ok = bool(healthy())
        except Exception:
            log.exception("health check failed")
            ok = False
        if ok:
            return _response(200, b"ok\n", text, head=is_head)
        return _response(503, b"unhealthy\n", text, head=is_head)
    return _response(404, b"not found\n", text, head=is_head)


async def serve_metrics(
    registry: CollectorRegistry,
    host: str,
    port: int,
    healthy: Callable[[], bool],
) -> asyncio.Server:
    """Serve ``/metrics`` and ``/healthz`` on ``host:port`` (port 0: any free port).

    Returns the started ``asyncio.Server``; the caller closes it (``server.close()`` then
    ``await server.wait_closed()``). Raises ``OSError`` if the address cannot be bound.
    """
    server = await asyncio.start_server(_handler(registry, healthy), host, port,
                                        limit=MAX_HEAD_BYTES)
    log.info("metrics listening on %s", ", ".join(
        f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.sockets))
    return server
