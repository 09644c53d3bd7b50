"""The bridge's AMQP source over TLS (`amqp.tls`), against a real RabbitMQ node with an AMQPS
listener whose server certificate the test CA signed, into a real InfluxDB 1.x.

A reading published through the node's MQTT plugin reaches InfluxDB when the bridge trusts
the CA; with another CA the bridge does not connect, says why (certificate verification) and
never names the password; a missing CA file stops the bridge at start with exit 1.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from gateway.bridge.service import Bridge
from gateway.core.model import Reading
from gateway.core.payload import build_json, data_topic
from gateway.runtime.exitcodes import ExitCode
from tests.integration.test_bridge import wait_for
from tests.support import rabbitmq
from tests.support.certs import Pki, make_pki
from tests.support.influxdb import InfluxDB

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not rabbitmq.available(), reason="rabbitmq-server not installed"),
]

PASSWORD = "amqp-pass-Zq81"  # guest's password is set to this for the test


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def node(pki: Pki) -> Iterator[rabbitmq.Node]:
    with rabbitmq.RabbitCluster(1, tls=pki) as cluster:
        first = cluster.nodes[0]
        cluster.ctl(first, "change_password", "guest", PASSWORD)
        yield first


@pytest.fixture
def influx() -> Iterator[InfluxDB]:
    with InfluxDB() as db:
        yield db


def bridge_yaml(path: Path, node: rabbitmq.Node, influx: InfluxDB, ca: Path) -> Path:
    path.write_text("\n".join([
        "amqp:",
        f"  nodes: ['127.0.0.1:{node.amqps_port}']",
        "  password: ${AMQP_TEST_PASSWORD}",
        f"  tls: {{ca_file: '{ca}'}}",
        "  queue: sensegate-tls",
        "influxdb:",
        f"  url: {influx.url}",
        "  api: v1",
        f"  database: {influx.database}",
        "  flush_interval: 200ms",
        f"state_dir: {path.parent / 'state'}",
        "",
    ]))
    return path


async def test_a_reading_travels_over_amqps(
    tmp_path: Path, node: rabbitmq.Node, influx: InfluxDB, pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMQP_TEST_PASSWORD", PASSWORD)
    bridge = Bridge(str(bridge_yaml(tmp_path / "bridge.yaml", node, influx, pki.ca_cert)))
    task = asyncio.create_task(bridge.run())
    try:
        await wait_for(lambda: bridge.stats.connected, what="the bridge consuming over amqps")
        reading = Reading("dev-1", 1_764_000_000_000_000_000, {"air_temp": -3.5})
        payload = build_json("gw-tls", "dev-1", "road_weather", {}, [reading])
        async with aiomqtt.Client("127.0.0.1", node.mqtt_port, identifier="tls-test",
                                  username="guest", password=PASSWORD) as client:
            await client.publish(data_topic("sensegate", "gw-tls", "dev-1"), payload, qos=1)
        await wait_for(lambda: influx.count("road_weather", "air_temp") == 1,
                       what="the reading in InfluxDB")
        # acknowledged after InfluxDB answered: a moment after the point is there
        await wait_for(lambda: bridge.stats.acked == 1, what="the message acknowledged")
    finally:
        bridge.should_exit.set()
        assert await asyncio.wait_for(task, 30) == ExitCode.OK


async def test_an_untrusted_server_is_refused_and_said_why(
    tmp_path: Path, node: rabbitmq.Node, influx: InfluxDB, pki: Pki,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AMQP_TEST_PASSWORD", PASSWORD)
    caplog.set_level(logging.INFO)
    path = bridge_yaml(tmp_path / "bridge.yaml", node, influx, pki.other_ca_cert)
    bridge = Bridge(str(path), reconnect_max=0.5)
    task = asyncio.create_task(bridge.run())
    try:
        await wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in bridge.stats.last_error
                       or "certificate verify failed" in bridge.stats.last_error,
                       what="a certificate verification error", timeout=30)
        assert not bridge.stats.connected
        assert not bridge.healthy()
    finally:
        bridge.should_exit.set()
        await asyncio.wait_for(task, 30)
    assert PASSWORD not in caplog.text
    assert PASSWORD not in bridge.stats.last_error


async def test_a_missing_ca_file_stops_the_bridge_at_start(
    tmp_path: Path, node: rabbitmq.Node, influx: InfluxDB,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AMQP_TEST_PASSWORD", PASSWORD)
    path = bridge_yaml(tmp_path / "bridge.yaml", node, influx, tmp_path / "missing-ca.pem")
    assert await asyncio.wait_for(Bridge(str(path)).run(), 30) == ExitCode.FAILED
    assert "cannot read tls ca_file" in caplog.text
