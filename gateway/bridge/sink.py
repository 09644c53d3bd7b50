"""InfluxDB writers for the bridge: `api: v1` (plain HTTP `/write`) and `api: v2` (influxdb-client).

A sink takes a body of line protocol (already escaped by `gateway.core.lineproto`, precision ns)
and either accepts all of it or raises `SinkError`:

- `retryable=True`: the store is down, slow, overloaded or refuses our credentials
  (connection errors, timeouts, 5xx, 429, 401/403/404). Nothing is lost: the bridge keeps
  the messages unacknowledged and retries with capped backoff.
- `retryable=False`: the store rejected the data itself (400 bad or conflicting points,
  413 body too large, 422). `gateway.bridge.writer.write_isolating` bisects the batch to
  find the points to blame, writes the others, and dead-letters the rejected ones.

Both writers are blocking libraries run in a small thread pool, so the event loop keeps
receiving and decoding while a batch is on the wire. No error message carries a secret:
credentials travel in headers, never in the URL.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import threading
import urllib.parse
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor

from gateway.core.errors import SinkError
from gateway.core.model import InfluxConfig

log = logging.getLogger("sensegate.sink")

# Statuses that say "this data is wrong": retrying the same body cannot help.
REJECTED_STATUSES = frozenset({400, 413, 422})


def _is_retryable(status: int) -> bool:
    return status not in REJECTED_STATUSES


def _error_text(body: bytes, limit: int = 300) -> str:
    """The `error`/`message` of an InfluxDB error body, or the body itself, shortened."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        text = str(doc.get("error") or doc.get("message") or text)
    text = " ".join(text.split())
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
        return f"{self.config.api} {self.config.url}"

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class V1Sink(Sink):
    """InfluxDB 1.x `/write?db=&rp=&precision=ns`, user/password by HTTP Basic auth."""

    def __init__(self, config: InfluxConfig, *, workers: int = 2) -> None:
        super().__init__(config, workers=workers)
        url = urllib.parse.urlsplit(config.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise SinkError(f"influxdb url {config.url!r} is not http(s)://host[:port]",
                            retryable=False)
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        params = {"db": config.database or "", "precision": "ns"}
        if config.retention_policy:
            params["rp"] = config.retention_policy
        self._path = url.path.rstrip("/") + "/write?" + urllib.parse.urlencode(params)
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if config.username:
            password = config.password.reveal() if config.password else ""
            token = base64.b64encode(f"{config.username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.config.timeout)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _write_blocking(self, body: bytes) -> None:
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", self._path, body=body, headers=self._headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                # A kept-alive connection the server closed meanwhile: one fresh try.
                if attempt == 1 and isinstance(
                    exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError
                ):
                    continue
                raise SinkError(f"influxdb {self.describe()} unreachable: {exc}",
                                retryable=True) from None
            if resp.will_close:
                self._drop_connection()
            if 200 <= resp.status < 300:
                return
            raise SinkError(
                f"influxdb {self.describe()} answered {resp.status}: {_error_text(data)}",
                retryable=_is_retryable(resp.status), status=resp.status,
            )


class V2Sink(Sink):
    """InfluxDB 2.x/3.x/1.8+ `/api/v2/write` through influxdb-client's synchronous write API."""

    def __init__(self, config: InfluxConfig, *, workers: int = 2) -> None:
        super().__init__(config, workers=workers)
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self._client = InfluxDBClient(
            url=config.url,
            token=config.token.reveal() if config.token else None,
            org=config.org,
            timeout=int(config.timeout * 1000),
            retries=False,
            connection_pool_maxsize=max(workers, 1),
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def _write_blocking(self, body: bytes) -> None:
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            self._api.write(
                bucket=self.config.bucket or "", org=self.config.org or "",
                record=body, write_precision=WritePrecision.NS,
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            body_bytes = exc.body if isinstance(exc.body, bytes) else str(exc.body or "").encode()
            raise SinkError(
                f"influxdb {self.describe()} answered {status}: {_error_text(body_bytes)}",
                retryable=status == 0 or _is_retryable(status), status=status or None,
            ) from None
        except Exception as exc:  # urllib3 connection errors and timeouts, all retryable
            raise SinkError(
                f"influxdb {self.describe()} unreachable: {type(exc).__name__}",
                retryable=True,
            ) from None

    async def close(self) -> None:
        await super().close()
        self._api.close()
        self._client.close()


def create_sink(config: InfluxConfig, *, workers: int = 2) -> Sink:
    if config.api == "v1":
        return V1Sink(config, workers=workers)
    return V2Sink(config, workers=workers)
