"""The bridge's AMQP source: a RabbitMQ cluster's durable quorum queue, over AMQP 0-9-1.

The sibling of `gateway.bridge.session.MqttLink` behind the same small interface the
service uses: `run()` keeps one connection up, hands each delivery to
`on_message(consumer, message)` as a `gateway.bridge.receive.Message` (topic, payload,
``mid`` = the delivery tag), calls `on_state(consumer, "")` when consuming and
`on_state(None, why)` when the connection is gone; `consumer.ack_many(messages)` acks after
the write; `stop_consuming()` then `leave()` stop.

* Nodes: `amqp.nodes` in turn; the next node is tried at once when one cannot be reached
  or its connection drops, the backoff waits only after every node failed in a row.
* At every connect the quorum queue (`x-queue-type: quorum`, durable) and its binding to
  `amqp.exchange` are declared, idempotently: the queue must exist before gateways publish
  (RabbitMQ confirms an MQTT publish that no queue is bound for, and drops it).
* Manual acks, cumulative: delivery tags are consecutive on a channel, so once every
  delivery up to tag N was written (batches finish out of order: 4 writers) one
  ``basic.ack(N, multiple)`` settles them all; deliveries written after one that is not
  yet written are acked one by one (in order, on one sender). At most `prefetch`
  deliveries are unacknowledged, which bounds memory (the service's read pause is not
  needed: the broker sends no more than that). A delivery not acknowledged when its
  connection dies is delivered again, to this or another bridge (same `ts`: InfluxDB
  stores the points once).
* The routing key is turned back into the topic (RabbitMQ's MQTT plugin swaps '/' and '.'),
  so `gateway.bridge.ingest` checks topic identity as for MQTT.

aio-pika is imported when the source starts, so the gateway (and an MQTT bridge) never
loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from gateway.bridge.batching import Link
from gateway.bridge.receive import Delivery, Message
from gateway.core.errors import PublishError
from gateway.core.model import AmqpConfig, BridgeConfig
from gateway.runtime.backoff import Backoff
from gateway.runtime.tls import build_tls_context

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

log = logging.getLogger("sensegate.bridge")

RECONNECT_MAX = 30.0
STABLE_AFTER = 10.0  # a connection that lasted this long counts as good: next node at once
CONNECT_TIMEOUT = 10.0
_SWAP = str.maketrans("./", "/.")


def topic_of(routing_key: str) -> str:
    """The MQTT topic a routing key came from: RabbitMQ's MQTT plugin swaps '/' and '.'
    (``sensegate.gw.dev.data`` <- ``sensegate/gw/dev/data``), so swap them back."""
    return routing_key.translate(_SWAP)


def url(amqp: AmqpConfig, host: str, port: int) -> str:
    """The connection URL of one node (the password only ever inside this string)."""
    password = amqp.password.reveal() if amqp.password is not None else "guest"
    auth = f"{quote(amqp.username, safe='')}:{quote(password, safe='')}"
    vhost = quote(amqp.vhost, safe="")
    scheme = "amqps" if amqp.tls is not None else "amqp"
    return f"{scheme}://{auth}@{host}:{port}/{vhost}?heartbeat={max(1, int(amqp.heartbeat))}"


def connection_name() -> str:
    """How the bridge names its connection to RabbitMQ (`rabbitmqctl list_connections
    client_properties`, the management UI): which bridge, on which host."""
    return f"sensegate-bridge {socket.gethostname()} pid {os.getpid()}"


def queue_arguments(amqp: AmqpConfig) -> dict[str, Any]:
    arguments: dict[str, Any] = {"x-queue-type": "quorum"}
    if amqp.replicas is not None:
        arguments["x-quorum-initial-group-size"] = amqp.replicas
    return arguments


class AckPlan:
    """Which ``basic.ack`` frames settle the deliveries written so far (pure, no I/O).

    Delivery tags are consecutive from 1 on a channel. Once every tag up to N is written, one
    ``(N, multiple)`` settles them; a tag written while an earlier one is not is acked
    singly, so none waits for a slow batch. RabbitMQ closes the channel on an ack of an
    unknown (already settled) tag, also as the N of a multiple ack, so N is never a tag
    that was acked singly: the plan takes the highest one below it that was not.
    """

    __slots__ = ("acked", "delivered", "singles", "unwritten")

    def __init__(self) -> None:
        self.unwritten: set[int] = set()  # delivered, not yet written
        self.delivered = 0  # highest delivery tag so far
        self.acked = 0  # every tag up to this one is settled
        self.singles: set[int] = set()  # tags above `acked` settled one by one

    def deliver(self, tag: int) -> None:
        self.unwritten.add(tag)
        self.delivered = max(self.delivered, tag)

    def written(self, tags: Sequence[int]) -> list[tuple[int, bool]]:
        """The frames, (tag, multiple), in the order to send them."""
        self.unwritten.difference_update(tags)
        frames: list[tuple[int, bool]] = []
        upto = min(self.unwritten) - 1 if self.unwritten else self.delivered
        if upto > self.acked:
            tag = upto
            while tag > self.acked and tag in self.singles:
                tag -= 1
            if tag > self.acked:
                frames.append((tag, True))
            self.singles = {t for t in self.singles if t > upto}
            self.acked = upto
        for tag in sorted(tags):
            if tag > self.acked and tag not in self.singles:
                self.singles.add(tag)
                frames.append((tag, False))
        return frames


def describe(amqp: AmqpConfig) -> str:
    nodes = ", ".join(f"{host}:{port}" for host, port in amqp.nodes)
    return f"amqp{'s' if amqp.tls is not None else ''} queue {amqp.queue!r} on {nodes}"


class Consumer:
    """One AMQP channel's deliveries: what the service acks on (a `batching.Source`)."""

    paused = False  # prefetch bounds what the broker sends: no read pause needed

    def __init__(self, channel: Any, where: str) -> None:
        self._channel = channel  # aiormq channel: basic_ack
        self.where = where
        self.lost: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future())
        self._pending: deque[tuple[int, bool]] = deque()  # (tag, multiple) to send, in order
        self._sender: asyncio.Task[None] | None = None
        self._plan = AckPlan()

    def delivered(self, tag: int) -> None:
        self._plan.deliver(tag)

    def pause_reading(self) -> None:
        """Nothing to do: at most `prefetch` deliveries are unacknowledged."""

    def resume_reading(self) -> None:
        """Nothing to do (see `pause_reading`)."""

    def ack_many(self, messages: Sequence[Delivery]) -> None:
        if self.lost.done():
            return
        self._pending.extend(self._plan.written([m.mid for m in messages]))
        if self._pending and (self._sender is None or self._sender.done()):
            self._sender = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        try:
            while self._pending:
                tag, multiple = self._pending.popleft()
                await self._channel.basic_ack(tag, multiple=multiple)
        except Exception as exc:  # the channel is gone: the broker delivers them again
            log.debug("acks on %s not sent: %r", self.where, exc)
            self._pending.clear()

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until the acks handed over so far were sent (before a clean close)."""
        sender = self._sender
        if sender is not None and not sender.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(sender), timeout)

    def close(self, why: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(why)


OnMessage = Callable[[Consumer, Message], None]
OnState = Callable[[Consumer | None, str], None]


class AmqpLink(Link):
    """The reconnect loop around one AMQP connection at a time (see the module docstring)."""

    def __init__(self, config: Callable[[], BridgeConfig], *, on_message: OnMessage,
                 on_state: OnState, reconnect_max: float = RECONNECT_MAX) -> None:
        super().__init__()
        self.config = config
        self.on_message = on_message
        self.on_state = on_state
        self.reconnect_max = reconnect_max
        self.current: Consumer | None = None

    async def run(self) -> None:
        import aio_pika  # the AMQP client, only for this source

        # aiormq logs a lost connection as a warning with two tracebacks; the link logs
        # one line of its own for it
        logging.getLogger("aiormq.connection").setLevel(logging.ERROR)
        backoff = Backoff(min(1.0, self.reconnect_max), self.reconnect_max)
        node = 0
        failed_nodes = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            amqp = self.config().amqp
            assert amqp is not None  # the service runs this link only for an amqp source
            nodes = amqp.nodes
            host, port = nodes[node % len(nodes)]
            where = f"{host}:{port}"
            error = ""
            lasted = False  # consumed for STABLE_AFTER: the node was good until it died
            connection: Any = None
            try:
                connection = await aio_pika.connect(
                    url(amqp, host, port), timeout=CONNECT_TIMEOUT,
                    ssl_context=build_tls_context(amqp.tls) if amqp.tls is not None else None,
                    client_properties={"connection_name": connection_name()})
                consumer = await self._open(connection, amqp, where)
                started = loop.time()
                if await self._consume(consumer, connection):
                    return
                if loop.time() - started >= STABLE_AFTER:
                    lasted = True
                    backoff.reset()
                    failed_nodes = 0
                why = consumer.lost.result()
                error = f"amqp connection to {where} lost" + (f": {why}" if why else "")
            except PublishError as exc:  # a TLS file went missing since start-up
                error = str(exc)
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
                if self._stopping:
                    return
                error = f"amqp connection to {where} failed: {exc!r}"
            finally:
                if self.current is not None:
                    self.current.close(None)
                self.current = None
                self.on_state(None, error)
                if connection is not None and not self._stopping:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 2)
            failed_nodes += 1
            node = (node + 1) % len(nodes)
            if lasted or failed_nodes < len(nodes):
                # another node may be up: try it at once (a cluster's node died)
                log.warning("%s; trying %s:%d", error, *nodes[node])
                continue
            failed_nodes = 0
            wait = backoff.next()
            log.warning("%s; retrying in %.0fs", error, wait)
            await asyncio.sleep(wait)

    async def _open(self, connection: Any, amqp: AmqpConfig, where: str) -> Consumer:
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=amqp.prefetch)
        queue = await channel.declare_queue(amqp.queue, durable=True,
                                            arguments=queue_arguments(amqp))
        await queue.bind(amqp.exchange, routing_key=amqp.binding)
        consumer = Consumer(await channel.get_underlay_channel(), where)
        connection.close_callbacks.add(lambda _sender, exc: consumer.close(exc))
        channel.close_callbacks.add(lambda _sender, exc: consumer.close(exc))
        self.current = consumer
        self.on_state(consumer, "")
        on_message = self.on_message

        async def deliver(message: AbstractIncomingMessage) -> None:
            if consumer.lost.done() or message.delivery_tag is None:
                return
            body = message.body
            consumer.delivered(message.delivery_tag)
            on_message(consumer, Message(
                topic=topic_of(message.routing_key or ""), payload=body, qos=1,
                mid=message.delivery_tag, retain=False, size=len(body)))

        await queue.consume(deliver, no_ack=False)
        log.info("consuming amqp queue %r on %s (bound to %s %r, prefetch %d)",
                 amqp.queue, where, amqp.exchange, amqp.binding, amqp.prefetch)
        return consumer

    async def _consume(self, consumer: Consumer, connection: Any) -> bool:
        """Wait until the connection is lost (False) or the bridge stops (True, after
        `leave()`, with the connection closed cleanly)."""
        stop: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        lost: asyncio.Future[Any] = consumer.lost
        try:
            await asyncio.wait({lost, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if self._stopping:
            await self._leave.wait()  # the writers drain and ack on this connection
            await consumer.settle()
            consumer.close(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 5)
            return True
        return False
