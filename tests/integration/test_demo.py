"""`sensegate demo` end to end: a broker outage in the middle and nothing lost at the end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DEVICES = {"rws-1", "traffic-1", "meter-1", "th-cabinet", "th-outdoor", "aq-1"}
DEVICE_LINE = re.compile(
    r"^demo: device=(?P<name>\S+) driver=(?P<driver>\S+) polled=(?P<polled>\d+) "
    r"delivered=(?P<delivered>\d+) received=(?P<received>\d+) lost=(?P<lost>-?\d+) "
    r"bad_points=(?P<bad>\d+)$"
)
TOTAL_LINE = re.compile(r"^demo: polled=(\d+) delivered=(\d+) received=(\d+) lost=(-?\d+)$")


def test_demo_survives_a_broker_outage_without_losing_readings() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SENSEGATE_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--duration", "25s", "--outage", "6s",
         "--no-live"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )
    detail = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, detail

    lines = proc.stdout.splitlines()
    devices = {m["name"]: m for m in map(DEVICE_LINE.match, lines) if m}
    assert set(devices) == DEVICES, detail
    for name, m in devices.items():
        assert int(m["polled"]) > 0, f"{name} was never polled\n{detail}"
        assert m["delivered"] == m["polled"], f"{name} lost readings\n{detail}"
        # what the independent subscriber counted, not only what the gateway was acked
        assert m["received"] == m["polled"], f"{name}: readings never arrived\n{detail}"
        assert m["lost"] == "0", detail
    assert {m["driver"] for m in devices.values()} == {"modbus-tcp", "modbus-rtu",
                                                       "serial-line"}

    totals = [m for m in map(TOTAL_LINE.match, lines) if m]
    assert len(totals) == 1 and lines[-1] == totals[0].group(0), detail
    polled, delivered, received, lost = (int(g) for g in totals[0].groups())
    assert polled == delivered == received > 0 and lost == 0, detail
    assert polled == sum(int(m["polled"]) for m in devices.values())

    # The outage happened, and the gateway noticed it and came back.
    assert "broker outage of 6s" in proc.stdout, detail
    assert re.search(r"broker=down .*mqtt=disconnected", proc.stdout), detail
    assert "mqtt broker back on port" in proc.stderr, detail

    # Nothing left behind: the temp dir (state_dir's parent) is gone.
    state = re.search(r"outbox in (\S+)/state", proc.stderr)
    assert state is not None, detail
    assert not Path(state.group(1)).exists()


INFLUX_LINE = re.compile(r"^demo: influxdb=\S+ database=(\S+) points_written=(\d+) "
                         r"dead_letters=(\d+)$")


def test_demo_with_influx_stores_every_delivered_reading() -> None:
    from tests.support.influxdb import InfluxDB

    with InfluxDB(database="unused") as db:
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", "demo", "--duration", "12", "--no-live",
             "--influx", db.url],
            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True,
            text=True, timeout=90,
        )
        detail = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        assert proc.returncode == 0, detail
        lines = proc.stdout.splitlines()
        totals = [m for m in map(TOTAL_LINE.match, lines) if m]
        stored = [m for m in map(INFLUX_LINE.match, lines) if m]
        assert len(totals) == 1 and len(stored) == 1, detail
        delivered = int(totals[0].group(2))
        assert int(totals[0].group(3)) == delivered, detail
        database, written, dead = stored[0].groups()
        assert delivered > 0 and int(written) == delivered and dead == "0", detail
        # one point per delivered scan, counted back from InfluxDB, device by device (rows,
        # not a field's count: with report by exception no field need be in every scan)
        per_device = {m["name"]: int(m["delivered"]) for m in map(DEVICE_LINE.match, lines)
                      if m}
        assert per_device and set(per_device) == DEVICES, detail
        counted: dict[str, int] = {}
        for series in db.query(f'SELECT * FROM "{database}"../.*/ GROUP BY "device"')[
                "results"][0]["series"]:
            device = series["tags"]["device"]
            counted[device] = counted.get(device, 0) + len(series["values"])
        assert counted == per_device, detail


class _RecordingPublisher:
    """Stands in for gateway.edge.publish.Publisher and keeps what it was built with."""

    built: list[dict[str, object]] = []

    def __init__(self, config: object, outbox: object, **options: object) -> None:
        self.built.append(options)
        self.connected = False

    async def run(self) -> None:
        return None

    async def stop(self, timeout: float) -> None:
        return None

    def on_connect(self, callback: object) -> None:
        return None

    def subscribe(self, topic: str, handler: object) -> None:
        return None


async def test_daemon_forwards_publisher_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo tunes the publisher through `Daemon(publisher_options=...)`, not by
    reaching into its private attributes."""
    import gateway.edge.publish
    from gateway.edge.daemon import Daemon

    monkeypatch.setattr(gateway.edge.publish, "Publisher", _RecordingPublisher)
    _RecordingPublisher.built.clear()
    config = tmp_path / "gateway.yaml"
    config.write_text(f"gateway: {{id: gw, state_dir: {tmp_path / 'state'}}}\n"
                      "mqtt: {host: 127.0.0.1}\ndevices: []\n")
    daemon = Daemon(str(config), install_signals=False,
                    publisher_options={"reconnect_max": 2.0, "window": 7})
    await daemon.startup()
    await daemon.shutdown()
    assert len(_RecordingPublisher.built) == 1
    options = _RecordingPublisher.built[0]
    assert (options["reconnect_max"], options["window"]) == (2.0, 7)
    assert "metrics" in options
