"""`sensegate simulate` end to end: a technician's practice site. The simulators serve a
config's devices (TCP, an RS-485 bus on a pty, serial-line sensors each on a pty, a profile
device); `check`, `read --all-orders` and `run` (into a real Mosquitto) work against the
config it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from gateway.config.load import load_gateway_config
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.integration

SITE = """\
gateway: {{id: practice, state_dir: {state}}}
mqtt: {{host: 127.0.0.1, port: {mqtt}}}
buses:
  - {{name: field, port: /dev/ttyUSB0, baudrate: 19200}}
devices:
  - name: plc
    driver: modbus-tcp
    host: 10.0.0.10
    interval: 200ms
    points:
      - {{name: temp, table: holding, address: 0, type: float32, byte_order: CDAB, unit: degC}}
      - {{name: energy, table: holding, address: 2, type: uint64, unit: Wh}}
      - {{name: level, table: input, address: 10, type: int16, scale: 0.1, unit: m}}
      - {{name: pump, table: coil, address: 3}}
      - {{name: label, table: holding, address: 20, type: string, length: 2}}
  - name: meter
    driver: modbus-rtu
    bus: field
    unit: 7
    interval: 200ms
    profile: eastron-sdm630
  - name: wind
    driver: modbus-rtu
    bus: field
    unit: 9
    interval: 200ms
    points:
      - {{name: speed, table: input, address: 0, scale: 0.1, unit: m/s}}
  - name: dust
    driver: serial-line
    port: /dev/ttyUSB1
    request: "R\\r\\n"
    interval: 200ms
    pattern: 'PM25=(?P<pm25>[\\d.]+),PM10=(?P<pm10>[\\d.]+)'
    points:
      - {{name: pm25, unit: ug/m3}}
      - {{name: pm10, unit: ug/m3}}
  - name: aq
    driver: serial-line
    port: /dev/ttyUSB2
    profile: metone-aerocet-531s
    interval: 1s
    timeout: 2s
"""
DEVICES = {"plc", "meter", "wind", "dust", "aq"}


def sensegate(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as b:
        yield b


@pytest.fixture
def practice(tmp_path: Path, broker: Mosquitto) -> Iterator[tuple[Path, str]]:
    site = tmp_path / "site.yaml"
    site.write_text(SITE.format(state=tmp_path / "state", mqtt=broker.port))
    pointed = tmp_path / "practice.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "simulate", "-c", str(site), "-o", str(pointed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None
    printed: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        printed.append(line)
        if line.startswith("simulating"):
            break
    try:
        assert printed and printed[-1].startswith("simulating"), printed
        yield pointed, "".join(printed)
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0


def test_prints_where_each_device_listens(practice: tuple[Path, str]) -> None:
    pointed, printed = practice
    config = load_gateway_config(str(pointed))
    plc = config.device("plc")
    assert plc.host == "127.0.0.1" and plc.port != 502
    assert f"device plc: modbus-tcp 127.0.0.1:{plc.port} unit 1" in printed
    pty = config.bus("field").serial.port
    assert pty.startswith("/dev/pts/")
    assert f"bus field: {pty} with meter (unit 7), wind (unit 9)" in printed
    dust, aq = config.device("dust").serial, config.device("aq").serial
    assert dust is not None and aq is not None
    assert len({pty, dust.port, aq.port}) == 3
    assert f"device dust: serial-line {dust.port} (answering 'R\\r\\n')" in printed
    assert f"device aq: serial-line {aq.port} (a record every 0.5s)" in printed
    assert sensegate("check", "-c", str(pointed)).returncode == 0


def test_read_all_orders_against_the_simulators(practice: tuple[Path, str]) -> None:
    pointed, _ = practice
    result = sensegate("read", "-c", str(pointed), "plc", "--all-orders", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    points = {p["name"]: p for p in doc["points"]}
    assert all(p["quality"] == "good" for p in points.values())
    assert 12.0 <= points["temp"]["value"] <= 24.0  # a plausible temperature
    assert points["label"]["value"] == "SIM"
    assert set(points["energy"]["orders"]) >= {"ABCD", "CDAB", "EFGHABCD"}
    meter = sensegate("read", "-c", str(pointed), "meter")
    assert meter.returncode == 0, meter.stderr
    wind = json.loads(sensegate("read", "-c", str(pointed), "wind", "--json").stdout)
    assert 0.0 <= wind["points"][0]["value"] <= 7.0


def test_read_serial_line_sensors_against_the_simulators(practice: tuple[Path, str]) -> None:
    """The records each pty prints are the ones the device's own pattern reads: a polled
    sensor (request) and a streaming one whose pattern comes from its profile."""
    pointed, _ = practice
    for device, low, high in (("dust", 4.0, 20.0), ("aq", 4.0, 20.0)):
        result = sensegate("read", "-c", str(pointed), device, "--json")
        assert result.returncode == 0, result.stderr
        points = {p["name"]: p for p in json.loads(result.stdout)["points"]}
        assert all(p["quality"] == "good" for p in points.values()), points
        assert low <= points["pm10"]["value"] <= high  # a plausible PM10 in ug/m3
    assert 12.0 <= points["air_temperature"]["value"] <= 24.0
    assert 35.0 <= points["humidity"]["value"] <= 75.0
    assert isinstance(points["status"]["value"], int)


def test_run_publishes_the_simulated_site(practice: tuple[Path, str],
                                          broker: Mosquitto) -> None:
    pointed, _ = practice
    seen: set[str] = set()
    lock = threading.Lock()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.topic.endswith("/data"):
            with lock:
                seen.add(json.loads(msg.payload)["device"])

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="practice-sub")
    client.on_connect = lambda c, *_: c.subscribe("sensegate/#", qos=1)
    client.on_message = on_message
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    gateway = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(pointed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with lock:
                if seen >= DEVICES:
                    break
            time.sleep(0.2)
    finally:
        gateway.terminate()
        _, err = gateway.communicate(timeout=30)
        client.loop_stop()
        client.disconnect()
    assert seen >= DEVICES, err


def test_a_pattern_no_record_can_be_built_for_is_said(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("gateway: {id: practice}\nmqtt: {host: 127.0.0.1}\ndevices:\n"
                    "  - {name: odd, driver: serial-line, port: /dev/ttyUSB1,\n"
                    "     pattern: 'A=(?P<a>\\d+)(?=;)', points: [{name: a}]}\n"
                    "  - {name: ok, driver: serial-line, port: /dev/ttyUSB2,\n"
                    "     pattern: 'A=(?P<a>\\d+)', points: [{name: a}]}\n")
    result = sensegate("simulate", "-c", str(site), "--duration", "1s")
    assert result.returncode == 0, result.stderr
    assert ("device odd: not simulated: no record can be built from its pattern: "
            "a look-ahead is not supported") in result.stderr
    printed = result.stdout.split("--- a config pointing at the simulators:\n")[1]
    assert "name: ok" in printed and "name: odd" not in printed


def test_a_profile_without_a_config(tmp_path: Path) -> None:
    pointed = tmp_path / "meter.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "simulate", "--profile", "tuf-2000m",
         "--profile", "eastron-sdm630", "--profile", "sunspec-inverter-103",
         "-o", str(pointed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        for _ in range(10):
            if proc.stdout.readline().startswith("simulating"):
                break
        for device in ("tuf-2000m", "sunspec-inverter-103", "eastron-sdm630"):
            result = sensegate("read", "-c", str(pointed), device, "--json")
            assert result.returncode == 0, result.stderr
            points = {p["name"]: p for p in json.loads(result.stdout)["points"]}
            assert all(p["quality"] == "good" for p in points.values()), points
        assert 200 <= points["voltage_l1"]["value"] <= 260  # a plausible mains voltage
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0


def _modbus_profiles() -> dict[str, set[str]]:
    """Every shipped profile for the Modbus drivers (a profile with a `pattern` is for
    serial-line sensors, which `simulate --profile` does not serve)."""
    import yaml

    shipped = Path(__file__).resolve().parents[2] / "gateway" / "config" / "sensor_profiles"
    docs = {p.stem: yaml.safe_load(p.read_text()) for p in shipped.glob("*.yaml")}
    return {name: {pt["name"] for pt in doc["points"]}
            for name, doc in sorted(docs.items()) if "pattern" not in doc}


def test_every_shipped_modbus_profile_reads_good_under_the_simulator(tmp_path: Path) -> None:
    """A new profile is covered without listing it: its plan is served and every point
    (every interval group, every table) decodes with quality good."""
    names = _modbus_profiles()
    assert {"siemens-sinamics-v20", "dfrobot-sen0676", "vaisala-wxt530"} <= set(names)
    pointed = tmp_path / "all.yaml"
    args = [a for name in names for a in ("--profile", name)]
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "simulate", *args,
                             "-o", str(pointed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        for _ in range(10 + len(names)):
            if proc.stdout.readline().startswith("simulating"):
                break
        for name in names:
            result = sensegate("read", "-c", str(pointed), name, "--json")
            assert result.returncode == 0, (name, result.stderr)
            points = json.loads(result.stdout)["points"]
            assert {p["name"] for p in points} == names[name]
            bad = {p["name"]: p["quality"] for p in points if p["quality"] != "good"}
            assert not bad, (name, bad)
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
