"""Commands: the checks of a request (pure), the priority lock, the store and audit log."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from drivers.bus import PriorityLock
from gateway.core.command import RateLimiter, device_of, parse_request, plan, result_payload
from gateway.core.model import DeviceConfig, PointConfig, rate_limit
from gateway.core.signing import Refused
from gateway.edge.commands import AuditLog, CommandStore, Outcome

POINTS = (
    PointConfig("mode", "uint16", "holding", 10, writable=True, allowed=(0, 1, 2)),
    PointConfig("dim", "uint16", "holding", 11, writable=True, min=0, max=100,
                max_rate="2/min"),
    PointConfig("temp", "int16", "holding", 12, scale=0.1, writable=True, min=-20, max=50),
    PointConfig("level", "uint16", "holding", 13),
)
DEVICE = DeviceConfig("vms-3", "modbus-tcp", POINTS, host="127.0.0.1")


@pytest.mark.parametrize(("values", "reason"), [
    ({"mode": 3}, "mode: 3 is not allowed (allowed: 0, 1, 2)"),
    ({"dim": 101}, "dim: 101 is above max 100"),
    ({"temp": -20.1}, "temp: -20.1 is below min -20"),
    ({"temp": 1.23}, "temp: 1.23 cannot be written exactly"),
    ({"level": 1}, "level: not writable"),
    ({"x": 1}, "unknown point 'x' of device 'vms-3'"),
    ({"dim": float("nan")}, "dim: nan is not a finite number"),
    ({"dim": 1, "mode": 9}, "mode: 9 is not allowed"),
])
def test_a_command_is_checked_whole(values: dict[str, object], reason: str) -> None:
    with pytest.raises(Refused) as caught:
        plan(DEVICE, "vms-3", values, RateLimiter(), 0.0)
    assert reason in str(caught.value)


def test_unknown_device() -> None:
    with pytest.raises(Refused, match="unknown device 'ghost'"):
        plan(None, "ghost", {"x": 1}, RateLimiter(), 0.0)


def test_rate_is_per_point_and_window() -> None:
    rates = RateLimiter()
    dim = POINTS[1]
    assert rate_limit("6/min") == (6, 60.0)
    for t in (0.0, 1.0):
        assert rates.refusal("vms-3", dim, t) is None
        rates.record("vms-3", dim, t)
    assert "over its max_rate 2/min (next write in 58s)" in str(rates.refusal("vms-3", dim, 2.0))
    assert rates.refusal("vms-3", dim, 60.5) is None  # the first left the window
    assert rates.refusal("other", dim, 2.0) is None


@pytest.mark.parametrize(("payload", "reason"), [
    (b"[]", "not a JSON object"),
    (b'{"ts": 1, "values": {"a": 1}}', "'id' must be"),
    (b'{"id": "a", "ts": "1", "values": {"a": 1}}', "'ts' must be an integer"),
    (b'{"id": "a", "ts": true, "values": {"a": 1}}', "'ts' must be an integer"),
    (b'{"id": "a", "ts": 1, "values": []}', "'values' must be an object"),
])
def test_malformed_requests(payload: bytes, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        parse_request(payload)


@pytest.mark.parametrize(("topic", "device"), [
    ("sensegate/gw-1/vms-3/set", "vms-3"),
    ("sensegate/gw-2/vms-3/set", None),
    ("sensegate/gw-1/a/b/set", None),
    ("sensegate/gw-1//set", None),
    ("sensegate/gw-1/vms-3/set/result", None),
])
def test_the_device_comes_from_this_gateway_s_own_topic(topic: str, device: str | None) -> None:
    assert device_of(topic, "sensegate", "gw-1") == device


def test_result_payload() -> None:
    body = json.loads(result_payload("c-1", 5, "done", None, {"dim": 40}))
    assert body == {"id": "c-1", "ts": 5, "status": "done", "values": {"dim": 40}}


async def test_priority_lock_serves_urgent_waiters_first() -> None:
    lock = PriorityLock()
    order: list[str] = []

    async def take(name: str, urgent: bool) -> None:
        if urgent:
            async with lock.urgent():
                order.append(name)
        else:
            async with lock:
                order.append(name)

    await lock.acquire()
    tasks = [asyncio.ensure_future(take(n, n.startswith("w"))) for n in ("p1", "p2", "w1", "p3")]
    await asyncio.sleep(0)
    cancelled = asyncio.ensure_future(take("p0", False))
    await asyncio.sleep(0)
    cancelled.cancel()
    lock.release()
    await asyncio.gather(*tasks)
    assert order == ["w1", "p1", "p2", "p3"]
    assert not lock.locked()


def test_store_keeps_started_and_finished_across_reopen(tmp_path: Path) -> None:
    store = CommandStore(str(tmp_path))
    store.start("c-1", "vms-3")
    store.close()
    store = CommandStore(str(tmp_path))
    assert store.get("c-1") == (True, None)  # started, never finished
    store.finish("c-1", "vms-3", Outcome("c-1", "done", None, {"dim": 4}))
    assert store.get("c-1")[1] == Outcome("c-1", "done", None, {"dim": 4}, duplicate=True)
    assert store.get("c-2") == (False, None)
    store.close()


def test_audit_log_is_rotated_and_bounded(tmp_path: Path) -> None:
    audit = AuditLog(str(tmp_path), max_bytes=1000, files=3)
    for n in range(100):
        audit.append(device="vms-3", id=f"c-{n}", event="received")
    files = sorted(p.name for p in (tmp_path / "commands").iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    last = (tmp_path / "commands" / "audit.log").read_text().splitlines()
    assert json.loads(last[-1])["id"] == "c-99"
    assert sum(p.stat().st_size for p in (tmp_path / "commands").iterdir()) < 3 * 1100


class _Writer:
    """Stands in for a device: records writes, answers with the value written."""

    def __init__(self, log: list[tuple[str, object]]) -> None:
        self.log = log

    async def write(self, point: PointConfig, write: object) -> object:
        self.log.append((point.name, write.value))  # type: ignore[attr-defined]
        return write.value  # type: ignore[attr-defined]

    async def close(self) -> None:
        pass


def _commander(tmp_path: Path, log: list[tuple[str, object]], key: bytes | None = None):
    from gateway.core.model import CommandsConfig, GatewayConfig, MqttConfig
    from gateway.edge.commands import Commander

    config = GatewayConfig(
        "gw-1", MqttConfig("127.0.0.1", 1883, "c"), (DEVICE,), state_dir=str(tmp_path),
        commands=CommandsConfig(enabled=True, max_age=30.0))
    return Commander(config, lambda _name: _Writer(log), public_key=key)


async def test_commander_signature_age_and_at_most_once(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from gateway.core.signing import canonical, sign_body
    from gateway.runtime.signing import PrivateKey, generate

    pem, public = generate()
    key = PrivateKey(serialization.load_pem_private_key(pem, None))  # type: ignore[arg-type]
    topic = "sensegate/gw-1/vms-3/set"

    def signed(msg_id: str, values: dict[str, object], on: str = topic, age: float = 0) -> bytes:
        body = {"id": msg_id, "ts": time.time_ns() - int(age * 1e9), "values": values}
        return sign_body(body, key.sign(canonical(on, body)))

    log: list[tuple[str, object]] = []
    commander = _commander(tmp_path, log, public)
    _d, first = await commander.handle_message(topic, signed("c-1", {"dim": 40}))
    assert (first.status, first.values) == ("done", {"dim": 40})
    _d, again = await commander.handle_message(topic, signed("c-1", {"dim": 40}))
    assert (again.status, again.duplicate, log) == ("done", True, [("dim", 40)])
    _d, moved = await commander.handle_message(
        topic, signed("c-2", {"dim": 1}, on="sensegate/gw-1/other/set"))
    assert moved.status == "refused" and "bad signature" in str(moved.reason)
    _d, old = await commander.handle_message(topic, signed("c-3", {"dim": 1}, age=60))
    assert old.status == "expired"
    assert log == [("dim", 40)]
    commander.close()


async def test_a_command_started_before_a_crash_is_not_repeated(tmp_path: Path) -> None:
    from gateway.core.command import Request

    store = CommandStore(str(tmp_path))
    store.start("c-9", "vms-3")  # the write went out, then the process died
    store.close()
    log: list[tuple[str, object]] = []
    commander = _commander(tmp_path, log)
    outcome = await commander.execute("vms-3", Request("c-9", time.time_ns(), {"dim": 5}),
                                      source="mqtt")
    assert outcome.status == "failed" and "not repeated" in str(outcome.reason)
    assert log == []
    commander.close()


def test_check_says_whether_commands_are_on_and_signed() -> None:
    from gateway.commands.check import summary
    from gateway.core.model import CommandsConfig, GatewayConfig, MqttConfig

    def lines(commands: CommandsConfig | None) -> list[str]:
        config = GatewayConfig("gw-1", MqttConfig("127.0.0.1", 1883, "c"), (DEVICE,),
                               commands=commands)
        return [line for line in summary(config) if line.startswith("commands:")]

    assert lines(None) == ["commands: off; 3 writable points for sensegate write"]
    assert lines(CommandsConfig(enabled=True)) == [
        "commands: on, UNSIGNED (no public_key), 3 writable points"]
    signed = CommandsConfig(enabled=True, key=bytes(32), max_age=10.0)
    assert lines(signed) == [
        "commands: on, signed (key AAAAAAAA), max_age 10s, 3 writable points"]
