from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from gateway.commands import check, cli
from gateway.config.load import load_gateway_config

SITE = r"""gateway: {id: site-1}
mqtt: {host: broker.example.org, password: '${PW}'}
buses:
  - {name: rs485-a, port: /dev/ttyUSB0, baudrate: 9600}
  - {name: rs485-b, port: /dev/ttyUSB1, baudrate: 1200}
  - {name: spare, port: /dev/ttyUSB2}
devices:
  - name: rws-1
    driver: modbus-tcp
    host: 10.0.0.21
    points:
      - {name: a, table: holding, address: 0, type: float32}
      - {name: b, table: holding, address: 2, type: float32}
      - {name: c, table: input, address: 0}
  - name: loop-7
    driver: modbus-rtu
    bus: rs485-a
    unit: 7
    interval: 2s
    points:
      - {name: n, table: input, address: 0, type: uint32}
  - name: slow-1
    driver: modbus-rtu
    bus: rs485-b
    interval: 100ms
    points:
      - {name: a, table: holding, address: 0, type: float64}
      - {name: b, table: holding, address: 100, type: float64}
  - name: pm-1
    driver: serial-line
    port: /dev/ttyUSB3
    pattern: 'PM25=(?P<pm25>[\d.]+)'
    points: [{name: pm25}]
"""

EXPECTED = """\
gateway.yaml: valid
gateway 'site-1': 4 devices, 7 points, 5 Modbus requests per scan
mqtt: broker.example.org:1883, qos 1, format json, topics sensegate/site-1/...
devices:
  rws-1   modbus-tcp (10.0.0.21:502, unit 1), every 1s, 3 points, 2 requests per scan
  loop-7  modbus-rtu (bus rs485-a, unit 7), every 2s, 1 point, 1 request per scan, \
35.0 ms bus time
  slow-1  modbus-rtu (bus rs485-b, unit 1), every 100ms, 2 points, 2 requests per scan, \
486.7 ms bus time
  pm-1    serial-line (/dev/ttyUSB3), every 1s, 1 point
buses:
  rs485-a: /dev/ttyUSB0 9600 8N1, 1 device, 1 request per scan, 35.0 ms bus time per scan, \
0.50 requests/s, 1.8 % busy at the configured intervals
  rs485-b: /dev/ttyUSB1 1200 8N1, 1 device, 2 requests per scan, 486.7 ms bus time per scan, \
20.00 requests/s, 486.7 % busy at the configured intervals
  spare: /dev/ttyUSB2 9600 8N1, 0 devices
warning: bus 'rs485-b' needs 487 % of its time at the configured intervals: scans will \
overrun; raise the intervals or the baud rate, or split the bus
warning: bus 'spare' has no devices
warning: bus 'rs485-a' uses /dev/ttyUSB0, {HINT}
warning: bus 'rs485-b' uses /dev/ttyUSB1, {HINT}
warning: bus 'spare' uses /dev/ttyUSB2, {HINT}
warning: device 'pm-1' uses /dev/ttyUSB3, {HINT}
""".replace("{HINT}", "a name the kernel gives in plug-in order (it can change at a reboot or "
                    "replug); no /dev/serial/by-id names are present on this machine now; "
                    "plug the adapter in and run check again, or see docs/commissioning.md")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "gateway.yaml").write_text(SITE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PW", "the-broker-password")
    monkeypatch.setenv("SENSEGATE_SERIAL_BY_ID", str(tmp_path / "no-by-id"))
    return "gateway.yaml"


def test_summary(site: str) -> None:
    out = io.StringIO()
    assert check.run(site, out) == 0
    assert out.getvalue() == EXPECTED
    assert "the-broker-password" not in out.getvalue()


def test_cli_check_valid(site: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "-c", site]) == 0
    assert capsys.readouterr().out == EXPECTED


def test_cli_check_invalid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "gateway.yaml").write_text(
        "gateway: {id: g}\nmqtt: {host: b, qos: 5}\ndevices:\n"
        "  - {name: d, driver: modbus-rtu, bus: nope, points: []}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["check", "-c", "gateway.yaml"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "gateway.yaml:2:22: mqtt.qos: 5 is out of range 0..2",
        "gateway.yaml:4:40: devices[0].bus: bus 'nope' is not defined; add it under buses",
        "2 error(s); config not valid",
    ]


def test_commissioning_doc_shows_what_check_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/commissioning.md quotes `check` on config/site-substation.yaml line for line."""
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "commissioning.md").read_text(encoding="utf-8")
    section = doc.partition("## 2. Read the bus-time estimate")[2]
    block = section.partition("```text\n")[2].partition("```")[0].splitlines()
    assert any("bus time" in line for line in block)
    monkeypatch.setenv("MQTT_USER", "u")
    monkeypatch.setenv("MQTT_PASSWORD", "p")
    out = io.StringIO()
    check.run(str(root / "config" / "site-substation.yaml"), out)
    printed = out.getvalue().splitlines()
    assert [line for line in block if line not in printed] == []


GROUPS = r"""gateway: {id: site-2}
mqtt: {host: broker.example.org}
buses:
  - {name: rs485-a, port: /dev/ttyUSB0, baudrate: 9600}
devices:
  - name: mixed
    driver: modbus-rtu
    bus: rs485-a
    interval: 10s
    heartbeat: 15m
    points:
      - {name: slow, table: holding, address: 0, deadband: 0.5}
      - {name: fast, table: coil, address: 0, interval: 1s}
  - name: counter
    driver: modbus-rtu
    bus: rs485-a
    unit: 2
    publish_interval: 1m
    aggregate: [last, count]
    points:
      - {name: vehicles, table: input, address: 0, type: uint32}
"""


def test_summary_counts_interval_groups_and_says_how_devices_publish(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(GROUPS)
    out = io.StringIO()
    assert check.run(str(path), out) == 0
    lines = out.getvalue().splitlines()
    assert any(line.startswith("  mixed ") and "every 1s (1 point), 10s (1 point)" in line
               and "2 requests per scan" in line and "2 points by exception" in line
               for line in lines), lines
    assert any(line.startswith("  counter ") and "publishes every 1m (last, count)" in line
               for line in lines), lines
    # the coil every 1 s, the register every 10 s, the counter every 1 s: 2.1 requests/s
    assert any(line.startswith("  rs485-a:") and "2.10 requests/s" in line for line in lines)


# --- serial ports that change names (issue 19 item 6) ------------------------------------

def _usb_site(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "gateway: {id: site}\nmqtt: {host: broker}\n"
        "buses:\n  - {name: field, port: /dev/ttyUSB0}\n"
        "  - {name: stable, port: /dev/serial/by-id/usb-FTDI_A-if00-port0}\n"
        "devices:\n  - name: m\n    driver: modbus-rtu\n    bus: field\n"
        "    points: [{name: v, table: holding, address: 0}]\n"
        "  - name: rws\n    driver: serial-line\n    port: /dev/ttyACM1\n"
        "    pattern: '(?P<t>\\d+)'\n    points: [{name: t}]\n")
    return path


def test_ttyusb_names_get_a_warning_with_the_stable_name(tmp_path: Path) -> None:
    from gateway.commands.check import port_warnings, stable_names

    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-FTDI_FT232R_A10K-if00-port0").symlink_to("/dev/ttyUSB0")
    (by_id / "usb-Prolific_B-if00-port0").symlink_to("/dev/ttyUSB3")
    names = stable_names(str(by_id))
    assert names == {str(by_id / "usb-FTDI_FT232R_A10K-if00-port0"): "/dev/ttyUSB0",
                     str(by_id / "usb-Prolific_B-if00-port0"): "/dev/ttyUSB3"}
    config = load_gateway_config(str(_usb_site(tmp_path)))
    warnings = port_warnings(config, names)
    assert warnings[0] == (
        "warning: bus 'field' uses /dev/ttyUSB0, a name the kernel gives in plug-in order "
        "(it can change at a reboot or replug); use "
        f"{by_id}/usb-FTDI_FT232R_A10K-if00-port0 (it points at /dev/ttyUSB0 now)")
    assert warnings[1].startswith("warning: device 'rws' uses /dev/ttyACM1, ")
    assert warnings[1].endswith(
        f"stable names present: {by_id}/usb-FTDI_FT232R_A10K-if00-port0 (-> /dev/ttyUSB0), "
        f"{by_id}/usb-Prolific_B-if00-port0 (-> /dev/ttyUSB3)")
    assert len(warnings) == 2  # the by-id bus is fine
    assert "no /dev/serial/by-id names are present" in port_warnings(config, {})[0]
    assert stable_names(str(tmp_path / "missing")) == {}


def test_check_prints_the_port_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.commands import check

    monkeypatch.setenv("SENSEGATE_SERIAL_BY_ID", str(tmp_path / "none"))
    assert check.run(str(_usb_site(tmp_path)), sys.stdout) == 0
    out = capsys.readouterr().out
    assert "warning: bus 'field' uses /dev/ttyUSB0" in out
