"""The bridge's MQTT codec (gateway.bridge.codec): framing, encoding and decoding, 3.1.1 and 5."""

from __future__ import annotations

import struct

import pytest

from gateway.bridge import codec
from gateway.bridge.codec import MalformedPacket, Protocol

V3, V5 = Protocol.V311, Protocol.V5


def publish_packet(topic: str, payload: bytes, mid: int = 1, *, qos: int = 1,
                   props: bytes = b"", retain: bool = False, v5: bool = True) -> bytes:
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t
    if qos:
        body += struct.pack("!H", mid)
    if v5:
        body += codec.varint(len(props)) + props
    body += payload
    return bytes([0x30 | qos << 1 | int(retain)]) + codec.varint(len(body)) + body


@pytest.mark.parametrize("length", [0, 1, 127, 128, 16383, 16384, 2_097_151, 2_097_152,
                                    268_435_455])
def test_fixed_header_gives_the_length_from_the_prefix_alone(length: int) -> None:
    header = b"\x30" + codec.varint(length)
    assert codec.fixed_header(header, 0, len(header)) == (len(header), length)
    assert codec.fixed_header(header, 0, len(header) - 1) is None


def test_fixed_header_longer_than_four_bytes_is_malformed() -> None:
    buf = b"\x30\xff\xff\xff\xff\x01"
    with pytest.raises(MalformedPacket, match="remaining length"):
        codec.fixed_header(buf, 0, len(buf))


@pytest.mark.parametrize(("protocol", "expected"), [
    pytest.param(V3, b"\x10\x1a\x00\x04MQTT\x04\xc0\x00\x1e\x00\x03cid\x00\x01u\x00\x06secret",
                 id="3.1.1"),
    pytest.param(V5, b"\x10\x23\x00\x04MQTT\x05\xc0\x00\x1e\x08\x11\x00\x00\x0e\x10\x21\x03\xe8"
                 b"\x00\x03cid\x00\x01u\x00\x06secret", id="5"),
])
def test_connect_persistent_session_with_credentials(protocol: Protocol, expected: bytes) -> None:
    packet = codec.connect("cid", protocol=protocol, clean=False, keepalive=30, username="u",
                           password="secret", session_expiry=3600, receive_maximum=1000)
    assert packet == expected


def test_connect_clean_without_credentials() -> None:
    packet = codec.connect("c", protocol=V3, clean=True, keepalive=60)
    assert packet == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c"


def test_subscribe_v5_asks_retained_messages_only_for_a_new_subscription() -> None:
    assert codec.subscribe(7, "a/#", 1, protocol=V3) == b"\x82\x08\x00\x07\x00\x03a/#\x01"
    assert codec.subscribe(7, "a/#", 1, protocol=V5) == b"\x82\x09\x00\x07\x00\x00\x03a/#\x11"


def test_unsubscribe_and_acks() -> None:
    assert codec.unsubscribe(2, "x", protocol=V3) == b"\xa2\x05\x00\x02\x00\x01x"
    assert codec.unsubscribe(2, "x", protocol=V5) == b"\xa2\x06\x00\x02\x00\x00\x01x"
    assert codec.pubacks([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"
    assert codec.pubrec(5) == b"\x50\x02\x00\x05"
    assert codec.pubcomp(5) == b"\x70\x02\x00\x05"


@pytest.mark.parametrize(("packet", "protocol", "expected"), [
    pytest.param(publish_packet("s/g/d/data", b'{"a":1}', 513), V5,
                 codec.Publish("s/g/d/data", b'{"a":1}', 1, 513, False, 7), id="v5 qos1"),
    pytest.param(publish_packet("a/b", b"x", 7, v5=False, retain=True), V3,
                 codec.Publish("a/b", b"x", 1, 7, True, 1), id="v3 retained"),
    pytest.param(publish_packet("a/b", b"xy", qos=0, v5=False), V3,
                 codec.Publish("a/b", b"xy", 0, 0, False, 2), id="v3 qos0"),
    pytest.param(publish_packet("t", b"p", 9, qos=2,
                                props=b"\x01\x01\x03\x00\x10application/json"), V5,
                 codec.Publish("t", b"p", 2, 9, False, 1), id="v5 qos2 properties"),
    pytest.param(publish_packet("t", b"", 3), V5, codec.Publish("t", b"", 1, 3, False, 0),
                 id="empty payload"),
])
def test_publish(packet: bytes, protocol: Protocol, expected: codec.Publish) -> None:
    start, length = codec.fixed_header(packet, 0, len(packet)) or (0, 0)
    assert codec.publish(packet[0], packet[start:start + length], protocol=protocol) == expected


@pytest.mark.parametrize(("packet", "why"), [
    pytest.param(publish_packet("", b"x"), "empty topic", id="empty topic"),
    pytest.param(publish_packet("t", b"x", 0), "packet id 0", id="mid 0"),
    pytest.param(b"\x36\x05\x00\x01t\x00\x01", "qos 3", id="qos 3"),
    pytest.param(b"\x32\x05\x00\x01\xff\x00\x01", "utf-8", id="topic not utf-8"),
    pytest.param(b"\x32\x04\x00\x09ab", "cut short", id="topic overruns"),
    pytest.param(b"\x32\x06\x00\x01t\x00\x01\x09", "overrun", id="properties overrun"),
])
def test_malformed_publish(packet: bytes, why: str) -> None:
    start, length = codec.fixed_header(packet, 0, len(packet)) or (0, 0)
    with pytest.raises(MalformedPacket, match=why):
        codec.publish(packet[0], packet[start:start + length], protocol=V5)


@pytest.mark.parametrize("protocol", [V3, V5])
def test_publish_prefix_reads_topic_and_size_from_the_first_bytes(protocol: Protocol) -> None:
    payload = bytes(10_000)
    packet = publish_packet("gw/dev/data", payload, 42, v5=protocol is V5)
    start, length = codec.fixed_header(packet, 0, len(packet)) or (0, 0)
    assert codec.publish_prefix(packet[0], packet[start:start + 3], length,
                                protocol=protocol) is None
    head = packet[start:start + 40]
    assert codec.publish_prefix(packet[0], head, length, protocol=protocol) == (
        "gw/dev/data", 42, 10_000)


def test_acks_and_disconnect() -> None:
    assert codec.connack(b"\x01\x00", protocol=V3) == codec.ConnAck(True, 0)
    assert codec.connack(b"\x00\x86\x00", protocol=V5) == codec.ConnAck(False, 0x86)
    assert codec.ack_body(b"\x00\x05\x01", protocol=V3) == (5, [1])
    assert codec.ack_body(b"\x00\x05\x00\x01", protocol=V5) == (5, [1])
    assert codec.ack_body(b"\x00\x05\x03\x1f\x00\x00\x80", protocol=V5) == (5, [0x80])
    assert codec.ack_body(b"\x00\x06", protocol=V3) == (6, [])  # 3.1.1 UNSUBACK
    assert codec.disconnect_reason(b"\x8e\x00") == (codec.SESSION_TAKEN_OVER, None)
    assert codec.disconnect_reason(b"\x8e") == (codec.SESSION_TAKEN_OVER, None)
    assert codec.disconnect_reason(b"") == (0, None)
    assert codec.disconnect_reason(b"\x98\x06\x1f\x00\x03bye") == (0x98, "bye")
    assert codec.describe_disconnect(0x8E) == "session taken over"
    assert codec.describe_disconnect(0xA0) == "reason code 0xa0"


@pytest.mark.parametrize(("props", "expected"), [
    pytest.param(b"", {}, id="none"),
    pytest.param(b"\x13\x00\x0a", {0x13: 10}, id="server keep alive"),
    pytest.param(b"\x21\x00\x14\x24\x01\x27\x00\x10\x00\x00\x1f\x00\x02hi",
                 {0x21: 20, 0x24: 1, 0x27: 1 << 20, 0x1F: "hi"}, id="several"),
    pytest.param(b"\x26\x00\x01k\x00\x01v\x12\x00\x02id", {0x12: "id"},
                 id="user property skipped"),
    pytest.param(b"\x0b\x80\x01", {0x0B: 128}, id="variable byte integer"),
])
def test_properties(props: bytes, expected: dict[int, object]) -> None:
    assert codec.properties(codec.varint(len(props)) + props, 0) == expected


@pytest.mark.parametrize("props", [
    pytest.param(b"\x7f\x00", id="unknown identifier"),
    pytest.param(b"\x1f\x00\x09hi", id="string overruns"),
])
def test_bad_properties(props: bytes) -> None:
    with pytest.raises(MalformedPacket):
        codec.properties(codec.varint(len(props)) + props, 0)


def test_connack_v5_server_keepalive_and_reason() -> None:
    body = b"\x00\x87\x08\x13\x00\x05\x1f\x00\x02no"
    assert codec.connack(body, protocol=V5) == codec.ConnAck(False, 0x87, 5, "no")
