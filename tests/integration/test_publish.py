"""The publisher against a real Mosquitto: delivery through outages, status, format, secrets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import pytest

from gateway.core.lineproto import parse_lines
from gateway.core.model import GatewayConfig, MqttConfig, OutboxConfig, Reading, Secret, TlsConfig
from gateway.edge.outbox import Outbox
from gateway.edge.publish import Publisher
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TAGS = {"district": "xinwu", "lane": "north"}


def gw_config(
    port: int,
    state_dir: Path,
    *,
    fmt: str = "json",
    qos: int = 1,
    username: str | None = None,
    password: str | None = None,
    tls: TlsConfig | None = None,
    gateway_id: str = "gw-1",
    max_bytes: int = 512 * 1024 * 1024,
) -> GatewayConfig:
    mqtt = MqttConfig(
        host="127.0.0.1", port=port, client_id=f"sensegate-{gateway_id}",
        username=username, password=Secret(password) if password else None, tls=tls,
        qos=qos, format=fmt, keepalive=5,  # type: ignore[arg-type]
    )
    return GatewayConfig(
        id=gateway_id, mqtt=mqtt, devices=(), state_dir=str(state_dir),
        outbox=OutboxConfig(max_bytes=max_bytes, commit_interval=0.05),
    )


class Collector:
    """A separate subscriber with a persistent session: keeps every message, across outages."""

    def __init__(self, port: int, topic: str = "sensegate/#", **client_kw: object) -> None:
        self.port = port
        self.topic = topic
        self.client_kw = client_kw
        self.messages: list[aiomqtt.Message] = []
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier="test-collector", clean_session=False,
                    **self.client_kw,  # type: ignore[arg-type]
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        self.messages.append(message)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def data(self) -> list[dict]:
        return [json.loads(m.payload) for m in self.messages if str(m.topic).endswith("/data")]

    def readings(self) -> Counter[tuple[str, int]]:
        return Counter((d["device"], r["ts"]) for d in self.data() for r in d["readings"])

    def statuses(self) -> list[tuple[str, bool]]:
        return [
            (json.loads(m.payload)["state"], m.retain)
            for m in self.messages if str(m.topic).endswith("/status")
        ]


async def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(
    config: GatewayConfig, **kw: object
) -> AsyncIterator[tuple[Outbox, Publisher]]:
    outbox = Outbox.open(config.state_dir, config.outbox, config.id)
    publisher = Publisher(config, outbox, reconnect_max=1.0, **kw)  # type: ignore[arg-type]
    tasks = [
        asyncio.create_task(outbox.run_committer()),
        asyncio.create_task(publisher.run()),
    ]
    try:
        yield outbox, publisher
    finally:
        await publisher.stop(5.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        outbox.close()


def add(outbox: Outbox, device: str, ts: int, **values: float) -> None:
    outbox.add(
        Reading(device, ts, values or {"v": float(ts)}), measurement="road_weather", tags=TAGS,
    )


async def test_publishes_status_and_readings_and_deletes_after_ack(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = gw_config(mosquitto.port, tmp_path)
    async with Collector(mosquitto.port) as col, running(config) as (outbox, publisher):
        await wait_for(lambda: publisher.connected)
        outbox.add(
            Reading("rws-1", 1764000000123456789, {"air_temp": -12.3, "humidity": 65.43},
                    {"wind_speed": "bad"}),
            measurement="road_weather", tags=TAGS,
        )
        await wait_for(lambda: col.data())
        assert col.data()[0] == {
            "gateway": "gw-1", "device": "rws-1", "measurement": "road_weather",
            "tags": TAGS,
            "readings": [{"ts": 1764000000123456789,
                          "values": {"air_temp": -12.3, "humidity": 65.43},
                          "quality": {"wind_speed": "bad"}}],
        }
        data = next(m for m in col.messages if str(m.topic).endswith("/data"))
        assert str(data.topic) == "sensegate/gw-1/rws-1/data"
        assert (data.qos, data.retain) == (1, False)
        await wait_for(lambda: outbox.stats().pending_readings == 0)
    assert col.statuses()[0][0] == "online"
    assert col.statuses()[-1][0] == "offline"
    # the retained status a newcomer sees is the last one: offline after a clean stop
    async with Collector(mosquitto.port, topic="sensegate/gw-1/status") as late:
        await wait_for(lambda: late.statuses())
        assert late.statuses() == [("offline", True)]


async def test_broker_outage_loses_nothing_and_duplicates_nothing_added_meanwhile(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = gw_config(mosquitto.port, tmp_path)
    async with Collector(mosquitto.port) as col, running(config) as (outbox, publisher):
        await wait_for(lambda: publisher.connected)
        ts = 0
        before: list[tuple[str, int]] = []
        for _ in range(50):
            for dev in ("a", "b", "c"):
                ts += 1
                add(outbox, dev, ts)
                before.append((dev, ts))
            await asyncio.sleep(0.002)
        mosquitto.stop()
        await wait_for(lambda: not publisher.connected)
        during: list[tuple[str, int]] = []
        for _ in range(300):
            for dev in ("a", "b", "c"):
                ts += 1
                add(outbox, dev, ts)
                during.append((dev, ts))
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.3)
        assert outbox.stats().pending_readings >= len(during)
        mosquitto.start()
        after: list[tuple[str, int]] = []
        for _ in range(50):
            for dev in ("a", "b", "c"):
                ts += 1
                add(outbox, dev, ts)
                after.append((dev, ts))
            await asyncio.sleep(0.002)
        everything = before + during + after
        await wait_for(lambda: all(k in col.readings() for k in everything), 60)
        await wait_for(lambda: outbox.stats().pending_readings == 0)
        got = col.readings()
        assert all(got[k] == 1 for k in during), "a reading added during the outage twice"
        assert set(got) == set(everything)
        # a backlog goes out grouped: far fewer messages than readings
        assert len(col.data()) < len(everything) / 2
        # the status went offline (last will) and came back online
        states = [s for s, _ in col.statuses()]
        assert states[0] == "online" and "online" in states[1:]


async def test_influx_format_lines_parse_with_tags_fields_and_ns(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = gw_config(mosquitto.port, tmp_path, fmt="influx")
    async with Collector(mosquitto.port) as col, running(config) as (outbox, publisher):
        await wait_for(lambda: publisher.connected)
        outbox.add(
            Reading("rws-1", 1764000000123456789, {"air_temp": -12.3, "n": 7, "ok": True},
                    {"wind_speed": "bad"}),
            measurement="road weather", tags=TAGS,
        )
        outbox.add(Reading("rws-1", 1764000001123456789, {"air_temp": -12.1}),
                   measurement="road weather", tags=TAGS)
        outbox.add(Reading("rws-1", 1764000002000000000, {}, {"air_temp": "bad"}),
                   measurement="road weather", tags=TAGS)
        await wait_for(lambda: outbox.stats().pending_readings == 0)
        await wait_for(
            lambda: sum(len(parse_lines(m.payload.decode())) for m in col.messages
                        if str(m.topic).endswith("/data")) == 2
        )
    points = [
        p for m in col.messages if str(m.topic).endswith("/data")
        for p in parse_lines(m.payload.decode())
    ]
    tags = {"gateway": "gw-1", "device": "rws-1", **TAGS}
    assert points == [
        ("road weather", tags, {"air_temp": -12.3, "n": 7, "ok": True}, 1764000000123456789),
        ("road weather", tags, {"air_temp": -12.1}, 1764000001123456789),
    ]


def password_broker(tmp_path: Path) -> Mosquitto:
    pwfile = tmp_path / "passwd"
    pwfile.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), "gw", "s3cret-Pa55word"], check=True)
    pwfile.chmod(0o644)
    return Mosquitto(
        allow_anonymous=False, extra_conf=f"password_file {pwfile}\n"
    )


async def test_password_never_logged_neither_on_success_nor_on_refusal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    with password_broker(tmp_path) as broker:
        good = gw_config(broker.port, tmp_path / "a", username="gw", password="s3cret-Pa55word")
        async with running(good) as (outbox, publisher):
            await wait_for(lambda: publisher.connected)
            add(outbox, "a", 1)
            await wait_for(lambda: outbox.stats().pending_readings == 0)
        bad = gw_config(broker.port, tmp_path / "b", username="gw", password="wr0ng-Pa55word")
        async with running(bad) as (_, publisher):
            await wait_for(lambda: publisher.last_error is not None)
            assert publisher.last_error == (
                f"broker 127.0.0.1:{broker.port} refused the connection: not authorised "
                "(check username, password and client certificate)"
            )
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err, repr(good), repr(bad)):
        assert "s3cret-Pa55word" not in text
        assert "wr0ng-Pa55word" not in text
    assert "refused the connection: not authorised" in caplog.text


async def test_connection_refused_is_one_clear_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.support.ports import free_port

    port = free_port()
    async with running(gw_config(port, tmp_path)) as (_, publisher):
        await wait_for(lambda: publisher.last_error is not None)
    assert publisher.last_error == f"cannot connect to 127.0.0.1:{port}: connection refused"
    assert f"cannot connect to 127.0.0.1:{port}: connection refused; retrying in" in caplog.text


async def test_cancelled_mid_flight_keeps_unacked_rows(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = gw_config(mosquitto.port, tmp_path)
    outbox = Outbox.open(config.state_dir, config.outbox, config.id)
    publisher = Publisher(config, outbox)
    task = asyncio.create_task(publisher.run())
    await wait_for(lambda: publisher.connected)
    assert mosquitto.proc is not None
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)  # the broker hangs: nothing gets acked
    try:
        for ts in range(1, 101):
            add(outbox, f"d{ts % 7}", ts)
        outbox.flush()
        await wait_for(lambda: publisher._inflight)  # messages are in flight, unacked
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        outbox.close()
    finally:
        os.kill(mosquitto.proc.pid, signal.SIGCONT)
    reopened = Outbox.open(config.state_dir, config.outbox, config.id)
    try:
        assert reopened.stats().pending_readings == 100
    finally:
        reopened.close()


async def test_stop_drains_within_the_limit_and_says_offline(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = gw_config(mosquitto.port, tmp_path)
    async with Collector(mosquitto.port) as col:
        outbox = Outbox.open(config.state_dir, config.outbox, config.id)
        publisher = Publisher(config, outbox)
        task = asyncio.create_task(publisher.run())
        await wait_for(lambda: publisher.connected)
        for ts in range(1, 2001):
            add(outbox, f"d{ts % 10}", ts)
        outbox.flush()
        await publisher.stop(30.0)
        assert task.done()
        assert outbox.unacked_readings() == 0
        outbox.close()
        await wait_for(lambda: len(col.readings()) == 2000)
        await wait_for(lambda: col.statuses()[-1:] == [("offline", False)])


async def test_stop_when_the_broker_hangs_is_bounded_and_keeps_rows(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = gw_config(mosquitto.port, tmp_path)
    outbox = Outbox.open(config.state_dir, config.outbox, config.id)
    publisher = Publisher(config, outbox)
    task = asyncio.create_task(publisher.run())
    await wait_for(lambda: publisher.connected)
    assert mosquitto.proc is not None
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)
    try:
        for ts in range(1, 51):
            add(outbox, "a", ts)
        outbox.flush()
        await asyncio.wait_for(publisher.stop(0.5), 30)  # returns although nothing is acked
        await asyncio.gather(task, return_exceptions=True)
        assert task.done()
        assert outbox.unacked_readings() == 50
    finally:
        os.kill(mosquitto.proc.pid, signal.SIGCONT)
        outbox.close()


async def test_last_will_says_offline_when_the_process_is_killed(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(REPO)!r})
        from gateway.edge.outbox import Outbox
        from gateway.edge.publish import Publisher
        from tests.integration.test_publish import gw_config
        from pathlib import Path

        async def main():
            config = gw_config({mosquitto.port}, Path({str(tmp_path)!r}))
            outbox = Outbox.open(config.state_dir, config.outbox, config.id)
            publisher = Publisher(config, outbox)
            task = asyncio.create_task(publisher.run())
            while not publisher.connected:
                await asyncio.sleep(0.02)
            print("connected", flush=True)
            await task

        asyncio.run(main())
    """)
    async with Collector(mosquitto.port, topic="sensegate/gw-1/status") as col:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line.strip() == b"connected"
            await wait_for(lambda: [s for s, _ in col.statuses()] == ["online"])
            proc.kill()
            await proc.wait()
            # mosquitto sends the will once it notices the dead socket (immediately: RST)
            await wait_for(lambda: [s for s, _ in col.statuses()] == ["online", "offline"])
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_publish_timeout_is_enforced_by_the_pump(tmp_path: Path) -> None:
    # Publishes wait for their PUBACK without a timer each; the pump fails the session
    # once the oldest unacknowledged publish is past its deadline.
    config = gw_config(1, tmp_path)
    outbox = Outbox.open(config.state_dir, config.outbox, config.id)
    try:
        publisher = Publisher(config, outbox)
        loop = asyncio.get_running_loop()
        acked = loop.create_future()
        acked.set_result(None)
        waiting = loop.create_future()
        publisher._deadlines.extend([(0.0, acked), (100.0, waiting)])  # type: ignore[list-item]
        publisher._check_deadlines(50.0)  # the expired one was acknowledged: fine
        assert [d for d, _ in publisher._deadlines] == [100.0]
        with pytest.raises(aiomqtt.MqttError, match="timed out"):
            publisher._check_deadlines(100.0)
        waiting.cancel()
    finally:
        outbox.close()
