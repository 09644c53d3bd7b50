"""The bridge's MQTT session: a subscriber with manual acknowledgements, over asyncio.

    session = await Session.connect(SessionOptions(host=..., client_id=..., ...))
    await session.subscribe("$share/group/sensegate/+/+/data", qos=1)
    async for batch in session.batches():       # the messages read so far, a step at a time
        ...write them...
        session.ack_many(batch)                  # PUBACK (PUBREC for QoS 2) after the write
    # the broker closed the connection: SessionTakenOver, BrokerDisconnected, ConnectionLost

Why our own: stock paho (and aiomqtt on top of it) handles one packet per `recv` call and
builds objects per message; the bridge needs several times that rate with acknowledgements
held until InfluxDB has stored a batch (bench/bridge_receive.py, docs/benchmarks.md). This
module is an `asyncio.Protocol` over the pure codec `gateway.bridge.codec`: each
`data_received` decodes every complete packet in the bytes it got, and the acks of a batch
go out as one write. `batches()` hands the decoded messages over a step at a time (at most
BATCH messages or BATCH_BYTES of payload) and
lets the event loop run between two (so the writers start while a backlog is still being
read), and reading stops while more than INBOX_BYTES read are waiting to be taken: what the
session holds is bounded, and the rest waits at the broker. Only public APIs:
`loop.create_connection` (TLS included), the transport's `write`,
`pause_reading`/`resume_reading`/`is_reading` (TCP backpressure: what is not read stays at
the broker) and `close`/`abort`.

MQTT 3.1.1 and 5 (`SessionOptions.protocol`). A PUBLISH larger than `max_payload` is
refused from its length prefix: its topic and size are read, the rest of its bytes skipped
as they come, and it is yielded with an empty payload and `size` > `max_payload`, to be
dead-lettered and acknowledged like any other refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol as Structural
from typing import TypeVar

from gateway.bridge import codec
from gateway.bridge.codec import Protocol, Publish
from gateway.core.errors import SensegateError

_T = TypeVar("_T")
Message = Publish  # an inbound message: topic, payload, qos, mid, retain, size

# What one step of `batches()` hands over at most, in messages and in payload bytes (a step
# costs the bridge about 10 us per message plus 1 us per 100 bytes to decode); the event
# loop runs between two steps.
BATCH = 1024
BATCH_BYTES = 256 * 1024
# Bytes read but not yet taken by `batches()` above which reading stops until they are taken
# (once someone iterates `batches()`: before that, CONNACK and SUBACK must still be read).
INBOX_BYTES = 1 << 20


class Delivery(Structural):
    """What `ack` needs of a message: its packet id and QoS (a `Message` has both)."""

    @property
    def mid(self) -> int: ...
    @property
    def qos(self) -> int: ...


__all__ = [
    "BrokerDisconnected", "ConnectRefused", "ConnectionLost", "Delivery", "Message", "Protocol",
    "Session", "SessionError", "SessionOptions", "SessionTakenOver",
]


class SessionError(SensegateError):
    """The MQTT session failed or ended; the message names the broker."""


class ConnectRefused(SessionError):
    """The broker answered CONNECT with a refusal (`code`: the CONNACK return/reason code)."""

    def __init__(self, message: str, *, code: int) -> None:
        self.code = code
        self.not_authorized = code in codec.NOT_AUTHORIZED
        super().__init__(message)


class BrokerDisconnected(SessionError):
    """The broker sent DISCONNECT (MQTT 5) with `code` as its reason."""

    def __init__(self, message: str, *, code: int) -> None:
        self.code = code
        super().__init__(message)


class SessionTakenOver(BrokerDisconnected):
    """Another client connected with our client id: the broker closed this connection."""


class ConnectionLost(SessionError):
    """The connection closed or broke without a DISCONNECT (or with a malformed packet)."""


CONNACK_REASONS = {
    1: "unacceptable protocol version", 2: "client identifier rejected",
    3: "server unavailable", 4: "bad username or password", 5: "not authorised",
    0x80: "unspecified error", 0x84: "unsupported protocol version",
    0x85: "client identifier not valid", 0x86: "bad username or password",
    0x87: "not authorised", 0x88: "server unavailable", 0x89: "server busy",
    0x8A: "banned", 0x9F: "connection rate exceeded",
}


@dataclass(frozen=True, slots=True)
class SessionOptions:
    host: str
    port: int = 1883
    client_id: str = ""
    protocol: Protocol = Protocol.V5
    clean: bool = False  # Clean Session (3.1.1) / Clean Start (5): off keeps the session
    session_expiry: int = 0  # seconds the broker keeps the session while away (MQTT 5)
    receive_maximum: int = 65535  # unacknowledged messages the broker may send (MQTT 5)
    keepalive: int = 30
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    max_payload: int = 4 * 1024 * 1024  # larger messages are refused unread
    timeout: float = 10.0  # connect, subscribe and unsubscribe

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class Session(asyncio.Protocol):
    """One MQTT connection. Make it with `await Session.connect(options)`.

    It is the `asyncio.Protocol` of its connection: asyncio calls `connection_made`,
    `data_received` and `connection_lost`.
    """

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.session_present = False
        self.paused = False
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._v5 = options.protocol is Protocol.V5
        self._buf = bytearray()  # the start of a packet not yet complete
        self._need = 0  # bytes `_buf` must hold for that packet (0: not known yet)
        self._skip = 0  # bytes of a too-large packet still to skip
        self._inbox: list[Publish] = []
        self._inbox_bytes = 0  # bytes read since the inbox was last empty
        self._consuming = False  # someone iterates batches(): the inbox limit applies
        self._full = False  # reading stopped because the inbox holds INBOX_BYTES
        self._wakeup: asyncio.Future[None] | None = None
        self._connack: asyncio.Future[codec.ConnAck] = self._loop.create_future()
        self.keepalive = options.keepalive  # as the broker may have changed it (MQTT 5)
        self._acks: dict[int, asyncio.Future[list[int]]] = {}
        self._next_mid = 0
        self._error: SessionError | None = None
        self._closing = False
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._last_sent = time.monotonic()
        self._last_received = time.monotonic()
        self._pinger: asyncio.Task[None] | None = None

    # -- connecting ------------------------------------------------------------------

    @classmethod
    async def connect(cls, options: SessionOptions) -> Session:
        """Open the connection and wait for CONNACK. Raises `ConnectRefused`,
        `ConnectionLost`, `OSError` (including `ssl.SSLError`) or `TimeoutError`."""
        session = cls(options)
        await asyncio.wait_for(session._open(), options.timeout)
        return session

    async def _open(self) -> None:
        o = self.options
        await self._loop.create_connection(
            lambda: self, o.host, o.port, ssl=o.tls,
            server_hostname=o.host if o.tls is not None else None,
        )
        self._write(codec.connect(
            o.client_id, protocol=o.protocol, clean=o.clean, keepalive=o.keepalive,
            username=o.username, password=o.password, session_expiry=o.session_expiry,
            receive_maximum=o.receive_maximum,
        ))
        try:
            ack = await self._wait(self._connack)
        except BaseException:
            self.abort()
            raise
        if ack.code != 0:
            self.abort()
            reason = CONNACK_REASONS.get(ack.code, f"code {ack.code}")
            said = f" ({ack.reason})" if ack.reason else ""
            raise ConnectRefused(f"broker {o.where} refused the connection: {reason}{said}",
                                 code=ack.code)
        self.session_present = ack.session_present
        if ack.server_keepalive is not None:
            self.keepalive = ack.server_keepalive
        if self.keepalive > 0:
            self._pinger = self._loop.create_task(self._keepalive(), name="mqtt-keepalive")

    async def _wait(self, future: asyncio.Future[_T]) -> _T:
        """`future`'s result, or the session's error if the connection ends first."""
        waiting: set[asyncio.Future[object]] = {future, self._closed}  # type: ignore[arg-type]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if future.done():
            return future.result()
        future.cancel()
        raise self._error or ConnectionLost(f"mqtt connection to {self.options.where} closed")

    # -- subscriptions -----------------------------------------------------------------

    async def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """Subscribe; returns the granted QoS. Raises `SessionError` when refused."""
        mid = self._mid()
        codes = await self._request(mid, codec.subscribe(mid, topic_filter, qos,
                                                         protocol=self.options.protocol))
        if not codes or codes[0] >= 0x80:
            code = codes[0] if codes else -1
            raise SessionError(f"broker {self.options.where} refused the subscription to "
                               f"{topic_filter!r} (code {code})")
        return codes[0]

    async def unsubscribe(self, topic_filter: str) -> None:
        mid = self._mid()
        await self._request(mid, codec.unsubscribe(mid, topic_filter,
                                                   protocol=self.options.protocol))

    def _mid(self) -> int:
        self._next_mid = self._next_mid % 65535 + 1
        return self._next_mid

    async def _request(self, mid: int, packet: bytes) -> list[int]:
        future: asyncio.Future[list[int]] = self._loop.create_future()
        self._acks[mid] = future
        self._write(packet)
        try:
            return await asyncio.wait_for(self._wait(future), self.options.timeout)
        finally:
            self._acks.pop(mid, None)

    # -- receiving ---------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[list[Publish]]:
        """The inbound messages in order, a step at a time: at most BATCH messages, ending
        with the one that brings the step's payload to BATCH_BYTES. Ends after `close()`;
        raises the `SessionError` that ended the connection otherwise."""
        self._consuming = True
        while True:
            if self._inbox:
                inbox = self._inbox
                count, size, end = 0, 0, min(len(inbox), BATCH)
                while count < end and (count == 0 or size < BATCH_BYTES):
                    size += inbox[count].size
                    count += 1
                if count < len(inbox):
                    batch = inbox[:count]
                    del inbox[:count]
                    yield batch
                    await asyncio.sleep(0)  # the writers, the ticker and the reads run
                    continue
                batch, self._inbox = self._inbox, []
                if self._full:
                    self._full = False
                    self._update_reading()
                yield batch
                continue
            if self._closed.done():
                if self._closing:
                    return
                raise self._error or ConnectionLost(
                    f"mqtt connection to {self.options.where} closed")
            self._wakeup = self._loop.create_future()
            await self._wakeup

    def pause_reading(self) -> None:
        """Read nothing more until `resume_reading()`: the broker keeps the rest."""
        if not self.paused and self._transport is not None and not self._closed.done():
            self.paused = True
            self._update_reading()

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            self._update_reading()

    def _update_reading(self) -> None:
        """Read while neither the caller (`paused`) nor a full inbox (`_full`) stops it."""
        transport = self._transport
        if transport is None or self._closed.done():
            return
        stop = self.paused or self._full
        if stop and transport.is_reading():
            transport.pause_reading()
        elif not stop and not transport.is_reading():
            self._last_received = time.monotonic()  # no PINGRESP was read while stopped
            transport.resume_reading()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._last_received = time.monotonic()
        if not self._inbox:
            self._inbox_bytes = len(self._buf)  # what was read before has been taken
        self._inbox_bytes += len(data)
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return
            data = bytes(self._buf)
            self._buf.clear()
        try:
            self._decode(data)
        except codec.MalformedPacket as exc:
            self._fail(ConnectionLost(
                f"mqtt connection to {self.options.where}: malformed packet: {exc}"))
        if self._inbox:
            if self._consuming and self._inbox_bytes > INBOX_BYTES and not self._full:
                self._full = True
                self._update_reading()
            if self._wakeup is not None and not self._wakeup.done():
                self._wakeup.set_result(None)

    def _decode(self, data: bytes) -> None:
        """Handle every complete packet in `data`; keep (or skip) the rest."""
        protocol = self.options.protocol
        limit = self.options.max_payload
        inbox = self._inbox
        v5 = int(self._v5)
        pos, end = 0, len(data)
        publish = codec.PUBLISH
        while pos < end:
            # the remaining length: one or two bytes for packets under 16 KiB, inline
            if pos + 2 < end and data[pos + 1] < 0x80:
                start, length = pos + 2, data[pos + 1]
            elif pos + 3 < end and data[pos + 2] < 0x80:
                start, length = pos + 3, (data[pos + 1] & 0x7F) | (data[pos + 2] << 7)
            else:
                frame = codec.fixed_header(data, pos, end)
                if frame is None:
                    self._keep(data, pos, 0)
                    return
                start, length = frame
            first = data[pos]
            kind = first >> 4
            if kind == publish and length > limit + 65_560:  # topic, id, properties
                prefix = codec.publish_prefix(first, data[start:min(end, start + length)],
                                              length, protocol=protocol)
                if prefix is None:
                    self._keep(data, pos, start - pos + min(length, 65_560 + 6))
                    return
                topic, mid, size = prefix
                inbox.append(Publish(topic, b"", (first >> 1) & 3, mid, bool(first & 1),
                                     size))
                self._skip = max(0, start + length - end)
                pos = min(end, start + length)
                continue
            if start + length > end:
                self._keep(data, pos, start - pos + length)
                return
            pos = start + length
            if first & 0xF6 == 0x32:  # a QoS 1 PUBLISH, the common case: decoded inline
                topic_end = start + 2 + ((data[start] << 8) | data[start + 1])
                body = topic_end + 2 + v5  # payload start (v5: one-byte property length)
                if topic_end > start + 2 and body <= pos and (
                        not v5 or not data[topic_end + 2] & 0x80):
                    mid = (data[topic_end] << 8) | data[topic_end + 1]
                    if v5:
                        body += data[topic_end + 2]
                    if mid and body <= pos and pos - body <= limit:
                        try:
                            topic = data[start + 2:topic_end].decode()
                        except UnicodeDecodeError:
                            pass  # codec.publish says why
                        else:
                            inbox.append(Publish(topic, data[body:pos], 1, mid,
                                                 bool(first & 1), pos - body))
                            continue
            if kind == publish:
                message = codec.publish(first, data[start:pos], protocol=protocol)
                if message.size > limit:  # within the slack above: refuse it the same way
                    message = Publish(message.topic, b"", message.qos, message.mid,
                                      message.retain, message.size)
                inbox.append(message)
            else:
                self._control(kind, data[start:pos])

    def _keep(self, data: bytes, pos: int, need: int) -> None:
        self._buf += data[pos:]
        self._need = need

    def _control(self, kind: int, body: bytes) -> None:
        if kind == codec.PUBREL:
            self._write(codec.pubcomp(codec.packet_id(body)))
        elif kind == codec.CONNACK:
            if not self._connack.done():
                self._connack.set_result(codec.connack(body, protocol=self.options.protocol))
        elif kind in (codec.SUBACK, codec.UNSUBACK):
            mid, codes = codec.ack_body(body, protocol=self.options.protocol)
            future = self._acks.get(mid)
            if future is not None and not future.done():
                future.set_result(codes)
        elif kind == codec.DISCONNECT:
            code, said = codec.disconnect_reason(body)
            text = (f"broker {self.options.where} closed the connection: "
                    f"{codec.describe_disconnect(code)}" + (f" ({said})" if said else ""))
            error_type = (SessionTakenOver if code == codec.SESSION_TAKEN_OVER
                          else BrokerDisconnected)
            self._fail(error_type(text, code=code))
        # PINGRESP: `_last_received` is enough. Anything else is not for a subscriber.

    # -- acknowledging -----------------------------------------------------------------

    def ack_many(self, messages: Sequence[Delivery]) -> None:
        """PUBACK the QoS 1 messages (PUBREC the QoS 2 ones) in one write. Call only with
        messages this session delivered; nothing is sent once the connection is gone."""
        mids = [m.mid for m in messages if m.qos == 1]
        out = codec.pubacks(mids) if mids else b""
        for m in messages:
            if m.qos == 2:
                out += codec.pubrec(m.mid)
        if out:
            self._write(out)

    def ack(self, message: Delivery) -> None:
        self.ack_many([message])

    # -- keepalive, closing ------------------------------------------------------------

    async def _keepalive(self) -> None:
        interval = self.keepalive
        while not self._closed.done():
            await asyncio.sleep(min(interval / 2, 5.0))
            now = time.monotonic()
            if self.paused or self._full:
                self._last_received = now  # nothing is read while stopped, PINGRESP included
            elif now - self._last_received > interval * 1.5:
                self._fail(ConnectionLost(f"mqtt connection to {self.options.where}: no "
                                          f"answer within {interval * 1.5:g}s"))
                return
            if now - self._last_sent >= interval / 2:
                self._write(codec.PINGREQ_PACKET)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            self._last_sent = time.monotonic()

    def _fail(self, error: SessionError) -> None:
        if self._error is None:
            self._error = error
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._error is None and not self._closing:
            why = f": {exc}" if exc else ""
            self._error = ConnectionLost(
                f"mqtt connection to {self.options.where} lost{why}")
        if not self._closed.done():
            self._closed.set_result(None)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        if self._pinger is not None:
            self._pinger.cancel()

    @property
    def closed(self) -> asyncio.Future[None]:
        """Done when the connection has ended (`error` then says why, unless closed by us)."""
        return self._closed

    @property
    def error(self) -> SessionError | None:
        return self._error

    def abort(self) -> None:
        """Drop the connection at once (no DISCONNECT: the broker keeps the session)."""
        if self._transport is not None:
            self._transport.abort()

    async def close(self, timeout: float = 2.0) -> None:
        """DISCONNECT and wait for the broker to close, so it has read every ack sent."""
        self._closing = True
        if self._transport is None or self._closed.done():
            return
        # Nothing takes the inbox any more: let it go (its messages are not acknowledged and
        # come again), and read on, for the broker's close must be read.
        self._consuming = False
        self._inbox.clear()
        self.paused = self._full = False
        self._update_reading()
        self._write(codec.DISCONNECT_PACKET)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._closed), timeout)
        self.abort()
