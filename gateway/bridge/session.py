"""The bridge's MQTT link: connect, subscribe, hand over messages, reconnect.

`MqttLink.run()` keeps one `gateway.bridge.receive.Session` connected: a fixed client id, a
persistent session (`clean=False`, a session expiry in MQTT 5), QoS 1, through
`$share/<group>/<filter>` when a shared group is set, with capped backoff between attempts.
Every message of every read goes to `on_message(session, message)` on the event loop, with
no queue and no task per message. A message is acknowledged on the session that delivered
it, or not at all: after a reconnect the broker delivers the unacknowledged ones again.

The broker keeps a session's subscriptions across connections, so the filter this session
holds is kept in `state_dir/subscription.json`: a changed `subscribe` or `shared_group` (by
SIGHUP or across a restart) replaces the old filter instead of adding to it, and a resumed
session that already holds a plain filter is not subscribed again (MQTT 3.1.1 brokers would
send the retained messages again, to be dead-lettered again on every reconnect; in MQTT 5
the subscription asks for retained messages only when it is new).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from gateway.bridge import ingest
from gateway.bridge.batching import Link
from gateway.bridge.receive import Message, Protocol, Session, SessionError, SessionOptions
from gateway.core.errors import PublishError
from gateway.core.model import BridgeConfig, BridgeMqttConfig
from gateway.runtime.backoff import Backoff
from gateway.runtime.tls import build_tls_context, describe_mqtt_error

log = logging.getLogger("sensegate.bridge")

RECONNECT_MAX = 30.0
SUBSCRIPTION_FILE = "subscription.json"  # in state_dir: the filter this session holds

OnMessage = Callable[[Session, Message], None]
OnState = Callable[[Session | None, str], None]  # connected session (None: down), error
OnSession = Callable[[Session], None]  # a new connection: its messages come from now on


def subscription(mqtt: BridgeMqttConfig) -> str:
    """The topic filter to subscribe to, through the shared group when one is set."""
    if mqtt.shared_group:
        return f"$share/{mqtt.shared_group}/{mqtt.subscribe}"
    return mqtt.subscribe


def tls_context(mqtt: BridgeMqttConfig) -> ssl.SSLContext | None:
    """The broker TLS context (`gateway.runtime.tls`, as the gateway's publisher), or None.

    Raises `PublishError` naming the file (never its content) when a file cannot be used.
    """
    if mqtt.tls is None:
        return None
    return build_tls_context(mqtt.tls)


def session_options(mqtt: BridgeMqttConfig, protocol: Protocol) -> SessionOptions:
    """One connection's options: persistent session, TLS, the bridge's size limit."""
    return SessionOptions(
        host=mqtt.host, port=mqtt.port, client_id=mqtt.client_id,
        protocol=protocol, clean=False,
        session_expiry=int(mqtt.session_expiry),
        receive_maximum=max(1, min(65535, mqtt.receive_maximum)),
        keepalive=int(mqtt.keepalive),
        username=mqtt.username,
        password=mqtt.password.reveal() if mqtt.password else None,
        tls=tls_context(mqtt),
        max_payload=ingest.MAX_PAYLOAD,
    )


def describe(exc: BaseException, mqtt: BridgeMqttConfig) -> str:
    """One lower-case line for `stats.last_error` and the log."""
    if isinstance(exc, SessionError):
        return str(exc)  # names the broker and says why
    if isinstance(exc, TimeoutError):
        return f"mqtt connection to {mqtt.host}:{mqtt.port} timed out"
    return describe_mqtt_error(exc, mqtt.host, mqtt.port)


async def reconcile_subscription(session: Session, mqtt: BridgeMqttConfig,
                                 state_dir: str) -> None:
    """Subscribe (unless the resumed session holds the filter already) and unsubscribe the
    filter of an earlier config (see the module docstring)."""
    path = Path(state_dir) / SUBSCRIPTION_FILE
    ident = {"host": mqtt.host, "port": mqtt.port, "client_id": mqtt.client_id}
    current = subscription(mqtt)
    record = {**ident, "filter": current}
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = None
    # A shared subscription is always renewed: Mosquitto 2.0 restores a session across
    # its restart but not the session's `$share/...` subscription (and retained messages
    # are never sent to shared subscriptions).
    if mqtt.shared_group or not (session.session_present and previous == record):
        await session.subscribe(current, qos=mqtt.qos)
    if isinstance(previous, dict) and previous.get("filter") != current and all(
        previous.get(k) == v for k, v in ident.items()
    ):
        old = str(previous.get("filter"))
        await session.unsubscribe(old)
        log.info("unsubscribed %r (no longer in the config)", old)
    if previous != record:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record) + "\n")
        os.replace(tmp, path)


class MqttLink(Link):
    """The reconnect loop around one `Session` at a time.

    `config()` is read at every attempt (a SIGHUP reload applies on the next connection).
    `on_session(session)` is called as soon as a connection is made: its messages are handed
    to `on_message` from then on, also while the subscription is being made (a resumed
    session's backlog arrives first, and SUBACK only after it: the backlog must be taken for
    the subscription to complete, and taking it keeps the session's inbox bounded).
    `on_state(session, error)` is called when a session is up and subscribed (error "") and
    when it is down (session None, error the reason, "" on a clean stop).
    """

    def __init__(self, config: Callable[[], BridgeConfig], *, on_message: OnMessage,
                 on_state: OnState, on_session: OnSession | None = None,
                 protocol: Protocol = Protocol.V5,
                 reconnect_max: float = RECONNECT_MAX) -> None:
        super().__init__()
        self.config = config
        self.on_message = on_message
        self.on_state = on_state
        self.on_session = on_session
        self.protocol = protocol
        self.reconnect_max = reconnect_max
        self.current: Session | None = None  # the connected session

    async def run(self) -> None:
        backoff = Backoff(min(1.0, self.reconnect_max), self.reconnect_max)
        while not self._stopping:
            cfg = self.config()
            mqtt = cfg.mqtt
            assert mqtt is not None  # the service runs this link only for an mqtt source
            session: Session | None = None
            error = ""
            try:
                session = await Session.connect(session_options(mqtt, self.protocol))
                self.current = session
                if self.on_session is not None:
                    self.on_session(session)
                consumer = asyncio.create_task(self._read(session), name="mqtt-read")
                try:
                    await reconcile_subscription(session, mqtt, cfg.state_dir)
                    log.info("connected to mqtt %s:%d as %r (%s), subscribed to %r",
                             mqtt.host, mqtt.port, mqtt.client_id,
                             "session resumed" if session.session_present else "new session",
                             subscription(mqtt))
                    self.on_state(session, "")
                    backoff.reset()
                    if await self._consume(session, consumer):
                        return
                finally:
                    consumer.cancel()
                    if consumer.done() and not consumer.cancelled():
                        consumer.exception()  # the connection's end, raised here already
            except PublishError as exc:  # a TLS file went missing since start-up
                error = str(exc)
                log.error("%s; retrying in %.0fs", exc, backoff.upcoming)
            except (SessionError, OSError, TimeoutError) as exc:
                if self._stopping:
                    return
                error = describe(exc, mqtt)
                log.warning("%s; reconnecting in %.0fs", error, backoff.upcoming)
            finally:
                if session is not None and not session.closed.done():
                    session.abort()  # a clean stop has closed it already
                self.current = None
                self.on_state(None, error)
            await asyncio.sleep(backoff.next())

    async def _consume(self, session: Session, consumer: asyncio.Task[None]) -> bool:
        """Hand over messages (`consumer`) until the connection ends (raises its
        `SessionError`) or the bridge stops (True, after `leave()` and a clean disconnect)."""
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({consumer, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            consumer.cancel()
        if self._stopping:
            # Stay connected while the writers drain, so they can acknowledge.
            await self._leave.wait()
            await session.close()
            return True
        await consumer  # raises the SessionError that ended the connection
        raise SessionError("mqtt connection ended")

    async def _read(self, session: Session) -> None:
        on_message = self.on_message
        async for messages in session.batches():
            for message in messages:
                on_message(session, message)
