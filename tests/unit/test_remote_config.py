"""The gateway's side of remote configuration (gateway.edge.fleet.RemoteConfig) with a stand-in
daemon and publisher: every outcome, the files it leaves, and the probation's two triggers.

The real processes, broker and ACL are in tests/integration/test_fleet.py; here each branch
is driven on purpose (a broker lost on cue, a device failing on cue)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.commands.fleet import signed_message
from gateway.config.load import load_gateway_config
from gateway.core.model import GatewayConfig
from gateway.core.signing import NS
from gateway.edge.fleet import RemoteConfig
from gateway.runtime.signing import PrivateKey, public_line, write_key_pair

TOPIC = "sensegate/gw-1/config/set"
RESULTS = "sensegate/gw-1/config/result"


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool = False


@dataclass
class FakePublisher:
    connected: bool = True
    sent: list[tuple[str, bytes]] = field(default_factory=list)
    handlers: dict[str, Callable[[Any], None]] = field(default_factory=dict)
    connect_callbacks: list[Callable[[], None]] = field(default_factory=list)

    def subscribe(self, topic: str, handler: Callable[[Any], None]) -> None:
        self.handlers[topic] = handler

    def unsubscribe(self, topic: str) -> None:
        self.handlers.pop(topic, None)

    def on_connect(self, callback: Callable[[], None]) -> None:
        self.connect_callbacks.append(callback)

    async def send(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        if not self.connected:
            return False
        self.sent.append((topic, payload))
        return True

    def reconnect(self) -> None:
        self.connected = True
        for callback in self.connect_callbacks:
            callback()


@dataclass
class FakeDaemon:
    config_path: str
    config: GatewayConfig
    config_text: bytes
    publisher: FakePublisher = field(default_factory=FakePublisher)
    failing: list[str] = field(default_factory=list)
    switches: int = 0
    remote: Any = None
    broken: bool = False  # switch raises, as a bug would
    failed: bool = False
    should_exit: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def config_sha(self) -> str:
        return hashlib.sha256(self.config_text).hexdigest()

    async def switch(self, new: GatewayConfig, text: bytes) -> None:
        if self.broken:
            raise RuntimeError("bug")
        self.config, self.config_text = new, text
        self.switches += 1
        self.remote.configure()  # as the daemon's switch does

    def failing_devices(self) -> list[str]:
        return list(self.failing)

    def all_scanned(self) -> bool:
        return True


def config_text(state: Path, key: str, *, port: int = 1883, extra: str = "",
                gw_id: str = "gw-1", prefix: str = "sensegate", probation: str = "1s") -> str:
    return (f"gateway: {{id: {gw_id}, state_dir: {state}}}\n"
            f"mqtt: {{host: 127.0.0.1, port: {port}, topic_prefix: {prefix}}}\n"
            f"fleet: {{public_key: {key}, probation: {probation}}}\n"
            f"devices:\n  - name: dev\n    driver: modbus-tcp\n    host: 127.0.0.1\n"
            f"    points: [{{name: a, table: holding, address: 0}}]\n{extra}")


@dataclass
class Rig:
    path: Path
    key: PrivateKey
    key_line: str
    daemon: FakeDaemon
    remote: RemoteConfig

    def text(self, **kw: Any) -> str:
        return config_text(self.path.parent / "state", self.key_line, **kw)

    def deliver(self, text: str, *, key: PrivateKey | None = None, ts: int | None = None,
                retain: bool = False, payload: bytes | None = None) -> str:
        msg_id, signed = signed_message(key or self.key, TOPIC, text, ts=ts)
        self.daemon.publisher.handlers[TOPIC](Message(TOPIC, payload or signed, retain))
        return msg_id

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p in self.daemon.publisher.sent if t == RESULTS]

    async def wait_results(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.results()) < count:
                await asyncio.sleep(0.02)
        return self.results()


@pytest.fixture
async def rig(tmp_path: Path) -> Any:
    public = write_key_pair(str(tmp_path / "key"))
    path = tmp_path / "gateway.yaml"
    key_line = public_line(public)
    path.write_text(config_text(tmp_path / "state", key_line))
    config = load_gateway_config(str(path))
    daemon = FakeDaemon(str(path), config, path.read_bytes())
    remote = RemoteConfig(daemon)  # type: ignore[arg-type]
    daemon.remote = remote
    remote.configure()
    yield Rig(path, PrivateKey.load(str(tmp_path / "key")), key_line, daemon, remote)
    await remote.close()


async def test_a_good_config_is_applied_and_passes_its_probation(rig: Rig) -> None:
    before = rig.path.read_bytes()
    text = rig.text(port=1884)
    msg_id = rig.deliver(text)
    [result] = await rig.wait_results(1)
    assert (result["id"], result["status"], result["probation_s"]) == (msg_id, "applied", 1.0)
    assert rig.path.read_text() == text
    assert rig.daemon.config.mqtt.port == 1884
    journal = rig.path.parent / "state" / "fleet" / "apply.json"
    assert journal.exists()
    async with asyncio.timeout(10):  # the probation (1 s) ends, broker and devices fine
        while journal.exists():
            await asyncio.sleep(0.05)
    assert rig.results() == [result]
    kept = sorted(p.read_bytes() for p in (rig.path.parent / "state" / "fleet" /
                                           "configs").iterdir())
    assert kept == sorted([before, text.encode()])
    assert not list(rig.path.parent.glob(".gateway.yaml*"))  # no candidate left behind


async def test_losing_the_broker_rolls_back_and_reports_once_reconnected(rig: Rig) -> None:
    before = rig.path.read_bytes()
    old_config = rig.daemon.config
    rig.deliver(rig.text(port=1))
    await rig.wait_results(1)
    rig.daemon.publisher.connected = False  # the new settings cannot reach the broker
    async with asyncio.timeout(10):
        while rig.path.read_bytes() != before:
            await asyncio.sleep(0.05)
    assert rig.daemon.config is old_config
    assert len(rig.results()) == 1  # nothing can be sent while unreachable ...
    rig.daemon.publisher.reconnect()
    results = await rig.wait_results(2)  # ... and the rollback is reported once it can be
    assert results[1]["status"] == "rolled_back"
    assert results[1]["reason"].startswith("the broker was unreachable")
    assert results[1]["config_sha256"] == hashlib.sha256(before).hexdigest()
    assert (rig.path.parent / "state" / "fleet" / "results.json").read_text() == "[]"


async def test_more_failing_devices_roll_back(rig: Rig) -> None:
    before = rig.path.read_bytes()
    rig.deliver(rig.text(extra="    timeout: 2s\n"))
    await rig.wait_results(1)
    rig.daemon.failing = ["dev"]
    results = await rig.wait_results(2)
    assert results[1]["status"] == "rolled_back"
    assert results[1]["reason"] == "1 device(s) failing with the new config, 0 before: dev"
    assert rig.path.read_bytes() == before


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param("retained", "retained: config messages must not be retained", id="retained"),
        pytest.param("forged", "bad signature", id="forged"),
        pytest.param("stale", r"expired: signed 36\d\ds ago", id="stale"),
        pytest.param("garbage", "not a JSON object", id="garbage"),
        pytest.param("other id", "gateway.id changed from 'gw-1' to 'gw-2'", id="other id"),
    ],
)
async def test_refusals_change_nothing(rig: Rig, tmp_path: Path, case: str, reason: str) -> None:
    before = rig.path.read_bytes()
    text = rig.text(port=1884)
    if case == "retained":
        rig.deliver(text, retain=True)
    elif case == "forged":
        write_key_pair(str(tmp_path / "other"))
        rig.deliver(text, key=PrivateKey.load(str(tmp_path / "other")))
    elif case == "stale":
        rig.deliver(text, ts=time.time_ns() - 3600 * NS)
    elif case == "garbage":
        rig.deliver(text, payload=b"\x00not json")
    else:
        rig.deliver(rig.text(gw_id="gw-2"))
    [result] = await rig.wait_results(1)
    assert result["status"] == "refused"
    assert re.match(reason, result["reason"]), result["reason"]
    assert rig.path.read_bytes() == before and rig.daemon.switches == 0


async def test_an_invalid_config_is_refused_with_every_position(rig: Rig) -> None:
    text = rig.text().replace("table: holding", "table: holdin").replace(
        "port: 1883", "port: 70000")
    rig.deliver(text)
    [result] = await rig.wait_results(1)
    assert result["status"] == "refused"
    assert result["reason"] == "2 error(s) in the pushed config"
    assert [(e["line"], e["col"], e["path"]) for e in result["errors"]] == [
        (2, 31, "mqtt.port"), (8, 31, "devices[0].points[0].table")]
    assert rig.daemon.switches == 0


async def test_a_replay_and_a_push_during_probation_are_refused(rig: Rig) -> None:
    # A long probation: the third message surely arrives while it runs.
    msg_id, payload = signed_message(rig.key, TOPIC, rig.text(port=1884, probation="5m"))
    handler = rig.daemon.publisher.handlers[TOPIC]
    handler(Message(TOPIC, payload))
    await rig.wait_results(1)
    handler(Message(TOPIC, payload))
    rig.deliver(rig.text(port=1885))
    results = await rig.wait_results(3)
    assert [r["status"] for r in results] == ["applied", "refused", "refused"]
    assert results[1]["reason"] == f"replayed: id {msg_id!r} was already received"
    assert "is still on probation" in results[2]["reason"]


async def test_the_running_config_again_is_applied_as_unchanged(rig: Rig) -> None:
    rig.deliver(rig.path.read_text())
    [result] = await rig.wait_results(1)
    assert (result["status"], result["unchanged"]) == ("applied", True)
    assert rig.daemon.switches == 0


async def test_a_config_with_another_topic_prefix_answers_where_it_was_asked(rig: Rig) -> None:
    rig.deliver(rig.text(prefix="city"))
    [result] = await rig.wait_results(1)  # on sensegate/gw-1/config/result
    assert result["status"] == "applied"
    assert "city/gw-1/config/set" in rig.daemon.publisher.handlers  # listening there now
    assert TOPIC not in rig.daemon.publisher.handlers


async def test_key_rotation_by_a_config_signed_with_the_old_key(rig: Rig, tmp_path: Path) -> None:
    new_public = write_key_pair(str(tmp_path / "new"))
    new_key = PrivateKey.load(str(tmp_path / "new"))
    rotated = config_text(rig.path.parent / "state", public_line(new_public))
    rig.deliver(rotated)  # signed by the old key
    [applied] = await rig.wait_results(1)
    assert applied["status"] == "applied"
    journal = rig.path.parent / "state" / "fleet" / "apply.json"
    async with asyncio.timeout(10):  # past the probation
        while journal.exists():
            await asyncio.sleep(0.05)
    rig.deliver(config_text(rig.path.parent / "state", public_line(new_public), port=1884))
    rig.deliver(config_text(rig.path.parent / "state", public_line(new_public), port=1885),
                key=new_key)
    results = await rig.wait_results(3)
    assert results[1]["status"] == "refused" and results[1]["reason"].startswith("bad signature")
    assert results[2]["status"] == "applied"
    assert rig.daemon.config.mqtt.port == 1885


async def test_a_bug_during_the_switch_stops_the_daemon_with_the_journal_in_place(
    rig: Rig,
) -> None:
    rig.daemon.broken = True
    rig.deliver(rig.text(port=1884))
    async with asyncio.timeout(10):
        await rig.daemon.should_exit.wait()
    assert rig.daemon.failed
    assert (rig.path.parent / "state" / "fleet" / "apply.json").exists()  # next start: back
