"""The bridge's MQTT session (gateway.bridge.receive) against a scripted broker on loopback.

Real Mosquitto runs it in tests/integration/test_bridge*.py; here the broker's bytes are
chosen exactly: packets cut at every byte, a message larger than the limit, refusals and a
session taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.bridge import codec, receive
from gateway.bridge.codec import Protocol
from gateway.bridge.receive import (
    BrokerDisconnected,
    ConnectionLost,
    ConnectRefused,
    Message,
    Session,
    SessionOptions,
    SessionTakenOver,
)
from tests.unit.test_bridge_codec import publish_packet

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    header = b""
    while True:
        header += await reader.readexactly(1)
        frame = codec.fixed_header(bytes([first]) + header, 0, len(header) + 1)
        if frame is not None:
            return first, await reader.readexactly(frame[1])


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 present: bool = False, code: int = 0) -> bytes:
    first, body = await read_packet(reader)
    assert first == 0x10
    writer.write(bytes([0x20, 2, int(present), code]))
    return body


async def session_on(script: Script, **options: object) -> tuple[Session, asyncio.Server]:
    server = await asyncio.start_server(script, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    opts = SessionOptions(host="127.0.0.1", port=port, client_id="bridge", timeout=5,
                          **options)  # type: ignore[arg-type]
    return await Session.connect(opts), server


async def collect(session: Session, n: int) -> list[Message]:
    out: list[Message] = []
    async for batch in session.batches():
        out.extend(batch)
        if len(out) >= n:
            break
    return out


@pytest.mark.parametrize("protocol", [Protocol.V311, Protocol.V5])
async def test_messages_cut_at_every_byte_then_acked_after_the_write(
        protocol: Protocol) -> None:
    v5 = protocol is Protocol.V5
    packets = [publish_packet(f"g/d{i}/data", b'{"v":%d}' % i, i + 1, v5=v5) for i in range(5)]
    packets.insert(2, publish_packet("g/q2/data", b"two", 77, qos=2, v5=v5))
    stream = b"".join(packets)
    got_acks: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connect = await accept(reader, writer, present=True)
        assert connect[6] == protocol  # the protocol level byte
        for i in range(len(stream)):
            writer.write(stream[i:i + 1])
            await writer.drain()
        acks = await reader.readexactly(6 * 4)
        writer.write(bytes([0x62, 2, 0, 77]))  # PUBREL of the QoS 2 message
        acks += await reader.readexactly(4)  # its PUBCOMP
        got_acks.set_result(acks)

    session, server = await session_on(script, protocol=protocol)
    try:
        assert session.session_present
        messages = await collect(session, 6)
        assert [(m.topic, m.payload, m.mid, m.qos) for m in messages] == [
            ("g/d0/data", b'{"v":0}', 1, 1), ("g/d1/data", b'{"v":1}', 2, 1),
            ("g/q2/data", b"two", 77, 2), ("g/d2/data", b'{"v":2}', 3, 1),
            ("g/d3/data", b'{"v":3}', 4, 1), ("g/d4/data", b'{"v":4}', 5, 1)]
        assert not got_acks.done()  # nothing acknowledged before the write
        session.ack_many(messages)
        acks = await asyncio.wait_for(got_acks, 5)
        assert acks == codec.pubacks([1, 2, 3, 4, 5]) + codec.pubrec(77) + codec.pubcomp(77)
    finally:
        session.abort()
        server.close()


async def test_a_message_over_the_limit_is_skipped_from_its_length_prefix() -> None:
    big = 50 * 1024 * 1024
    head = publish_packet("g/big/data", b"", 9)
    # the same packet with a 50 MiB payload: fix the remaining length, then stream zeros
    body_len = len(head) - 2 + big
    header = b"\x32" + codec.varint(body_len)
    prefix = header + head[2:]
    after = publish_packet("g/small/data", b"ok", 10)
    chunk = bytes(256 * 1024)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        writer.write(prefix)
        for _ in range(big // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        writer.write(after)
        await writer.drain()
        await reader.read()

    tracemalloc.start()
    try:
        session, server = await session_on(script, max_payload=1024 * 1024)
        try:
            messages = await collect(session, 2)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            session.abort()
            server.close()
    finally:
        tracemalloc.stop()
    assert [(m.topic, m.payload, m.size, m.mid) for m in messages] == [
        ("g/big/data", b"", big, 9), ("g/small/data", b"ok", 2, 10)]
    assert peak < 8 * 1024 * 1024, peak  # the 50 MiB were never held


@pytest.mark.parametrize(("code", "not_authorized"), [(5, True), (0x86, True), (3, False)])
async def test_a_refused_connect_is_a_typed_error(code: int, not_authorized: bool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer, code=code)
        await reader.read()

    with pytest.raises(ConnectRefused) as err:
        await session_on(script)
    assert err.value.code == code
    assert err.value.not_authorized is not_authorized
    assert "refused the connection" in str(err.value)


@pytest.mark.parametrize(("reason", "error"), [
    (0x8E, SessionTakenOver), (0x8B, BrokerDisconnected)])
async def test_a_broker_disconnect_ends_the_batches_with_its_reason(
        reason: int, error: type[Exception]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        writer.write(bytes([0xE0, 1, reason]))
        await writer.drain()
        await reader.read()

    session, server = await session_on(script)
    try:
        with pytest.raises(error) as err:
            await collect(session, 1)
        assert type(err.value) is error
        assert err.value.code == reason  # type: ignore[attr-defined]
    finally:
        server.close()


async def test_a_closed_socket_is_connection_lost_and_subscribe_waits_for_suback() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        first, body = await read_packet(reader)
        assert first == 0x82 and body.endswith(b"$share/g/a/#\x11")
        writer.write(b"\x90\x04" + body[:2] + b"\x00\x01")  # SUBACK (v5), QoS 1 granted
        await writer.drain()
        writer.close()

    session, server = await session_on(script)
    try:
        assert await session.subscribe("$share/g/a/#", 1) == 1
        with pytest.raises(ConnectionLost):
            await collect(session, 1)
    finally:
        server.close()


async def test_close_sends_disconnect_and_ends_the_batches() -> None:
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        first, _ = await read_packet(reader)
        seen.set_result(first)
        writer.close()

    session, server = await session_on(script)
    try:
        await session.close()
        assert await seen == 0xE0
        assert await collect(session, 1) == []
    finally:
        server.close()


async def test_the_broker_may_shorten_the_keepalive_and_say_why_it_disconnects() -> None:
    pings: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_packet(reader)
        writer.write(b"\x20\x06\x00\x00\x03\x13\x00\x01")  # CONNACK, keep alive 1 s
        first, _ = await read_packet(reader)
        pings.set_result(first)
        writer.write(b"\xe0\x0a\x98\x08\x1f\x00\x05admin")  # DISCONNECT with a reason
        await writer.drain()
        await reader.read()

    session, server = await session_on(script, keepalive=600)
    try:
        assert session.keepalive == 1
        assert await asyncio.wait_for(pings, 5) == 0xC0  # a PINGREQ well before 600 s
        with pytest.raises(BrokerDisconnected, match=r"administrative action \(admin\)"):
            await collect(session, 1)
    finally:
        server.close()


@pytest.mark.parametrize("slow", [False, True])
async def test_a_backlog_is_handed_over_in_steps_and_reading_stops_while_it_waits(
        slow: bool) -> None:
    """A broker that pushes a large backlog at once: `batches()` hands it over a step
    (BATCH messages, BATCH_BYTES of payload) at a time with the event loop running in
    between (other tasks, such as the writers, get their turn, even when the consumer never
    awaits), and with a slow consumer the session stops reading while more than
    INBOX_BYTES wait to be taken, so what it holds stays bounded whatever the broker sends;
    every message arrives, in order."""
    n = 3000
    payload = bytes(2000)
    stream = b"".join(publish_packet(f"g/d{i}/data", payload, i + 1) for i in range(n))

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        writer.write(stream)
        await writer.drain()
        await reader.read()

    session, server = await session_on(script)
    ticks = 0
    stop = asyncio.Event()

    async def other_task() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    try:
        ticker = asyncio.create_task(other_task())
        mids: list[int] = []
        sizes: list[int] = []
        ticks_seen: list[int] = []
        held_max = 0
        async for batch in session.batches():
            mids.extend(m.mid for m in batch)
            sizes.append(len(batch))
            ticks_seen.append(ticks)
            held = sum(len(m.payload) for m in session._inbox)
            held_max = max(held_max, held)
            if slow and held:
                await asyncio.sleep(0.002)  # the backlog builds up
            if len(mids) >= n:
                break
        stop.set()
        await ticker
        assert mids == list(range(1, n + 1))
        assert max(sizes) <= min(receive.BATCH, receive.BATCH_BYTES // len(payload) + 1)
        assert len(set(ticks_seen)) == len(ticks_seen)  # the other task ran between any two
        # The inbox filled up to its limit, and no further than one more read.
        assert held_max <= receive.INBOX_BYTES + 256 * 1024
        if slow:
            assert held_max > receive.INBOX_BYTES // 2
    finally:
        session.abort()
        server.close()


async def test_close_reads_the_brokers_close_although_nobody_takes_the_inbox() -> None:
    """Stopping: the consumer is gone and the broker is still sending a backlog. close()
    must keep reading (not stop again at a full inbox) to see the broker close the
    connection after DISCONNECT, rather than wait out its timeout and abort."""
    disconnect_read = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accept(reader, writer)
        writer.write(b"".join(publish_packet(f"g/d{i}/data", bytes(2000), i % 65535 + 1)
                              for i in range(20000)))  # ~40 MB, queued at once
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                first, _ = await read_packet(reader)
                if first >> 4 == codec.DISCONNECT:
                    disconnect_read.set()
                    writer.close()
                    return

    session, server = await session_on(script)

    async def consume() -> None:
        async for _ in session.batches():
            pass

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    consumer.cancel()  # as MqttLink._consume does when the bridge stops
    await asyncio.sleep(0.2)
    try:
        await asyncio.wait_for(session.close(timeout=120), 30)  # not its timeout: the peer's close
        assert disconnect_read.is_set()
        assert session.closed.done() and session.error is None
    finally:
        session.abort()
        server.close()


async def test_a_resumed_backlog_before_suback_does_not_hold_the_subscription(
        tmp_path: Path) -> None:
    """A resumed session's backlog comes before SUBACK. With InfluxDB down the bridge must
    not pause reading before it is subscribed (the SUBACK would stay unread, the
    subscription time out and the same backlog come again at every reconnect): it
    subscribes once, then pauses for InfluxDB."""
    from gateway.bridge.service import Bridge
    from gateway.core.model import BridgeConfig, BridgeMqttConfig, InfluxConfig, Reading
    from gateway.core.payload import build_json, data_topic
    from tests.support.ports import free_port

    connects = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connects
        connects += 1
        await read_packet(reader)
        writer.write(bytes([0x20, 3, 1, 0, 0]))  # CONNACK v5, session present
        topic = data_topic("sensegate", "gw1", "d1")
        writer.write(b"".join(
            publish_packet(topic, build_json("gw1", "d1", "w", {}, [
                Reading("d1", 1_700_000_000_000_000_000 + i, {"t": i})]), i + 1, v5=True)
            for i in range(2000)))
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                first, body = await read_packet(reader)
                if first >> 4 == codec.SUBSCRIBE:
                    writer.write(bytes([0x90, 4]) + body[:2] + bytes([0, 1]))  # SUBACK

    server = await asyncio.start_server(script, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = BridgeConfig(
        mqtt=BridgeMqttConfig(host="127.0.0.1", port=port, client_id="b"),
        influxdb=InfluxConfig(url=f"http://127.0.0.1:{free_port()}", api="v1", database="x",
                              batch_size=10, flush_interval=0.2, timeout=2.0),
        state_dir=str(tmp_path))
    bridge = Bridge(config_path="(test)", config=config, reconnect_max=1.0, drain_timeout=0.2)
    task = asyncio.create_task(bridge.run())
    try:
        for _ in range(600):
            if bridge.stats.connected and bridge.stats.read_pauses:
                break
            await asyncio.sleep(0.05)
        assert bridge.stats.connected, bridge.stats.last_error
        assert bridge.stats.read_pauses >= 1  # then paused for InfluxDB, which is down
        assert connects == 1
        assert "influxdb" in bridge.stats.last_error
    finally:
        bridge.should_exit.set()
        await asyncio.wait_for(task, 30)
        server.close()
