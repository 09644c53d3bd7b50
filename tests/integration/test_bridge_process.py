"""A real `sensegate bridge` process: SIGHUP reload, /metrics and /healthz, TLS, second SIGINT.

Every test starts its own Mosquitto and InfluxDB 1.x on free loopback ports and runs the
bridge as `python -m gateway bridge -c FILE`, as systemd would; what the process did is read
back from InfluxDB, from its log (stderr) and from its metrics endpoint.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_bridge import (
    expected_rows,
    make_messages,
    publish,
    spawn_bridge,
    wait_for,
    wait_for_rows,
)
from tests.support.certs import Pki, make_pki, mosquitto_tls_conf
from tests.support.influxdb import InfluxDB
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

SECRET = "s3cret-bridge-pw"  # must never appear in the log


@pytest.fixture
def influx() -> Iterator[InfluxDB]:
    with InfluxDB() as db:
        yield db


def config_text(
    broker_port: int, db: InfluxDB, state_dir: Path, *, subscribe: str = "sensegate/+/+/data",
    database: str | None = None, metrics_port: int | None = None, tls: str = "",
    extra_mqtt: str = "",
) -> str:
    text = (
        "mqtt:\n"
        "  host: 127.0.0.1\n"
        f"  port: {broker_port}\n"
        "  client_id: bridge-process-test\n"
        f"  subscribe: {subscribe}\n"
        "  shared_group: sensegate-bridge\n"
        f"{tls}{extra_mqtt}"
        "influxdb:\n"
        f"  url: {db.url}\n"
        "  api: v1\n"
        f"  database: {database or db.database}\n"
        "  batch_size: 200\n"
        "  flush_interval: 100ms\n"
        "  timeout: 2s\n"
        f"state_dir: {state_dir}\n"
    )
    if metrics_port is not None:
        text += f"metrics: {{listen: 127.0.0.1:{metrics_port}}}\n"
    return text


class BridgeProcess:
    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] = spawn_bridge(config, log)

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    async def wait_log(self, needle: str, *, count: int = 1, timeout: float = 30.0) -> None:
        await wait_for(lambda: self.text().count(needle) >= count, timeout=timeout,
                       what=f"{needle!r} x{count} in the bridge log",
                       info=lambda: self.text()[-3000:])

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str) -> float:
    """The value of one sample line (`name{labels} value`) of Prometheus text, else 0."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def rows_in(db: InfluxDB, database: str) -> list[dict[str, object]]:
    return db.rows(f'SELECT * FROM "{database}".."weather"')


# -- SIGHUP -------------------------------------------------------------------------------


async def test_sighup_reload_changes_subscription_and_database(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path
) -> None:
    influx.query('CREATE DATABASE "second"', post=True)
    cfg = tmp_path / "bridge.yaml"
    state = tmp_path / "state"
    cfg.write_text(config_text(mosquitto.port, influx, state, subscribe="sensegate/gw-a/+/data"))
    bridge = BridgeProcess(cfg, tmp_path / "bridge.log")
    try:
        await bridge.wait_log("subscribed to")
        a1 = make_messages(["gw-a"], ["rws-1"], 5, 2, fmt="json")
        b1 = make_messages(["gw-b"], ["rws-1"], 5, 2, start=100, fmt="json")
        await publish(mosquitto, a1 + b1, client_id="p1")  # gw-b is not subscribed yet
        await wait_for_rows(influx, 'SELECT * FROM "weather"', 10)

        # reload: another filter and another database
        cfg.write_text(config_text(mosquitto.port, influx, state,
                                   subscribe="sensegate/gw-b/+/data", database="second"))
        bridge.signal(signal.SIGHUP)
        await bridge.wait_log("config reloaded")
        await bridge.wait_log("subscribed to", count=2)
        a2 = make_messages(["gw-a"], ["rws-1"], 5, 2, start=200, fmt="json")
        b2 = make_messages(["gw-b"], ["rws-1"], 5, 2, start=300, fmt="json")
        await publish(mosquitto, a2 + b2, client_id="p2")  # gw-a is no longer subscribed
        await wait_for(lambda: len(rows_in(influx, "second")) >= 10, what="gw-b in 'second'")

        # a bad config is refused and logged; the old one stays and the bridge keeps writing
        cfg.write_text(cfg.read_text().replace("api: v1", "api: v9"))
        bridge.signal(signal.SIGHUP)
        await bridge.wait_log("reload refused")
        b3 = make_messages(["gw-b"], ["pm-1"], 5, 2, start=400, fmt="json")
        await publish(mosquitto, b3, client_id="p3")
        await wait_for(lambda: len(rows_in(influx, "second")) >= 20, what="b3 in 'second'")
        assert bridge.stop() == 0
    finally:
        bridge.kill()

    log = bridge.text()
    assert f"{cfg}:" in log and "api" in log  # the refused file's error, FILE:LINE:COL form
    assert "unsubscribed '$share/sensegate-bridge/sensegate/gw-a/+/data'" in log
    first = {(r["gateway"], r["device"], r["time"]) for r in rows_in(influx, influx.database)}
    second = {(r["gateway"], r["device"], r["time"]) for r in rows_in(influx, "second")}
    assert first == set(expected_rows(a1))
    assert second == set(expected_rows(b2 + b3))


async def test_restart_with_another_subscription_drops_the_old_one(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path
) -> None:
    """The broker keeps a persistent session's subscriptions; a new `subscribe` replaces them."""
    cfg = tmp_path / "bridge.yaml"
    state = tmp_path / "state"
    cfg.write_text(config_text(mosquitto.port, influx, state, subscribe="sensegate/gw-a/+/data"))
    bridge = BridgeProcess(cfg, tmp_path / "bridge.log")
    try:
        await bridge.wait_log("subscribed to")
        assert bridge.stop() == 0
        cfg.write_text(config_text(mosquitto.port, influx, state,
                                   subscribe="sensegate/gw-b/+/data"))
        bridge = BridgeProcess(cfg, tmp_path / "bridge.log")
        await bridge.wait_log("subscribed to", count=2)
        msgs = make_messages(["gw-a", "gw-b"], ["rws-1"], 10, 1, fmt="json")
        await publish(mosquitto, msgs)
        want = {k for k in expected_rows(msgs) if k[0] == "gw-b"}
        await wait_for_rows(influx, 'SELECT * FROM "weather"', len(want))
        await asyncio.sleep(0.3)  # a gw-a message let through by a stale filter would be here
        assert bridge.stop() == 0
    finally:
        bridge.kill()
    got = {(r["gateway"], r["device"], r["time"])
           for r in influx.rows('SELECT * FROM "weather"')}
    assert got == want


# -- /metrics and /healthz ----------------------------------------------------------------


async def test_metrics_and_healthz_of_a_real_process(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path
) -> None:
    port = free_port()
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(config_text(mosquitto.port, influx, tmp_path / "state", metrics_port=port))
    base = f"http://127.0.0.1:{port}"
    bridge = BridgeProcess(cfg, tmp_path / "bridge.log")
    try:
        await bridge.wait_log("subscribed to")
        msgs = make_messages(["gw-a"], ["rws-1", "pm-1"], 12, 3, fmt="json")
        bad = [("sensegate/gw-a/rws-1/data", b"{not json"),
               ("sensegate/gw-a/rws-1/data", b'{"readings": 5}')]
        await publish(mosquitto, [*msgs, *bad])
        await wait_for_rows(influx, 'SELECT * FROM "weather"', 36)

        async def scrape() -> str:
            return (await asyncio.to_thread(http_get, base + "/metrics"))[1]

        text = await scrape()
        deadline = asyncio.get_running_loop().time() + 10
        while metric(text, "sensegate_bridge_points_written_total") < 36:
            assert asyncio.get_running_loop().time() < deadline, text
            await asyncio.sleep(0.1)
            text = await scrape()
        assert metric(text, "sensegate_bridge_messages_total") == len(msgs) + len(bad)
        assert metric(text, "sensegate_bridge_points_written_total") == 36
        assert metric(text, 'sensegate_bridge_dead_letters_total{reason="bad_json"}') == 1
        assert metric(text, 'sensegate_bridge_dead_letters_total{reason="bad_shape"}') == 1
        assert metric(text, "sensegate_bridge_write_errors_total") == 0
        assert metric(text, "sensegate_bridge_mqtt_connected") == 1
        assert metric(text, "sensegate_bridge_influx_up") == 1
        assert metric(text, "sensegate_bridge_pending_points") == 0
        assert metric(text, "sensegate_bridge_reading_paused") == 0
        assert "# TYPE sensegate_bridge_write_batches_total counter" in text
        assert await asyncio.to_thread(http_get, base + "/healthz") == (200, "ok\n")

        # InfluxDB down: writes fail, are counted, /healthz says so; back up: healthy again
        influx.stop()
        more = make_messages(["gw-a"], ["rws-1"], 3, 1, start=1000, fmt="json")
        await publish(mosquitto, more, client_id="p2")
        await wait_for(lambda: http_get(base + "/healthz")[0] == 503, what="healthz 503")
        text = await scrape()
        assert metric(text, "sensegate_bridge_write_errors_total") >= 1
        assert metric(text, "sensegate_bridge_influx_up") == 0
        assert metric(text, "sensegate_bridge_pending_points") == 3  # the 3 waiting
        influx.start()
        await wait_for(lambda: http_get(base + "/healthz")[0] == 200, what="healthz 200")
        await wait_for_rows(influx, 'SELECT * FROM "weather"', 39)
        assert bridge.stop() == 0
    finally:
        bridge.kill()


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_broker(pki: Pki) -> tuple[Mosquitto, int]:
    """A broker with a plain listener (for the test's publisher) and a TLS one that
    requires a client certificate from the test CA."""
    tls_port = free_port()
    return Mosquitto(extra_conf=mosquitto_tls_conf(pki, tls_port)), tls_port


def tls_block(ca: Path, pki: Pki) -> str:
    return (f"  tls: {{ca_file: {ca}, cert_file: {pki.client_cert}, "
            f"key_file: {pki.client_key}}}\n")


async def test_tls_with_client_certificate(influx: InfluxDB, tmp_path: Path, pki: Pki) -> None:
    broker, tls_port = tls_broker(pki)
    with broker:
        cfg = tmp_path / "bridge.yaml"
        cfg.write_text(config_text(tls_port, influx, tmp_path / "state",
                                   tls=tls_block(pki.ca_cert, pki)))
        bridge = BridgeProcess(cfg, tmp_path / "bridge.log")
        try:
            await bridge.wait_log("subscribed to")
            # Small messages, and large ones that span many TLS records and recv chunks
            # (gateway.bridge.receive keeps a packet cut by a read until it is complete).
            small = make_messages(["gw-a"], ["rws-1"], 300, 1)
            large = make_messages(["gw-a"], ["rws-2"], 3, 3000, start=1000, fmt="json")
            assert min(len(p) for _, p, *_ in large) > 200_000
            msgs = small[:100] + large[:1] + small[100:200] + large[1:] + small[200:]
            await publish(broker, msgs)
            rows = await wait_for_rows(influx, 'SELECT * FROM "weather"', 9300)
            assert len(rows) == 9300
            assert bridge.stop() == 0
        finally:
            bridge.kill()


async def test_tls_wrong_ca_is_a_clear_error_without_secrets(
    influx: InfluxDB, tmp_path: Path, pki: Pki
) -> None:
    broker, tls_port = tls_broker(pki)
    with broker:
        cfg = tmp_path / "bridge.yaml"
        cfg.write_text(config_text(
            tls_port, influx, tmp_path / "state", tls=tls_block(pki.other_ca_cert, pki),
            extra_mqtt=f"  username: bridge\n  password: {SECRET}\n"))
        bridge = BridgeProcess(cfg, tmp_path / "bridge.log")
        try:
            await bridge.wait_log("certificate verify failed")
            assert bridge.proc.poll() is None  # keeps retrying: the broker may be fixed
            assert bridge.stop() == 0
        finally:
            bridge.kill()
    log = bridge.text()
    assert f"tls handshake with 127.0.0.1:{tls_port} failed: certificate verify failed" in log
    assert SECRET not in log
    assert "BEGIN" not in log  # no key or certificate material either


# -- second SIGINT ------------------------------------------------------------------------


async def test_second_sigint_cuts_a_drain_and_nothing_is_lost(
    mosquitto: Mosquitto, influx: InfluxDB, tmp_path: Path
) -> None:
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(config_text(mosquitto.port, influx, tmp_path / "state"))
    log = tmp_path / "bridge.log"
    bridge = BridgeProcess(cfg, log)
    try:
        await bridge.wait_log("subscribed to")
        influx.stop()  # the drain cannot finish: every write fails and is retried
        msgs = make_messages(["gw-a"], ["rws-1"], 20, 2, fmt="json")
        await publish(mosquitto, msgs)
        await bridge.wait_log("retrying in")
        bridge.signal(signal.SIGINT)
        await bridge.wait_log("SIGINT again to stop at once")
        bridge.signal(signal.SIGINT)
        assert bridge.proc.wait(timeout=30) == 0
        assert "drain cut by a second SIGINT" in bridge.text()
        assert "drain timed out" not in bridge.text()
        assert "20 message(s) left unacknowledged" in bridge.text()

        # what the cut left unacknowledged comes again from the broker
        influx.start()
        bridge = BridgeProcess(cfg, log)
        rows = await wait_for_rows(influx, 'SELECT * FROM "weather"', 40)
        assert len(rows) == 40
        assert bridge.stop() == 0
    finally:
        bridge.kill()
