"""The bridge's batches: messages decoded into lines, held until written, and how many.

A batch is flushed to the writers at `batch_size` points, at `max_messages` messages (a
fifth of the receive window, so the window never fills with messages waiting for a timer)
or after `flush_interval`. Reading the broker pauses while the batches waiting for or in a
writer hold more than HELD_BATCHES batches' worth of points, and resumes at half
(`reading_paused`): memory is bounded by points, whatever the size of the messages in the
receive window. The wiring (when to flush, the writers) is `gateway.bridge.service`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.bridge import ingest
from gateway.bridge.receive import Delivery, Message

log = logging.getLogger("sensegate.bridge")

WRITERS = 4  # batches written concurrently (bench/bridge.py: 4 beat 2, 3 and 8)
HELD_BATCHES = 2 * WRITERS  # points held (waiting or being written), in batch_size's


class Source(Protocol):
    """What the service needs of a connected source (an MQTT `receive.Session`, an AMQP
    `amqp.Consumer`): acknowledgements, and pausing the reads."""

    @property
    def paused(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def ack_many(self, messages: Sequence[Delivery]) -> None: ...


class Link:
    """What both sources' reconnect loops (`session.MqttLink`, `amqp.AmqpLink`) share: the
    two-step stop. `stop_consuming()` takes no more messages but stays connected, so the
    acks of batches still being written go out; `leave()` then disconnects and ends run()."""

    def __init__(self) -> None:
        self._stop = asyncio.Event()  # stop taking messages
        self._leave = asyncio.Event()  # then disconnect
        self._stopping = False

    def stop_consuming(self) -> None:
        """Take no more messages; stay connected (so acks still go out) until `leave()`."""
        self._stopping = True
        self._stop.set()

    def leave(self) -> None:
        """Disconnect (after `stop_consuming`) and end `run()`."""
        self._leave.set()


@dataclass(slots=True)
class Inbound:
    """One received message waiting for its acknowledgement."""

    session: Source  # the connection that delivered it: the only one that can ack it
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


def max_messages(receive_maximum: int) -> int:
    """Messages per batch: room is left in the receive window for the batches being written."""
    return max(1, receive_maximum // (WRITERS + 1))


def reading_paused(held_points: int, batch_size: int, paused: bool) -> bool:
    """Whether reading should be paused with `held_points` waiting for InfluxDB (hysteresis:
    pause above HELD_BATCHES batches' worth, resume at half)."""
    limit = batch_size * HELD_BATCHES
    if paused:
        return held_points > limit // 2
    return held_points > limit


def decode(message: Message) -> list[str] | ingest.Rejected:
    """A message's lines, or why it is refused (to be dead-lettered, then acknowledged)."""
    if message.size > ingest.MAX_PAYLOAD:  # refused unread by gateway.bridge.receive
        return ingest.Rejected(
            ingest.TOO_LARGE, f"{message.size} bytes, more than {ingest.MAX_PAYLOAD}; not read")
    try:
        return ingest.decode_message(message.topic, message.payload)
    except Exception as exc:
        # A decoder bug must not leave the message unacknowledged: the broker would deliver
        # it again and again, holding a slot of the receive window forever.
        log.exception("decoding a message from %r failed", message.topic)
        return ingest.Rejected(ingest.INTERNAL_ERROR, f"decoding raised {exc!r}")
