"""The bridge's AMQP source (gateway.bridge.amqp): its pure parts, the ack order, the config.

A real 3-node RabbitMQ cluster runs it in tests/integration/test_cluster.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.bridge import ingest
from gateway.bridge.amqp import Consumer, cumulative_ack, queue_arguments, topic_of, url
from gateway.config.load import load_bridge_config, load_gateway_config
from gateway.core.errors import ConfigError
from gateway.core.model import AmqpConfig, Secret


@pytest.mark.parametrize(
    ("routing_key", "topic"),
    [
        ("sensegate.gw-1.dev_2.data", "sensegate/gw-1/dev_2/data"),
        # RabbitMQ's MQTT plugin swaps '/' and '.': a '.' in a prefix comes back as '.'
        ("city/a.gw.dev.data", "city.a/gw/dev/data"),
        ("", ""),
    ],
)
def test_topic_of_undoes_the_mqtt_plugins_mapping(routing_key: str, topic: str) -> None:
    assert topic_of(routing_key) == topic


def test_the_topic_passes_the_identity_checks() -> None:
    payload = (b'{"gateway":"gw-1","device":"dev_2","measurement":"m","tags":{},'
               b'"readings":[{"ts":1,"values":{"v":1.5}}]}')
    lines = ingest.decode_message(topic_of("sensegate.gw-1.dev_2.data"), payload)
    assert isinstance(lines, list) and len(lines) == 1
    refused = ingest.decode_message(topic_of("sensegate.gw-9.dev_2.data"), payload)
    assert isinstance(refused, ingest.Rejected)


@pytest.mark.parametrize(
    ("unwritten", "delivered", "acked", "expected"),
    [
        (set(), 10, 0, 10),  # all written: everything up to the last delivery
        ({4, 7}, 10, 0, 3),  # 4 not yet written: 1-3 only
        ({4}, 10, 3, None),  # nothing new below the floor
        ({11}, 10, 3, 10),
        (set(), 0, 0, None),  # nothing delivered
    ],
)
def test_cumulative_ack(unwritten: set[int], delivered: int, acked: int,
                        expected: int | None) -> None:
    assert cumulative_ack(unwritten, delivered, acked) == expected


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[tuple[int, bool]] = []

    async def basic_ack(self, tag: int, multiple: bool = False) -> None:
        await asyncio.sleep(0)
        self.sent.append((tag, multiple))


class Tag:
    def __init__(self, mid: int) -> None:
        self.mid = mid
        self.qos = 1


async def test_acks_are_cumulative_and_never_cover_an_unwritten_delivery() -> None:
    channel = FakeChannel()
    consumer = Consumer(channel, "test")
    for tag in range(1, 9):
        consumer.delivered(tag)
    consumer.ack_many([Tag(3), Tag(4)])  # 1-2 still being written: one by one
    consumer.ack_many([Tag(1), Tag(2)])  # now 1-4 are written: one cumulative ack
    consumer.ack_many([Tag(6), Tag(5)])
    await asyncio.sleep(0.01)
    assert channel.sent == [(3, False), (4, False), (4, True), (6, True)]
    acked = {t for t, multiple in channel.sent if not multiple}
    acked |= {t for upto, multiple in channel.sent if multiple for t in range(1, upto + 1)}
    assert acked == {1, 2, 3, 4, 5, 6}  # 7 and 8 were never written: not acknowledged
    consumer.close(None)
    consumer.ack_many([Tag(7)])  # the channel is gone: nothing is sent on it
    await asyncio.sleep(0.01)
    assert (7, False) not in channel.sent and (7, True) not in channel.sent


def test_url_quotes_the_credentials_and_the_vhost() -> None:
    amqp = AmqpConfig(nodes=(("10.0.0.1", 5672),), username="bri dge",
                      password=Secret("p@ss/word"), vhost="/")
    assert url(amqp, "10.0.0.2", 5673) == (
        "amqp://bri%20dge:p%40ss%2Fword@10.0.0.2:5673/%2F?heartbeat=30")


def test_queue_arguments() -> None:
    amqp = AmqpConfig(nodes=(("h", 1),))
    assert queue_arguments(amqp) == {"x-queue-type": "quorum"}
    three = AmqpConfig(nodes=(("h", 1),), replicas=3)
    assert queue_arguments(three)["x-quorum-initial-group-size"] == 3


INFLUX = "influxdb: {url: 'http://127.0.0.1:8086', api: v1, database: x}\n"


def test_bridge_config_with_amqp(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text("amqp:\n  nodes: ['10.0.0.1:5672', 'rabbit-2:5673']\n  prefetch: 200\n"
                    + INFLUX)
    config = load_bridge_config(str(path))
    assert config.mqtt is None
    assert config.amqp is not None
    assert config.amqp.nodes == (("10.0.0.1", 5672), ("rabbit-2", 5673))
    assert (config.amqp.queue, config.amqp.binding, config.amqp.prefetch) == (
        "sensegate", "sensegate.*.*.data", 200)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (INFLUX, "write one of 'mqtt' (a single broker) and 'amqp'"),
        ("mqtt: {host: b}\namqp: {nodes: ['a:1']}\n" + INFLUX, "write one of 'mqtt'"),
        ("amqp: {nodes: ['a:1'], prefetch: 0}\n" + INFLUX, "prefetch"),
        ("amqp: {queue: q}\n" + INFLUX, "nodes"),
    ],
)
def test_bridge_config_refuses(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_bridge_config(str(path))
    assert message in str(err.value.issues)


def test_gateway_mqtt_hosts_are_the_nodes_after_host(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "gateway: {id: gw1, state_dir: /tmp/x}\n"
        "mqtt: {host: a, port: 1884, hosts: ['b:1885', 'a:1884', 'c:1886']}\n"
        "devices:\n  - {name: d, driver: modbus-tcp, host: 127.0.0.1, "
        "points: [{name: v, table: holding, address: 0}]}\n")
    mqtt = load_gateway_config(str(path)).mqtt
    assert mqtt.nodes == (("a", 1884), ("b", 1885), ("c", 1886))


def test_neither_the_gateway_nor_the_bridge_imports_aio_pika_until_the_source_runs() -> None:
    code = ("import sys, gateway.edge.daemon, gateway.bridge.service, gateway.bridge.amqp; "
            "print(sorted(m for m in sys.modules if m.startswith(('aio_pika', 'aiormq'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.strip() == "[]"
