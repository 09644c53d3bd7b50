"""The bounded HTTP server (gateway/runtime/http.py) and the metrics text cache, on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.runtime.http import HttpServer, Request, Response, head_end, parse_head
from gateway.runtime.metrics import RENDER_GAP_MIN, GatewayMetrics, MetricsText


@pytest.mark.parametrize(
    ("data", "end"),
    [
        pytest.param(b"GET / HTTP/1.0\r\n\r\n", 18, id="crlf"),
        pytest.param(b"GET / HTTP/1.0\n\n", 16, id="lf"),
        pytest.param(b"GET / HTTP/1.0\r\nHost: x\r\n", -1, id="incomplete"),
        pytest.param(b"GET / HTTP/1.0\r\n\r\nextra", 18, id="body ignored"),
    ],
)
def test_head_end(data: bytes, end: int) -> None:
    assert head_end(data) == end


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"GET /metrics?x=1 HTTP/1.1\r\nAccept: text/plain\r\n\r\n",
                     Request("GET", "/metrics", {"accept": "text/plain"}, "x=1"),
                     id="query apart"),
        pytest.param(b"HEAD /healthz HTTP/1.0\n\n", Request("HEAD", "/healthz", {}), id="lf"),
        pytest.param(b"garbage\r\n\r\n", None, id="no version"),
        pytest.param(b"GET / FTP/1.0\r\n\r\n", None, id="not http"),
        pytest.param(b"\r\n\r\n", None, id="empty"),
    ],
)
def test_parse_head(data: bytes, expected: Request | None) -> None:
    assert parse_head(data) == expected


async def ok(request: Request) -> Response:
    return Response(200, b"ok\n")


@pytest.fixture
async def small() -> AsyncIterator[tuple[HttpServer, int]]:
    server = await HttpServer({"/ok": ok}, max_connections=4,
                              request_timeout=0.5).start("127.0.0.1", 0)
    try:
        yield server, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ok HTTP/1.0\r\n\r\n")
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True when the server ends the connection (EOF or reset) without answering."""
    try:
        data = await asyncio.wait_for(reader.read(), 10)
    except ConnectionError:
        return True
    return data == b""


async def test_connections_beyond_the_limit_are_closed_at_once(
        small: tuple[HttpServer, int]) -> None:
    server, port = small
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    for _ in range(100):  # the server has seen all four
        if server.open_connections == 4:
            break
        await asyncio.sleep(0.01)
    assert server.open_connections == 4
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ok HTTP/1.0\r\n\r\n")
    assert await closed_by_server(reader)
    writer.close()
    assert server.refused == 1
    # one idle connection goes away: a new request is served again
    idle[0][1].close()
    for _ in range(100):
        if server.open_connections < 4:
            break
        await asyncio.sleep(0.01)
    assert (await get(port)).endswith(b"\r\n\r\nok\n")
    for _, w in idle[1:]:
        w.close()


async def test_a_silent_client_is_dropped_after_the_request_time(
        small: tuple[HttpServer, int]) -> None:
    server, port = small
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ok HTTP/1.0\r\n")  # never finishes its head
    assert await closed_by_server(reader)
    writer.close()
    assert server.open_connections == 0


async def test_a_client_that_stops_sending_gets_400(small: tuple[HttpServer, int]) -> None:
    _, port = small
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ok HTTP/1.0\r\n")
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.startswith(b"HTTP/1.0 400 Bad Request\r\n")


async def test_many_requests_at_once_each_answered_or_refused() -> None:
    release = asyncio.Event()

    async def held(request: Request) -> Response:
        await release.wait()
        return Response(200, b"ok\n")

    server = await HttpServer({"/ok": held}, max_connections=8).start("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def one() -> str:
        try:
            data = await get(port)
        except ConnectionError:
            return "refused"
        return "ok" if data.endswith(b"ok\n") else "refused" if data == b"" else "other"

    clients = [asyncio.create_task(one()) for _ in range(30)]  # within the listen backlog
    try:
        for _ in range(500):
            if server.open_connections + server.refused == 30:
                break
            await asyncio.sleep(0.01)
        assert (server.open_connections, server.refused) == (8, 22)
        release.set()
        results = await asyncio.gather(*clients)
    finally:
        server.close()
        await server.wait_closed()
    assert sorted(results) == ["ok"] * 8 + ["refused"] * 22
    assert server.open_connections == 0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_metrics_text_is_rendered_once_for_a_burst() -> None:
    metrics = GatewayMetrics()
    metrics.scans_total.labels("rws-1").inc(3)
    clock = Clock()
    text = MetricsText(metrics.registry, clock)
    bodies = [text.get("") for _ in range(50)]
    assert text.renders == 1
    assert all(b'sensegate_scans_total{device="rws-1"} 3.0' in body for body, _ in bodies)


def test_metrics_text_is_rendered_again_when_old() -> None:
    metrics = GatewayMetrics()
    clock = Clock()
    text = MetricsText(metrics.registry, clock)
    text.get("")
    metrics.scans_total.labels("rws-1").inc(7)
    assert b'device="rws-1"' not in text.get("")[0]  # served again: younger than the gap
    clock.now += 2 * RENDER_GAP_MIN
    assert b'sensegate_scans_total{device="rws-1"} 7.0' in text.get("")[0]
    assert text.renders == 2


def test_metrics_text_keeps_each_format_apart() -> None:
    text = MetricsText(GatewayMetrics().registry, Clock())
    body, content_type = text.get("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    body, content_type = text.get("text/plain")
    assert content_type.startswith("text/plain; version=0.0.4")
    assert not body.endswith(b"# EOF\n")
