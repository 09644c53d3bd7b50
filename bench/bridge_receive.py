"""The bridge's MQTT receive path: candidates side by side, in one run, on the same messages.

    .venv/bin/python bench/bridge_receive.py [--messages 50000] [--receive-maximum 1000]

Starts its own Mosquitto on a free loopback port. Every candidate first creates a persistent
MQTT 5 session (its own client id, QoS 1 subscription to `bench/#`); then a publisher floods
the broker with `--messages` small one-scan QoS 1 messages (~200-byte JSON, as a gateway
sends in steady state), queued at the broker once for every session. Then each candidate in
turn connects (clean start off), receives every message and acknowledges it only after a
(no-op) write of its batch: a batch is `receive_maximum // 5` messages, as the bridge's. The
clock runs from connect to the last PUBACK handed to the transport. Afterwards each session
is opened once more to check that the broker has nothing left to deliver (`redelivered`),
which proves the acks were really sent.

- paho: stock paho-mqtt 2 (`manual_ack=True`, `client.ack(mid, qos)`, its own thread);
- gmqtt: gmqtt with `optimistic_acknowledgement=False` and a coroutine handler per message
  that waits for its batch's write;
- mqtt5: a minimal session of our own over the sans-I/O `mqtt5` codec and an asyncio
  Protocol, decoding everything in the read buffer at once;
- receive: `gateway.bridge.receive.Session`, the bridge's receive path.

Prints one JSON line: messages/s per candidate and its ratio to paho's rate (target ≥ 3).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mqtt5  # noqa: E402

from tests.support.mosquitto import Mosquitto  # noqa: E402

FILTER = "bench/#"
EXPIRY = 3600


def payload(k: int) -> bytes:
    body = {"gateway": f"gw-{k % 20:03d}", "device": f"dev-{k % 7}", "model": "road_weather",
            "tags": {"district": "xinwu"},
            "readings": [{"ts": 1_764_000_000_000_000_000 + k * 1000,
                          "values": {"air_temp": round(k * 0.01 - 20.0, 2),
                                     "humidity": 40.0 + (k % 500) / 10, "count": k,
                                     "ok": k % 2 == 0}}]}
    return json.dumps(body, separators=(",", ":")).encode()


def topic(k: int) -> str:
    return f"bench/gw-{k % 20:03d}/dev-{k % 7}/data"


# -- a blocking helper client over the mqtt5 codec (sessions, publishing, checking) ---------

class Raw:
    def __init__(self, port: int, client_id: str, *, clean: bool, receive_max: int = 65535,
                 expiry: int = EXPIRY) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""
        self.sock.sendall(mqtt5.ConnectPacket(client_id, clean_start=clean, keep_alive=60,
                                              session_expiry_interval=expiry,
                                              receive_max=receive_max).write())
        ack = self.packet()
        assert isinstance(ack, mqtt5.ConnAckPacket), ack
        assert ack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS, ack.reason_code

    def packet(self, timeout: float | None = None) -> Any:
        self.sock.settimeout(timeout)
        while True:
            if self.buf:
                try:
                    pkt, n = mqtt5.read(memoryview(self.buf))
                except IndexError:
                    pass
                else:
                    self.buf = self.buf[n:]
                    return pkt
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                return None
            if not data:
                raise ConnectionError("closed")
            self.buf += data

    def subscribe(self, pattern: str) -> None:
        self.sock.sendall(mqtt5.SubscribePacket(1, [mqtt5.TopicFilter(
            pattern, max_qos=mqtt5.QoS.AT_LEAST_ONCE)]).write())
        assert isinstance(self.packet(), mqtt5.SubAckPacket)

    def close(self, expiry: int | None = None) -> None:
        self.sock.sendall(mqtt5.DisconnectPacket(session_expiry_interval=expiry).write())
        self.sock.close()


def publish_all(port: int, n: int, window: int = 500) -> None:
    pub = Raw(port, "bench-publisher", clean=True, expiry=0)
    sent = 0
    while sent < n:
        k = min(window, n - sent)
        data = b"".join(mqtt5.PublishPacket(topic(sent + i), payload(sent + i),
                                            qos=mqtt5.QoS.AT_LEAST_ONCE,
                                            packet_id=i + 1).write() for i in range(k))
        pub.sock.sendall(data)
        acks = 0
        while acks < k:
            if isinstance(pub.packet(), mqtt5.PubAckPacket):
                acks += 1
        sent += k
    pub.close()


def left_at_broker(port: int, client_id: str) -> int:
    """Messages the broker still delivers to the session (then the session is dropped)."""
    raw = Raw(port, client_id, clean=False)
    count = 0
    while (pkt := raw.packet(timeout=0.5)) is not None:
        if isinstance(pkt, mqtt5.PublishPacket):
            count += 1
    raw.close(expiry=0)
    return count


# -- the candidates --------------------------------------------------------------------

def run_paho(port: int, client_id: str, n: int, rm: int) -> float:
    import paho.mqtt.client as paho
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    done = threading.Event()
    batch: list[int] = []
    count = 0
    batch_size = max(1, rm // 5)

    def on_message(client: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        nonlocal count
        batch.append(msg.mid)
        count += 1
        if len(batch) >= batch_size or count >= n:
            for mid in batch:  # the (no-op) write is done: acknowledge
                client.ack(mid, 1)
            batch.clear()
            if count >= n:
                done.set()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=paho.MQTTv5, manual_ack=True)
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = EXPIRY
    props.ReceiveMaximum = rm
    start = time.perf_counter()
    client.connect("127.0.0.1", port, keepalive=60, clean_start=False, properties=props)
    client.loop_start()
    done.wait()
    elapsed = time.perf_counter() - start
    time.sleep(0.2)  # let the last acks out
    client.disconnect()
    client.loop_stop()
    return elapsed


async def run_gmqtt(port: int, client_id: str, n: int, rm: int) -> float:
    import gmqtt

    loop = asyncio.get_running_loop()
    done = loop.create_future()
    batch_size = max(1, rm // 5)
    state: dict[str, Any] = {"count": 0, "written": loop.create_future(), "size": 0}

    async def on_message(_c: Any, _t: str, _p: bytes, _q: int, _props: Any) -> int:
        state["count"] += 1
        state["size"] += 1
        written = state["written"]
        if state["size"] >= batch_size or state["count"] >= n:
            state["written"] = loop.create_future()
            state["size"] = 0
            written.set_result(None)  # the (no-op) write of the batch
            if state["count"] >= n and not done.done():
                loop.call_soon(done.set_result, None)
        await written
        return 0  # PUBACK success, sent by gmqtt when this returns

    client = gmqtt.Client(client_id, clean_session=False, optimistic_acknowledgement=False,
                          session_expiry_interval=EXPIRY, receive_maximum=rm)
    client.on_message = on_message
    start = time.perf_counter()
    await client.connect("127.0.0.1", port, keepalive=60, version=gmqtt.constants.MQTTv50)
    await done
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0.2)
    await client.disconnect(session_expiry_interval=EXPIRY)
    return elapsed


class _Mqtt5Protocol(asyncio.Protocol):
    def __init__(self, n: int, rm: int, done: asyncio.Future[None]) -> None:
        self.n, self.batch_size, self.done = n, max(1, rm // 5), done
        self.buf = b""
        self.batch: list[int] = []
        self.count = 0
        self.transport: Any = None
        self.closed: asyncio.Future[None] = done.get_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        view = memoryview(buf)
        pos, end = 0, len(buf)
        while pos < end:
            try:
                pkt, used = mqtt5.read(view[pos:])
            except IndexError:
                break
            pos += used
            if isinstance(pkt, mqtt5.PublishPacket):
                assert pkt.packet_id is not None
                self.batch.append(pkt.packet_id)
                self.count += 1
                if len(self.batch) >= self.batch_size or self.count >= self.n:
                    self.transport.write(b"".join(mqtt5.PubAckPacket(m).write()
                                                  for m in self.batch))
                    self.batch.clear()
                    if self.count >= self.n and not self.done.done():
                        self.done.set_result(None)
        view.release()
        self.buf = buf[pos:]


async def run_mqtt5(port: int, client_id: str, n: int, rm: int) -> float:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    start = time.perf_counter()
    transport, proto = await loop.create_connection(
        lambda: _Mqtt5Protocol(n, rm, done), "127.0.0.1", port)
    transport.write(mqtt5.ConnectPacket(client_id, clean_start=False, keep_alive=60,
                                        session_expiry_interval=EXPIRY,
                                        receive_max=rm).write())
    await done
    elapsed = time.perf_counter() - start
    transport.write(mqtt5.DisconnectPacket().write())
    await proto.closed  # the broker closes once it has read the acks and the DISCONNECT
    return elapsed


async def run_receive(port: int, client_id: str, n: int, rm: int) -> float:
    from gateway.bridge.receive import Session, SessionOptions

    options = SessionOptions(host="127.0.0.1", port=port, client_id=client_id,
                             session_expiry=EXPIRY, receive_maximum=rm, keepalive=60)
    batch_size = max(1, rm // 5)
    count = 0
    start = time.perf_counter()
    session = await Session.connect(options)
    try:
        pending = []
        async for batch in session.batches():
            for message in batch:
                pending.append(message)
                count += 1
                if len(pending) >= batch_size or count >= n:
                    session.ack_many(pending)  # after the (no-op) write
                    pending = []
            if count >= n:
                break
        elapsed = time.perf_counter() - start
    finally:
        await session.close()
    return elapsed


CANDIDATES: dict[str, Callable[[int, str, int, int], Awaitable[float] | float]] = {
    "paho": run_paho, "gmqtt": run_gmqtt, "mqtt5": run_mqtt5, "receive": run_receive,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--receive-maximum", type=int, default=1000)
    parser.add_argument("--only", default=",".join(CANDIDATES))
    args = parser.parse_args()
    names = [c for c in args.only.split(",") if c]
    n, rm = args.messages, args.receive_maximum
    extra = "max_inflight_messages 0\nmax_queued_bytes 0\n"
    with Mosquitto(persistence=False, extra_conf=extra) as broker:
        for name in names:
            raw = Raw(broker.port, f"bench-{name}", clean=True)
            raw.subscribe(FILTER)
            raw.close(expiry=EXPIRY)
        t = time.perf_counter()
        publish_all(broker.port, n)
        publish_s = time.perf_counter() - t
        rates: dict[str, float] = {}
        left: dict[str, int] = {}
        for name in names:
            fn = CANDIDATES[name]
            result = fn(broker.port, f"bench-{name}", n, rm)
            if asyncio.iscoroutine(result):
                result = asyncio.run(result)
            assert isinstance(result, float)
            rates[name] = round(n / result)
            with contextlib.suppress(Exception):
                left[name] = left_at_broker(broker.port, f"bench-{name}")
    base = rates.get("paho")
    print(json.dumps({
        "bench": "bridge_receive", "messages": n, "receive_maximum": rm,
        "payload_bytes": len(payload(12345)), "publish_msgs_per_s": round(n / publish_s),
        "msgs_per_s": rates,
        "ratio_to_paho": ({k: round(v / base, 2) for k, v in rates.items()} if base else None),
        "redelivered": left,
    }))


if __name__ == "__main__":
    main()
