"""The MQTT publisher: committed outbox rows → broker, deleted only after the broker's ack.

One `Publisher` per daemon. ``await publisher.run()`` (as a task) keeps a connection up and
drains the outbox oldest first; ``await publisher.stop(drain_timeout)`` lets what is committed
go out within the time limit, publishes the retained ``offline`` status and disconnects.

* Connection: ``async with aiomqtt.Client(...)`` per attempt, wrapped, never reached into;
  client id, username/password, TLS (`gateway.runtime.tls`), keepalive. The last will is the
  retained ``offline`` status on ``{prefix}/{id}/status``; ``online`` is published retained on
  every connect. Failures are one log line (``tls handshake with host:port failed: ...``,
  ``cannot connect to host:port: connection refused``) and a retry after a capped,
  jittered exponential backoff.
* Delivery: up to ``window`` messages (and about ``window_bytes``) in flight at once. For
  QoS 1 aiomqtt's ``publish()`` returns when paho's ``on_publish`` fires, which for QoS 1
  is the PUBACK (QoS 2: PUBCOMP); only then is the message acked to the outbox, whose next
  commit deletes its rows. With QoS 0 ``on_publish`` fires once the message is written to
  the socket, so rows go as soon as the message left the process (no broker guarantee:
  QoS 0 is for operators who accept loss). On every (re)connect the outbox is rewound:
  messages in flight when a connection died are sent again (duplicates, same ``ts``).
* Topic and payload carry the gateway id stored with the readings (``message.gateway``),
  never the id configured now (docs/outbox.md).
* While the disk refuses commits, readings waiting in memory are taken out of the outbox
  (``take_unstored``) as the window has room and published directly, at most once: one lost
  in flight is handed back to the outbox as ``lost`` (counted), never resent.
* A lost connection is noticed through aiomqtt's public ``client.messages`` iterator, which
  raises ``MqttError`` on disconnect; in-flight publishes are then cancelled and retried on
  the next connection.
* Side traffic of the fleet (SPEC §7): the status payload comes from a ``status(state)``
  callable (the daemon's health record); `send` publishes one message on the live
  connection (False when there is none); `subscribe` registers a handler for a topic,
  subscribed on every connect and fed from the same ``client.messages`` iterator;
  `on_connect` callbacks run after each connect (e.g. to send pending results).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiomqtt

from gateway.core.errors import PublishError
from gateway.core.model import GatewayConfig, MqttConfig
from gateway.core.payload import (
    build_json,
    build_payload,
    data_topic,
    status_payload,
    status_topic,
)
from gateway.edge.outbox import Outbox, OutboxMessage
from gateway.runtime.backoff import JITTER, Backoff
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.tls import build_tls_context, describe_mqtt_error

log = logging.getLogger("sensegate.publish")

WINDOW = 100  # messages in flight at once
WINDOW_BYTES = 2 * 1024 * 1024  # estimated payload bytes in flight at once (slow uplinks)
STAGE_BYTES = 4 * 1024 * 1024  # read ahead from the outbox, so a backlog groups well
STAGE_MESSAGES = 10_000
RECONNECT_MIN = 0.5
RECONNECT_MAX = 30.0
STABLE_AFTER = 10.0  # a connection that lasted this long resets the backoff
STATUS_TIMEOUT = 5.0  # seconds for the online/offline status publish


def _now_ns() -> int:
    return time.time_ns()


TAKEOVER_AFTER = 3  # accepted sessions closed in a row before a takeover is named as such


def closed_after_connect(host: str, port: int, client_id: str, times: int) -> str:
    """The log line for an accepted MQTT session that then ended without a socket error,
    ``times`` sessions in a row.

    MQTT 3.1.1 gives no reason: the broker closes the old connection when a client with the
    same client id connects (a second gateway with the same config), as it does on its own
    restart. Once accepted sessions keep being closed, it is named a takeover.
    """
    where = f"{host}:{port}"
    if times < TAKEOVER_AFTER:
        return (f"mqtt connection to {where} as client id {client_id!r} was closed: the broker "
                "restarted, the link dropped, or another client connected with the same "
                "client id")
    return (f"another client took over the session of client id {client_id!r} at {where} "
            f"({times} sessions in a row closed after the broker accepted them): two gateways "
            "share this client id; give each its own gateway.id or mqtt.client_id")


class _SocketErrors(logging.Filter):
    """Keeps paho's last socket error (logged, not raised, e.g. a TLS alert after the
    handshake) so a connect that then times out can say why; the line itself is dropped,
    the publisher logs its own."""

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            message = record.getMessage()
            if "socket" in message:
                self.last = message
                return False
        return True


class Publisher:
    """Publishes the outbox to MQTT; see the module docstring."""

    def __init__(
        self,
        config: GatewayConfig,
        outbox: Outbox,
        *,
        metrics: GatewayMetrics | None = None,
        window: int = WINDOW,
        window_bytes: int = WINDOW_BYTES,
        reconnect_min: float = RECONNECT_MIN,
        reconnect_max: float = RECONNECT_MAX,
        status: Callable[[str], bytes] | None = None,
    ) -> None:
        self._config = config
        self._status = status or (lambda state: status_payload(state, _now_ns()))
        self._client_now: aiomqtt.Client | None = None  # the live connection, if any
        self._subscriptions: dict[str, Callable[[aiomqtt.Message], None]] = {}
        self._connect_callbacks: list[Callable[[], None]] = []
        self._outbox = outbox
        self._metrics = metrics if metrics is not None else GatewayMetrics()
        self._window = max(1, window)
        self._window_bytes = max(1, window_bytes)
        self._stage_bytes = max(STAGE_BYTES, self._window_bytes, config.outbox.max_message_bytes)
        self._reconnect_min = reconnect_min
        self._reconnect_max = max(reconnect_min, reconnect_max)
        self._connected = False
        self._stop = asyncio.Event()
        self._reconfigure = asyncio.Event()
        self._wake = asyncio.Event()
        self._finished = asyncio.Event()
        self._drain_deadline: float | None = None
        self._task: asyncio.Task[Any] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        # (deadline, task) per publish in send order: the publish timeout, checked by the
        # pump (cheaper than a timer per publish)
        self._deadlines: deque[tuple[float, asyncio.Task[None]]] = deque()
        self._inflight_bytes = 0
        self._session_error: BaseException | None = None
        self._connected_once = False
        self.last_error: str | None = None
        self.connection_changed_at = time.time()  # wall time of the last connect/disconnect
        self.published_messages = 0
        self.published_readings = 0
        self._socket_errors = _SocketErrors()
        self._paho_log = logging.getLogger(f"sensegate.mqtt.{config.id}")
        self._side_tasks: set[asyncio.Future[None]] = set()

    @property
    def connected(self) -> bool:
        return self._connected

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, publish, reconnect, until `stop` (or cancellation)."""
        self._task = asyncio.current_task()
        self._finished.clear()
        remove_listener = self._outbox.on_commit(self._wake.set)
        self._paho_log.addFilter(self._socket_errors)
        backoff = Backoff(self._reconnect_min, self._reconnect_max, jitter=JITTER)
        loop = asyncio.get_running_loop()
        closed_in_a_row = 0  # accepted sessions that ended without a socket error
        try:
            while not self._stop.is_set():
                mqtt = self._config.mqtt
                self._reconfigure.clear()
                started = loop.time()
                self._socket_errors.last = None
                self._connected_once = False
                try:
                    await self._session(mqtt)
                    failure = None
                except PublishError as exc:
                    failure = str(exc)
                except (aiomqtt.MqttError, OSError) as exc:
                    failure = describe_mqtt_error(exc, mqtt.host, mqtt.port)
                    socket_error = self._socket_errors.last
                    if socket_error is not None and not self._connected_once:
                        # e.g. "failed to receive on socket: [SSL: TLSV13_ALERT_CERTIFICATE_
                        # REQUIRED] ..." while waiting for CONNACK: that is the real reason
                        failure = describe_mqtt_error(
                            OSError(socket_error), mqtt.host, mqtt.port
                        )
                    elif (self._connected_once and socket_error is None
                          and isinstance(exc, aiomqtt.MqttError)):
                        # two gateways with one client id knock each other off within
                        # their reconnect delays; a long session closed once is not that
                        long_session = loop.time() - started > 3 * self._reconnect_max
                        closed_in_a_row = 1 if long_session else closed_in_a_row + 1
                        failure = closed_after_connect(mqtt.host, mqtt.port, mqtt.client_id,
                                                       closed_in_a_row)
                finally:
                    self._set_connected(False)
                if self._stop.is_set():
                    break
                if failure is None:  # reconfigured: connect again with the new settings
                    backoff.reset()
                    continue
                if not self._connected_once:
                    closed_in_a_row = 0
                self.last_error = failure
                self._metrics.publish_errors_total.inc()
                if loop.time() - started >= STABLE_AFTER:
                    backoff.reset()
                wait = backoff.next()
                log.warning("%s; retrying in %.1fs", failure, wait)
                # New mqtt settings (a reload, a remote config's rollback) end the wait:
                # they are tried at once, not after a backoff earned by the old ones.
                waits = [asyncio.ensure_future(self._stop.wait()),
                         asyncio.ensure_future(self._reconfigure.wait())]
                try:
                    await asyncio.wait(waits, timeout=wait,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waits:
                        waiter.cancel()
                if self._reconfigure.is_set():
                    backoff.reset()
        finally:
            remove_listener()
            self._paho_log.removeFilter(self._socket_errors)
            await self._cancel_inflight()
            self._set_connected(False)
            self._finished.set()

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Publish what is committed within ``drain_timeout``, say ``offline``, disconnect.

        Unacknowledged rows stay in the outbox for the next start. Returns once `run` ended.
        """
        loop = asyncio.get_running_loop()
        self._drain_deadline = loop.time() + max(0.0, drain_timeout)
        self._stop.set()
        self._wake.set()
        if self._task is None or self._task.done():
            return
        try:
            await asyncio.wait_for(
                asyncio.shield(self._finished.wait()), max(0.0, drain_timeout) + STATUS_TIMEOUT
            )
        except TimeoutError:
            log.warning("publisher did not stop within the drain time; cancelling it")
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def apply(self, config: GatewayConfig) -> None:
        """Take a reloaded config: new format/prefix at once, new mqtt settings by reconnecting."""
        old = self._config
        self._config = config
        if config.mqtt != old.mqtt:
            log.info("mqtt settings changed: reconnecting")
            self._reconfigure.set()
            self._wake.set()

    # -- side traffic (fleet) ----------------------------------------------------------

    def subscribe(self, topic: str, handler: Callable[[aiomqtt.Message], None]) -> None:
        """Deliver messages on ``topic`` to ``handler`` (on the loop; it must not block)."""
        self._subscriptions[topic] = handler
        client = self._client_now
        if client is not None:
            self._background(client.subscribe(topic, qos=1, timeout=STATUS_TIMEOUT))

    def unsubscribe(self, topic: str) -> None:
        if self._subscriptions.pop(topic, None) is not None and self._client_now is not None:
            self._background(self._client_now.unsubscribe(topic, timeout=STATUS_TIMEOUT))

    def on_connect(self, callback: Callable[[], None]) -> None:
        self._connect_callbacks.append(callback)

    async def send(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Publish one message (QoS 1) now; True once the broker acknowledged it, False
        when there is no connection or it failed (the caller keeps it for the next one)."""
        client = self._client_now
        if client is None:
            return False
        try:
            await client.publish(topic, payload, qos=1, retain=retain, timeout=STATUS_TIMEOUT)
        except aiomqtt.MqttError as exc:
            log.debug("could not publish on %s: %s", topic, exc)
            return False
        return True

    def _background(self, coro: Any) -> None:
        async def quietly() -> None:
            with contextlib.suppress(aiomqtt.MqttError):
                await coro

        task = asyncio.ensure_future(quietly())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # -- one connection ----------------------------------------------------------------

    def _client(self, mqtt: MqttConfig) -> aiomqtt.Client:
        tls_context = build_tls_context(mqtt.tls) if mqtt.tls is not None else None
        will = aiomqtt.Will(
            status_topic(mqtt.topic_prefix, self._config.id),
            self._status("offline"),
            qos=1,
            retain=True,
        )
        client = aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            identifier=mqtt.client_id,
            username=mqtt.username,
            password=mqtt.password.reveal() if mqtt.password is not None else None,
            will=will,
            keepalive=max(1, int(mqtt.keepalive)),
            tls_context=tls_context,
            max_inflight_messages=self._window,
            logger=self._paho_log,
            timeout=max(10.0, mqtt.keepalive),
        )
        # The window is deliberate: no warning about "pending publish calls" for it.
        client.pending_calls_threshold = self._window + 10
        return client

    async def _session(self, mqtt: MqttConfig) -> None:
        client = self._client(mqtt)
        topic = status_topic(mqtt.topic_prefix, self._config.id)
        async with client:
            self._set_connected(True)
            self._connected_once = True
            self.last_error = None
            log.info(
                "connected to mqtt broker %s:%d as %r%s",
                mqtt.host, mqtt.port, mqtt.client_id, " (tls)" if mqtt.tls else "",
            )
            await client.publish(
                topic, self._status("online"), qos=1, retain=True, timeout=STATUS_TIMEOUT,
            )
            subscribed = list(self._subscriptions)
            for sub in subscribed:
                await client.subscribe(sub, qos=1, timeout=STATUS_TIMEOUT)
            self._outbox.rewind()
            self._client_now = client
            for sub in set(self._subscriptions) - set(subscribed):  # added meanwhile
                self._background(client.subscribe(sub, qos=1, timeout=STATUS_TIMEOUT))
            try:
                for callback in self._connect_callbacks:
                    callback()
                await self._pump(client)
            finally:
                self._client_now = None
            if self._stop.is_set():
                try:
                    await client.publish(
                        topic, self._status("offline"), qos=1, retain=True,
                        timeout=STATUS_TIMEOUT,
                    )
                except aiomqtt.MqttError as exc:
                    log.warning(
                        "could not publish offline status: %s",
                        describe_mqtt_error(exc, mqtt.host, mqtt.port),
                    )
                log.info("disconnected from mqtt broker %s:%d", mqtt.host, mqtt.port)

    async def _pump(self, client: aiomqtt.Client) -> None:
        """Publish outbox messages with a window until stop (drained or deadline) or failure."""
        loop = asyncio.get_running_loop()
        self._session_error = None
        staged: deque[OutboxMessage] = deque()  # taken from the outbox, not yet sent
        watcher = asyncio.ensure_future(self._watch(client))
        watcher.add_done_callback(lambda _: self._wake.set())
        try:
            while True:
                if watcher.done():
                    watcher.result()  # raises the MqttError of the lost connection
                    raise aiomqtt.MqttError("disconnected")
                if self._session_error is not None:
                    raise self._session_error
                self._check_deadlines(loop.time())
                if self._reconfigure.is_set():
                    return
                if self._stop.is_set() and (
                    self._drain_deadline is None or loop.time() >= self._drain_deadline
                ):
                    return
                self._wake.clear()
                if len(staged) < self._window:
                    # Read ahead a few MiB so the scans of many devices group into few
                    # messages; the window then limits what is in flight. Taken while a
                    # window's worth is still staged, i.e. while the window is full and
                    # the broker busy, so the window never waits for `take`.
                    staged.extend(self._outbox.take(STAGE_MESSAGES, max_bytes=self._stage_bytes))
                sent = 0
                while (
                    staged
                    and len(self._inflight) < self._window
                    and (not self._inflight or self._inflight_bytes < self._window_bytes)
                ):
                    self._send(client, staged.popleft())
                    sent += 1
                if not staged and len(self._inflight) < self._window:
                    # The disk refuses commits: what waits in memory goes out directly, at
                    # most once (taken only as the window has room, never staged).
                    for message in self._outbox.take_unstored(self._window - len(self._inflight)):
                        self._send(client, message)
                        sent += 1
                if sent:
                    await asyncio.sleep(0)  # let the sends start before sending more
                    continue
                if self._stop.is_set() and not self._inflight and not staged:
                    return  # drained: everything committed was acknowledged
                timeout = 1.0
                if self._stop.is_set() and self._drain_deadline is not None:
                    timeout = max(0.0, min(timeout, self._drain_deadline - loop.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            watcher.cancel()
            await self._cancel_inflight()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await watcher

    async def _watch(self, client: aiomqtt.Client) -> None:
        # Ends, with MqttError, when the link drops; meanwhile feeds the subscriptions.
        async for message in client.messages:
            for topic, handler in list(self._subscriptions.items()):
                if message.topic.matches(topic):
                    handler(message)

    def _send(self, client: aiomqtt.Client, message: OutboxMessage) -> None:
        config = self._config
        try:
            # Under the id the readings were polled under (stored with them), never the
            # id configured now: docs/outbox.md, "gateway id".
            topic = data_topic(config.mqtt.topic_prefix, message.gateway, message.device)
            payload = self._payload(message)
        except ValueError as exc:
            # Cannot ever be published (a name no topic can carry): keeping it would block
            # the stream forever. Config validation makes this unreachable in practice.
            log.error(
                "dropping %d readings of device %r that cannot be published: %s",
                message.count, message.device, exc,
            )
            self._metrics.publish_errors_total.inc()
            self._outbox.ack(message)
            return
        if not payload:  # influx format and no scan has a good value: nothing to carry
            self._outbox.ack(message)
            return
        self._inflight_bytes += message.size
        task = asyncio.ensure_future(self._publish(client, message, topic, payload))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        mqtt = self._config.mqtt
        self._deadlines.append(
            (task.get_loop().time() + max(60.0, 4 * mqtt.keepalive), task)
        )

    def _check_deadlines(self, now: float) -> None:
        """Fail the session when a publish waited longer than its timeout for the broker's
        ack (the oldest unacknowledged publish decides; acks may come out of order)."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done():
            deadlines.popleft()
        if deadlines and deadlines[0][0] <= now:
            raise aiomqtt.MqttError("Operation timed out")

    def _payload(self, message: OutboxMessage) -> bytes:
        config = self._config
        if config.mqtt.format != "json":
            return build_payload(
                config.mqtt.format, message.gateway, message.device, message.measurement,
                message.tags, message.readings,
            )
        # The envelope from gateway.core.payload, the readings spliced in from the stored JSON
        # (no decode and re-encode per reading: this is most of a backlog drain's CPU).
        head = build_json(message.gateway, message.device, message.measurement, message.tags, [])
        if not head.endswith(b"[]}"):  # the envelope changed shape: take the slow path
            return build_payload(
                "json", message.gateway, message.device, message.measurement, message.tags,
                message.readings,
            )
        return b"".join((head[:-2], message.json_readings(), b"]}"))

    async def _publish(
        self, client: aiomqtt.Client, message: OutboxMessage, topic: str, payload: bytes
    ) -> None:
        mqtt = self._config.mqtt
        delivered = False
        try:
            # No timer per publish (aiomqtt's wait_for would wrap each wait in another
            # task and a timer): the pump enforces the timeout, see _check_deadlines.
            await client.publish(topic, payload, qos=mqtt.qos, retain=False, timeout=math.inf)
        except aiomqtt.MqttError as exc:
            if self._session_error is None:
                self._session_error = exc
        else:
            delivered = True
            self._outbox.ack(message)
            self.published_messages += 1
            self.published_readings += message.count
            self._metrics.published_messages_total.inc()
            self._metrics.published_readings_total.inc(message.count)
        finally:
            if not delivered:
                self._outbox.lost(message)  # only unstored ones: the rest is sent again
            self._inflight_bytes -= message.size
            self._wake.set()

    async def _cancel_inflight(self) -> None:
        tasks = list(self._inflight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._inflight.clear()
        self._deadlines.clear()
        self._inflight_bytes = 0

    # -- metrics -----------------------------------------------------------------------

    def _set_connected(self, value: bool) -> None:
        if value != self._connected:
            self.connection_changed_at = time.time()
        self._connected = value
        self._metrics.mqtt_connected.set(1 if value else 0)
