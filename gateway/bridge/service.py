"""`sensegate bridge`: MQTT (or AMQP) → InfluxDB, acknowledging each message once it is stored.

Flow (one asyncio loop, blocking HTTP in a small thread pool):

    broker ──► consume: decode (gateway.bridge.ingest) ──► Batch ──► write queue ──► writers
               dead letters appended at once         │ flush at batch_size points,
                                                      │ at a fifth of the receive
                                                      │ window, or flush_interval
    writers: gateway.bridge.writer (retries, bisects rejected or failing batches) → dead-letter
             the poison points → fsync the dead-letter file → PUBACK every message of the batch

MQTT: v5 (3.1.1 with `Bridge(protocol=Protocol.V311)`) through our own session
(`gateway.bridge.receive`: every packet in a read decoded at once), fixed client id,
`clean_start=False` with a session expiry, QoS 1, through `$share/<group>/<filter>` when a
shared group is set, manual acknowledgements. The broker sends at most `receive_maximum`
unacknowledged messages; a batch is flushed when it holds 1/(WRITERS + 1) of them (a fifth),
so the window never fills with messages waiting for a timer. Reading pauses while more than
HELD_BATCHES batches' worth of points wait for InfluxDB (TCP backpressure), so memory is
bounded by points, not by message size. While InfluxDB is down the writers retry with capped
backoff, reading pauses (or the window fills), and the broker keeps the rest: nothing is
acknowledged early and nothing is lost.

A message is acknowledged on the connection that delivered it, or not at all: after a
reconnect the broker delivers the unacknowledged messages again (same `ts`, so InfluxDB
stores the points once).

AMQP (config `amqp:` instead of `mqtt:`): `gateway.bridge.amqp.AmqpLink` consumes a RabbitMQ
cluster's quorum queue in place of the MQTT link, behind the same interface (`on_message`,
`on_state`, `ack_many` on the delivering source); `prefetch` is its receive window.

Lifecycle as `gateway.edge.daemon`: `startup()`, `main_loop()` (SIGHUP reload, watchdog,
STATUS=), `shutdown()` (stop consuming, flush, drain the writers within `drain_timeout`
while still connected so the written messages get acknowledged, then disconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gateway.bridge.amqp import AmqpLink
from gateway.bridge.amqp import describe as describe_amqp
from gateway.bridge.batching import (
    WRITERS,
    Batch,
    Inbound,
    Source,
    decode,
    max_messages,
    reading_paused,
)
from gateway.bridge.deadletter import DeadLetters
from gateway.bridge.receive import Message, Protocol
from gateway.bridge.session import RECONNECT_MAX, MqttLink, subscription
from gateway.bridge.sink import Sink, create_sink
from gateway.bridge.writer import write_batch
from gateway.core.errors import ConfigError, PublishError
from gateway.core.model import BridgeConfig
from gateway.runtime import systemd
from gateway.runtime.exitcodes import ExitCode
from gateway.runtime.lifecycle import run_phases, signal_handlers
from gateway.runtime.metrics import BridgeMetrics, serve_metrics
from gateway.runtime.tls import build_tls_context

log = logging.getLogger("sensegate.bridge")

STATUS_EVERY = 5.0


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
    protocol: Protocol = Protocol.V5  # MQTT 3.1.1 for brokers without 5 (the demo's amqtt)
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
        self._client: Source | None = None  # the connected MQTT session or AMQP channel
        self._sink: Sink | None = None
        self._deadletters: DeadLetters | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.failed = False  # a component died of a bug: stop, and exit 1
        self._writers: list[asyncio.Task[Any]] = []
        self._link: MqttLink | AmqpLink | None = None  # made at startup, by the config
        self._session: asyncio.Task[Any] | None = None  # the link's reconnect loop
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
        _check_tls(cfg)  # unreadable TLS files: fail at start (exit 1), not later
        self._link = self._make_link(cfg)
        self._deadletters = DeadLetters(cfg.state_dir)
        # fail at start (exit 1), not at the first dead letter
        self._deadletters.dir.mkdir(parents=True, exist_ok=True)
        self._deadletters.path.open("a").close()
        self._sink = create_sink(cfg.influxdb, workers=WRITERS)
        await self._start_metrics(cfg)
        self._writers = [
            asyncio.create_task(self._writer(), name=f"writer-{i}") for i in range(WRITERS)
        ]
        self._tasks.append(asyncio.create_task(self._ticker(), name="ticker"))
        self._session = asyncio.create_task(self._link.run(), name="source")
        self.started = True
        log.info(
            "bridge started: %s → influxdb %s (batch %d points, flush %ss)",
            self._describe_source(cfg), self._sink.describe(), cfg.influxdb.batch_size,
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
                        log.error("source session ended")
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
        # Stop taking messages (those not taken stay unacknowledged and come again), hand
        # the last partial batch to the writers and let them finish, still connected.
        self._accepting = False
        if self._link is not None:
            self._link.stop_consuming()
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
        if self._link is not None:
            self._link.leave()
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
        if (new.mqtt is None) != (old.mqtt is None):
            log.error("reload refused: the source changed between mqtt and amqp; restart "
                      "to apply")
            systemd.ready(self._status_text())
            return
        try:
            _check_tls(new)
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
            new = BridgeConfig(mqtt=new.mqtt, amqp=new.amqp, influxdb=new.influxdb,
                               state_dir=new.state_dir, metrics=old.metrics, source=new.source)
        self.config = new
        if new.influxdb != old.influxdb:
            old_sink, self._sink = self._sink, create_sink(new.influxdb, workers=WRITERS)
            if old_sink is not None:
                # Writers in flight hold their own reference; close once they are done.
                self._tasks.append(asyncio.create_task(self._close_later(old_sink)))
            log.info("influxdb settings reloaded: %s", self._sink.describe())
        if ((new.mqtt != old.mqtt or new.amqp != old.amqp) and self._session is not None
                and self._link is not None):
            log.info("%s settings changed; reconnecting", "mqtt" if new.mqtt else "amqp")
            self._session.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._session
            self._session = asyncio.create_task(self._link.run(), name="source")
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

    def _make_link(self, cfg: BridgeConfig) -> MqttLink | AmqpLink:
        if cfg.amqp is not None:
            return AmqpLink(self._current_config, on_message=self._on_publish,
                            on_state=self._link_state, reconnect_max=self.reconnect_max)
        return MqttLink(self._current_config, on_message=self._on_publish,
                        on_state=self._link_state, on_session=self._link_session,
                        protocol=self.protocol,
                        reconnect_max=self.reconnect_max)

    @staticmethod
    def _describe_source(cfg: BridgeConfig) -> str:
        if cfg.amqp is not None:
            return describe_amqp(cfg.amqp)
        assert cfg.mqtt is not None
        return subscription(cfg.mqtt)

    def _current_config(self) -> BridgeConfig:
        assert self.config is not None  # loaded by startup() before the link runs
        return self.config

    def _link_session(self, session: Source) -> None:
        """A new connection: take its messages from now on (it is not subscribed yet, but a
        resumed session's backlog comes first; `_link_state` follows once subscribed)."""
        self._client = session

    def _link_state(self, session: Source | None, error: str) -> None:
        """The link is up and subscribed (`session`) or down (None; `error` says why, "" if
        stopping)."""
        self._client = session
        self.stats.connected = session is not None
        self._metrics.connected(session is not None)
        if error:
            self.stats.last_error = error
        if session is None:
            # Unwritten messages of the lost connection come again after reconnecting.
            self._batch = Batch()
            self._ready.clear()
        else:
            self._apply_backpressure()

    def _on_publish(self, session: Source, message: Message) -> None:
        """A message: decode at once, add to the batch."""
        if not self._accepting or session is not self._client:
            return  # not acknowledged: the broker delivers it again
        topic, payload = message.topic, message.payload
        try:
            self.stats.received += 1
            self._metrics.messages_total.inc()
            result = decode(message)
            batch = self._batch
            if not batch.messages:
                batch.started = time.monotonic()
            batch.messages.append(Inbound(session, message.mid, message.qos, topic,
                                          len(batch.lines)))
            if isinstance(result, list):
                batch.lines.extend(result)
            else:
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
        """Pause reading the broker while too many points wait for InfluxDB (HELD_BATCHES).

        Not before the session is subscribed: a resumed session's backlog comes before
        SUBACK, so pausing then would hold the SUBACK unread until the subscription times
        out, again at every reconnect (the receive window bounds the backlog meanwhile)."""
        session = self._client
        if session is None or not self.stats.connected:
            return
        held = sum(len(b.lines) for b in self._ready) + self._busy_points
        pause = reading_paused(held, self._max_points, session.paused)
        if pause and not session.paused:
            session.pause_reading()
            if session.paused:  # not when the connection is already gone
                self.stats.read_pauses += 1
                log.debug("reading paused: %d points wait for influxdb", held)
        elif session.paused and not pause:
            session.resume_reading()
            log.debug("reading resumed: %d points wait for influxdb", held)
        self._metrics.backpressure(held, session.paused)

    @property
    def _max_points(self) -> int:
        assert self.config is not None
        return self.config.influxdb.batch_size

    @property
    def _max_messages(self) -> int:
        assert self.config is not None
        if self.config.amqp is not None:
            return max_messages(self.config.amqp.prefetch)
        assert self.config.mqtt is not None
        return max_messages(self.config.mqtt.receive_maximum)

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
            wanted=lambda: batch.messages[0].session is self._client,
            dead_letter=lambda p: self._dead_letter(
                batch.owner(p.index).topic, p.reason, p.payload, p.detail),
            sync=self._deadletters.sync, stats=self.stats, metrics=self._metrics,
        ):
            self.stats.acked += self._acknowledge(batch.messages)

    def _acknowledge(self, messages: list[Inbound]) -> int:
        """PUBACK (PUBREC for QoS 2) the messages that came on the current connection."""
        session = self._client
        if session is None:
            return 0
        current = [m for m in messages if m.session is session]
        session.ack_many(current)
        return len(current)

    # -- status and metrics ------------------------------------------------------------

    def _status_text(self) -> str:
        s = self.stats
        mqtt = "connected" if s.connected else "disconnected"
        store = "ok" if s.store_ok else "failing"
        dead = sum(s.dead_letters.values())
        kind = "amqp" if self.config is not None and self.config.amqp is not None else "mqtt"
        return (f"{kind} {mqtt}, influxdb {store}; {s.received} received, "
                f"{s.points_written} points written, {dead} dead letters")

    def healthy(self) -> bool:
        return self.stats.connected and self.stats.store_ok

    async def _start_metrics(self, cfg: BridgeConfig) -> None:
        if cfg.metrics is None:
            return
        self._metrics_server = await serve_metrics(
            self._metrics.registry, cfg.metrics.host, cfg.metrics.port, self.healthy
        )


def _check_tls(cfg: BridgeConfig) -> None:
    """Raise `PublishError` (naming the file) when the source's TLS files cannot be used."""
    tls = cfg.mqtt.tls if cfg.mqtt is not None else cfg.amqp.tls if cfg.amqp else None
    if tls is not None:
        build_tls_context(tls)


def run(path: str) -> int:
    """`sensegate bridge -c PATH`: 0 clean stop, 2 bad config, 1 fatal."""
    try:
        return asyncio.run(Bridge(path).run())
    except KeyboardInterrupt:
        return ExitCode.OK
