"""The bridge's bulk MQTT receive path (gateway.bridge.receive), on a socketpair.

The integration tests (tests/integration/test_bridge*.py) run it against Mosquitto; here
each packet shape is fed byte by byte as the broker would send it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTErrorCode

from gateway.bridge.receive import (
    BulkReceiveClient,
    puback_packets,
    split_fixed_header,
    split_publish,
)


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: str, payload: bytes, mid: int = 1, *, qos: int = 1, props: bytes = b"",
            flags: int = 0, v5: bool = True) -> bytes:
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t
    if qos:
        body += struct.pack("!H", mid)
    if v5:
        body += bytes([len(props)]) + props
    body += payload
    return bytes([0x30 | qos << 1 | flags]) + remaining_length(len(body)) + body


PINGRESP = b"\xd0\x00"


# -- the pure splitting ----------------------------------------------------------------

@pytest.mark.parametrize("length", [0, 1, 127, 128, 16383, 16384, 2_097_151, 2_097_152])
def test_fixed_header_lengths(length: int) -> None:
    header = b"\x32" + remaining_length(length)
    buf = header + bytes(length)
    assert split_fixed_header(buf, 0, len(buf)) == (len(header), len(buf))
    assert split_fixed_header(buf, 0, len(buf) - 1 if length else len(header) - 1) is None


def test_fixed_header_longer_than_four_bytes_is_left_to_paho() -> None:
    buf = b"\x32\xff\xff\xff\xff\x01" + bytes(10)
    assert split_fixed_header(buf, 0, len(buf)) is None


def test_split_publish_v5_and_v3() -> None:
    packet = publish("sensegate/gw/dev/data", b'{"a":1}', mid=513)
    start, end = split_fixed_header(packet, 0, len(packet)) or (0, 0)
    assert split_publish(packet, start, end, properties=True) == (
        "sensegate/gw/dev/data", b'{"a":1}', 513)
    v3 = publish("a/b/c/data", b"x", mid=7, v5=False)
    start, end = split_fixed_header(v3, 0, len(v3)) or (0, 0)
    assert split_publish(v3, start, end, properties=False) == ("a/b/c/data", b"x", 7)


def test_split_publish_skips_properties() -> None:
    props = b"\x01\x01" + b"\x03\x00\x10application/json"  # payload format, content type
    packet = publish("t/g/d/data", b"payload", mid=9, props=props)
    start, end = split_fixed_header(packet, 0, len(packet)) or (0, 0)
    assert split_publish(packet, start, end, properties=True) == ("t/g/d/data", b"payload", 9)


@pytest.mark.parametrize("packet", [
    publish("", b"x"),  # empty topic: a topic alias, paho's business
    publish("t/g/d/data", b"x", mid=0),  # packet id 0 is not a QoS 1 id
    publish("t/g/d/data", b"x", props=b"\x26" * 200),  # two-byte property length
    b"\x32\x05\x00\x09t/g/d",  # topic longer than the packet
    b"\x32\x04\x00\x02\xff\xfe",  # topic not UTF-8 (and no room for an id)
    b"\x32\x07\x00\x02\xff\xfe\x00\x01\x00",  # topic not UTF-8
    b"\x32\x01\x00",  # no room for a topic length
    b"\x32\x06\x00\x01t\x00\x01\x05",  # properties longer than the packet
])
def test_split_publish_leaves_the_unusual_to_paho(packet: bytes) -> None:
    start, end = split_fixed_header(packet, 0, len(packet)) or (1, len(packet))
    assert split_publish(packet, start, end, properties=True) is None


def test_puback_packets() -> None:
    assert puback_packets([1, 258, 65535]) == (
        b"\x40\x02\x00\x01" + b"\x40\x02\x01\x02" + b"\x40\x02\xff\xff")
    assert puback_packets([]) == b""


# -- loop_read on a socketpair -----------------------------------------------------------

class Fixture:
    def __init__(self) -> None:
        self.broker, client_end = socket.socketpair()
        client_end.setblocking(False)
        paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.fast: list[tuple[str, bytes, int]] = []
        self.slow: list[tuple[str, bytes, int, int]] = []
        self.disconnects: list[object] = []
        self.errors: list[Exception] = []
        self.client = BulkReceiveClient.adopt(paho, lambda *m: self.fast.append(m),
                                              self.errors.append)
        self.client.manual_ack_set(True)
        self.client.on_message = lambda _c, _u, m: self.slow.append(
            (m.topic, m.payload, m.mid, m.qos))
        self.client.on_disconnect = lambda *a: self.disconnects.append(a)
        # as aiomqtt: writes wait for the event loop to say the socket is writable
        self.client.on_socket_register_write = lambda *a: None
        self.client._sock = client_end

    def feed(self, data: bytes) -> MQTTErrorCode:
        self.broker.sendall(data)
        return self.client.loop_read()

    def close(self) -> None:
        self.broker.close()
        if self.client._sock is not None:
            self.client._sock.close()


@pytest.fixture
def fx() -> Iterator[Fixture]:
    f = Fixture()
    yield f
    f.close()


def test_every_qos1_publish_of_a_chunk_takes_the_fast_path(fx: Fixture) -> None:
    packets = [publish(f"s/gw/d{i}/data", f"p{i}".encode() * i, mid=i + 1) for i in range(50)]
    fx.client._last_bytes_received = 0.0  # keepalive: paho pings a silent broker
    assert fx.feed(b"".join(packets)) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert fx.fast == [(f"s/gw/d{i}/data", f"p{i}".encode() * i, i + 1) for i in range(50)]
    assert fx.slow == []
    assert fx.client._last_bytes_received > 0


def test_dup_and_retain_flags_still_take_the_fast_path(fx: Fixture) -> None:
    fx.feed(publish("s/g/d/data", b"a", mid=3, flags=0x08) + publish("s/g/d/data", b"b",
                                                                     mid=4, flags=0x01))
    assert fx.fast == [("s/g/d/data", b"a", 3), ("s/g/d/data", b"b", 4)]


def test_other_packets_go_to_paho_in_order(fx: Fixture) -> None:
    stream = (publish("s/g/d/data", b"one", mid=1) + publish("s/g/d/data", b"zero", qos=0)
              + PINGRESP + publish("s/g/d/data", b"two", mid=2))
    fx.feed(stream)
    assert fx.fast == [("s/g/d/data", b"one", 1), ("s/g/d/data", b"two", 2)]
    assert fx.slow == [("s/g/d/data", b"zero", 0, 0)]


def test_a_packet_cut_by_the_chunk_end_is_finished_by_paho(fx: Fixture) -> None:
    first, cut, last = (publish("s/g/d/data", bytes([i]) * 300, mid=i) for i in (1, 2, 3))
    fx.feed(first + cut[:1])  # just the first byte of the cut packet
    fx.feed(cut[1:150])
    assert fx.slow == []
    fx.feed(cut[150:] + last)
    assert fx.fast == [("s/g/d/data", b"\x01" * 300, 1), ("s/g/d/data", b"\x03" * 300, 3)]
    assert fx.slow == [("s/g/d/data", b"\x02" * 300, 2, 1)]


def test_a_malformed_packet_is_paho_s_protocol_error(fx: Fixture) -> None:
    rc = fx.feed(b"\x32\xff\xff\xff\xff\x01" + bytes(20))
    assert rc == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert fx.client._sock is None and fx.disconnects


def test_end_of_stream_is_a_lost_connection(fx: Fixture) -> None:
    fx.broker.shutdown(socket.SHUT_WR)
    assert fx.client.loop_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert fx.client._sock is None and fx.disconnects


def test_nothing_to_read_is_not_an_error(fx: Fixture) -> None:
    assert fx.client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert fx.client._sock is not None


def test_ack_many_is_one_write_of_every_puback(fx: Fixture) -> None:
    fx.client.ack_many([5, 6, 700])
    fx.client.ack_many([])
    assert len(fx.client._out_packet) == 1
    fx.client.loop_write()
    assert fx.broker.recv(100) == puback_packets([5, 6, 700])


# -- pausing (the bridge's memory bound) --------------------------------------------------

async def until(cond: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_paused_reads_nothing_until_resumed(fx: Fixture) -> None:
    loop = asyncio.get_running_loop()
    fd = fx.client._sock.fileno()
    loop.add_reader(fd, fx.client._read_ready)  # as aiomqtt does on connect
    try:
        fx.broker.sendall(publish("s/g/d/data", b"one", mid=1))
        await until(lambda: len(fx.fast) == 1, "the first message")
        fx.client.pause_reading()
        assert fx.client.paused
        fx.broker.sendall(publish("s/g/d/data", b"two", mid=2))
        await asyncio.sleep(0.1)
        assert fx.client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS  # a stray wake-up
        assert len(fx.fast) == 1
        fx.client.resume_reading()
        await until(lambda: len(fx.fast) == 2, "the message sent while paused")
        assert fx.fast[1] == ("s/g/d/data", b"two", 2)
    finally:
        loop.remove_reader(fd)


async def test_paused_client_keeps_the_connection_alive_for_paho(fx: Fixture) -> None:
    fx.client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    fx.client.pause_reading()
    fx.client._ping_t = fx.client._last_bytes_received = 1.0  # a PINGRESP long unread
    fx.client.loop_misc()
    assert fx.client._sock is not None  # paused: not taken for dead
    fx.client.resume_reading()
    fx.client._ping_t = fx.client._last_bytes_received = 1.0
    fx.client.loop_misc()
    assert fx.client._sock is None  # reading: paho's own keepalive check applies


async def test_a_read_that_raises_is_reported(fx: Fixture) -> None:
    def boom() -> MQTTErrorCode:
        raise RuntimeError("bug")

    fx.client._packet_read = boom  # type: ignore[method-assign]
    fx.broker.sendall(PINGRESP)
    fx.client._read_ready()
    assert [str(e) for e in fx.errors] == ["bug"]
