"""Edge aggregation in `sensegate run` across a SIGHUP reload and a clean restart.

The simulated device's holding 0-1 count its reads (one per scan), so each published window
says exactly which reads it holds: ``seq_min .. seq_max``, ``seq_count`` of them. No timing
is asserted, only what holds by construction: every window counts each of its reads once, a
reload (which restarts the device's scan loop) loses no read from its window, and a restart
loses exactly the partial window it interrupted (SPEC §8, docs/reporting.md).
"""

from __future__ import annotations

import itertools
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from bench._harness import Proc, SimProcess, gateway_yaml, wait_until
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

NS = 1_000_000_000


class Windows:
    """A QoS 1 subscriber keeping every published reading (a window) by ts."""

    def __init__(self, port: int) -> None:
        self.readings: dict[int, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="windows",
                                  protocol=paho.MQTTv311)
        self.client.on_connect = lambda c, *_: c.subscribe("sensegate/+/+/data", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        with self.lock:
            for reading in body["readings"]:
                self.readings[reading["ts"]] = {**reading, "tags": body["tags"]}

    def sorted(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self.readings[ts] for ts in sorted(self.readings)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as b:
        yield b


def config_text(state: Path, broker: Mosquitto, devices: list[tuple[str, int]], site: str
                ) -> str:
    text = gateway_yaml(gateway_id="gw-agg", state_dir=state, mqtt_port=broker.port,
                        metrics_port=free_port(), devices=devices, interval="200ms",
                        timeout="5s")
    return text.replace("    measurement:", "    publish_interval: 1s\n"
                        "    aggregate: [min, max, last, count]\n"
                        f"    tags: {{site: {site}}}\n    measurement:")


def test_windows_across_a_reload_and_a_restart(tmp_path: Path, broker: Mosquitto) -> None:
    sim = SimProcess(1)
    state = tmp_path / "state"
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(state, broker, sim.devices(), "a"))
    windows = Windows(broker.port)
    log = tmp_path / "gateway.log"
    gateway = Proc("run", config, log).start()
    try:
        assert wait_until(lambda: len(windows.sorted()) >= 3, 60), log.read_text()
        # a reload that changes the device (a tag): its scan loop restarts, its window stays
        config.write_text(config_text(state, broker, sim.devices(), "b"))
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reloaded: 1 devices" in log.read_text(), 30)
        assert wait_until(lambda: sum(w["tags"]["site"] == "b" for w in windows.sorted()) >= 3,
                          60)
        assert gateway.stop(timeout=30) == 0
        before_restart = len(windows.sorted())
        gateway.start()
        assert wait_until(lambda: len(windows.sorted()) >= before_restart + 3, 60)
        assert gateway.stop(timeout=30) == 0
    finally:
        gateway.kill()
        windows.close()
        sim.close()

    published = windows.sorted()
    for w in published:
        assert w["ts"] % NS == 0  # the window's end, on the wall-clock grid of 1 s
        v = w["values"]
        assert v["seq_count"] == v["seq_max"] - v["seq_min"] + 1, w  # each read once
        assert v["seq_last"] == v["seq_max"]  # a counter: exact, and its last is its max
        assert isinstance(v["seq_last"], int)
    assert published[0]["values"]["seq_min"] == 1  # the first read of the simulator
    gaps = [(a["ts"], b["values"]["seq_min"] - a["values"]["seq_max"] - 1)
            for a, b in itertools.pairwise(published)]
    lost = [(ts, n) for ts, n in gaps if n]
    # one gap only: the partial window the restart interrupted (its reads, at least one);
    # the windows around the reload lost nothing
    assert len(lost) == 1 and lost[0][1] >= 1, gaps
    assert lost[0][0] == published[before_restart - 1]["ts"]
    assert {w["tags"]["site"] for w in published} == {"a", "b"}
