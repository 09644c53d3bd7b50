"""The bridge's AMQP source (gateway.bridge.amqp): its pure parts, the ack order, the config.

A real 3-node RabbitMQ cluster runs it in tests/integration/test_cluster.py.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bridge import ingest
from gateway.bridge.amqp import AckPlan, Consumer, queue_arguments, topic_of, url
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


class Broker:
    """RabbitMQ's acknowledgement rules on one channel (rabbit_channel:collect_acks): an ack
    of a tag that is not outstanding, also as the tag of a multiple ack, closes the channel."""

    def __init__(self) -> None:
        self.outstanding: list[int] = []

    def deliver(self, tag: int) -> None:
        self.outstanding.append(tag)

    def ack(self, tag: int, multiple: bool) -> None:
        if tag not in self.outstanding:
            raise AssertionError(f"PRECONDITION_FAILED - unknown delivery tag {tag}")
        if multiple:
            self.outstanding = [t for t in self.outstanding if t > tag]
        else:
            self.outstanding.remove(tag)


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_ack_plan_settles_exactly_the_written_deliveries(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 40))
    cuts = sorted(data.draw(st.sets(st.integers(1, n - 1), max_size=8))) if n > 1 else []
    bounds = [0, *cuts, n]
    batches = [list(range(a + 1, b + 1)) for a, b in itertools.pairwise(bounds)]
    order = data.draw(st.permutations(batches))
    unwritten_batch = data.draw(st.sampled_from([None, *range(len(order))]))
    plan, broker = AckPlan(), Broker()
    for tag in range(1, n + 1):
        plan.deliver(tag)
        broker.deliver(tag)
    written: set[int] = set()
    for i, batch in enumerate(order):
        if i == unwritten_batch:
            continue  # e.g. still in a writer when the connection drops
        for tag, multiple in plan.written(batch):
            broker.ack(tag, multiple)
        written.update(batch)
    # everything written is settled, nothing else is
    assert set(broker.outstanding) == set(range(1, n + 1)) - written


def test_ack_plan_sends_one_multiple_ack_for_batches_in_order() -> None:
    plan = AckPlan()
    for tag in range(1, 9):
        plan.deliver(tag)
    assert plan.written([3, 4]) == [(3, False), (4, False)]  # 1-2 still being written
    assert plan.written([1, 2]) == [(2, True)]  # 3 and 4 were settled singly
    assert plan.written([5, 6]) == [(6, True)]
    assert plan.written([8]) == [(8, False)]
    assert plan.written([7]) == [(7, True)]


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


async def test_the_consumer_sends_the_plan_in_order_until_its_channel_is_gone() -> None:
    channel = FakeChannel()
    consumer = Consumer(channel, "test")
    for tag in range(1, 9):
        consumer.delivered(tag)
    consumer.ack_many([Tag(3), Tag(4)])
    consumer.ack_many([Tag(1), Tag(2)])
    consumer.ack_many([Tag(6), Tag(5)])
    await consumer.settle()
    assert channel.sent == [(3, False), (4, False), (2, True), (6, True)]
    consumer.close(None)
    consumer.ack_many([Tag(7)])  # the channel is gone: nothing is sent on it
    await asyncio.sleep(0.01)
    assert channel.sent[-1] == (6, True)


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
