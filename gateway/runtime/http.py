"""A tiny HTTP/1.0 server on the daemon's own asyncio loop, bounded so no client load can
take the loop from polling.

It serves a few ``GET`` routes (``/metrics``, ``/healthz``, the technician's page) to
scrapers, health checks and browsers: one request per connection (``Connection: close``),
no keep-alive, no body. Everything a client controls is bounded:

- at most `MAX_CONNECTIONS` connections at once: a further one is closed (reset) the moment
  it is accepted, before anything is read from it;
- `REQUEST_TIMEOUT` seconds from accept to the last byte of the response, whether the client
  is slow to send its request or slow to read the answer; then the connection is reset;
- `MAX_HEAD_BYTES` of request head, anything longer is answered 400.

Connections are plain `asyncio.Protocol` objects, not streams: a connection costs the loop a
callback per event and no task until its head is complete. What a route costs is the route's
business (the metrics route renders in a worker thread and reuses its text, see
gateway/runtime/metrics.py). The file descriptors the server holds are therefore at most
``MAX_CONNECTIONS`` open ones, as many again accepted and being reset in one loop pass (the
listen backlog), and its listening sockets; the systemd units set ``LimitNOFILE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus

log = logging.getLogger("sensegate.http")

MAX_CONNECTIONS = 32
REQUEST_TIMEOUT = 5.0  # seconds from accept to the last byte of the response
MAX_HEAD_BYTES = 16 * 1024

_REASONS = {200: "OK", 303: "See Other", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error",
            503: "Service Unavailable"}
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query string
    headers: Mapping[str, str]  # names lower case
    query: str = ""  # after the ``?``, undecoded

    def cookie(self, name: str) -> str | None:
        """The value of cookie ``name`` in the ``Cookie`` header, None when absent."""
        for part in self.headers.get("cookie", "").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
        return None

    def param(self, name: str) -> str | None:
        """The value of query parameter ``name`` (percent-decoded), None when absent."""
        for part in self.query.split("&"):
            key, sep, value = part.partition("=")
            if sep and unquote_plus(key) == name:
                return unquote_plus(value)
        return None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()  # extra headers (Set-Cookie, Location, ...)


Route = Callable[[Request], Awaitable[Response]]


# -- pure parts ------------------------------------------------------------------------------


def head_end(data: bytes | bytearray) -> int:
    """Index just past the blank line that ends a request head, or -1 while incomplete."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = data.find(sep)
        if at >= 0:
            return at + len(sep)
    return -1


def parse_head(data: bytes) -> Request | None:
    """The request line and headers of a complete head; None when it is malformed."""
    lines = data.decode("latin-1").replace("\r\n", "\n").split("\n")
    lines = [line for line in lines if line]
    if not lines:
        return None
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    path, _, query = parts[1].partition("?")
    return Request(parts[0], path, headers, query)


def encode(response: Response, *, head: bool = False) -> bytes:
    lines = [
        f"HTTP/1.0 {response.status} {_REASONS[response.status]}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in response.headers),
        "",
        "",
    ]
    return "\r\n".join(lines).encode("ascii") + (b"" if head else response.body)


def route_for(routes: Mapping[str, Route], path: str) -> Route | None:
    """The route of ``path``: an exact key, else the longest ``/prefix/*`` key it starts with."""
    route = routes.get(path)
    if route is not None:
        return route
    best: tuple[int, Route] | None = None
    for key, candidate in routes.items():
        if (key.endswith("/*") and path.startswith(key[:-1]) and len(path) > len(key) - 1
                and (best is None or len(key) > best[0])):
            best = (len(key), candidate)
    return best[1] if best is not None else None


SESSION_COOKIE = "sensegate_session"
UNAUTHORIZED = Response(
    401, b"this gateway needs its token: open /?token=TOKEN once in this browser\n",
    headers=(("WWW-Authenticate", 'Bearer realm="sensegate"'),),
)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


class TokenGate:
    """The optional ``http.token``: who may read the routes it guards.

    Without a token every request passes. With one, a request passes when it carries the
    session cookie (set by one visit to ``/?token=TOKEN``) or ``Authorization: Bearer
    TOKEN`` (how Prometheus sends credentials). The cookie holds an HMAC of the token, not
    the token, and is ``HttpOnly`` and ``SameSite=Strict``; every comparison is in
    constant time. ``/healthz`` is never guarded (see docs/page.md).
    """

    def __init__(self, token: str | None) -> None:
        self.enabled = bool(token)
        secret = (token or "").encode("utf-8")
        self._token = _digest(token or "")
        self._session = hmac.new(secret, b"sensegate page session", hashlib.sha256).hexdigest()

    def allows(self, request: Request) -> bool:
        if not self.enabled:
            return True
        cookie = request.cookie(SESSION_COOKIE)
        if cookie is not None and hmac.compare_digest(_digest(cookie),
                                                      _digest(self._session)):
            return True
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            _digest(credentials.strip()), self._token)

    def login(self, request: Request) -> Response | None:
        """The answer to a request carrying ``?token=``: on a match, a redirect to the same
        path without the query that sets the session cookie; otherwise 401. None when the
        request carries no token (or no token is configured)."""
        given = request.param("token") if self.enabled else None
        if given is None:
            return None
        if not hmac.compare_digest(_digest(given), self._token):
            return UNAUTHORIZED
        cookie = f"{SESSION_COOKIE}={self._session}; Path=/; HttpOnly; SameSite=Strict"
        location = quote(request.path, safe="/-._~")
        return Response(303, b"signed in\n", headers=(("Location", location),
                                                       ("Set-Cookie", cookie)))

    def guard(self, route: Route) -> Route:
        """``route``, answered only to requests the gate allows (after a ``?token=`` login)."""
        if not self.enabled:
            return route

        async def guarded(request: Request) -> Response:
            login = self.login(request)
            if login is not None:
                return login
            if not self.allows(request):
                return UNAUTHORIZED
            return await route(request)

        return guarded


BAD_REQUEST = Response(400, b"bad request\n")
NOT_FOUND = Response(404, b"not found\n")
METHOD_NOT_ALLOWED = Response(405, b"method not allowed\n")


# -- the server ------------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.server.admit(self):
            transport.abort()
            return
        self.timer = asyncio.get_running_loop().call_later(
            self.server.request_timeout, transport.abort)

    def data_received(self, data: bytes) -> None:
        if self.task is not None or self.transport is None or self.transport.is_closing():
            return  # the head is complete: whatever follows is ignored
        self.buffer += data
        end = head_end(self.buffer)
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                self._send(encode(BAD_REQUEST))
            return
        if end > MAX_HEAD_BYTES:
            self._send(encode(BAD_REQUEST))
            return
        request = parse_head(bytes(self.buffer[:end]))
        self.buffer.clear()
        if request is None:
            self._send(encode(BAD_REQUEST))
            return
        self.task = asyncio.get_running_loop().create_task(self._answer(request))

    def eof_received(self) -> bool:
        if self.task is None and self.transport is not None and not self.transport.is_closing():
            self._send(encode(BAD_REQUEST))  # the client stopped sending before a whole head
        return True  # keep the transport open for writing; _send closes it

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.server.release(self)

    async def _answer(self, request: Request) -> None:
        self._send(encode(await self.server.respond(request), head=request.method == "HEAD"))

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()  # after the buffer is flushed; the timer still guards it


class HttpServer:
    """The routes served on ``host:port`` with the bounds above; `start` binds.

    A route's key is a path (``/metrics``) or a prefix ending in ``/*`` (``/devices/*``
    serves ``/devices/anything``); see `route_for`.
    """

    def __init__(
        self,
        routes: Mapping[str, Route],
        *,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.routes = dict(routes)
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.refused = 0  # connections reset at once because max_connections were open
        self._open: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> HttpServer:
        """Bind and serve (port 0: any free port); raises ``OSError`` if it cannot bind."""
        # The listen backlog is also how many connections asyncio accepts in one go: with
        # it at max_connections, refused connections hold at most that many more fds.
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self), host, port, backlog=self.max_connections)
        return self

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    def addresses(self) -> list[str]:
        if self._server is None:
            return []
        return [f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in self._server.sockets]

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def admit(self, conn: _Connection) -> bool:
        if len(self._open) >= self.max_connections:
            self.refused += 1
            return False
        self._open.add(conn)
        return True

    def release(self, conn: _Connection) -> None:
        self._open.discard(conn)

    async def respond(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return METHOD_NOT_ALLOWED
        route = route_for(self.routes, request.path)
        if route is None:
            return NOT_FOUND
        try:
            return await route(request)
        except Exception:
            log.exception("%s failed", request.path)
            return Response(500, b"internal error\n")

    def close(self) -> None:
        """Stop listening and reset every open connection."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._open):
            if conn.transport is not None:
                conn.transport.abort()

    async def wait_closed(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
