"""The MQTT packets the bridge's session sends and reads, MQTT 3.1.1 and 5: pure, no I/O.

Only what a subscriber with manual acknowledgements needs: CONNECT, SUBSCRIBE,
UNSUBSCRIBE, PINGREQ, DISCONNECT, PUBACK/PUBREC/PUBCOMP out; CONNACK, SUBACK, UNSUBACK,
PUBLISH, PUBREL, PINGRESP, DISCONNECT in. `gateway.bridge.receive` frames the byte stream
with `fixed_header` (which gives a packet's length from its prefix alone, so a too-large
packet can be refused before it is read) and decodes each body here.

Why not the `mqtt5` package (the sans-I/O codec aiomqtt 3 builds on): it speaks MQTT 5
only, and the bridge must also speak 3.1.1 (RabbitMQ's MQTT plugin, the demo's embedded
broker). bench/bridge_receive.py runs a session over `mqtt5` beside this one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum


class Protocol(IntEnum):
    """The protocol level byte of CONNECT."""

    V311 = 4
    V5 = 5


# packet types (high nibble of the first byte)
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = (
    8, 9, 10, 11, 12, 13, 14)

# MQTT 5 property identifiers used here
SESSION_EXPIRY = 0x11
RECEIVE_MAXIMUM = 0x21
REASON_STRING = 0x1F
SERVER_KEEPALIVE = 0x13

PINGREQ_PACKET = b"\xc0\x00"

# v5 DISCONNECT reason codes the bridge names (others are reported by number)
DISCONNECT_REASONS = {
    0x00: "normal disconnection", 0x80: "unspecified error", 0x81: "malformed packet",
    0x82: "protocol error", 0x87: "not authorized", 0x89: "server busy",
    0x8B: "server shutting down", 0x8D: "keep alive timeout", 0x8E: "session taken over",
    0x93: "receive maximum exceeded", 0x95: "packet too large", 0x97: "quota exceeded",
    0x98: "administrative action",
}
SESSION_TAKEN_OVER = 0x8E

# CONNACK return codes (3.1.1) and reason codes (5) that mean "bad credentials"
NOT_AUTHORIZED = {4, 5, 0x86, 0x87}


class MalformedPacket(ValueError):
    """Bytes from the broker that are not a valid MQTT packet."""


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much
class Publish:
    """An inbound PUBLISH. `payload` is empty and `size` set when it was too large to read."""

    topic: str
    payload: bytes
    qos: int
    mid: int  # packet identifier (0 for QoS 0)
    retain: bool
    size: int  # payload bytes


def varint(n: int) -> bytes:
    """The variable byte integer encoding of `n` (remaining lengths, property lengths)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def fixed_header(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int] | None:
    """`(body_start, body_length)` of the packet at `pos`, or None while its prefix is cut.

    The body may still be incomplete: the caller compares with what it holds. Raises
    `MalformedPacket` for a remaining length longer than four bytes.
    """
    i = pos + 1
    length = 0
    shift = 0
    while True:
        if i >= end:
            return None
        byte = buf[i]
        i += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return i, length
        shift += 7
        if shift > 21:
            raise MalformedPacket("remaining length longer than four bytes")


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def _properties(props: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(bytes([ident]) + value for ident, value in props)
    return varint(len(body)) + body


def connect(client_id: str, *, protocol: Protocol, clean: bool, keepalive: int,
            username: str | None = None, password: str | None = None,
            session_expiry: int = 0, receive_maximum: int = 65535) -> bytes:
    """CONNECT. `clean` is Clean Session (3.1.1) or Clean Start (5); the session expiry
    and receive maximum are sent as MQTT 5 properties (3.1.1 has neither)."""
    flags = 0x02 if clean else 0
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = _string("MQTT") + bytes([protocol, flags]) + struct.pack("!H", keepalive)
    if protocol is Protocol.V5:
        body += _properties([
            (SESSION_EXPIRY, struct.pack("!I", min(session_expiry, 0xFFFFFFFF))),
            (RECEIVE_MAXIMUM, struct.pack("!H", max(1, min(65535, receive_maximum)))),
        ])
    body += _string(client_id)
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return _packet(CONNECT << 4, body)


def subscribe(mid: int, topic_filter: str, qos: int, *, protocol: Protocol) -> bytes:
    """SUBSCRIBE to one filter. In MQTT 5 retained messages are sent only when the
    subscription is new (Retain Handling 1): a resumed session does not get them again."""
    options = qos
    body = struct.pack("!H", mid)
    if protocol is Protocol.V5:
        body += b"\x00"
        options |= 1 << 4
    body += _string(topic_filter) + bytes([options])
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def unsubscribe(mid: int, topic_filter: str, *, protocol: Protocol) -> bytes:
    body = struct.pack("!H", mid)
    if protocol is Protocol.V5:
        body += b"\x00"
    return _packet(UNSUBSCRIBE << 4 | 0x02, body + _string(topic_filter))


# DISCONNECT, normal (in MQTT 5 the session expiry given at CONNECT is kept)
DISCONNECT_PACKET = b"\xe0\x00"


def pubacks(mids: list[int]) -> bytes:
    """The PUBACK packets (success, no properties) of `mids`, in order, as one write."""
    return struct.pack(f"!{len(mids)}I", *[0x40020000 | mid for mid in mids])


def pubrec(mid: int) -> bytes:
    return struct.pack("!BBH", PUBREC << 4, 2, mid)


def pubcomp(mid: int) -> bytes:
    return struct.pack("!BBH", PUBCOMP << 4, 2, mid)


def _skip_properties(body: bytes | memoryview, pos: int, total: int | None = None) -> int:
    """The position after the MQTT 5 properties starting at `pos` (in a body of `total`
    bytes, of which `body` may hold only the first)."""
    length = 0
    shift = 0
    while True:
        if pos >= len(body) or shift > 21:
            raise MalformedPacket("properties cut short")
        byte = body[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    if pos + length > (len(body) if total is None else total):
        raise MalformedPacket("properties overrun the packet")
    return pos + length


def publish_head(first: int, body: bytes | memoryview, *, protocol: Protocol,
                 body_length: int | None = None) -> tuple[str, int, int]:
    """`(topic, packet id, payload offset)` of a PUBLISH body (whole, or with `body_length`
    given, at least its variable header up to the property length). Raises
    `MalformedPacket` (empty or non-UTF-8 topic, QoS 3, packet id 0, lengths that
    overrun)."""
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("publish with qos 3")
    if len(body) < 2:
        raise MalformedPacket("publish cut short")
    pos = 2 + ((body[0] << 8) | body[1])
    if pos == 2:
        raise MalformedPacket("publish with an empty topic")  # no topic aliases asked for
    try:
        topic = bytes(body[2:pos]).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("publish topic is not utf-8") from None
    mid = 0
    if qos:
        if pos + 2 > len(body):
            raise MalformedPacket("publish cut short")
        mid = (body[pos] << 8) | body[pos + 1]
        if mid == 0:
            raise MalformedPacket("publish with packet id 0")
        pos += 2
    total = len(body) if body_length is None else body_length
    if protocol is Protocol.V5:
        pos = _skip_properties(body, pos, total)
    if pos > total:
        raise MalformedPacket("publish cut short")
    return topic, mid, pos


def publish_prefix(first: int, head: bytes | memoryview, body_length: int, *,
                   protocol: Protocol) -> tuple[str, int, int] | None:
    """`(topic, packet id, payload size)` of a PUBLISH from the first bytes of its body
    (`head`) and the body's length, or None while `head` is too short to tell: a packet too
    large to hold is refused from these alone. Raises `MalformedPacket` as `publish_head`."""
    qos = (first >> 1) & 0x03
    if len(head) < 2:
        return None
    need = 2 + ((head[0] << 8) | head[1]) + (2 if qos else 0)
    if protocol is Protocol.V5:
        need += 4  # the property length: one to four bytes
    if len(head) < min(need, body_length):
        return None
    topic, mid, start = publish_head(first, head[:body_length], protocol=protocol,
                                     body_length=body_length)
    return topic, mid, body_length - start


def publish(first: int, body: bytes, *, protocol: Protocol) -> Publish:
    """Decode a whole PUBLISH body."""
    topic, mid, start = publish_head(first, body, protocol=protocol)
    return Publish(topic, body[start:], (first >> 1) & 0x03, mid, bool(first & 0x01),
                   len(body) - start)


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool
    code: int  # 0: accepted; else the 3.1.1 return code or the MQTT 5 reason code
    server_keepalive: int | None = None  # MQTT 5: the keepalive the broker imposes
    reason: str | None = None  # MQTT 5 reason string


def connack(body: bytes, *, protocol: Protocol) -> ConnAck:
    if len(body) < 2:
        raise MalformedPacket("connack cut short")
    props: dict[int, int | str | bytes] = {}
    if protocol is Protocol.V5 and len(body) > 2:
        props = properties(body, 2)
    keepalive = props.get(SERVER_KEEPALIVE)
    reason = props.get(REASON_STRING)
    return ConnAck(bool(body[0] & 0x01), body[1],
                   keepalive if isinstance(keepalive, int) else None,
                   reason if isinstance(reason, str) else None)


# MQTT 5 property identifier -> its type: 1, 2, 4 (bytes of an integer), "v" variable
# byte integer, "s" UTF-8 string, "b" binary data, "p" string pair
PROPERTY_TYPES: dict[int, int | str] = {
    0x01: 1, 0x02: 4, 0x03: "s", 0x08: "s", 0x09: "b", 0x0B: "v", 0x11: 4, 0x12: "s",
    0x13: 2, 0x15: "s", 0x16: "b", 0x17: 1, 0x18: 4, 0x19: 1, 0x1A: "s", 0x1C: "s",
    0x1F: "s", 0x21: 2, 0x22: 2, 0x23: 2, 0x24: 1, 0x25: 1, 0x26: "p", 0x27: 4, 0x28: 1,
    0x29: 1, 0x2A: 1,
}


def _varint_at(body: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(body) or shift > 21:
            raise MalformedPacket("variable byte integer cut short")
        byte = body[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def properties(body: bytes, pos: int) -> dict[int, int | str | bytes]:
    """The MQTT 5 properties starting at `pos` (the last of a repeated one; user properties
    are skipped). Raises `MalformedPacket` for an unknown identifier or overrun lengths."""
    length, pos = _varint_at(body, pos)
    end = pos + length
    if end > len(body):
        raise MalformedPacket("properties overrun the packet")
    out: dict[int, int | str | bytes] = {}
    while pos < end:
        ident = body[pos]
        kind = PROPERTY_TYPES.get(ident)
        pos += 1
        if kind is None:
            raise MalformedPacket(f"unknown property 0x{ident:02x}")
        if isinstance(kind, int):
            out[ident] = int.from_bytes(body[pos:pos + kind], "big")
            pos += kind
        elif kind == "v":
            out[ident], pos = _varint_at(body, pos)
        else:
            for _ in range(2 if kind == "p" else 1):
                if pos + 2 > end:
                    raise MalformedPacket("property cut short")
                size = (body[pos] << 8) | body[pos + 1]
                value = body[pos + 2:pos + 2 + size]
                pos += 2 + size
            if kind == "s":
                out[ident] = value.decode("utf-8", "replace")
            elif kind == "b":
                out[ident] = bytes(value)
    if pos != end:
        raise MalformedPacket("properties overrun their length")
    return out


def ack_body(body: bytes, *, protocol: Protocol) -> tuple[int, list[int]]:
    """`(packet id, codes)` of a SUBACK or UNSUBACK (an MQTT 3.1.1 UNSUBACK has no codes)."""
    if len(body) < 2:
        raise MalformedPacket("ack cut short")
    mid = (body[0] << 8) | body[1]
    pos = 2
    if protocol is Protocol.V5 and len(body) > 2:
        pos = _skip_properties(body, pos)
    return mid, list(body[pos:])


def packet_id(body: bytes) -> int:
    """The packet identifier of a PUBREL (or another ack)."""
    if len(body) < 2:
        raise MalformedPacket("packet cut short")
    return (body[0] << 8) | body[1]


def disconnect_reason(body: bytes) -> tuple[int, str | None]:
    """The reason code (0 when absent) and reason string of a broker's DISCONNECT (MQTT 5)."""
    if not body:
        return 0, None
    reason = properties(body, 1).get(REASON_STRING) if len(body) > 1 else None
    return body[0], reason if isinstance(reason, str) else None


def describe_disconnect(code: int) -> str:
    return DISCONNECT_REASONS.get(code, f"reason code 0x{code:02x}")
