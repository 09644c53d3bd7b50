from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.load import load_bridge_config, load_gateway_config
from gateway.core.errors import ConfigError
from gateway.core.model import Secret, byte_order_by_meaning

HEAD = "gateway: {id: site-1}\nmqtt: {host: broker}\n"


def _write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _errors(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_gateway_config(_write(tmp_path, text), env=env or {})
    prefix = str(tmp_path) + "/"
    return [str(i).removeprefix(prefix) for i in info.value.issues]


def test_defaults(tmp_path: Path) -> None:
    cfg = load_gateway_config(_write(tmp_path, HEAD + """devices:
  - name: rws-1
    driver: modbus-tcp
    host: 10.0.0.21
    points:
      - {name: t, table: holding, address: 0}
      - {name: c, table: coil, address: 0}
"""), env={})
    assert cfg.id == "site-1" and cfg.source.endswith("gateway.yaml")
    m = cfg.mqtt
    assert (m.port, m.client_id, m.qos, m.format, m.topic_prefix, m.keepalive) == (
        1883, "sensegate-site-1", 1, "json", "sensegate", 30.0)
    assert m.tls is None and m.password is None and m.username is None
    assert cfg.outbox.max_bytes == 512 * 1024**2
    assert cfg.outbox.max_message_bytes == 256 * 1024
    assert cfg.outbox.commit_interval == pytest.approx(0.2)
    assert cfg.metrics is None and cfg.buses == () and cfg.tags == {}
    assert cfg.state_dir == "/var/lib/sensegate"
    d = cfg.devices[0]
    assert (d.interval, d.timeout, d.retries, d.measurement, d.port, d.unit) == (
        1.0, 1.0, 1, "rws-1", 502, 1)
    assert (d.max_gap, d.max_registers, d.profile, d.serial, d.bus) == (10, 125, None, None, None)
    t, c = d.points
    assert (t.type, t.byte_order, t.scale, t.offset, t.unit) == ("uint16", "ABCD", 1.0, 0.0, None)
    assert c.type == "bool"


def test_tls_changes_the_default_port(tmp_path: Path) -> None:
    cfg = load_gateway_config(_write(tmp_path, """gateway: {id: g}
mqtt: {host: broker, tls: {ca_file: /etc/ca.pem}}
devices: []
"""), env={})
    assert cfg.mqtt.port == 8883
    assert cfg.mqtt.tls is not None and cfg.mqtt.tls.ca_file == "/etc/ca.pem"


@pytest.mark.parametrize(("metrics", "host", "port"), [
    pytest.param("{}", "127.0.0.1", 9108, id="default"),
    pytest.param("{listen: '0.0.0.0:9200'}", "0.0.0.0", 9200, id="host-port"),
    pytest.param("{listen: 9300}", "127.0.0.1", 9300, id="port-only"),
    pytest.param("{listen: ':9400'}", "0.0.0.0", 9400, id="all-interfaces"),
    pytest.param("{listen: '[::1]:9500'}", "::1", 9500, id="ipv6"),
])
def test_metrics_listen(tmp_path: Path, metrics: str, host: str, port: int) -> None:
    cfg = load_gateway_config(_write(tmp_path, HEAD + f"metrics: {metrics}\ndevices: []\n"),
                              env={})
    assert cfg.metrics is not None and (cfg.metrics.host, cfg.metrics.port) == (host, port)


@pytest.mark.parametrize(("written", "order"), [
    pytest.param("ABCD", "ABCD", id="abcd"),
    pytest.param("big", "ABCD", id="big"),
    pytest.param("MSW-BE", "ABCD", id="msw-be"),
    pytest.param("little", "DCBA", id="little"),
    pytest.param("LSW-LE", "DCBA", id="lsw-le"),
    pytest.param("MSW-LE", "BADC", id="msw-le"),
    pytest.param("LSW-BE", "CDAB", id="lsw-be"),
    pytest.param("cdab", "CDAB", id="lower-case"),
    pytest.param("word-swap", "CDAB", id="word-swap"),
    pytest.param("Word Swap", "CDAB", id="word-swap-spaced"),
    pytest.param("word_swap", "CDAB", id="word-swap-underscore"),
    pytest.param("byte-swap", "BADC", id="byte-swap"),
    pytest.param("swap-bytes", "BADC", id="swap-bytes"),
    pytest.param("big-endian-byte-swap", "BADC", id="modbus-poll-big-byte-swap"),
    pytest.param("little-endian-byte-swap", "CDAB", id="modbus-poll-little-byte-swap"),
    pytest.param("little-endian", "DCBA", id="little-endian"),
    pytest.param("big-endian", "ABCD", id="big-endian"),
    pytest.param("3412", "CDAB", id="digits-3412"),
    pytest.param("2143", "BADC", id="digits-2143"),
    pytest.param("4321", "DCBA", id="digits-4321"),
])
def test_byte_order_aliases(tmp_path: Path, written: str, order: str) -> None:
    cfg = load_gateway_config(_write(tmp_path, HEAD + f"""devices:
  - name: d
    driver: modbus-tcp
    host: h
    points: [{{name: p, table: holding, address: 0, type: float32, byte_order: {written}}}]
"""), env={})
    assert cfg.devices[0].points[0].byte_order == order


def test_device_byte_order_is_the_points_default(tmp_path: Path) -> None:
    cfg = load_gateway_config(_write(tmp_path, HEAD + """devices:
  - name: d
    driver: modbus-tcp
    host: h
    byte_order: little
    points:
      - {name: a, table: holding, address: 0, type: float32}
      - {name: b, table: holding, address: 2, type: float32, byte_order: CDAB}
"""), env={})
    assert [p.byte_order for p in cfg.devices[0].points] == ["DCBA", "CDAB"]


def test_rtu_and_serial_line_devices(tmp_path: Path) -> None:
    cfg = load_gateway_config(_write(tmp_path, HEAD + r"""buses:
  - {name: rs485-a, port: /dev/ttyUSB0, baudrate: 19200, parity: even, frame_gap: 5ms}
devices:
  - {name: loop-7, driver: modbus-rtu, bus: rs485-a, unit: 7,
     points: [{name: n, table: input, address: 0, type: int32}]}
  - {name: gw-1, driver: modbus-rtu-over-tcp, host: 10.0.0.9, unit: 2,
     points: [{name: n, table: input, address: 0}]}
  - name: pm-1
    driver: serial-line
    port: /dev/ttyUSB1
    baudrate: 2400
    parity: O
    request: "R\r\n"
    pattern: 'PM25=(?P<pm25>[\d.]+)'
    points: [{name: pm25}]
"""), env={})
    bus = cfg.bus("rs485-a")
    assert (bus.serial.port, bus.serial.baudrate, bus.serial.parity) == ("/dev/ttyUSB0", 19200, "E")
    assert bus.frame_gap == pytest.approx(0.005) and bus.turnaround == pytest.approx(0.01)
    loop = cfg.device("loop-7")
    assert (loop.bus, loop.unit, loop.host, loop.port) == ("rs485-a", 7, None, None)
    assert cfg.device("gw-1").port == 502
    pm = cfg.device("pm-1")
    assert pm.serial is not None and (pm.serial.port, pm.serial.baudrate, pm.serial.parity) == (
        "/dev/ttyUSB1", 2400, "O")
    assert pm.request == b"R\r\n"
    assert pm.pattern == r"PM25=(?P<pm25>[\d.]+)"
    assert pm.points[0].type == "float64" and pm.points[0].table is None


SERIAL_DEVICE = r"""devices:
  - name: pm-1
    driver: serial-line
    port: /dev/ttyUSB1
    pattern: 'PM25=(?P<pm25>[\d.]+)'
    points: [{name: pm25}]
"""


@pytest.mark.parametrize(("written", "sent"), [
    pytest.param(r'"R\r\n"', b"R\r\n", id="double-quoted-yaml-escapes"),
    pytest.param(r"'R\r\n'", b"R\r\n", id="single-quoted"),
    pytest.param(r"R\r\n", b"R\r\n", id="plain-scalar"),
    pytest.param(r'"R\\r\\n"', b"R\r\n", id="double-quoted-escaped-backslashes"),
    pytest.param(r"'\x02READ\x03\t1'", b"\x02READ\x03\t1", id="hex-and-tab"),
    pytest.param(r"'C:\\dir'", b"C:\\dir", id="backslash"),
    pytest.param(r"'\xFF\xfe'", b"\xff\xfe", id="hex-any-case-raw-bytes"),
    pytest.param("'Grüße'", "Grüße".encode(), id="non-ascii-utf8"),
])
def test_request_escapes_whatever_the_quoting(tmp_path: Path, written: str, sent: bytes) -> None:
    text = HEAD + SERIAL_DEVICE + f"    request: {written}\n"
    cfg = load_gateway_config(_write(tmp_path, text), env={})
    assert cfg.device("pm-1").request == sent


@pytest.mark.parametrize(("written", "message"), [
    pytest.param(r"'R\q'", r"'R\q' has an unknown escape '\q' at position 1; use \r, \n, \t, "
                           r"\xHH or \\", id="unknown-escape"),
    pytest.param(r"'R\x4'", r"'R\x4' has an unknown escape '\x4' at position 1; use \r, \n, "
                            r"\t, \xHH or \\", id="short-hex"),
    pytest.param(r"'R\'", r"'R\' has an unknown escape '\' at position 1; use \r, \n, \t, "
                          r"\xHH or \\", id="trailing-backslash"),
])
def test_bad_request_escapes_are_config_errors(
    tmp_path: Path, written: str, message: str
) -> None:
    text = HEAD + SERIAL_DEVICE + f"    request: {written}\n"
    assert _errors(tmp_path, text) == [f"gateway.yaml:9:14: devices[0].request: {message}"]


def test_invalid_values(tmp_path: Path) -> None:
    cfg = load_gateway_config(_write(tmp_path, HEAD + """devices:
  - name: rws-1
    driver: modbus-tcp
    host: 10.0.0.21
    points:
      - {name: t, table: input, address: 0, type: int16, invalid_values: [32767, -32768.0]}
      - {name: w, table: input, address: 1, invalid_values: [65535]}
      - {name: f, table: input, address: 2, type: float32, invalid_values: [-9999, 1.5]}
      - {name: n, table: input, address: 4}
"""), env={})
    t, w, f, n = cfg.devices[0].points
    assert t.invalid_values == (32767, -32768) and all(type(v) is int for v in t.invalid_values)
    assert w.invalid_values == (65535,)
    assert f.invalid_values == (-9999.0, 1.5)
    assert n.invalid_values == ()


def test_invalid_values_errors(tmp_path: Path) -> None:
    assert _errors(tmp_path, HEAD + """devices:
  - name: rws-1
    driver: modbus-tcp
    host: 10.0.0.21
    points:
      - {name: a, table: input, address: 0, type: int16, invalid_values: [32767, 65535]}
      - {name: b, table: input, address: 1, invalid_values: [-1, 2.5]}
      - {name: c, table: coil, address: 0, invalid_values: [1]}
      - {name: d, table: input, address: 2, invalid_values: [x]}
""") == [
        "gateway.yaml:8:82: devices[0].points[0].invalid_values[1]: 65535 is out of range "
        "-32768..32767 of 'int16': the point can never read it",
        "gateway.yaml:9:62: devices[0].points[1].invalid_values[0]: -1 is out of range "
        "0..65535 of 'uint16': the point can never read it",
        "gateway.yaml:9:66: devices[0].points[1].invalid_values[1]: 2.5 is not an integer, "
        "and a 'uint16' point reads only integers",
        "gateway.yaml:10:44: devices[0].points[2].invalid_values: 'invalid_values' does not "
        "apply to bool points",
        "gateway.yaml:11:62: devices[0].points[3].invalid_values[0]: 'x' is not a number",
    ]


def test_strings_keep_their_source_text(tmp_path: Path) -> None:
    cfg = load_gateway_config(_write(tmp_path, """gateway: {id: 017, tags: {floor: 3}}
mqtt: {host: broker, username: 0042}
devices: []
"""), env={})
    assert cfg.id == "017" and cfg.tags == {"floor": "3"} and cfg.mqtt.username == "0042"


def test_secrets_become_secret_and_never_appear_in_errors(tmp_path: Path) -> None:
    env = {"PW": "correct-horse-battery", "USER": "alice-the-user"}
    text = HEAD.replace("{host: broker}", "{host: broker, username: '${USER}', password: '${PW}'}")
    cfg = load_gateway_config(_write(tmp_path, text + "devices: []\n"), env=env)
    assert cfg.mqtt.password == Secret("correct-horse-battery")
    assert "correct-horse" not in repr(cfg)
    errors = _errors(tmp_path, "gateway: {id: g}\nmqtt:\n  host: h\n  qos: ${PW}\n"
                               "  port: ${USER}\n  format: ${PW}\ndevices: []\n", env)
    assert errors == [
        "gateway.yaml:4:8: mqtt.qos: the value of ${PW} is not an integer",
        "gateway.yaml:5:9: mqtt.port: the value of ${USER} is not an integer",
        "gateway.yaml:6:11: mqtt.format: the value of ${PW} is not a payload format; "
        "expected one of json, influx",
    ]


def test_a_literal_password_is_never_quoted(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "gateway: {id: g}\nmqtt: {host: h, password: [hunter2]}\n"
                               "devices: []\n")
    assert errors == ["gateway.yaml:2:27: mqtt.password: expected a string, got a list"]


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_gateway_config("/nonexistent/gateway.yaml", env={})
    assert str(info.value) == (
        "/nonexistent/gateway.yaml:1:1: cannot read file: no such file or directory")


def test_a_thousand_devices_load(tmp_path: Path) -> None:
    lines = [HEAD, "devices:\n"]
    for i in range(1000):
        lines.append(f"  - {{name: d{i}, driver: modbus-tcp, host: 10.0.{i // 250}.{i % 250}, "
                     "points: [{name: a, table: holding, address: 0, type: float32}, "
                     "{name: b, table: input, address: 4}]}\n")
    cfg = load_gateway_config(_write(tmp_path, "".join(lines)), env={})
    assert len(cfg.devices) == 1000 and cfg.devices[-1].name == "d999"


BRIDGE_V2 = """mqtt: {host: broker, password: '${MQTT_PW}'}
influxdb:
  url: http://127.0.0.1:8086
  org: city
  bucket: sensing
  token: ${INFLUX_TOKEN}
"""


def test_bridge_defaults(tmp_path: Path) -> None:
    cfg = load_bridge_config(_write(tmp_path, BRIDGE_V2, "bridge.yaml"),
                             env={"MQTT_PW": "pw-pw-pw", "INFLUX_TOKEN": "tok-tok-tok"})
    m, i = cfg.mqtt, cfg.influxdb
    assert (m.host, m.port, m.client_id, m.subscribe, m.shared_group, m.qos) == (
        "broker", 1883, "sensegate-bridge", "sensegate/+/+/data", None, 1)
    assert m.password == Secret("pw-pw-pw") and i.token == Secret("tok-tok-tok")
    assert (i.api, i.org, i.bucket, i.batch_size, i.flush_interval) == (
        "v2", "city", "sensing", 5000, 1.0)
    assert cfg.state_dir == "/var/lib/sensegate-bridge" and cfg.metrics is None


def test_bridge_metrics_default_port(tmp_path: Path) -> None:
    cfg = load_bridge_config(_write(tmp_path, BRIDGE_V2 + "metrics: {}\n", "bridge.yaml"),
                             env={"MQTT_PW": "x", "INFLUX_TOKEN": "y"})
    assert cfg.metrics is not None and cfg.metrics.port == 9109


@pytest.mark.parametrize(("influx", "errors"), [
    pytest.param("{url: 'http://i:8086', api: v2}",
                 ["bridge.yaml:2:11: influxdb: missing required key 'org' for api 'v2'",
                  "bridge.yaml:2:11: influxdb: missing required key 'bucket' for api 'v2'"],
                 id="v2-needs-org-and-bucket"),
    pytest.param("{url: 'http://i:8086', api: v1, bucket: b}",
                 ["bridge.yaml:2:11: influxdb: missing required key 'database' for api 'v1'",
                  "bridge.yaml:2:43: influxdb.bucket: 'bucket' does not apply to api 'v1'"],
                 id="v1-needs-database"),
    pytest.param("{url: 'http://i:8086', api: v2, org: o, bucket: b, create_database: false}",
                 ["bridge.yaml:2:62: influxdb.create_database: 'create_database' does not "
                  "apply to api 'v2'"],
                 id="create-database-is-v1"),
    pytest.param("{url: 'i:8086', api: v3, database: x}",
                 ["bridge.yaml:2:17: influxdb.url: 'i:8086' is not a valid url; write "
                  "http://HOST:PORT",
                  "bridge.yaml:2:32: influxdb.api: 'v3' is not an InfluxDB API; expected one "
                  "of v1, v2"],
                 id="bad-url-and-api"),
])
def test_bridge_errors(tmp_path: Path, influx: str, errors: list[str]) -> None:
    path = _write(tmp_path, f"mqtt: {{host: broker}}\ninfluxdb: {influx}\n", "bridge.yaml")
    with pytest.raises(ConfigError) as info:
        load_bridge_config(path, env={})
    assert [str(i).removeprefix(str(tmp_path) + "/") for i in info.value.issues] == errors


def test_wxt530_profile_marks_its_sentinels_invalid(tmp_path: Path) -> None:
    """The guide's "invalid or unavailable" values: 32767 in signed, 65535 in unsigned
    registers (a WXT532 has no PTU module: its dew point reads 32767)."""
    from gateway.core.decode import build_decoder

    cfg = load_gateway_config(_write(tmp_path, HEAD + """devices:
  - {name: rws-1, driver: modbus-rtu-over-tcp, host: 10.0.0.9, profile: vaisala-wxt530}
"""), env={})
    points = {p.name: p for p in cfg.devices[0].points}
    assert {p.invalid_values for p in points.values() if p.type == "int16"} == {(32767,)}
    assert points["wind_quality"].invalid_values == (65535,)
    assert build_decoder(points["dew_point"])([0x7FFF]) == (None, "invalid")
    assert build_decoder(points["dew_point"])([0xFF85]) == (pytest.approx(-12.3), "good")
    assert build_decoder(points["wind_quality"])([0xFFFF]) == (None, "invalid")


@pytest.mark.parametrize(("written", "meant"), [
    pytest.param("CDBA", "CDAB", id="CDBA-is-a-word-swap"),
    pytest.param("DCAB", "DCBA", id="DCAB-words-and-bytes-swapped"),
    pytest.param("BACD", "BADC", id="BACD-byte-swap"),
    pytest.param("ABDC", "ABCD", id="ABDC-words-in-order"),
    pytest.param("3421", "CDAB", id="digits"),
])
def test_a_misspelt_byte_order_is_read_by_meaning(written: str, meant: str) -> None:
    assert byte_order_by_meaning(written) == meant


def test_byte_order_by_meaning_leaves_other_words_to_the_spelling_hint() -> None:
    assert byte_order_by_meaning("middle") is None
    assert byte_order_by_meaning("ABCC") is None
