"""`sensegate bridge` end to end: real Mosquitto, real InfluxDB 1.x / VictoriaMetrics.

Payloads are the gateway's own (`gateway.core.payload`), published over MQTT; every value is
read back from the store and compared. Outages are real (servers stopped and started),
crashes are `kill -9` on a real `sensegate bridge` process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.client import topic_matches_sub

from gateway.bridge import ingest
from gateway.bridge.receive import Protocol
from gateway.bridge.service import Bridge
from gateway.core import lineproto
from gateway.core.model import BridgeConfig, BridgeMqttConfig, InfluxConfig, Reading
from gateway.core.payload import build_influx, build_json, data_topic
from tests.support.hostile import hostile_cases, hostile_payload
from tests.support.influxdb import InfluxDB
from tests.support.mosquitto import Mosquitto
from tests.support.victoria import Victoria

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_764_000_000_000_000_000


# -- fixtures and helpers -------------------------------------------------------------


@pytest.fixture
def influx() -> Iterator[InfluxDB]:
    with InfluxDB() as db:
        yield db


@pytest.fixture
def victoria() -> Iterator[Victoria]:
    with Victoria() as vm:
        yield vm


def bridge_config(
    broker: Mosquitto, state_dir: Path, influx: InfluxConfig, *,
    client_id: str = "bridge-test", shared_group: str | None = None,
    username: str | None = None, password: str | None = None,
) -> BridgeConfig:
    from gateway.core.model import Secret

    return BridgeConfig(
        mqtt=BridgeMqttConfig(
            host="127.0.0.1", port=broker.port, client_id=client_id,
            shared_group=shared_group, username=username,
            password=Secret(password) if password else None,
        ),
        influxdb=influx,
        state_dir=str(state_dir),
    )


def v1(db: InfluxDB, **kw: Any) -> InfluxConfig:
    return InfluxConfig(url=db.url, api="v1", database=db.database, batch_size=kw.pop(
        "batch_size", 500), flush_interval=kw.pop("flush_interval", 0.2), timeout=5.0, **kw)


class Running:
    def __init__(self, bridge: Bridge, task: asyncio.Task[int]) -> None:
        self.bridge = bridge
        self.task = task

    async def stop(self) -> int:
        self.bridge.should_exit.set()
        return await asyncio.wait_for(self.task, timeout=30)


async def start_bridge(config: BridgeConfig) -> Running:
    bridge = Bridge(config_path="(test)", config=config)
    task = asyncio.create_task(bridge.run())
    await wait_for(lambda: bridge.stats.connected, what="bridge connected")
    return Running(bridge, task)


async def wait_for(cond: Callable[[], bool], *, what: str, timeout: float = 60.0,
                   info: Callable[[], object] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} {info()}")
        await asyncio.sleep(0.05)


async def wait_for_rows(
    db: InfluxDB, q: str, n: int, timeout: float = 60.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = await asyncio.to_thread(db.rows, q)
        except OSError:
            rows = []
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.1)


def make_messages(
    gateways: list[str], devices: list[str], n_messages: int, scans: int, *,
    start: int = 0, fmt: str | None = None,
) -> list[tuple[str, bytes, list[Reading], str]]:
    """Real gateway payloads: (topic, payload, readings, gateway) with distinct ts."""
    out = []
    k = start
    for i in range(n_messages):
        gw = gateways[i % len(gateways)]
        dev = devices[(i // len(gateways)) % len(devices)]
        readings = []
        for _ in range(scans):
            k += 1
            readings.append(Reading(
                device=dev, ts=T0 + k * 1_000_000,
                values={"temp": k * 0.25 - 40.0, "count": k, "ok": k % 2 == 0, "state": f"s{k}"},
            ))
        use = fmt or ("json" if i % 3 else "influx")
        build = build_json if use == "json" else build_influx
        payload = build(gw, dev, "weather", {"district": "xinwu"}, readings)
        out.append((data_topic("sensegate", gw, dev), payload, readings, gw))
    return out


async def publish(broker: Mosquitto, msgs: list[tuple[str, bytes, Any, Any]], *,
                  username: str | None = None, password: str | None = None,
                  client_id: str = "test-publisher") -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=client_id,
                              username=username, password=password) as client:
        for topic, payload, *_ in msgs:
            await client.publish(topic, payload, qos=1)


Rows = dict[tuple[str, str, int], dict[str, Any]]


def expected_rows(msgs: list[tuple[str, bytes, list[Reading], str]]) -> Rows:
    out = {}
    for _topic, _payload, readings, gw in msgs:
        for r in readings:
            out[(gw, r.device, r.ts)] = dict(r.values)
    return out


def stored_rows(db: InfluxDB) -> Rows:
    rows = db.rows('SELECT * FROM "weather"')
    return {
        (r["gateway"], r["device"], r["time"]): {
            "temp": r["temp"], "count": r["count"], "ok": r["ok"], "state": r["state"],
        }
        for r in rows
    }


def dead_letters(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "deadletter.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- end to end ---------------------------------------------------------------------------


async def test_end_to_end_v1_every_value(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path
) -> None:
    msgs = make_messages(["gw-a", "gw-b"], ["rws-1", "pm-1", "loop-7"], 120, 4)
    running = await start_bridge(bridge_config(mosquitto, tmp_path, v1(influx)))
    await publish(mosquitto, msgs)
    expected = expected_rows(msgs)
    await wait_for_rows(influx, 'SELECT * FROM "weather"', len(expected))
    assert await running.stop() == 0
    assert stored_rows(influx) == expected
    assert influx.series() == sorted(
        f"weather,device={d},district=xinwu,gateway={g}"
        for g in ("gw-a", "gw-b") for d in ("rws-1", "pm-1", "loop-7")
    )
    stats = running.bridge.stats
    assert stats.received == stats.acked == len(msgs)
    assert stats.points_written == len(expected)
    assert dead_letters(tmp_path) == []


async def test_end_to_end_v2_victoria(
    mosquitto: Mosquitto, victoria: Victoria, tmp_path: Path
) -> None:
    msgs = make_messages(["gw-a"], ["rws-1", "pm-1"], 40, 3)
    cfg = InfluxConfig(url=victoria.url, api="v2", org="city", bucket="sensing",
                       batch_size=200, flush_interval=0.2)
    running = await start_bridge(bridge_config(mosquitto, tmp_path, cfg))
    await publish(mosquitto, msgs)
    n_points = sum(len(m[2]) for m in msgs)
    await wait_for(lambda: running.bridge.stats.points_written >= n_points, what="points written")
    assert await running.stop() == 0

    expected = {}
    for _t, _p, readings, gw in msgs:
        for r in readings:
            labels = (("device", r.device), ("district", "xinwu"), ("gateway", gw))
            # VictoriaMetrics keeps numbers (booleans as 0/1) at millisecond precision.
            expected[("weather_temp", labels, r.ts // 1_000_000)] = r.values["temp"]
            expected[("weather_count", labels, r.ts // 1_000_000)] = float(r.values["count"])
            expected[("weather_ok", labels, r.ts // 1_000_000)] = float(r.values["ok"])
    match = '{__name__=~"weather_(temp|count|ok)"}'
    deadline = time.monotonic() + 30
    while True:
        samples = await asyncio.to_thread(victoria.samples, match)
        if len(samples) >= len(expected) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert samples == expected


# -- outages and crashes ------------------------------------------------------------------


async def test_influxdb_outage_loses_nothing(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path
) -> None:
    msgs = make_messages(["gw-a"], ["rws-1", "pm-1"], 150, 3)
    running = await start_bridge(bridge_config(mosquitto, tmp_path, v1(influx, batch_size=50)))
    await publish(mosquitto, msgs[:50], client_id="p1")
    await wait_for_rows(influx, 'SELECT * FROM "weather"', 150)
    influx.stop()
    await publish(mosquitto, msgs[50:120], client_id="p2")
    await wait_for(lambda: running.bridge.stats.write_errors > 0, what="a failed write")
    assert running.bridge.stats.acked < 120  # nothing acknowledged while the store is down
    influx.start()
    await publish(mosquitto, msgs[120:], client_id="p3")
    expected = expected_rows(msgs)
    await wait_for_rows(influx, 'SELECT * FROM "weather"', len(expected))
    assert await running.stop() == 0
    assert stored_rows(influx) == expected
    assert dead_letters(tmp_path) == []


async def test_memory_is_bounded_by_points_while_influxdb_is_down(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path
) -> None:
    """Large messages fill the receive window (10 000 messages) with 20 000 points; the
    bridge stops reading once 8 batches' worth wait, and takes the rest afterwards."""
    msgs = make_messages(["gw-a"], ["rws-1", "pm-1"], 202, 100)
    running = await start_bridge(bridge_config(mosquitto, tmp_path, v1(influx, batch_size=50)))
    bridge = running.bridge
    await publish(mosquitto, msgs[:2], client_id="p1")
    await wait_for_rows(influx, 'SELECT * FROM "weather"', 200)
    influx.stop()
    await publish(mosquitto, msgs[2:], client_id="p2")
    await wait_for(lambda: bridge.stats.write_errors > 0 and bridge.stats.read_pauses > 0,
                   what="a failed write and a paused read")
    await asyncio.sleep(1.0)  # time enough to take all 200 messages, were it reading
    held = (len(bridge._batch.lines) + sum(len(b.lines) for b in bridge._ready)
            + bridge._busy_points)
    # 8 batches of 50 points, plus what the 256 KiB chunk being read when it paused held
    assert held < 5000, held
    assert bridge.stats.received - 2 < 100, bridge.stats.received
    influx.start()
    expected = expected_rows(msgs)
    await wait_for_rows(influx, 'SELECT * FROM "weather"', len(expected))
    assert await running.stop() == 0
    assert stored_rows(influx) == expected
    assert dead_letters(tmp_path) == []


def write_config(path: Path, broker: Mosquitto, db: InfluxDB, state_dir: Path,
                 extra_mqtt: str = "") -> Path:
    path.write_text(
        "mqtt:\n"
        "  host: 127.0.0.1\n"
        f"  port: {broker.port}\n"
        "  client_id: bridge-crash-test\n"
        "  subscribe: sensegate/+/+/data\n"
        "  shared_group: sensegate-bridge\n"
        f"{extra_mqtt}"
        "influxdb:\n"
        f"  url: {db.url}\n"
        "  api: v1\n"
        f"  database: {db.database}\n"
        "  batch_size: 200\n"
        "  flush_interval: 200ms\n"
        f"state_dir: {state_dir}\n"
    )
    return path


def spawn_bridge(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "bridge", "-c", str(config)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("ab"),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def test_kill9_bridge_then_restart_loses_nothing(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "bridge.yaml", mosquitto, influx, tmp_path / "state")
    log = tmp_path / "bridge.log"
    msgs = make_messages(["gw-a", "gw-b"], ["rws-1"], 300, 2)
    proc = spawn_bridge(cfg, log)
    try:
        # the first start creates the session: nothing is queued for it before it subscribes
        await wait_for(lambda: "subscribed to" in log.read_text(), what="bridge subscribed",
                       info=log.read_text)
        # first half: publish while it runs, kill -9 in the middle of the stream
        await publish(mosquitto, msgs[:20], client_id="p0")
        assert len(await wait_for_rows(influx, 'SELECT * FROM "weather"', 40)) == 40
        publisher = asyncio.create_task(publish(mosquitto, msgs[20:150], client_id="p1"))
        await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        await publisher
        # published while the bridge is dead: waits at the broker in its session
        await publish(mosquitto, msgs[150:], client_id="p2")
        proc = spawn_bridge(cfg, log)
        expected = expected_rows(msgs)
        rows = await wait_for_rows(influx, 'SELECT * FROM "weather"', len(expected))
        assert len(rows) == len(expected), log.read_text()[-3000:]
        assert stored_rows(influx) == expected
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text("mqtt: {host: 127.0.0.1}\ninfluxdb: {url: nope, api: v3}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "bridge", "-c", str(cfg),
        cwd=ROOT, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert f"{cfg}:2:" in err.decode()


# -- shared subscription, ACL -------------------------------------------------------------


async def test_two_bridges_share_the_load(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path
) -> None:
    a = await start_bridge(bridge_config(mosquitto, tmp_path / "a", v1(influx),
                                         client_id="bridge-a", shared_group="grp"))
    b = await start_bridge(bridge_config(mosquitto, tmp_path / "b", v1(influx),
                                         client_id="bridge-b", shared_group="grp"))
    msgs = make_messages(["gw-a", "gw-b", "gw-c"], ["rws-1", "pm-1"], 200, 2)
    await publish(mosquitto, msgs)
    expected = expected_rows(msgs)
    await wait_for_rows(influx, 'SELECT * FROM "weather"', len(expected))
    assert await a.stop() == 0
    assert await b.stop() == 0
    assert stored_rows(influx) == expected
    ra, rb = a.bridge.stats.received, b.bridge.stats.received
    assert ra > 0 and rb > 0
    assert ra + rb == len(msgs)


def acl_broker(tmp: Path) -> Mosquitto:
    pw = tmp / "passwd"
    users = {"gw-a": "pw-a-123", "gw-b": "pw-b-123", "bridge": "pw-bridge-123"}
    pw.write_text("")
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True)
    acl = tmp / "acl"
    acl.write_text(
        "user bridge\n"
        "topic read sensegate/+/+/data\n"
        "\n"
        "pattern write sensegate/%u/#\n"
    )
    # tests/support/mosquitto.py keeps a root-started broker root, so it can read these files.
    return Mosquitto(allow_anonymous=False, extra_conf=f"password_file {pw}\nacl_file {acl}\n")


async def test_acl_one_gateway_cannot_publish_as_another(
    influx: InfluxDB, tmp_path: Path
) -> None:
    with acl_broker(tmp_path) as broker:
        running = await start_bridge(bridge_config(
            broker, tmp_path / "state", v1(influx), username="bridge", password="pw-bridge-123",
            shared_group="sensegate-bridge"))
        own = make_messages(["gw-a"], ["rws-1"], 10, 1, fmt="json")
        forged = make_messages(["gw-b"], ["rws-1"], 3, 1, start=1000, fmt="json")
        await publish(broker, own, username="gw-a", password="pw-a-123")
        for i, msg in enumerate(forged):
            # Mosquitto 2.0 drops a denied publish, and may drop the connection with it.
            with contextlib.suppress(aiomqtt.MqttError):
                await publish(broker, [msg], username="gw-a", password="pw-a-123",
                              client_id=f"forger-{i}")
        genuine = make_messages(["gw-b"], ["pm-1"], 5, 1, start=2000, fmt="json")
        await publish(broker, genuine, username="gw-b", password="pw-b-123",
                      client_id="pub-b")
        expected = expected_rows(own + genuine)
        await wait_for_rows(influx, 'SELECT * FROM "weather"', len(expected))
        await asyncio.sleep(0.5)  # anything forged that got through would arrive by now
        assert await running.stop() == 0
    assert stored_rows(influx) == expected
    assert running.bridge.stats.received == len(own) + len(genuine)


# -- hostile payloads, rejected points -----------------------------------------------------


async def test_hostile_payloads_inject_nothing(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path
) -> None:
    default_topic, cases = hostile_cases()
    # Cases on topics outside the subscription never reach the bridge (unit-tested only).
    cases = [c for c in cases
             if topic_matches_sub("sensegate/+/+/data", c.get("topic", default_topic))]
    running = await start_bridge(bridge_config(mosquitto, tmp_path, v1(influx)))
    good = make_messages(["gw-1"], ["dev-1"], 3, 1, fmt="json")
    msgs = [(c.get("topic", default_topic), hostile_payload(c)) for c in cases]
    await publish(mosquitto, [*msgs, *good])
    total = len(msgs) + len(good)
    await wait_for(lambda: running.bridge.stats.acked >= total, timeout=20,
                   what="every message acked", info=lambda: running.bridge.stats)
    assert await running.stop() == 0

    expected_series = {"weather,device=dev-1,district=xinwu,gateway=gw-1"}
    for c in cases:
        expected_series.update(c.get("series", []))
    assert set(influx.series()) == expected_series
    # exactly the fields of the stored cases, nothing else
    fields: dict[str, set[str]] = {"weather": {"temp", "count", "ok", "state"}}
    points: dict[str, set[str]] = {"weather": {str(i) for i in range(len(good))}}
    for c in cases:
        if "series" in c:
            m = lineproto.parse_line(c["series"][0] + " x=1 1")[0]
            fields.setdefault(m, set()).update(c.get("fields", ["x"]))
            points.setdefault(m, set()).update(c["series"])  # same ts: one row per series
    stored_fields: dict[str, set[str]] = {}
    for result in influx.query("SHOW FIELD KEYS")["results"]:
        for series in result.get("series", []):
            stored_fields[series["name"]] = {v[0] for v in series["values"]}
    assert stored_fields == fields
    for m, n in points.items():
        rows = influx.rows(f'SELECT * FROM "{m}"')
        assert len(rows) == len(n), (m, rows)
    letters = dead_letters(tmp_path)
    got = sorted((d["topic"], d["reason"]) for d in letters)
    want = sorted((c.get("topic", default_topic), c["reason"]) for c in cases if "reason" in c)
    assert got == want
    for d in letters:
        assert ("payload" in d) != ("payload_b64" in d)
        assert len(d.get("payload", d.get("payload_b64", ""))) <= 64 * 1024 * 4 // 3 + 4
    reasons = [c["reason"] for c in cases if "reason" in c]
    assert running.bridge.stats.dead_letters == {r: reasons.count(r) for r in reasons}


@pytest.mark.parametrize("protocol", [Protocol.V5, Protocol.V311])
async def test_too_large_and_retained_junk_are_dead_lettered_once(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path, protocol: Protocol
) -> None:
    """Issue 13 item 8, on both protocols: a message over the bridge's limit is refused
    unread (topic and size in the dead letter), its batch is written and acknowledged;
    after a reconnect neither it nor a retained junk message is dead-lettered again."""
    config = bridge_config(mosquitto, tmp_path, v1(influx), client_id=f"bridge-{protocol.name}")
    good = make_messages(["gw-1"], ["dev-1"], 4, 1, fmt="json")
    junk_topic = "sensegate/gw-1/junk/data"
    big_topic = "sensegate/gw-1/big/data"
    big = b"x" * (ingest.MAX_PAYLOAD + 1024 * 1024)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="junk") as client:
        await client.publish(junk_topic, b"{not json", qos=1, retain=True)

    def bridge() -> Bridge:
        return Bridge(config_path="(test)", config=config, protocol=protocol)

    first = bridge()
    task = asyncio.create_task(first.run())
    await wait_for(lambda: first.stats.connected, what="bridge connected")
    await publish(mosquitto, [*good[:2], (big_topic, big), *good[2:]])
    await wait_for(lambda: first.stats.acked >= 6, what="all acked", info=lambda: first.stats)
    first.should_exit.set()
    assert await asyncio.wait_for(task, 30) == 0
    letters = dead_letters(tmp_path)
    assert sorted((d["topic"], d["reason"]) for d in letters) == [
        (big_topic, ingest.TOO_LARGE), (junk_topic, ingest.BAD_JSON)]
    too_large = next(d for d in letters if d["reason"] == ingest.TOO_LARGE)
    assert str(len(big)) in too_large["detail"]
    assert len(await wait_for_rows(influx, 'SELECT * FROM "weather"', 4)) == 4

    # the same session again: nothing is delivered twice, the retained junk not again
    second = bridge()
    task = asyncio.create_task(second.run())
    await wait_for(lambda: second.stats.connected, what="bridge reconnected")
    more = make_messages(["gw-1"], ["dev-1"], 1, 1, start=100, fmt="json")
    await publish(mosquitto, more)
    await wait_for(lambda: second.stats.acked >= 1, what="acked", info=lambda: second.stats)
    second.should_exit.set()
    assert await asyncio.wait_for(task, 30) == 0
    assert second.stats.received == 1
    assert len(dead_letters(tmp_path)) == 2


async def test_rejected_point_does_not_poison_its_batch(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path
) -> None:
    # "state" is a string field: a message sending a number for it conflicts.
    assert influx.write(b'weather,gateway=gw-a,device=rws-1 state="x" 1') == 204
    msgs = make_messages(["gw-a"], ["rws-1"], 30, 1, fmt="json")
    bad_reading = Reading("rws-1", T0 + 999_999_000_000, {"state": 12.5})
    bad = (data_topic("sensegate", "gw-a", "rws-1"),
           build_json("gw-a", "rws-1", "weather", {"district": "xinwu"}, [bad_reading]))
    running = await start_bridge(bridge_config(
        mosquitto, tmp_path, v1(influx, batch_size=1000, flush_interval=1.0)))
    await publish(mosquitto, [*msgs[:15], bad, *msgs[15:]])  # all in one batch
    await wait_for(lambda: running.bridge.stats.acked >= 31, what="every message acked")
    assert await running.stop() == 0
    stored = stored_rows(influx)
    stored.pop(("gw-a", "rws-1", 1))
    assert stored == expected_rows(msgs)
    [letter] = dead_letters(tmp_path)
    assert letter["reason"] == "rejected"
    assert letter["topic"] == "sensegate/gw-a/rws-1/data"
    assert "field type conflict" in letter["detail"]
    assert letter["payload"].startswith(
        "weather,device=rws-1,district=xinwu,gateway=gw-a state=12.5")


async def test_a_decoder_bug_dead_letters_the_message_instead_of_blocking(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.bridge import ingest

    real = ingest.decode_message

    def buggy(topic: str, payload: bytes, **kw: Any) -> Any:
        if b"POISON" in payload:
            raise KeyError("a bug")
        return real(topic, payload, **kw)

    monkeypatch.setattr(ingest, "decode_message", buggy)
    running = await start_bridge(bridge_config(mosquitto, tmp_path, v1(influx)))
    good = make_messages(["gw-1"], ["dev-1"], 4, 1, fmt="json")
    poison = ("sensegate/gw-1/dev-1/data", b'{"POISON": 1}')
    await publish(mosquitto, [good[0], poison, *good[1:]])
    await wait_for(lambda: running.bridge.stats.acked >= len(good) + 1, timeout=20,
                   what="every message acked", info=lambda: running.bridge.stats)
    await wait_for_rows(influx, 'SELECT * FROM "weather"', len(good))
    assert await running.stop() == 0
    [letter] = dead_letters(tmp_path)
    assert letter["reason"] == "internal_error"
    assert "KeyError" in letter["detail"]


async def test_a_component_dying_of_a_bug_stops_the_bridge_with_exit_1(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_writer(self: Bridge) -> None:
        raise RuntimeError("a bug in a writer")

    monkeypatch.setattr(Bridge, "_writer", broken_writer)
    running = await start_bridge(bridge_config(mosquitto, tmp_path, v1(influx)))
    # Not a hang with messages piling up unwritten: a clean stop and exit 1, so that
    # systemd's Restart=on-failure brings the bridge back.
    assert await asyncio.wait_for(running.task, timeout=30) == 1
    assert running.bridge.failed


async def test_output_float_keeps_a_float_field_writable_after_the_whole_scale_change(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path
) -> None:
    """A site upgraded from a version that published `uint16 x scale 10` as a float: its
    series holds floats. The point now decodes to an integer, which InfluxDB refuses in that
    field (dead-lettered, said why); with `output: float` the same register is stored."""
    from gateway.core.decode import build_decoder, encode_registers
    from gateway.core.model import PointConfig

    # InfluxDB keeps a field's type per shard: the old float lands in the same one as T0.
    earlier = T0 - 1_000_000_000
    assert influx.write(b"pumps,gateway=gw-a,device=p-1 level=60.0 %d" % earlier) == 204
    auto = PointConfig("level", "uint16", "holding", 0, scale=10)
    floated = PointConfig("level", "uint16", "holding", 0, scale=10, output="float")
    registers = encode_registers(auto, 7)
    msgs = []
    for k, point in enumerate((auto, floated)):
        value, quality = build_decoder(point)(registers)
        assert quality == "good"
        reading = Reading("p-1", T0 + k * 1_000_000_000, {"level": value})
        msgs.append((data_topic("sensegate", "gw-a", "p-1"),
                      build_json("gw-a", "p-1", "pumps", {}, [reading])))
    running = await start_bridge(bridge_config(mosquitto, tmp_path, v1(influx)))
    await publish(mosquitto, msgs)
    await wait_for(lambda: running.bridge.stats.acked >= 2, what="both messages acked")
    assert await running.stop() == 0
    rows = influx.rows('SELECT level FROM "pumps"')
    assert [(r["time"], r["level"]) for r in rows] == [(earlier, 60), (T0 + 1_000_000_000, 70)]
    [letter] = dead_letters(tmp_path)
    assert letter["reason"] == "rejected"
    assert "field type conflict" in letter["detail"]
    assert "level=70i" in letter["payload"]
