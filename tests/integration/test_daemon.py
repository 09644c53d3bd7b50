"""`sensegate run` as a real process: clean stop, SIGHUP reload, and `kill -9` crashes.

The gateway polls simulated Modbus TCP devices (in their own process) and publishes to a
real Mosquitto; a separate subscriber with a persistent session records every reading by
(device, ts). The crash test reads the outbox file right after each `kill -9` — what is in
it was committed — and checks that all of it reaches the subscriber in the end.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from bench._harness import Proc, SimProcess, gateway_yaml, wait_until
from tests.support.mosquitto import Mosquitto
from tests.support.outbox import committed_readings
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

GATEWAY_ID = "gw-test"


class Collector:
    """A persistent-session QoS 1 subscriber recording (device, ts) of every reading."""

    def __init__(self, port: int, topic: str = "sensegate/#") -> None:
        self.seen: dict[tuple[str, int], int] = {}  # (device, ts) -> times received
        self.status: list[dict[str, object]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"collector-{port}",
            clean_session=False, protocol=paho.MQTTv311,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        with self.lock:
            if msg.topic.endswith("/status"):
                self.status.append(body)
                return
            for reading in body["readings"]:
                key = (body["device"], reading["ts"])
                self.seen[key] = self.seen.get(key, 0) + 1

    def keys(self) -> set[tuple[str, int]]:
        with self.lock:
            return set(self.seen)

    def devices(self) -> set[str]:
        return {device for device, _ in self.keys()}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as b:
        yield b


@pytest.fixture
def sims() -> Iterator[SimProcess]:
    sim = SimProcess(3)
    try:
        yield sim
    finally:
        sim.close()


def write_config(path: Path, state: Path, broker: Mosquitto, devices: list[tuple[str, int]],
                 *, interval: str = "200ms") -> None:
    path.write_text(gateway_yaml(
        gateway_id=GATEWAY_ID, state_dir=state, mqtt_port=broker.port,
        metrics_port=free_port(), devices=devices, interval=interval,
    ))


def committed_rows(state: Path) -> set[tuple[str, int]]:
    """(device, ts) of every reading in the outbox file: what the dead gateway had committed."""
    return committed_readings(str(state))


def test_sigterm_stops_cleanly_and_leaves_offline_status(
    tmp_path: Path, broker: Mosquitto, sims: SimProcess
) -> None:
    config = tmp_path / "gateway.yaml"
    write_config(config, tmp_path / "state", broker, sims.devices()[:1])
    collector = Collector(broker.port)
    gateway = Proc("run", config, tmp_path / "gateway.log").start()
    try:
        log_path = tmp_path / "gateway.log"
        assert wait_until(lambda: len(collector.keys()) >= 5, 30), log_path.read_text()
        assert gateway.stop(timeout=30) == 0
        # The retained status says offline: published on a clean stop (and the last will).
        assert wait_until(lambda: any(s.get("state") == "offline" for s in collector.status), 10)
        assert collector.status[0].get("state") == "online"
        log = (tmp_path / "gateway.log").read_text()
        assert "Traceback" not in log
    finally:
        gateway.kill()
        collector.close()


def test_sighup_reload_adds_removes_and_refuses_a_bad_config(
    tmp_path: Path, broker: Mosquitto, sims: SimProcess
) -> None:
    devices = sims.devices()
    config = tmp_path / "gateway.yaml"
    state = tmp_path / "state"
    write_config(config, state, broker, devices[:1])
    collector = Collector(broker.port)
    gateway = Proc("run", config, tmp_path / "gateway.log").start()
    try:
        assert wait_until(lambda: collector.devices() == {devices[0][0]}, 30)

        write_config(config, state, broker, devices[1:3])  # one removed, two added
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: {devices[1][0], devices[2][0]} <= collector.devices(), 30)
        before = collector.keys()
        time.sleep(1.0)
        after = collector.keys() - before
        assert {d for d, _ in after} == {devices[1][0], devices[2][0]}, "removed device polled"

        config.write_text(config.read_text().replace("driver: modbus-tcp", "driver: modbus-tpc", 1))
        gateway.proc.send_signal(signal.SIGHUP)
        log_path = tmp_path / "gateway.log"
        assert wait_until(lambda: "reload refused" in log_path.read_text(), 15)
        assert "did you mean 'modbus-tcp'" in log_path.read_text()
        seen = len(collector.keys())
        assert wait_until(lambda: len(collector.keys()) > seen + 4, 15), "stopped after bad reload"
        assert gateway.alive()
        assert gateway.stop(timeout=30) == 0
    finally:
        gateway.kill()
        collector.close()


def test_kill_9_loses_nothing_that_was_committed(
    tmp_path: Path, broker: Mosquitto, sims: SimProcess
) -> None:
    rng = random.Random(1764)
    config = tmp_path / "gateway.yaml"
    state = tmp_path / "state"
    write_config(config, state, broker, sims.devices())
    collector = Collector(broker.port)
    gateway = Proc("run", config, tmp_path / "gateway.log")
    committed: set[tuple[str, int]] = set()
    events: list[str] = []
    log_path = tmp_path / "gateway.log"
    try:
        # Crash while the broker is up, while it is down (a backlog builds), and mid-drain.
        for broker_up in (True, False, False, True, True):
            if broker_up:
                broker.start()
            else:
                broker.stop()
            events.append(f"{time.time_ns()} broker {'up' if broker_up else 'down'}")
            gateway.start()
            time.sleep(rng.uniform(1.5, 3.5))
            gateway.kill()
            rows = committed_rows(state)
            events.append(f"{time.time_ns()} kill -9 with {len(rows)} rows in the outbox")
            committed |= rows
        assert committed, "nothing was in the outbox at any kill: the test proves nothing"
        broker.start()
        gateway.start()
        if not wait_until(lambda: committed <= collector.keys(), 60):
            missing = sorted(committed - collector.keys(), key=lambda k: k[1])
            pytest.fail(
                f"{len(missing)} committed readings never arrived; first {missing[:5]}, "
                f"last {missing[-3:]}\n" + "\n".join(events)
            )
        # Stop only once the daemon is up (a SIGTERM during interpreter start-up is not ours).
        assert wait_until(lambda: log_path.read_text().count("started gateway") == 6, 30)
        assert gateway.stop(timeout=30) == 0
        # After a clean stop every reading polled was delivered: nothing is left behind.
        assert committed_rows(state) == set()
        # Duplicates are allowed only as resends of the same (device, ts), never new ts.
        assert all(n >= 1 for n in collector.seen.values())
    finally:
        gateway.kill()
        collector.close()


def test_systemd_notify_watchdog_and_metrics_endpoint(
    tmp_path: Path, broker: Mosquitto, sims: SimProcess
) -> None:
    """Under a (test-made) systemd: READY, STATUS, WATCHDOG at half of WATCHDOG_USEC, and
    STOPPING; meanwhile /metrics counts scans and /healthz says ok."""
    import os
    import socket
    import subprocess
    import urllib.request

    from bench._harness import PYTHON, ROOT

    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(0.5)
    metrics_port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(gateway_yaml(
        gateway_id=GATEWAY_ID, state_dir=tmp_path / "state", mqtt_port=broker.port,
        metrics_port=metrics_port, devices=sims.devices()[:1], interval="200ms",
    ))
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "2000000"}
    proc = subprocess.Popen(
        [PYTHON, "-m", "gateway", "run", "-c", str(config)], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "gateway.log").open("wb"),
    )
    messages: list[str] = []

    def receive_until(predicate: object, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return True
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                pass
        return bool(predicate())  # type: ignore[operator]

    try:
        assert receive_until(lambda: any("READY=1" in m for m in messages), 30)
        assert receive_until(lambda: any("STATUS=" in m for m in messages), 5)
        # WATCHDOG_USEC=2s: pings at least every second, so several within 4 s.
        assert receive_until(lambda: sum("WATCHDOG=1" in m for m in messages) >= 3, 6)

        def scrape(path: str) -> tuple[int, str]:
            url = f"http://127.0.0.1:{metrics_port}{path}"
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read().decode()

        assert wait_until(lambda: "sensegate_scans_total{" in scrape("/metrics")[1], 15)
        status, text = scrape("/metrics")
        assert status == 200
        assert f'sensegate_scans_total{{device="{sims.devices()[0][0]}"}}' in text
        assert "sensegate_outbox_pending_readings" in text
        assert scrape("/healthz") == (200, "ok\n")

        proc.send_signal(signal.SIGTERM)
        assert receive_until(lambda: any("STOPPING=1" in m for m in messages), 15)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()


@pytest.mark.parametrize(
    ("config", "code", "message"),
    [
        pytest.param(
            "gateway: {id: x}\nmqtt: {host: 127.0.0.1}\ndevices:\n"
            "  - {name: a, driver: modbus-tcp, host: 127.0.0.1,\n"
            "     points: [{name: p, table: holding, address: 0, typ: int16}]}\n",
            2, "gateway.yaml:5:53: devices[0].points[0].typ: unknown key 'typ'; "
            "did you mean 'type'?", id="bad-config-exits-2",
        ),
        pytest.param(
            "gateway: {id: x, state_dir: STATE/afile/sub}\nmqtt: {host: 127.0.0.1, port: 1}\n"
            "devices:\n  - {name: a, driver: modbus-tcp, host: 127.0.0.1, port: 1,\n"
            "     points: [{name: p, table: holding, address: 0, type: int16}]}\n",
            1, "gateway failed to start: cannot create state_dir", id="unusable-state-dir-exits-1",
        ),
    ],
)
def test_run_exit_codes(tmp_path: Path, config: str, code: int, message: str) -> None:
    import subprocess

    from bench._harness import PYTHON, ROOT

    (tmp_path / "afile").write_text("a file where a directory should be")
    path = tmp_path / "gateway.yaml"
    path.write_text(config.replace("STATE", str(tmp_path)))
    done = subprocess.run([PYTHON, "-m", "gateway", "run", "-c", "gateway.yaml"], cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_second_gateway_on_the_same_state_dir_exits_1_naming_the_holder(
    tmp_path: Path, broker: Mosquitto, sims: SimProcess
) -> None:
    import subprocess

    from bench._harness import PYTHON, ROOT

    state = tmp_path / "state"
    first_config = tmp_path / "first.yaml"
    write_config(first_config, state, broker, sims.devices()[:1])
    second_config = tmp_path / "second.yaml"
    second_config.write_text(first_config.read_text().replace(GATEWAY_ID, "gw-other"))
    collector = Collector(broker.port)
    first = Proc("run", first_config, tmp_path / "first.log").start()
    try:
        assert wait_until(lambda: len(collector.keys()) >= 3, 30)
        done = subprocess.run([PYTHON, "-m", "gateway", "run", "-c", str(second_config)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        assert (
            f"gateway failed to start: state_dir '{state}' is in use by another gateway "
            f"(pid {first.pid}); each gateway needs a state_dir of its own"
        ) in done.stderr
        assert first.alive()
        seen = len(collector.keys())
        assert wait_until(lambda: len(collector.keys()) > seen + 2, 15)  # undisturbed
        assert first.stop(timeout=30) == 0
        # Released with the first: the second now starts.
        second = Proc("run", second_config, tmp_path / "second.log").start()
        try:
            assert wait_until(lambda: "started gateway 'gw-other'" in
                              (tmp_path / "second.log").read_text(), 30)
            assert second.stop(timeout=30) == 0
        finally:
            second.kill()
    finally:
        first.kill()
        collector.close()
