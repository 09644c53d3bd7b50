"""`sensegate bridge`: MQTT → InfluxDB, acknowledging each message only once it is stored.

Flow (one asyncio loop, blocking HTTP in a small thread pool):

    broker ──► consume: decode (gateway.bridge.ingest) ──► Batch ──► write queue ──► writers
               dead letters appended at once         │ flush at batch_size points,
                                                      │ at a fifth of the receive
                                                      │ window, or flush_interval
    writers: gateway.bridge.writer (retries, bisects rejected or failing batches) → dead-letter
             the poison points → fsync the dead-letter file → PUBACK every message of the batch

MQTT: v5 (aiomqtt for the connection; QoS 1 PUBLISH packets read in bulk by
`gateway.bridge.receive`), fixed client id, `clean_start=False` with a session expiry, QoS 1,
through `$share/<group>/<filter>` when a shared group is set, manual acknowledgements. The
broker sends at most `receive_maximum` unacknowledged messages; a batch is flushed when it
holds 1/(WRITERS + 1) of them (a fifth), so the window never fills with messages waiting
for a timer. Reading pauses while more than HELD_BATCHES batches' worth of points wait
for InfluxDB (TCP backpressure), so memory is bounded by points, not by message size.
While InfluxDB is down the writers retry with capped backoff, reading pauses (or the
window fills), and the broker keeps the rest: nothing is acknowledged early and nothing is
lost.

A message is acknowledged on the connection that delivered it, or not at all: after a
reconnect the broker delivers the unacknowledged messages again (same `ts`, so InfluxDB
stores the points once).

Lifecycle as `gateway.edge.daemon`: `startup()`, `main_loop()` (SIGHUP reload, watchdog,
STATUS=), `shutdown()` (stop consuming, flush, drain the writers within `drain_timeout`
while still connected so the written messages get acknowledged, then disconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.bridge import ingest
from gateway.bridge.deadletter import DeadLetters
from gateway.bridge.receive import BulkReceiveClient
from gateway.bridge.sink import Sink, create_sink
from gateway.bridge.writer import write_batch
from gateway.core.errors import ConfigError, PublishError
from gateway.core.model import BridgeConfig, BridgeMqttConfig
from gateway.runtime import systemd
from gateway.runtime.backoff import Backoff
from gateway.runtime.exitcodes import ExitCode
from gateway.runtime.lifecycle import run_phases, signal_handlers
from gateway.runtime.metrics import BridgeMetrics, serve_metrics
from gateway.runtime.tls import build_tls_context, describe_mqtt_error

log = logging.getLogger("sensegate.bridge")

WRITERS = 4  # batches written concurrently (bench/bridge.py: 4 beat 2, 3 and 8)
# Reading pauses while the batches waiting for or in a writer hold more than this many
# batch_size's worth of points, and resumes at half: memory is bounded by points, whatever
# the size of the messages in the receive window.
HELD_BATCHES = 2 * WRITERS
STATUS_EVERY = 5.0
RECONNECT_MAX = 30.0
SUBSCRIPTION_FILE = "subscription.json"  # in state_dir: the filter this session holds


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


@dataclass(slots=True)
class Inbound:
    """One received message waiting for its acknowledgement."""

    client: aiomqtt.Client
    mid: int
    qos: int
    topic: str
    first_line: int  # index of its first line in the batch


@dataclass(slots=True)
class Batch:
    lines: list[str] = field(default_factory=list)
    messages: list[Inbound] = field(default_factory=list)
    started: float = 0.0  # monotonic time of its first message

    def owner(self, line_index: int) -> Inbound:
        """The message that carried the line at `line_index` (messages are in line order)."""
        lo, hi = 0, len(self.messages) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.messages[mid].first_line <= line_index:
                lo = mid
            else:
                hi = mid - 1
        return self.messages[lo]


@dataclass
class Stats:
    received: int = 0
    points_written: int = 0
    batches_written: int = 0
    acked: int = 0
    write_errors: int = 0
    read_pauses: int = 0  # times reading the broker paused for InfluxDB to catch up
    dead_letters: dict[str, int] = field(default_factory=dict)
    connected: bool = False
    store_ok: bool = True
    last_error: str = ""


@dataclass
class Bridge:
    config_path: str
    config: BridgeConfig | None = None
    drain_timeout: float = 10.0
    reconnect_max: float = RECONNECT_MAX  # cap of the MQTT reconnect backoff (the demo lowers it)
    should_exit: asyncio.Event = field(default_factory=asyncio.Event)
    reload_requested: asyncio.Event = field(default_factory=asyncio.Event)
    force_exit: bool = False
    stats: Stats = field(default_factory=Stats)
    started: bool = False

    def __post_init__(self) -> None:
        self._batch = Batch()
        self._ready: deque[Batch] = deque()  # full batches waiting for a writer
        self._ready_event = asyncio.Event()
        self._busy = 0  # writers writing a batch now
        self._accepting = True
        self._client: aiomqtt.Client | None = None
        self._sink: Sink | None = None
        self._deadletters: DeadLetters | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.failed = False  # a component died of a bug: stop, and exit 1
        self._writers: list[asyncio.Task[Any]] = []
        self._session: asyncio.Task[Any] | None = None
        self._stop_consuming = asyncio.Event()
        self._stopping = False
        self._leave = asyncio.Event()
        self._force = asyncio.Event()  # a second SIGINT: cut the drain
        self._busy_messages = 0  # messages in the batches being written now
        self._busy_points = 0  # and their points
        self._metrics = BridgeMetrics()
        self._metrics_server: Any = None
        self._loaded_at = 0.0

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> int:
        with signal_handlers(self._handle_exit, self.reload_requested.set):
            return await run_phases(self, "bridge")

    async def startup(self) -> None:
        if self.config is None:
            from gateway.config.load import load_bridge_config

            self.config = load_bridge_config(self.config_path)
        cfg = self.config
        tls_context(cfg.mqtt)  # unreadable TLS files: fail at start (exit 1), not later
        self._deadletters = DeadLetters(cfg.state_dir)
        self._deadletters._open()  # fail at start, not at the first dead letter
        self._sink = create_sink(cfg.influxdb, workers=WRITERS)
        await self._start_metrics(cfg)
        self._writers = [
            asyncio.create_task(self._writer(), name=f"writer-{i}") for i in range(WRITERS)
        ]
        self._tasks.append(asyncio.create_task(self._ticker(), name="ticker"))
        self._session = asyncio.create_task(self._mqtt_session(), name="mqtt")
        self.started = True
        log.info(
            "bridge started: %s → influxdb %s (batch %d points, flush %ss)",
            subscription(cfg.mqtt), self._sink.describe(), cfg.influxdb.batch_size,
            cfg.influxdb.flush_interval,
        )
        systemd.ready(self._status_text())

    async def main_loop(self) -> None:
        interval = systemd.watchdog_interval()
        tick = min(STATUS_EVERY, interval) if interval else STATUS_EVERY
        reload_wait = asyncio.ensure_future(self.reload_requested.wait())
        exit_wait = asyncio.ensure_future(self.should_exit.wait())
        try:
            while not self.should_exit.is_set():
                await asyncio.wait({reload_wait, exit_wait}, timeout=tick,
                                   return_when=asyncio.FIRST_COMPLETED)
                died = [t for t in (self._session, *self._writers, *self._tasks)
                        if t is not None and t.done() and not t.cancelled()
                        and t.exception() is not None]
                if died or (self._session is not None and self._session.done()):
                    # A component died of a bug: shut down cleanly, then exit 1 so that
                    # systemd's Restart=on-failure brings the bridge back.
                    for task in died:
                        log.error("%s stopped: %r", task.get_name(), task.exception())
                    if not died:
                        log.error("mqtt session ended")
                    self.failed = True
                    break
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    reload_wait = asyncio.ensure_future(self.reload_requested.wait())
                    await self.reload()
                systemd.watchdog()
                systemd.status(self._status_text())
        finally:
            reload_wait.cancel()
            exit_wait.cancel()

    async def shutdown(self) -> None:
        systemd.stopping()
        self._stopping = True
        # Stop taking messages (those not taken stay unacknowledged and come again), hand
        # the last partial batch to the writers and let them finish, still connected.
        self._accepting = False
        self._stop_consuming.set()
        self._flush()
        drained = True
        if self._writers and (self._ready or self._busy):
            log.info("stopping: writing %d taken message(s) before disconnecting, at most "
                     "%.0fs (SIGINT again to stop at once)", self._pending_messages(),
                     self.drain_timeout)
            deadline = time.monotonic() + self.drain_timeout
            while self._ready or self._busy:
                if self._force.is_set() or time.monotonic() >= deadline:
                    drained = False
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._force.wait(), 0.02)
        left = self._pending_messages()
        self._leave.set()
        leftover = [t for t in [*self._writers, *self._tasks] if not t.done()]
        for task in leftover:
            task.cancel()
        if self._session is not None:
            try:
                await asyncio.wait_for(self._session, timeout=5)
            except (TimeoutError, asyncio.CancelledError, Exception):
                self._session.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)
        if not drained:
            why = ("drain cut by a second SIGINT" if self._force.is_set()
                   else f"drain timed out after {self.drain_timeout:g}s")
            log.warning("%s; %d message(s) left unacknowledged at the broker (delivered "
                        "again on the next start)", why, left)
        if self._sink is not None:
            await self._sink.close()
        if self._deadletters is not None:
            self._deadletters.close()
        if self._metrics_server is not None:
            self._metrics_server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._metrics_server.wait_closed(), timeout=2)
        log.info(
            "bridge stopped: %d messages received, %d acknowledged, %d points written",
            self.stats.received, self.stats.acked, self.stats.points_written,
        )

    async def reload(self) -> None:
        systemd.reloading()
        assert self.config is not None
        try:
            from gateway.config.load import load_bridge_config

            new = load_bridge_config(self.config_path)
        except ConfigError as exc:
            for issue in exc.issues:
                log.error("%s", issue)
            log.error("reload refused: %d error(s) in %s; old config kept",
                      len(exc.issues), self.config_path)
            systemd.ready(self._status_text())
            return
        old = self.config
        try:
            tls_context(new.mqtt)
        except PublishError as exc:
            log.error("reload refused: %s; old config kept", exc)
            systemd.ready(self._status_text())
            return
        if new.state_dir != old.state_dir:
            log.error("reload refused: state_dir changed; restart to apply")
            systemd.ready(self._status_text())
            return
        if new.metrics != old.metrics:
            log.warning("metrics.listen changed; restart to apply (other changes applied)")
            new = BridgeConfig(mqtt=new.mqtt, influxdb=new.influxdb, state_dir=new.state_dir,
                               metrics=old.metrics, source=new.source)
        self.config = new
        if new.influxdb != old.influxdb:
            old_sink, self._sink = self._sink, create_sink(new.influxdb, workers=WRITERS)
            if old_sink is not None:
                # Writers in flight hold their own reference; close once they are done.
                self._tasks.append(asyncio.create_task(self._close_later(old_sink)))
            log.info("influxdb settings reloaded: %s", self._sink.describe())
        if new.mqtt != old.mqtt and self._session is not None:
            log.info("mqtt settings changed; reconnecting")
            self._session.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._session
            self._session = asyncio.create_task(self._mqtt_session(), name="mqtt")
        log.info("config reloaded from %s", self.config_path)
        systemd.ready(self._status_text())

    async def _close_later(self, sink: Sink) -> None:
        await asyncio.sleep(self.config.influxdb.timeout * 2 + 1 if self.config else 30)
        await sink.close()

    # -- signals -----------------------------------------------------------------------

    def _handle_exit(self, sig: signal.Signals) -> None:
        if sig == signal.SIGINT and self.should_exit.is_set():
            # A second Ctrl-C: stop waiting for the writers, even mid-drain. Whatever is
            # not acknowledged yet stays at the broker and comes again on the next start.
            self.force_exit = True
            self.drain_timeout = 0.0
            self._force.set()
        self.should_exit.set()

    def _pending_messages(self) -> int:
        return sum(len(b.messages) for b in self._ready) + self._busy_messages

    # -- MQTT --------------------------------------------------------------------------

    def _make_client(self, mqtt: BridgeMqttConfig) -> aiomqtt.Client:
        client = self._new_client(mqtt)
        # Take messages straight from the paho client rather than through aiomqtt's queue
        # and iterator, which cost a task per message. QoS 1 PUBLISH packets come through
        # the bulk receive path (gateway.bridge.receive); anything else through on_message.
        paho = BulkReceiveClient.adopt(
            client._client,
            lambda topic, payload, mid: self._on_publish(client, topic, payload, mid, 1),
            lambda exc: self._read_failed(client, exc),
        )
        # aiomqtt 2.5 has no manual-ack option; paho has (acks go out in _write_batch).
        paho.manual_ack_set(True)
        paho.on_message = lambda _c, _u, message: self._on_message(client, message)
        return client

    def _new_client(self, mqtt: BridgeMqttConfig) -> aiomqtt.Client:
        """The aiomqtt client of one connection: MQTT v5, persistent session, TLS."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(mqtt.session_expiry)
        props.ReceiveMaximum = max(1, min(65535, mqtt.receive_maximum))
        return aiomqtt.Client(
            mqtt.host, mqtt.port,
            identifier=mqtt.client_id,
            username=mqtt.username,
            password=mqtt.password.reveal() if mqtt.password else None,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            keepalive=int(mqtt.keepalive),
            tls_context=tls_context(mqtt),
            tls_insecure=mqtt.tls.insecure if mqtt.tls else None,
            timeout=10,
        )

    @staticmethod
    def _read_failed(client: aiomqtt.Client, exc: Exception) -> None:
        # as aiomqtt's own reader callback: the session loop sees a lost connection
        if not client._disconnected.done():
            client._disconnected.set_exception(exc)

    async def _forget_old_subscription(self, client: aiomqtt.Client,
                                       mqtt: BridgeMqttConfig) -> None:
        """Unsubscribe the filter of an earlier config from this persistent session.

        The broker keeps a session's subscriptions across connections: without this a
        changed `subscribe` or `shared_group` (by SIGHUP or across a restart) would add to
        the old filter instead of replacing it. The last filter is kept in `state_dir`.
        """
        assert self.config is not None
        path = Path(self.config.state_dir) / SUBSCRIPTION_FILE
        session = {"host": mqtt.host, "port": mqtt.port, "client_id": mqtt.client_id}
        current = subscription(mqtt)
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = None
        if isinstance(previous, dict) and previous.get("filter") != current and all(
            previous.get(k) == v for k, v in session.items()
        ):
            old = str(previous.get("filter"))
            await client.unsubscribe(old)
            log.info("unsubscribed %r (no longer in the config)", old)
        if previous != {**session, "filter": current}:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({**session, "filter": current}) + "\n")
            os.replace(tmp, path)

    async def _mqtt_session(self) -> None:
        backoff = Backoff(min(1.0, self.reconnect_max), self.reconnect_max)
        while not self._stopping:
            assert self.config is not None
            mqtt = self.config.mqtt
            try:
                client = self._make_client(mqtt)
            except PublishError as exc:  # a TLS file went missing since start-up
                self.stats.last_error = str(exc)
                delay = backoff.next()
                log.error("%s; retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            # Set before connecting: a persistent session's queued messages may arrive
            # before the SUBACK.
            self._client = client
            try:
                async with client:
                    await client.subscribe(subscription(mqtt), qos=mqtt.qos)
                    await self._forget_old_subscription(client, mqtt)
                    self.stats.connected = True
                    self._metrics.connected(True)
                    log.info("connected to mqtt %s:%d as %r, subscribed to %r",
                             mqtt.host, mqtt.port, mqtt.client_id, subscription(mqtt))
                    backoff.reset()
                    stop = asyncio.ensure_future(self._stop_consuming.wait())
                    try:
                        await asyncio.wait({client._disconnected, stop},
                                           return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        stop.cancel()
                    if self._stopping:
                        # Stay connected while the writers drain, so they can acknowledge.
                        await self._leave.wait()
                        return
                    exc = client._disconnected.exception()
                    raise aiomqtt.MqttError(f"disconnected: {exc}")
            except (aiomqtt.MqttError, OSError) as exc:
                if self._stopping:
                    return
                self.stats.last_error = describe_mqtt_error(exc, mqtt.host, mqtt.port)
                log.warning("%s; reconnecting in %.0fs", self.stats.last_error, backoff.upcoming)
            finally:
                self._client = None
                self.stats.connected = False
                self._metrics.connected(False)
                # Unwritten messages of the lost connection come again after reconnecting.
                self._batch = Batch()
                self._ready = deque(b for b in self._ready if b.messages[0].client is not client)
            await asyncio.sleep(backoff.next())

    def _on_message(self, client: aiomqtt.Client, message: mqtt.MQTTMessage) -> None:
        """paho's on_message (QoS 0 and 2, and packets the bulk path leaves to paho)."""
        try:
            topic = message.topic
        except UnicodeDecodeError:  # a broker should refuse such a topic; still, no loop
            topic = repr(message._topic)
        self._on_publish(client, topic, message.payload, message.mid, message.qos)

    def _on_publish(self, client: aiomqtt.Client, topic: str, payload: bytes, mid: int,
                    qos: int) -> None:
        """A message, on the event loop: decode at once, add to the batch.

        No queue and no task per message: what can pile up here while the writers are busy
        is bounded by the receive window and by `_apply_backpressure`.
        """
        if not self._accepting or client is not self._client:
            return  # not acknowledged: the broker delivers it again
        try:
            self.stats.received += 1
            self._metrics.messages_total.inc()
            try:
                result = ingest.decode_message(topic, payload)
            except Exception as exc:
                # A decoder bug must not leave the message unacknowledged: the broker would
                # deliver it again and again, holding a slot of the receive window forever.
                log.exception("decoding a message from %r failed", topic)
                result = ingest.Rejected(ingest.INTERNAL_ERROR, f"decoding raised {exc!r}")
            batch = self._batch
            if not batch.messages:
                batch.started = time.monotonic()
            batch.messages.append(Inbound(client, mid, qos, topic, len(batch.lines)))
            if result.__class__ is list:
                batch.lines.extend(result)  # type: ignore[arg-type]
            else:
                assert isinstance(result, ingest.Rejected)
                self._dead_letter(topic, result.reason, payload, result.detail)
            if len(batch.lines) >= self._max_points or len(batch.messages) >= self._max_messages:
                self._flush()
        except Exception:
            log.exception("handling a message failed; it stays unacknowledged")

    def _dead_letter(self, topic: str, reason: str, payload: bytes, detail: str) -> None:
        assert self._deadletters is not None
        self._deadletters.append(topic, reason, payload, detail=detail)
        self.stats.dead_letters[reason] = self.stats.dead_letters.get(reason, 0) + 1
        self._metrics.dead_letters_total.labels(reason).inc()
        log.warning("dead letter from %r: %s: %s", topic, reason, detail[:200])

    # -- batching and writing ----------------------------------------------------------

    def _flush(self) -> None:
        batch = self._batch
        if not batch.messages:
            return
        self._batch = Batch()
        self._ready.append(batch)
        self._ready_event.set()
        self._apply_backpressure()

    def _apply_backpressure(self) -> None:
        """Pause reading the broker while too many points wait for InfluxDB (HELD_BATCHES)."""
        client = self._client
        if client is None:
            return
        paho = client._client
        assert isinstance(paho, BulkReceiveClient)
        held = sum(len(b.lines) for b in self._ready) + self._busy_points
        limit = self._max_points * HELD_BATCHES
        if not paho.paused and held > limit:
            paho.pause_reading()
            if paho.paused:  # not when the connection is already gone
                self.stats.read_pauses += 1
                log.debug("reading paused: %d points wait for influxdb", held)
        elif paho.paused and held <= limit // 2:
            paho.resume_reading()
            log.debug("reading resumed: %d points wait for influxdb", held)
        self._metrics.backpressure(held, paho.paused)

    @property
    def _max_points(self) -> int:
        assert self.config is not None
        return self.config.influxdb.batch_size

    @property
    def _max_messages(self) -> int:
        # Leave room in the receive window for the batches being written, so it never
        # fills up with messages that only a timer would flush.
        assert self.config is not None
        return max(1, self.config.mqtt.receive_maximum // (WRITERS + 1))

    async def _ticker(self) -> None:
        while True:
            assert self.config is not None
            interval = self.config.influxdb.flush_interval
            await asyncio.sleep(max(0.01, interval / 4))
            batch = self._batch
            if batch.messages and time.monotonic() - batch.started >= interval:
                self._flush()

    async def _writer(self) -> None:
        while True:
            while not self._ready:
                self._ready_event.clear()
                await self._ready_event.wait()
            batch = self._ready.popleft()
            self._busy += 1
            self._busy_messages += len(batch.messages)
            self._busy_points += len(batch.lines)
            try:
                await self._write_batch(batch)
            except Exception:
                log.exception("writing a batch failed; its messages stay unacknowledged")
            finally:
                self._busy -= 1
                self._busy_messages -= len(batch.messages)
                self._busy_points -= len(batch.lines)
                self._apply_backpressure()

    async def _write_batch(self, batch: Batch) -> None:
        assert self._deadletters is not None
        if await write_batch(
            batch.lines,
            sink=lambda: self._sink,
            # connection lost: the broker delivers these again
            wanted=lambda: batch.messages[0].client is self._client,
            dead_letter=lambda p: self._dead_letter(
                batch.owner(p.index).topic, p.reason, p.payload, p.detail),
            sync=self._deadletters.sync, stats=self.stats, metrics=self._metrics,
        ):
            self.stats.acked += self._acknowledge(batch.messages)

    def _acknowledge(self, messages: list[Inbound]) -> int:
        """PUBACK (PUBCOMP for QoS 2) the messages that came on the current connection."""
        client = self._client
        if client is None:
            return 0
        paho = client._client
        assert isinstance(paho, BulkReceiveClient)
        current = [m for m in messages if m.client is client]
        paho.ack_many([m.mid for m in current if m.qos == 1])
        for m in current:
            if m.qos == 2:
                paho.ack(m.mid, m.qos)
        return len(current)

    # -- status and metrics ------------------------------------------------------------

    def _status_text(self) -> str:
        s = self.stats
        mqtt = "connected" if s.connected else "disconnected"
        store = "ok" if s.store_ok else "failing"
        dead = sum(s.dead_letters.values())
        return (f"mqtt {mqtt}, influxdb {store}; {s.received} received, "
                f"{s.points_written} points written, {dead} dead letters")

    def healthy(self) -> bool:
        return self.stats.connected and self.stats.store_ok

    async def _start_metrics(self, cfg: BridgeConfig) -> None:
        if cfg.metrics is None:
            return
        self._metrics_server = await serve_metrics(
            self._metrics.registry, cfg.metrics.host, cfg.metrics.port, self.healthy
        )


def run(path: str) -> int:
    """`sensegate bridge -c PATH`: 0 clean stop, 2 bad config, 1 fatal."""
    try:
        return asyncio.run(Bridge(path).run())
    except KeyboardInterrupt:
        return ExitCode.OK
