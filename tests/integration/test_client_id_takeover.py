"""Two gateways with one MQTT client id (issue 14, item 16): against a real Mosquitto, each
connection takes the other's session over; the log says so and names the client id."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from gateway.edge.publish import TAKEOVER_AFTER, closed_after_connect
from tests.integration.test_publish import gw_config, running
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("times", "takeover"), [(1, False), (TAKEOVER_AFTER - 1, False),
                                                 (TAKEOVER_AFTER, True), (10, True)])
def test_wording(times: int, takeover: bool) -> None:
    line = closed_after_connect("broker.example.org", 1883, "sensegate-gw-1", times)
    assert "'sensegate-gw-1'" in line and "broker.example.org:1883" in line
    assert line.startswith("another client took over the session") is takeover


async def test_a_second_gateway_with_the_same_client_id_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sensegate.publish")
    with Mosquitto() as broker:
        first = gw_config(broker.port, tmp_path / "a")
        second = gw_config(broker.port, tmp_path / "b")
        assert first.mqtt.client_id == second.mqtt.client_id == "sensegate-gw-1"
        async with running(first), running(second):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(
                r.getMessage().startswith("another client took over the session")
                for r in caplog.records
            ):
                await asyncio.sleep(0.1)
    lines = [r.getMessage() for r in caplog.records]
    takeover = [line for line in lines if line.startswith("another client took over")]
    assert takeover, "\n".join(lines)
    assert takeover[0].startswith(
        f"another client took over the session of client id 'sensegate-gw-1' at "
        f"127.0.0.1:{broker.port} ({TAKEOVER_AFTER} sessions in a row closed")
    assert not any("disconnected during message iteration" in line for line in lines)
