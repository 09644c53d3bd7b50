"""Metrics: registries, and the /metrics and /healthz server on a real loopback port."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from gateway.runtime.metrics import (
    BridgeMetrics,
    Counter,
    GatewayMetrics,
    Gauge,
    Registry,
    render,
    serve_metrics,
)


def text_of(registry: Registry) -> str:
    return render(registry).decode()


def sample(registry: Registry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels or None)


def test_gateway_metrics_are_independent() -> None:
    one, two = GatewayMetrics(), GatewayMetrics()  # a dedicated registry each: no clash
    one.scans_total.labels("rws-1").inc()
    one.device_errors_total.labels("rws-1", "timeout").inc(2)
    one.mqtt_connected.set(1)
    assert sample(one.registry, "sensegate_scans_total", device="rws-1") == 1
    assert sample(one.registry, "sensegate_device_errors_total", device="rws-1",
                  kind="timeout") == 2
    assert sample(one.registry, "sensegate_mqtt_connected") == 1
    assert sample(two.registry, "sensegate_scans_total", device="rws-1") is None


def test_gateway_metric_names() -> None:
    text = text_of(GatewayMetrics().registry)
    for name in ("sensegate_outbox_pending_readings", "sensegate_outbox_pending_messages",
                 "sensegate_outbox_bytes", "sensegate_outbox_dropped_total",
                 "sensegate_outbox_oldest_age_seconds", "sensegate_published_messages_total",
                 "sensegate_published_readings_total", "sensegate_publish_errors_total",
                 "sensegate_mqtt_connected", "sensegate_scans_total",
                 "sensegate_scan_overruns_total", "sensegate_device_errors_total"):
        assert f"# TYPE {name} " in text, name


@pytest.mark.parametrize(
    ("totals", "expected"),
    [
        pytest.param([0, 3, 3, 10], 10, id="advances by the difference"),
        pytest.param([5, 2, 4], 7, id="smaller total is a new base"),
    ],
)
def test_set_outbox_dropped(totals: list[int], expected: float) -> None:
    metrics = GatewayMetrics()
    for total in totals:
        metrics.set_outbox(pending_readings=4, pending_messages=2, size_bytes=100,
                           dropped_total=total, oldest_age=1.5)
    assert sample(metrics.registry, "sensegate_outbox_dropped_total") == expected
    assert sample(metrics.registry, "sensegate_outbox_pending_readings") == 4
    assert sample(metrics.registry, "sensegate_outbox_bytes") == 100
    assert sample(metrics.registry, "sensegate_outbox_oldest_age_seconds") == 1.5


def test_forget_device() -> None:
    metrics = GatewayMetrics()
    for device in ("a", "b"):
        metrics.scans_total.labels(device).inc()
        metrics.device_errors_total.labels(device, "crc").inc()
        metrics.device_errors_total.labels(device, "timeout").inc()
    metrics.forget_device("a")
    metrics.forget_device("never-seen")
    text = text_of(metrics.registry)
    assert 'device="a"' not in text
    assert sample(metrics.registry, "sensegate_device_errors_total", device="b", kind="crc") == 1


def test_bridge_metrics() -> None:
    metrics = BridgeMetrics()
    metrics.dead_letters_total.labels("bad_json").inc()
    metrics.points_written_total.inc(5000)
    metrics.influx_up.set(1)
    assert sample(metrics.registry, "sensegate_bridge_dead_letters_total",
                  reason="bad_json") == 1
    assert sample(metrics.registry, "sensegate_bridge_points_written_total") == 5000
    text = text_of(metrics.registry)
    for name in ("messages", "write_errors", "write_batches", "mqtt_connected", "influx_up",
                 "pending_points", "reading_paused"):
        assert f"sensegate_bridge_{name}" in text


# --- the text formats, read by prometheus_client's own parsers --------------------------


def odd_registry() -> Registry:
    registry = Registry()
    Counter("events", "Things that\nhappened \\ here", ["where"], namespace="t",
            registry=registry).labels('a "quoted"\\path\nline').inc(2.5)
    Gauge("level", "A level", namespace="t", registry=registry).set(float("inf"))
    Counter("never", "No series yet", ["x"], namespace="t", registry=registry)
    return registry


def test_prometheus_text_parses_back() -> None:
    families = {f.name: f for f in parse_text(render(odd_registry()).decode())}
    assert families["t_events"].type == "counter"
    assert families["t_events"].documentation == "Things that\nhappened \\ here"
    [events] = families["t_events"].samples
    assert (events.name, events.labels, events.value) == (
        "t_events_total", {"where": 'a "quoted"\\path\nline'}, 2.5)
    assert families["t_level"].samples[0].value == float("inf")
    assert families["t_never"].samples == []


def test_openmetrics_text_parses_back() -> None:
    text = render(odd_registry(), openmetrics=True).decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(text)}
    assert families["t_events"].samples[0].value == 2.5
    assert families["t_events"].samples[0].labels == {"where": 'a "quoted"\\path\nline'}
    assert families["t_level"].type == "gauge"


def test_every_daemon_metric_parses_in_both_formats() -> None:
    for metrics in (GatewayMetrics(), BridgeMetrics()):
        names = {f.name for f in metrics.registry.collect()}
        assert {f.name for f in parse_text(render(metrics.registry).decode())} == names
        text = render(metrics.registry, openmetrics=True).decode()
        assert {f.name for f in parse_openmetrics(text)} == names


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda m: m.scans_total.inc(), "has labels", id="labelled without labels"),
        pytest.param(lambda m: m.scans_total.labels("a", "b"), "takes labels", id="too many"),
        pytest.param(lambda m: m.outbox_dropped_total.inc(-1), "only goes up", id="down"),
        pytest.param(lambda m: Counter("scans", "again", ["device"], namespace="sensegate",
                                       registry=m.registry), "duplicate", id="duplicate"),
    ],
)
def test_misuse_is_refused(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=message):
        call(GatewayMetrics())


# --- server -----------------------------------------------------------------------------

class Health:
    """The daemon's health check: ``ok`` True, False, or None to make the check raise."""

    def __init__(self) -> None:
        self.ok: bool | None = True

    def __call__(self) -> bool:
        if self.ok is None:
            raise RuntimeError("boom")
        return self.ok


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, GatewayMetrics, Health]]:
    metrics = GatewayMetrics()
    metrics.scans_total.labels("rws-1").inc(3)
    health = Health()
    srv = await serve_metrics(metrics.registry, "127.0.0.1", 0, health)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield port, metrics, health
    finally:
        srv.close()
        await srv.wait_closed()


async def raw(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return status, headers, body


@pytest.mark.parametrize(
    ("request_", "status", "body"),
    [
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.0 200 OK", b"ok\n",
                     id="healthz"),
        pytest.param(b"GET /nope HTTP/1.0\r\n\r\n", "HTTP/1.0 404 Not Found", b"not found\n",
                     id="unknown path"),
        pytest.param(b"POST /metrics HTTP/1.0\r\n\r\n", "HTTP/1.0 405 Method Not Allowed",
                     b"method not allowed\n", id="post"),
        pytest.param(b"garbage\r\n\r\n", "HTTP/1.0 400 Bad Request", b"bad request\n",
                     id="malformed"),
        pytest.param(b"HEAD /healthz HTTP/1.0\r\n\r\n", "HTTP/1.0 200 OK", b"", id="head"),
        pytest.param(b"GET /healthz?verbose=1 HTTP/1.0\r\n\r\n", "HTTP/1.0 200 OK", b"ok\n",
                     id="query string"),
        pytest.param(b"GET /" + b"a" * 20000 + b" HTTP/1.0\r\n\r\n", "HTTP/1.0 400 Bad Request",
                     b"bad request\n", id="oversized head"),
    ],
)
async def test_server_routes(server: tuple[int, GatewayMetrics, Health], request_: bytes,
                             status: str, body: bytes) -> None:
    got_status, headers, got_body = await raw(server[0], request_)
    assert (got_status, got_body) == (status, body)
    assert headers["connection"] == "close"


async def test_metrics_text(server: tuple[int, GatewayMetrics, Health]) -> None:
    status, headers, body = await raw(server[0], b"GET /metrics HTTP/1.0\r\n\r\n")
    assert status == "HTTP/1.0 200 OK"
    assert headers["content-type"].startswith("text/plain")
    assert int(headers["content-length"]) == len(body)
    assert 'sensegate_scans_total{device="rws-1"} 3.0' in body.decode()


async def test_metrics_openmetrics(server: tuple[int, GatewayMetrics, Health]) -> None:
    status, headers, body = await raw(
        server[0],
        b"GET /metrics HTTP/1.0\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n")
    assert status == "HTTP/1.0 200 OK"
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


@pytest.mark.parametrize(
    "ok",
    [pytest.param(False, id="unhealthy"), pytest.param(None, id="check raises")],
)
async def test_healthz_unhealthy(server: tuple[int, GatewayMetrics, Health],
                                 ok: bool | None) -> None:
    port, _, health = server
    health.ok = ok
    status, _, body = await raw(port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert (status, body) == ("HTTP/1.0 503 Service Unavailable", b"unhealthy\n")


async def test_with_urllib(server: tuple[int, GatewayMetrics, Health]) -> None:
    port, metrics, _ = server
    metrics.mqtt_connected.set(1)

    def fetch() -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            return resp.status, resp.read().decode()

    code, text = await asyncio.to_thread(fetch)
    assert code == 200
    assert "sensegate_mqtt_connected 1.0" in text


async def test_bind_failure_raises() -> None:
    first = await serve_metrics(Registry(), "127.0.0.1", 0, lambda: True)
    port = first.sockets[0].getsockname()[1]
    try:
        with pytest.raises(OSError):
            await serve_metrics(Registry(), "127.0.0.1", port, lambda: True)
    finally:
        first.close()
        await first.wait_closed()

