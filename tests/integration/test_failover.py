"""The gateway's publisher across `mqtt.hosts`: it skips a node that is down, moves to the
next when its node is killed -9, keeps its client id, and sends again what was not
acknowledged. Two real Mosquittos stand in for a cluster's nodes (each with a subscriber
recording what it delivered)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from tests.integration.test_publish import Collector, add, gw_config, running, wait_for
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


async def test_publisher_moves_to_the_next_node_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sensegate.publish")
    dead = free_port()  # nothing listens here: the first node is down from the start
    with Mosquitto() as a, Mosquitto() as b:
        config = gw_config(dead, tmp_path)
        mqtt = dataclasses.replace(config.mqtt, hosts=(("127.0.0.1", a.port),
                                                       ("127.0.0.1", b.port)))
        config = dataclasses.replace(config, mqtt=mqtt)
        async with Collector(a.port) as on_a, Collector(b.port) as on_b, \
                running(config) as (outbox, publisher):
            await wait_for(lambda: publisher.connected)
            assert f"connected to mqtt broker 127.0.0.1:{a.port}" in caplog.text
            for ts in range(1, 51):
                add(outbox, "d", ts)
            await wait_for(lambda: outbox.stats().pending_readings == 0)
            a.stop(kill=True)  # kill -9 of the node the gateway is connected to
            for ts in range(51, 101):
                add(outbox, "d", ts)
            await wait_for(lambda: outbox.stats().pending_readings == 0)
            assert f"connected to mqtt broker 127.0.0.1:{b.port}" in caplog.text
            everything = {("d", ts) for ts in range(1, 101)}
            await wait_for(lambda: set(on_a.readings()) | set(on_b.readings()) == everything)
            assert {ts for _, ts in on_b.readings()} >= set(range(51, 101))
        # One client id on every node.
        assert caplog.text.count(f"as {config.mqtt.client_id!r}") >= 2
