"""Sink error mapping and the dead-letter file (no real store needed)."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.bridge.deadletter import DeadLetters, record
from gateway.bridge.sink import V1Sink, V2Sink, create_database_statement
from gateway.core.errors import SinkError
from gateway.core.model import InfluxConfig, Secret
from gateway.runtime.metrics import BridgeMetrics
from tests.support.certs import Pki, make_pki


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 204
    body = b""
    seen: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).seen.append((self.path, dict(self.headers), data))
        self.send_response(type(self).status)
        self.send_header("Content-Length", str(len(type(self).body)))
        self.end_headers()
        self.wfile.write(type(self).body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_influx() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"seen": [], "status": 204, "body": b""})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        pytest.param(400, False, id="400-rejected"),
        pytest.param(413, False, id="413-too-large"),
        pytest.param(422, False, id="422-unprocessable"),
        pytest.param(401, True, id="401-credentials"),
        pytest.param(404, True, id="404-no-database"),
        pytest.param(429, True, id="429-throttled"),
        pytest.param(500, True, id="500"),
        pytest.param(503, True, id="503"),
    ],
)
async def test_v1_status_mapping(
    fake_influx: tuple[str, type[_Handler]], status: int, retryable: bool
) -> None:
    url, handler = fake_influx
    handler.status = status
    handler.body = json.dumps({"error": "partial write: field type conflict"}).encode()
    sink = V1Sink(InfluxConfig(url=url, api="v1", database="db",
                               username="u", password=Secret("hunter22")))
    with pytest.raises(SinkError) as info:
        await sink.write(b"m x=1")
    assert info.value.retryable is retryable
    assert info.value.status == status
    assert f"answered {status}: partial write: field type conflict" in str(info.value)
    assert "hunter22" not in str(info.value)
    await sink.close()


async def test_v1_request_shape(fake_influx: tuple[str, type[_Handler]]) -> None:
    url, handler = fake_influx
    sink = V1Sink(InfluxConfig(url=url + "/influx/", api="v1", database="city db",
                               retention_policy="rp1", username="u", password=Secret("pw")))
    await sink.write(b"m x=1")
    await sink.write(b"m x=2")  # same kept-alive connection
    path, headers, body = handler.seen[0]
    assert path == "/influx/write?db=city+db&precision=ns&rp=rp1"
    assert headers["Authorization"] == "Basic dTpwdw=="
    assert body == b"m x=1"
    assert len(handler.seen) == 2
    await sink.close()


async def test_v2_request_shape(fake_influx: tuple[str, type[_Handler]]) -> None:
    url, handler = fake_influx
    sink = V2Sink(InfluxConfig(url=url + "/", api="v2", org="city & co", bucket="sensing",
                               token=Secret("tok-123")))
    await sink.write(b"m x=1")
    await sink.write(b"m x=2")
    path, headers, body = handler.seen[0]
    assert path == "/api/v2/write?org=city+%26+co&bucket=sensing&precision=ns"
    assert headers["Authorization"] == "Token tok-123"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body == b"m x=1"
    assert [b for _, _, b in handler.seen] == [b"m x=1", b"m x=2"]
    await sink.close()


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        pytest.param(400, False, id="400-rejected"),
        pytest.param(413, False, id="413-too-large"),
        pytest.param(422, False, id="422-unprocessable"),
        pytest.param(401, True, id="401-token"),
        pytest.param(404, True, id="404-no-bucket"),
        pytest.param(503, True, id="503"),
    ],
)
async def test_v2_status_mapping(
    fake_influx: tuple[str, type[_Handler]], status: int, retryable: bool
) -> None:
    url, handler = fake_influx
    handler.status = status
    handler.body = json.dumps({"code": "invalid", "message": "failure writing points"}).encode()
    sink = V2Sink(InfluxConfig(url=url, api="v2", org="o", bucket="b", token=Secret("t0k3n")))
    with pytest.raises(SinkError) as info:
        await sink.write(b"m x=1")
    assert info.value.retryable is retryable
    assert info.value.status == status
    assert str(info.value) == (f"influxdb v2 {url} answered {status}: failure writing points")
    await sink.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("trusted", [True, False], ids=["test-ca", "other-ca"])
async def test_v2_over_https_verifies_the_server(
    pki: Pki, monkeypatch: pytest.MonkeyPatch, trusted: bool
) -> None:
    handler = type("H", (_Handler,), {"seen": [], "status": 204, "body": b""})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    # the system CAs as OpenSSL finds them: SSL_CERT_FILE names the bundle
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_cert if trusted else pki.other_ca_cert))
    url = f"https://127.0.0.1:{server.server_address[1]}"
    sink = V2Sink(InfluxConfig(url=url, api="v2", org="o", bucket="b", token=Secret("tok")))
    try:
        if trusted:
            await sink.write(b"m x=1")
            assert [b for _, _, b in handler.seen] == [b"m x=1"]
        else:
            with pytest.raises(SinkError) as info:
                await sink.write(b"m x=1")
            assert info.value.retryable
            assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
            assert handler.seen == []
    finally:
        await sink.close()
        server.shutdown()
        server.server_close()


async def test_v1_unreachable_is_retryable() -> None:
    sink = V1Sink(InfluxConfig(url="http://127.0.0.1:9", api="v1", database="db",
                               password=Secret("s3cret-pw")))
    with pytest.raises(SinkError) as info:
        await sink.write(b"m x=1")
    assert info.value.retryable
    assert str(info.value).startswith("influxdb v1 http://127.0.0.1:9 unreachable: ")
    assert "s3cret-pw" not in str(info.value)
    await sink.close()


# -- dead letters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "key", "expected", "truncated"),
    [
        pytest.param(b"not json", "payload", "not json", False, id="text"),
        pytest.param(b"\xff\xfe\x00", "payload_b64", "//4A", False, id="binary"),
        pytest.param(b"x" * 20, "payload", "x" * 8, True, id="truncated"),
        pytest.param("é".encode() * 5, "payload", "éééé", True, id="cut-inside-utf8"),
    ],
)
def test_record_payload(payload: bytes, key: str, expected: str, truncated: bool) -> None:
    rec = record("t/g/d/data", "bad_json", payload, max_payload=8, detail="why")
    assert rec[key] == expected
    assert rec.get("truncated", False) is truncated
    assert rec["bytes"] == len(payload)
    assert (rec["topic"], rec["reason"], rec["detail"]) == ("t/g/d/data", "bad_json", "why")
    assert rec["time"].endswith("Z")


def test_deadletters_append_and_rotate(tmp_path: Path) -> None:
    dl = DeadLetters(tmp_path / "state", max_bytes=400, keep=2, max_payload=100)
    for i in range(20):
        dl.append("t/g/d/data", "bad_json", f"payload {i}".encode())
    dl.sync()
    dl.close()
    files = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert files == ["deadletter.jsonl", "deadletter.jsonl.1", "deadletter.jsonl.2"]
    for name in files:
        assert (tmp_path / "state" / name).stat().st_size <= 400
    last = (tmp_path / "state" / "deadletter.jsonl").read_text().splitlines()
    assert json.loads(last[-1])["payload"] == "payload 19"
    assert dl.written == 20


# -- a missing v1 database ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "statement"),
    [
        pytest.param("sensing", 'CREATE DATABASE "sensing"', id="plain"),
        pytest.param('a"b\\c', 'CREATE DATABASE "a\\"b\\\\c"', id="quote-backslash"),
    ],
)
def test_create_database_statement(name: str, statement: str) -> None:
    assert create_database_statement(name) == statement


async def test_v1_database_creation_refused_says_the_command(
    fake_influx: tuple[str, type[_Handler]]
) -> None:
    url, handler = fake_influx
    handler.status = 404
    handler.body = b'{"error":"database not found: \\"sensing\\""}'

    class Refusing(handler):  # type: ignore[misc,valid-type]
        def do_POST(self) -> None:
            if self.path.startswith("/query"):
                type(self).status, type(self).body = 403, (
                    b'{"error":"error authorizing query: u not authorized to execute '
                    b"statement 'CREATE DATABASE sensing', requires admin privilege\"}")
            super().do_POST()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    sink = V1Sink(InfluxConfig(url=url, api="v1", database="sensing", username="u",
                               password=Secret("pw-123")))
    try:
        with pytest.raises(SinkError) as info:
            await sink.write(b"m x=1")
    finally:
        await sink.close()
        server.shutdown()
        server.server_close()
    assert info.value.retryable
    assert str(info.value) == (
        f"influxdb v1 {url}: database 'sensing' does not exist and creating it failed (403: "
        "error authorizing query: u not authorized to execute statement 'CREATE DATABASE "
        "sensing', requires admin privilege); create it with: "
        """influx -execute 'CREATE DATABASE "sensing"'""")
    path, headers, body = Refusing.seen[1]
    assert path == "/query"
    assert body == b"q=CREATE+DATABASE+%22sensing%22"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"


# -- no secret in errors or logs ------------------------------------------------------------


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers every write with 401 (or 400) and the request's headers in the body, as a
    misbehaving proxy or server may: as text, and inside a JSON error."""

    status = 401
    as_json = False

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        echoed = "".join(f"{k}: {v}\n" for k, v in self.headers.items())
        body = (json.dumps({"error": f"unauthorized, you sent {echoed}"}) if self.as_json
                else f"you sent:\n{echoed}").encode()
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("status", [401, 400])
@pytest.mark.parametrize("api", ["v1", "v2"])
async def test_an_echoed_credential_reaches_no_error_and_no_log(
    api: str, status: int, as_json: bool, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.bridge import writer

    monkeypatch.setattr(writer, "BACKOFF_START", 0.001)
    monkeypatch.setattr(writer, "BACKOFF_MAX", 0.002)
    handler = type("Echo", (_Echo,), {"status": status, "as_json": as_json})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    password = f"pw-{api}-{status}-{as_json}-Zq9"
    if api == "v1":
        config = InfluxConfig(url=url, api="v1", database="db", username="bridge",
                              password=Secret(password))
        forms = [password, base64.b64encode(f"bridge:{password}".encode()).decode()]
    else:
        config = InfluxConfig(url=url, api="v2", org="o", bucket="b", token=Secret(password))
        forms = [password]
    sink = V1Sink(config) if api == "v1" else V2Sink(config)
    stats = writer_stats()
    letters: list[writer.Poison] = []
    try:
        with caplog.at_level(logging.DEBUG):
            if status == 401:  # retried: give up after the first failure
                attempts = iter([True, False])
                done = await writer.write_batch(
                    ["m x=1"], sink=lambda: sink, wanted=lambda: next(attempts),
                    dead_letter=letters.append, sync=lambda: None, stats=stats,
                    metrics=BridgeMetrics())
                assert not done
            else:  # refused: dead-lettered with the server's words
                assert await writer.write_batch(
                    ["m x=1"], sink=lambda: sink, wanted=lambda: True,
                    dead_letter=letters.append, sync=lambda: None, stats=stats,
                    metrics=BridgeMetrics())
    finally:
        await sink.close()
        server.shutdown()
        server.server_close()
    said = [caplog.text, stats.last_error, *(p.detail for p in letters)]
    assert "***" in "".join(said)  # the echo was there, scrubbed
    for text in said:
        for form in forms:
            assert form not in text


def writer_stats() -> Any:
    from dataclasses import make_dataclass

    return make_dataclass("Stats", [("write_errors", int, 0), ("store_ok", bool, True),
                                    ("last_error", str, ""), ("points_written", int, 0),
                                    ("batches_written", int, 0)])()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param("http://127.0.0.1:8086", "v1 http://127.0.0.1:8086", id="plain"),
        pytest.param("https://bridge:s3cr3t-pw@influx.example.org/x/?u=a&p=s3cr3t-pw",
                     "v1 https://influx.example.org/x/", id="user-info-and-query"),
        pytest.param("http://[::1]:8086", "v1 http://[::1]:8086", id="ipv6"),
    ],
)
def test_describe_shows_no_credential_of_the_url(url: str, shown: str) -> None:
    assert V1Sink(InfluxConfig(url=url, api="v1", database="d")).describe() == shown
