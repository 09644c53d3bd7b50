"""No message stalls the bridge (issue 13 item 1): real Mosquitto, real InfluxDB 1.x and
VictoriaMetrics (v2 write API), the bridge in this process so `/healthz` and its stats are
read while it runs.

A poison message is published between valid ones; the valid ones must be written, the poison
dead-lettered with its reason, every message acknowledged, and `/healthz` and the stats must
say what happened.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.bridge import ingest
from gateway.bridge.sink import V1Sink, V2Sink
from gateway.core.model import BridgeConfig, InfluxConfig, MetricsConfig
from tests.integration.test_bridge import (
    Running,
    bridge_config,
    dead_letters,
    expected_rows,
    make_messages,
    publish,
    start_bridge,
    stored_rows,
    v1,
    wait_for,
)
from tests.support.influxdb import InfluxDB
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port
from tests.support.victoria import Victoria

pytestmark = pytest.mark.integration

TOPIC = "sensegate/gw-a/rws-1/data"
SURROGATE = b'{"readings":[{"ts":1,"values":{"s":"\\ud800"}}]}'  # the JSON escape, as sent


class Store:
    """InfluxDB 1.x (`api: v1`) or VictoriaMetrics (`api: v2`), and what each stored."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.server: InfluxDB | Victoria = InfluxDB() if kind == "v1" else Victoria()

    def config(self) -> InfluxConfig:
        if isinstance(self.server, InfluxDB):
            return v1(self.server)
        return InfluxConfig(url=self.server.url, api="v2", org="city", bucket="sensing",
                            batch_size=500, flush_interval=0.2, timeout=5.0)

    def stored(self) -> dict[tuple[str, str, int], Any]:
        """(gateway, device, ts ms) → temp, as the store holds it."""
        if isinstance(self.server, InfluxDB):
            return {(g, d, ts // 1_000_000): row["temp"]
                    for (g, d, ts), row in stored_rows(self.server).items()}
        return {(dict(labels)["gateway"], dict(labels)["device"], ts): value
                for (_name, labels, ts), value in self.server.samples(
                    '{__name__="weather_temp"}').items()}


@pytest.fixture(params=["v1", "v2"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    s = Store(request.param)
    with s.server:
        yield s


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def start(mosquitto: Mosquitto, store: Store, tmp_path: Path) -> tuple[Running, int]:
    port = free_port()
    base = bridge_config(mosquitto, tmp_path, store.config())
    config = BridgeConfig(mqtt=base.mqtt, influxdb=base.influxdb, state_dir=base.state_dir,
                          metrics=MetricsConfig(("127.0.0.1", port)))
    return await start_bridge(config), port


def expected(msgs: list[Any]) -> dict[tuple[str, str, int], Any]:
    return {(g, d, ts // 1_000_000): row["temp"]
            for (g, d, ts), row in expected_rows(msgs).items()}


async def wait_stored(store: Store, n: int) -> dict[tuple[str, str, int], Any]:
    deadline = time.monotonic() + 30
    while True:
        got = await asyncio.to_thread(store.stored)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


async def test_a_lone_surrogate_is_dead_lettered_and_the_rest_written(
    mosquitto: Mosquitto, store: Store, tmp_path: Path
) -> None:
    running, port = await start(mosquitto, store, tmp_path)
    bridge = running.bridge
    good = make_messages(["gw-a"], ["rws-1"], 6, 2, fmt="json")
    await publish(mosquitto, [*good[:3], (TOPIC, SURROGATE), *good[3:]])
    total = len(good) + 1
    await wait_for(lambda: bridge.stats.acked >= total, timeout=30,
                   what="every message acknowledged", info=lambda: bridge.stats)
    assert await wait_stored(store, 12) == expected(good)
    assert await asyncio.to_thread(health, port) == 200
    assert bridge.stats.dead_letters == {"bad_encoding": 1}
    assert bridge.stats.points_written == 12
    assert bridge.stats.store_ok
    assert await running.stop() == 0
    [letter] = dead_letters(tmp_path)
    assert letter["reason"] == "bad_encoding"
    assert letter["topic"] == TOPIC
    assert letter["payload"] == SURROGATE.decode()
    assert "'\\ud800' is not valid unicode" in letter["detail"]


async def test_a_write_that_keeps_failing_is_bisected_and_its_poison_dead_lettered(
    mosquitto: Mosquitto, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two poisons that pass decoding, as before ingest refused them: a line with a lone
    surrogate (encoding the batch raised UnicodeEncodeError) and a line the sink raises on
    (a bug in the write path, not an answer of the store)."""
    real_decode = ingest.decode_message

    def old_decode(topic: str, payload: bytes, **kw: Any) -> Any:
        if payload == SURROGATE:
            return ['weather,device=rws-1,gateway=gw-a s="\ud800" 1']
        if payload == b"CRASH":
            return ["weather,device=rws-1,gateway=gw-a crash=1i 2"]
        return real_decode(topic, payload, **kw)

    monkeypatch.setattr(ingest, "decode_message", old_decode)
    for cls in (V1Sink, V2Sink):
        real_write = cls._write_blocking

        def crashing(self: Any, body: bytes, real: Any = real_write) -> None:
            if b"crash=1i" in body:
                raise RuntimeError("the write path tripped")
            real(self, body)

        monkeypatch.setattr(cls, "_write_blocking", crashing)

    running, port = await start(mosquitto, store, tmp_path)
    bridge = running.bridge
    good = make_messages(["gw-a"], ["rws-1"], 6, 2, fmt="json")
    await publish(mosquitto, [*good[:2], (TOPIC, SURROGATE), *good[2:4], (TOPIC, b"CRASH"),
                              *good[4:5]])
    seen_unhealthy = False
    deadline = time.monotonic() + 60
    while bridge.stats.dead_letters.get("write_failed", 0) < 2:
        assert time.monotonic() < deadline, bridge.stats
        seen_unhealthy |= await asyncio.to_thread(health, port) == 503
        await asyncio.sleep(0.05)
    assert seen_unhealthy  # while the failing batch was retried
    # one more valid message: the store takes writes, and health says so again
    await publish(mosquitto, good[5:], client_id="p2")
    total = len(good) + 2
    await wait_for(lambda: bridge.stats.acked >= total, timeout=30,
                   what="every message acknowledged", info=lambda: bridge.stats)
    assert await wait_stored(store, 12) == expected(good)
    await wait_for(lambda: bridge.stats.store_ok, what="store ok again")
    assert await asyncio.to_thread(health, port) == 200
    assert bridge.stats.dead_letters == {"write_failed": 2}
    assert bridge.stats.points_written == 12
    assert await running.stop() == 0
    letters = sorted(dead_letters(tmp_path), key=lambda d: d["payload"])
    assert [(d["topic"], d["reason"]) for d in letters] == [(TOPIC, "write_failed")] * 2
    assert letters[0]["payload"] == 'weather,device=rws-1,gateway=gw-a crash=1i 2'
    assert letters[0]["detail"] == "writing raised RuntimeError: the write path tripped"
    assert letters[1]["payload"] == 'weather,device=rws-1,gateway=gw-a s="\\ud800" 1'
    assert "line is not valid utf-8" in letters[1]["detail"]
