"""Commands from the centre end to end (SPEC §6): a real Mosquitto with an ACL file, the
gateway daemon (`sensegate run`, a process), a pymodbus simulator accepting writes, signed
commands published by "the centre", results read back. Hostile commands, replays, moved
signatures, and a `kill -9` between the write and its result."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.core.signing import canonical, sign_body
from gateway.runtime.signing import PrivateKey, write_key_pair
from gateway.sim.simulator import ModbusTcpSimulator
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GW = "gw-1"
SET = f"sensegate/{GW}/vms-3/set"
RESULT = f"sensegate/{GW}/vms-3/set/result"
USERS = {"centre": "pw-centre-1", GW: "pw-gw-1", "gw-2": "pw-gw-2", "rogue": "pw-rogue-1"}

CONFIG = """\
gateway: {{id: {gw}, state_dir: {state}}}
mqtt: {{host: 127.0.0.1, port: {mqtt}, username: {gw}, password: {password}}}
commands: {{enabled: true, public_key: {key}, max_age: 30s}}
devices:
  - name: vms-3
    driver: modbus-tcp
    host: 127.0.0.1
    port: {port}
    interval: 200ms
    timeout: {timeout}
    retries: 0
    points:
      - {{name: mode, table: holding, address: 10, writable: true, allowed: [0, 1, 2]}}
      - {{name: dim_pct, table: holding, address: 11, writable: true, min: 0, max: 100,
          max_rate: 3/min}}
      - {{name: relay, table: coil, address: 0, writable: true}}
      - {{name: level, table: holding, address: 30, scale: 0.1}}
"""


def acl_broker(tmp: Path) -> Mosquitto:
    pw = tmp / "passwd"
    pw.write_text("")
    for user, password in USERS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True)
    acl = tmp / "acl"
    acl.write_text((ROOT / "docs" / "commands.acl").read_text())
    return Mosquitto(allow_anonymous=False, extra_conf=f"password_file {pw}\nacl_file {acl}\n")


class Client:
    """An MQTT 5 client in paho's own thread: publishes, collects what it receives."""

    def __init__(self, port: int, user: str, subscribe: tuple[str, ...] = ()) -> None:
        self.received: list[tuple[str, dict[str, Any], Any]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"t-{user}",
                                  protocol=paho.MQTTv5)
        self.client.username_pw_set(user, USERS[user])
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        for topic in subscribe:
            self.client.subscribe(topic, qos=1)

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            correlation = getattr(msg.properties, "CorrelationData", None)
            self.received.append((msg.topic, json.loads(msg.payload), correlation))

    def publish(self, topic: str, payload: bytes, **props: Any) -> None:
        properties = None
        if props:
            properties = Properties(PacketTypes.PUBLISH)
            for key, value in props.items():
                setattr(properties, key, value)
        self.client.publish(topic, payload, qos=1, properties=properties).wait_for_publish(5)

    def results(self, msg_id: str, topic: str = RESULT) -> list[dict[str, Any]]:
        with self.lock:
            return [body for t, body, _c in self.received if t == topic and body["id"] == msg_id]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def until(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    return predicate()


def signed(key: PrivateKey, topic: str, msg_id: str, values: dict[str, Any],
           ts: int | None = None) -> bytes:
    body = {"id": msg_id, "ts": ts if ts is not None else time.time_ns(), "values": values}
    return sign_body(body, key.sign(canonical(topic, body)))


class Site:
    def __init__(self, tmp: Path, broker: Mosquitto, sim: ModbusTcpSimulator,
                 timeout: str = "300ms") -> None:
        self.tmp = tmp
        self.key = PrivateKey.load(str(tmp / "centre.key"))
        self.config = tmp / "gateway.yaml"
        self.config.write_text(CONFIG.format(
            gw=GW, state=tmp / "state", mqtt=broker.port, password=USERS[GW],
            key=tmp / "centre.key.pub", port=sim.port, timeout=timeout))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(self.config)], cwd=ROOT,
            env=env, stdout=subprocess.DEVNULL,
            stderr=(self.tmp / "gateway.log").open("ab"))

    def log(self) -> str:
        return (self.tmp / "gateway.log").read_text()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)
        self.proc = None

    def audit(self) -> list[dict[str, Any]]:
        text = (self.tmp / "state" / "commands" / "audit.log").read_text()
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
async def rig(tmp_path: Path):
    write_key_pair(str(tmp_path / "centre.key"))
    broker = acl_broker(tmp_path)
    broker.start()
    sim = ModbusTcpSimulator([1])
    await sim.start()
    site = Site(tmp_path, broker, sim)
    centre = Client(broker.port, "centre", subscribe=("sensegate/+/+/set/result",
                                                      "centre/replies/#"))
    site.start()
    # ready: the gateway answers a first (refused) command
    probe = b'{"id": "probe", "ts": 0, "values": {}}'
    for _ in range(100):
        centre.publish(SET, probe)
        if await until(lambda: centre.results("probe"), 0.3):
            break
    assert centre.results("probe"), site.log()
    yield site, centre, sim, broker
    centre.close()
    site.stop()
    await sim.stop()
    broker.close()


async def test_a_signed_command_is_executed_once_read_back_audited_and_answered(rig) -> None:
    site, centre, sim, _broker = rig
    unit = sim.unit(1)
    payload = signed(site.key, SET, "c-0001", {"dim_pct": 40, "relay": True})
    centre.publish(SET, payload, ResponseTopic=f"centre/replies/{GW}/1", CorrelationData=b"abc")
    [result] = await until(lambda: centre.results("c-0001"))
    assert result["status"] == "done", result
    assert result["values"] == {"dim_pct": 40, "relay": True}
    assert unit.holding[11] == 40 and unit.coil[0] is True
    replies = await until(lambda: [r for r in centre.received if r[0] == f"centre/replies/{GW}/1"])
    assert replies[0][1]["status"] == "done" and replies[0][2] == b"abc"
    # a redelivery (or a replay) of the same id: the stored result, nothing written again
    writes = len(unit.writes)
    centre.publish(SET, payload)
    results = await until(lambda: len(centre.results("c-0001")) == 2 and centre.results("c-0001"))
    assert results[1]["status"] == "done"
    assert results[1]["reason"] == "duplicate id, not executed again: the stored result"
    assert results[1]["values"] == {"dim_pct": 40, "relay": True}
    assert len(unit.writes) == writes == 2
    events = [(e["id"], e["event"]) for e in site.audit() if e["id"] == "c-0001"]
    assert events == [("c-0001", "received"), ("c-0001", "done"), ("c-0001", "received")]


HOSTILE: list[tuple[str, Callable[[PrivateKey], bytes], str]] = [
    ("unsigned", lambda k: b'{"id": "h1", "ts": %d, "values": {"dim_pct": 1}}' % time.time_ns(),
     "unsigned: no 'sig'"),
    ("forged", lambda k: signed(PrivateKey.load(os.environ["SENSEGATE_TEST_OTHER_KEY"]), SET,
                                "h2", {"dim_pct": 1}), "bad signature"),
    ("moved from another device", lambda k: signed(k, f"sensegate/{GW}/other/set", "h3",
                                                   {"dim_pct": 1}), "bad signature"),
    ("altered", lambda k: signed(k, SET, "h4", {"dim_pct": 1}).replace(b'"dim_pct":1',
                                                                       b'"dim_pct":99'),
     "bad signature"),
    ("stale", lambda k: signed(k, SET, "h5", {"dim_pct": 1}, ts=time.time_ns() - 3600 * 10**9),
     "expired: signed 3600s ago"),
    ("from the future", lambda k: signed(k, SET, "h6", {"dim_pct": 1},
                                         ts=time.time_ns() + 3600 * 10**9), "in the future"),
    ("wrong type", lambda k: signed(k, SET, "h7", {"dim_pct": "40"}),
     "dim_pct: expected a number, got the string '40'"),
    ("huge", lambda k: signed(k, SET, "h8", {"dim_pct": 10**40}), "out of range"),
    ("over max", lambda k: signed(k, SET, "h9", {"dim_pct": 101}), "above max 100"),
    ("unknown point", lambda k: signed(k, SET, "h10", {"nope": 1}), "unknown point 'nope'"),
    ("read-only point", lambda k: signed(k, SET, "h11", {"level": 1}), "level: not writable"),
    ("not allowed", lambda k: signed(k, SET, "h12", {"mode": 5}), "not allowed"),
    ("bool for a number", lambda k: signed(k, SET, "h13", {"dim_pct": True}),
     "expected a number, got true"),
    ("no values", lambda k: signed(k, SET, "h14", {}), "'values' must be an object"),
    ("not json", lambda k: b"\xff\xfe{", "not a JSON object"),
    ("injected point name", lambda k: signed(k, SET, "h15", {"+/#": 1}), "unknown point '+/#'"),
    ("array payload", lambda k: b"[1, 2]", "not a JSON object"),
    ("nested too deep", lambda k: b'{"id": "h16", "values": ' + b"[" * 60000 + b"}",
     "nested too deep"),
    ("too large", lambda k: b'{"id": "h17", "pad": "' + b"x" * 70000 + b'"}',
     "a command is at most 65536 bytes"),
    ("id too long", lambda k: signed(k, SET, "x" * 500, {"dim_pct": 1}), "'id' must be"),
]


async def test_hostile_commands_are_refused_with_the_reason(rig, tmp_path: Path) -> None:
    site, centre, sim, _broker = rig
    other = tmp_path / "other.key"
    write_key_pair(str(other))
    os.environ["SENSEGATE_TEST_OTHER_KEY"] = str(other)
    try:
        for name, make, reason in HOSTILE:
            payload = make(site.key)
            count = len(centre.received)
            centre.publish(SET, payload)
            got = await until(lambda c=count: len(centre.received) > c and centre.received[-1])
            assert got, name
            body = got[1]
            assert body["status"] in ("refused", "expired"), (name, body)
            assert reason in body["reason"], (name, body)
    finally:
        del os.environ["SENSEGATE_TEST_OTHER_KEY"]
    # a device that does not exist, signed for its own topic
    ghost = f"sensegate/{GW}/ghost/set"
    centre.publish(ghost, signed(site.key, ghost, "g1", {"dim_pct": 1}))
    [g1] = await until(lambda: centre.results("g1", f"{ghost}/result"))
    assert (g1["status"], g1["reason"]) == ("refused", "unknown device 'ghost'")
    # NaN is no JSON a signature can cover: a NaN literal is refused before anything else
    centre.publish(SET, b'{"id": "nan", "ts": 1, "values": {"dim_pct": NaN}, "sig": "x"}')
    [nan] = await until(lambda: centre.results("nan"))
    assert nan["status"] == "refused"
    assert sim.unit(1).writes == []
    assert "stale" not in site.log()


async def test_the_acl_lets_only_the_centre_command_and_each_gateway_read_its_own(rig) -> None:
    site, centre, sim, broker = rig
    rogue = Client(broker.port, "rogue")
    other_gateway = Client(broker.port, "gw-2", subscribe=(f"sensegate/{GW}/+/set",))
    try:
        rogue.publish(SET, signed(site.key, SET, "r1", {"dim_pct": 9}))
        other_gateway.publish(SET, signed(site.key, SET, "r2", {"dim_pct": 9}))
        centre.publish(SET, signed(site.key, SET, "r3", {"dim_pct": 10}))
        assert (await until(lambda: centre.results("r3")))[0]["status"] == "done"
        assert centre.results("r1") == [] and centre.results("r2") == []
        assert other_gateway.received == []  # gw-2 cannot read gw-1's commands
        assert [w[2] for w in sim.unit(1).writes] == [[10]]
    finally:
        rogue.close()
        other_gateway.close()


async def test_max_rate_refuses_the_fourth_write_in_a_minute(rig) -> None:
    site, centre, _sim, _broker = rig
    for n in range(4):
        centre.publish(SET, signed(site.key, SET, f"m{n}", {"dim_pct": n}))
        await until(lambda n=n: centre.results(f"m{n}"))
    statuses = [centre.results(f"m{n}")[0]["status"] for n in range(4)]
    assert statuses == ["done", "done", "done", "refused"]
    assert "over its max_rate 3/min" in centre.results("m3")[0]["reason"]


async def test_kill_9_between_write_and_result_does_not_write_twice(rig) -> None:
    site, centre, sim, _broker = rig
    unit = sim.unit(1)

    def silent_after_write(u: Any) -> None:
        u.fault = "silent"  # the read-back never comes: the gateway is stuck after writing

    unit.on_write = silent_after_write
    payload = signed(site.key, SET, "k1", {"dim_pct": 55})
    site.stop()
    site.config.write_text(site.config.read_text().replace("timeout: 300ms", "timeout: 20s"))
    site.start()
    await asyncio.sleep(0.5)
    for _ in range(100):  # until the gateway (re)subscribed and wrote
        centre.publish(SET, payload)
        if await until(lambda: unit.writes, 0.5):
            break
    assert [w[2] for w in unit.writes] == [[55]]
    site.stop(signal.SIGKILL)  # between the write and its result
    assert centre.results("k1") == []
    unit.fault = None
    unit.on_write = None
    site.start()
    centre.publish(SET, payload)  # the redelivery
    [result, *_redelivered] = await until(lambda: centre.results("k1"), 30)
    assert result["status"] == "failed"
    assert "not repeated" in result["reason"]
    assert [w[2] for w in unit.writes] == [[55]]  # written once, never again


async def test_fleet_command_signs_sends_and_prints_the_read_back(rig) -> None:
    site, _centre, sim, broker = rig
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SENSEGATE_MQTT_PASSWORD": USERS["centre"]}
    cmd = [sys.executable, "-m", "gateway", "fleet", "command", "--broker",
           f"127.0.0.1:{broker.port}", "--username", "centre", "--key",
           str(site.tmp / "centre.key"), GW, "vms-3", "dim_pct=55", "--timeout", "20s"]
    done = await asyncio.to_thread(subprocess.run, cmd, cwd=ROOT, env=env,
                                   capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"{GW}/vms-3: done" in done.stdout and '"dim_pct": 55' in done.stdout
    assert sim.unit(1).holding[11] == 55
    refused = await asyncio.to_thread(subprocess.run, [*cmd[:-3], "dim_pct=500", *cmd[-2:]],
                                      cwd=ROOT, env=env, capture_output=True, text=True,
                                      timeout=60)
    assert refused.returncode == 1
    assert "refused" in refused.stdout and "above max 100" in refused.stdout
