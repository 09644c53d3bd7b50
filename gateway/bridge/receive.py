"""The bridge's MQTT receive path: paho's client, reading PUBLISH packets in bulk.

paho-mqtt reads each packet with three or four `recv` calls, and for every MQTT v5 PUBLISH
builds a `Properties` object and an `MQTTMessage` and matches the topic against its
callbacks: about 45 µs per message, a ceiling near 22 000 messages/s on the benchmark
machine. Gateways in steady state send one scan per message, so that ceiling, not
InfluxDB, would bound the bridge (docs/benchmarks.md).

`BulkReceiveClient` keeps paho for everything else (connect, subscribe, keepalive, TLS,
QoS 0 and 2, malformed packets, disconnects) and changes only how bytes come in:

- one `recv` of up to `CHUNK` bytes per wake-up, and every packet in it handled at once;
- a complete QoS 1 PUBLISH is split here (`split_publish`) and handed to
  `on_publish(topic, payload, mid)`; its properties are skipped, as the bridge asks for
  none that would change a message's meaning (no topic alias maximum, no subscription
  identifiers);
- anything else (another packet type, another QoS, a PUBLISH that does not split
  cleanly, a packet cut by the end of the chunk) goes to paho's own `_packet_read`, served
  from the same bytes, so paho handles it exactly as it would have from the socket;
- `ack_many(mids)` queues the PUBACKs of a whole batch as one write, instead of one
  `send` (and one wake-up byte) per message;
- `pause_reading()` / `resume_reading()` stop and restart reading the socket (TCP
  backpressure: the broker keeps what is not read), so the bridge can bound what it holds
  in memory by points, whatever the size of the messages in its receive window.

This leans on paho 2.x internals (`_sock`, `_sock_recv`, `_packet_read`, `_packet_queue`,
`_loop_rc_handle`, `_in_packet`, `_last_bytes_received`) and, while paused, replaces
aiomqtt 2.x's reader callback with its own equivalent (`_read_ready`): paho and aiomqtt
are pinned below 3, and tests/unit/test_mqtt_receive.py fails at once if one of them
changes.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

CHUNK = 256 * 1024  # bytes per recv: ~1000 small messages
PUBLISH_QOS1 = 0x32  # PUBLISH, QoS 1; the DUP (0x08) and RETAIN (0x01) bits may be set
FLAGS_MASK = 0xF6  # packet type and QoS bits of the first byte

OnPublish = Callable[[str, bytes, int], None]
OnReadError = Callable[[Exception], None]


def split_fixed_header(buf: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """`(body_start, body_end)` of the packet at `pos`, or None if it is not all in `buf`.

    None also for a remaining length longer than four bytes (malformed): paho reads that
    packet and reports the protocol error.
    """
    i = pos + 1
    length = 0
    shift = 0
    while True:
        if i >= end or shift > 21:
            return None
        byte = buf[i]
        i += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    if i + length > end:
        return None
    return i, i + length


def split_publish(buf: bytes, start: int, end: int, *,
                  properties: bool) -> tuple[str, bytes, int] | None:
    """`(topic, payload, packet id)` of a QoS 1 PUBLISH body `buf[start:end]`, or None.

    None when anything is unusual (empty topic, topic not UTF-8, packet id 0, a property
    length over one byte, lengths that overrun the packet): paho then decodes the packet.
    `properties` is True for MQTT v5, whose PUBLISH carries a properties field.
    """
    if end - start < 2:
        return None
    topic_end = start + 2 + ((buf[start] << 8) | buf[start + 1])
    if topic_end == start + 2 or topic_end + 2 > end:
        return None
    try:
        topic = buf[start + 2:topic_end].decode("utf-8")
    except UnicodeDecodeError:
        return None
    mid = (buf[topic_end] << 8) | buf[topic_end + 1]
    payload_start = topic_end + 2
    if properties:
        if payload_start >= end or buf[payload_start] & 0x80:
            return None
        payload_start += 1 + buf[payload_start]
        if payload_start > end:
            return None
    if mid == 0:
        return None
    return topic, buf[payload_start:end], mid


def puback_packets(mids: list[int]) -> bytes:
    """The PUBACK packets (success, no properties: remaining length 2) for `mids`, in order."""
    return struct.pack(f"!{len(mids)}I", *[0x40020000 | mid for mid in mids])


class BulkReceiveClient(mqtt.Client):
    """A paho client whose reads go through `loop_read` below (see the module docstring).

    Made from a constructed client with `adopt`, since aiomqtt creates the paho client.
    """

    on_publish_qos1: OnPublish
    on_read_error: OnReadError
    paused: bool
    _chunk: bytes
    _chunk_pos: int

    @classmethod
    def adopt(cls, client: mqtt.Client, on_publish: OnPublish,
              on_read_error: OnReadError) -> BulkReceiveClient:
        """Make `client` one of these. `on_read_error(exc)`: reading raised (as aiomqtt
        does, the connection is then to be taken as lost)."""
        client.__class__ = cls
        assert isinstance(client, BulkReceiveClient)
        client.on_publish_qos1 = on_publish
        client.on_read_error = on_read_error
        client.paused = False
        client._chunk = b""
        client._chunk_pos = 0
        return client

    def pause_reading(self) -> None:
        """Read nothing more from the socket until `resume_reading()` (call on the loop)."""
        if self.paused or self._sock is None:
            return
        self.paused = True
        asyncio.get_running_loop().remove_reader(self._sock.fileno())

    def resume_reading(self) -> None:
        if not self.paused:
            return
        self.paused = False
        if self._sock is None:
            return
        loop = asyncio.get_running_loop()
        loop.add_reader(self._sock.fileno(), self._read_ready)
        # Bytes TLS has already decrypted raise no readable event: read them now.
        loop.call_soon(self._read_ready)

    def _read_ready(self) -> None:
        """The socket is readable: what aiomqtt's reader callback does."""
        try:
            while not self.paused:
                self.loop_read()
                sock = self._sock
                if sock is None or not (hasattr(sock, "pending") and sock.pending() > 0):
                    break
        except Exception as exc:  # as aiomqtt: the connection is to be taken as lost
            self.on_read_error(exc)

    def loop_misc(self) -> MQTTErrorCode:
        if self.paused:
            # Nothing is read while paused, PINGRESPs included, and paho would take the
            # broker for dead. It keeps sending PINGREQs (so the broker keeps us), and the
            # connection is checked again as soon as reading resumes.
            self._last_bytes_received = mqtt.time_func()
            self._ping_t = 0
        return super().loop_misc()

    def _sock_recv(self, bufsize: int) -> bytes:
        # paho's own reads come from the chunk this loop_read received.
        available = len(self._chunk) - self._chunk_pos
        if available <= 0:
            raise BlockingIOError
        n = min(bufsize, available)
        data = self._chunk[self._chunk_pos:self._chunk_pos + n]
        self._chunk_pos += n
        return data

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        sock = self._sock
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if self.paused and not (hasattr(sock, "pending") and sock.pending() > 0):
            # A wake-up that was already due when reading paused. Bytes TLS has already
            # decrypted (at most a record) are still read: aiomqtt's callback loops until
            # there are none.
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        try:
            data = sock.recv(CHUNK)
        except (BlockingIOError, ssl.SSLWantReadError):
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        except ssl.SSLWantWriteError:
            self._call_socket_register_write()
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        except OSError as err:
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        if not data:
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        self._last_bytes_received = mqtt.time_func()
        properties = self._protocol == mqtt.MQTTv5
        on_publish = self.on_publish_qos1
        pos = 0
        end = len(data)
        while pos < end:
            if self._in_packet["command"] == 0 and data[pos] & FLAGS_MASK == PUBLISH_QOS1:
                frame = split_fixed_header(data, pos, end)
                if frame is not None:
                    message = split_publish(data, *frame, properties=properties)
                    if message is not None:
                        on_publish(*message)
                        pos = frame[1]
                        continue
            # paho reads this packet (or the rest of one it began) from the chunk.
            self._chunk = data
            self._chunk_pos = pos
            rc = self._packet_read()
            pos = self._chunk_pos
            self._chunk = b""
            if rc > 0:
                return self._loop_rc_handle(rc)
            if self._sock is not sock:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK QoS 1 messages (manual acknowledgement) with one queued write."""
        if mids:
            self._packet_queue(mqtt.PUBACK, puback_packets(mids), 0, 0)
