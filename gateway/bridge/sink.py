"""InfluxDB writers for the bridge: `api: v1` (`/write`) and `api: v2` (`/api/v2/write`).

Both are plain HTTP(S) with the standard library's `http.client`: one kept-alive connection
per worker thread, line protocol in the body (already escaped by `gateway.core.lineproto`,
precision ns). No InfluxDB client library: the two writes are one POST each.

- v1 (InfluxDB 1.x): `POST /write?db=&rp=&precision=ns`, user/password by HTTP Basic auth.
- v2 (InfluxDB 2.x, 3.x, 1.8+, VictoriaMetrics): `POST /api/v2/write?org=&bucket=&precision=ns`
  with `Authorization: Token ...`.

`https://` URLs verify the server against the system CAs (OpenSSL's defaults, so
`SSL_CERT_FILE`/`SSL_CERT_DIR` apply) and its host name.

A sink either accepts all of a body or raises `SinkError`:

- `retryable=True`: the store is down, slow, overloaded or refuses our credentials
  (connection errors, timeouts, 5xx, 429, 401/403/404). Nothing is lost: the bridge keeps
  the messages unacknowledged and retries with capped backoff.
- `retryable=False`: the store rejected the data itself (400 bad or conflicting points,
  413 body too large, 422). `gateway.bridge.writer.write_isolating` bisects the batch to
  find the points to blame, writes the others, and dead-letters the rejected ones.

The writers run in a small thread pool, so the event loop keeps receiving and decoding while
a batch is on the wire. No error message carries a secret: credentials travel in headers,
never in the URL, and an error body quoted from the server goes through the log's secret
scrubbing (a server may echo the request's `Authorization` header).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import shlex
import ssl
import threading
import urllib.parse
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor

from gateway.core.errors import SinkError
from gateway.core.model import InfluxConfig
from gateway.runtime.logs import register_secret, scrub

log = logging.getLogger("sensegate.sink")

# Statuses that say "this data is wrong": retrying the same body cannot help.
REJECTED_STATUSES = frozenset({400, 413, 422})


def _is_retryable(status: int) -> bool:
    return status not in REJECTED_STATUSES


def _error_text(body: bytes, limit: int = 300) -> str:
    """The `error`/`message` of an InfluxDB error body, or the body itself, shortened and
    with every registered secret scrubbed."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        text = str(doc.get("error") or doc.get("message") or text)
    text = " ".join(scrub(text).split())
    return text[:limit]


class Sink(ABC):
    """One InfluxDB destination. `write` is safe to call from several tasks at once."""

    def __init__(self, config: InfluxConfig, *, workers: int = 2) -> None:
        self.config = config
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sink")

    @abstractmethod
    def _write_blocking(self, body: bytes) -> None: ...

    async def write(self, body: bytes) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._write_blocking, body)

    def describe(self) -> str:
        """`v1 http://host:8086` for log lines: no user info or query the URL may hold."""
        url = urllib.parse.urlsplit(self.config.url)
        host = url.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if url.port is not None:
            netloc += f":{url.port}"
        shown = urllib.parse.urlunsplit((url.scheme, netloc, url.path, "", ""))
        return f"{self.config.api} {shown}"

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class HttpSink(Sink):
    """One write endpoint over HTTP(S): `path` and `headers` say which API."""

    def __init__(self, config: InfluxConfig, path: str, params: dict[str, str],
                 headers: dict[str, str], *, workers: int = 2) -> None:
        super().__init__(config, workers=workers)
        url = urllib.parse.urlsplit(config.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise SinkError(f"influxdb url {config.url!r} is not http(s)://host[:port]",
                            retryable=False)
        self._tls = ssl.create_default_context() if url.scheme == "https" else None
        self._host = url.hostname
        self._port = url.port or (443 if self._tls else 80)
        self._base = url.path.rstrip("/")
        self._path = f"{self._base}{path}?{urllib.parse.urlencode(params)}"
        self._headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._tls is not None:
                conn = http.client.HTTPSConnection(self._host, self._port,
                                                   timeout=self.config.timeout,
                                                   context=self._tls)
            else:
                conn = http.client.HTTPConnection(self._host, self._port,
                                                  timeout=self.config.timeout)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST on this thread's kept-alive connection: (status, body), or SinkError when
        the server cannot be reached."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                # A kept-alive connection the server closed meanwhile: one fresh try.
                if attempt == 1 and isinstance(
                    exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError
                ):
                    continue
                raise SinkError(f"influxdb {self.describe()} unreachable: {scrub(str(exc))}",
                                retryable=True) from None
            if resp.will_close:
                self._drop_connection()
            return resp.status, data
        raise AssertionError("unreachable")

    def _write_blocking(self, body: bytes) -> None:
        status, data = self._post(self._path, body, self._headers)
        if not 200 <= status < 300:
            raise self._refusal(status, data)

    def _refusal(self, status: int, data: bytes) -> SinkError:
        return SinkError(f"influxdb {self.describe()} answered {status}: {_error_text(data)}",
                         retryable=_is_retryable(status), status=status)


class V1Sink(HttpSink):
    """InfluxDB 1.x `/write?db=&rp=&precision=ns`, user/password by HTTP Basic auth."""

    def __init__(self, config: InfluxConfig, *, workers: int = 2) -> None:
        params = {"db": config.database or "", "precision": "ns"}
        if config.retention_policy:
            params["rp"] = config.retention_policy
        headers = {}
        if config.username:
            password = config.password.reveal() if config.password else ""
            token = base64.b64encode(f"{config.username}:{password}".encode()).decode()
            register_secret(password)
            register_secret(token)
            headers["Authorization"] = f"Basic {token}"
        super().__init__(config, "/write", params, headers, workers=workers)
        self._query_path = f"{self._base}/query"
        self._create_lock = threading.Lock()

    def _write_blocking(self, body: bytes) -> None:
        status, data = self._post(self._path, body, self._headers)
        if 200 <= status < 300:
            return
        if status == 404 and "database not found" in _error_text(data):
            self._create_database()  # raises SinkError when it cannot
            status, data = self._post(self._path, body, self._headers)
            if 200 <= status < 300:
                return
        raise self._refusal(status, data)

    def _create_database(self) -> None:
        """`CREATE DATABASE` (a no-op when it exists) when `create_database` allows it, else
        a SinkError saying the command to run."""
        name = self.config.database or ""
        statement = create_database_statement(name)
        command = f"influx -execute {shlex.quote(statement)}"
        where = f"influxdb {self.describe()}"
        if not self.config.create_database:
            raise SinkError(f"{where}: database {name!r} does not exist; create it with: "
                            f"{command} (or set influxdb.create_database: true)", retryable=True)
        with self._create_lock:
            form = urllib.parse.urlencode({"q": statement}).encode()
            headers = {**self._headers, "Content-Type": "application/x-www-form-urlencoded"}
            status, data = self._post(self._query_path, form, headers)
            error = _error_text(data) if not 200 <= status < 300 else _statement_error(data)
            if error is not None:
                raise SinkError(f"{where}: database {name!r} does not exist and creating it "
                                f"failed ({status}: {error}); create it with: {command}",
                                retryable=True)
        log.warning("%s: created database %r (influxdb.create_database)", where, name)


def create_database_statement(name: str) -> str:
    """The InfluxQL that creates database `name` (an identifier in double quotes)."""
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'CREATE DATABASE "{quoted}"'


def _statement_error(data: bytes) -> str | None:
    """The error of the first statement of an InfluxDB 1.x `/query` answer, if any."""
    try:
        results = json.loads(data).get("results") or [{}]
        error = results[0].get("error")
    except (ValueError, AttributeError, IndexError):
        return "unreadable answer"
    return None if error is None else " ".join(scrub(str(error)).split())


class V2Sink(HttpSink):
    """`/api/v2/write?org=&bucket=&precision=ns` (InfluxDB 2.x/3.x/1.8+, VictoriaMetrics),
    the API token as `Authorization: Token ...`."""

    def __init__(self, config: InfluxConfig, *, workers: int = 2) -> None:
        params = {"org": config.org or "", "bucket": config.bucket or "", "precision": "ns"}
        headers = {}
        if config.token:
            register_secret(config.token.reveal())
            headers["Authorization"] = f"Token {config.token.reveal()}"
        super().__init__(config, "/api/v2/write", params, headers, workers=workers)


def create_sink(config: InfluxConfig, *, workers: int = 2) -> Sink:
    if config.api == "v1":
        return V1Sink(config, workers=workers)
    return V2Sink(config, workers=workers)
