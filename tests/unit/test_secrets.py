"""No secret reaches a log line or an error, in any form; other values read as themselves."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from gateway.config.load import load_bridge_config, load_gateway_config
from gateway.core import secrets
from gateway.core.errors import ConfigError
from gateway.runtime import logs

PASSWORD = "p@ss w0rd/+secret"


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    secrets.clear()
    yield
    secrets.clear()


@pytest.mark.parametrize("form", [
    pytest.param(PASSWORD, id="raw"),
    pytest.param(base64.b64encode(PASSWORD.encode()).decode(), id="base64"),
    pytest.param(base64.b64encode(PASSWORD.encode()).decode().rstrip("="), id="base64-unpadded"),
    pytest.param(base64.urlsafe_b64encode(PASSWORD.encode()).decode(), id="base64-urlsafe"),
    pytest.param(quote(PASSWORD, safe=""), id="url-encoded"),
    pytest.param("p%40ss+w0rd%2F%2Bsecret", id="url-encoded-plus"),
])
def test_every_form_of_a_secret_is_scrubbed(form: str) -> None:
    secrets.register(PASSWORD)
    assert secrets.scrub(f"before {form} after") == "before *** after"
    assert logs.scrub(f"x{form}y") == "x***y"  # the log formatter uses the same registry


def test_http_basic_credentials_are_scrubbed_as_the_header_sends_them() -> None:
    secrets.register_basic("ingest", PASSWORD)
    header = base64.b64encode(f"ingest:{PASSWORD}".encode()).decode()
    assert secrets.scrub(f"echo: Authorization: Basic {header}") == \
        "echo: Authorization: Basic ***"


def test_short_values_are_not_registered() -> None:
    secrets.register("ab")
    assert secrets.scrub("ab abc") == "ab abc"


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_the_bridge_registers_v1_credentials_in_every_form(tmp_path: Path) -> None:
    path = _write(tmp_path, "bridge.yaml", (
        "mqtt: {host: broker}\n"
        "influxdb: {url: 'http://influx:8086', api: v1, database: sensing,\n"
        "           username: ingest, password: '${INFLUX_PASSWORD}'}\n"))
    config = load_bridge_config(path, env={"INFLUX_PASSWORD": PASSWORD})
    assert config.influxdb.password is not None
    header = base64.b64encode(f"ingest:{PASSWORD}".encode()).decode()
    line = f"server echoed Authorization: Basic {header} for user ingest at influx:8086"
    assert logs.scrub(line) == "server echoed Authorization: Basic *** for user ingest at " \
                               "influx:8086"


def test_credentials_in_a_url_are_registered(tmp_path: Path) -> None:
    path = _write(tmp_path, "bridge.yaml", (
        "mqtt: {host: broker}\n"
        "influxdb: {url: 'http://ingest:s3cr3t-pw@influx:8086', api: v1, database: d}\n"))
    load_bridge_config(path, env={})
    assert logs.scrub("GET http://ingest:s3cr3t-pw@influx:8086/ping") == \
        "GET http://ingest:***@influx:8086/ping"


def test_only_secret_keys_are_masked_not_hosts_ports_or_names(tmp_path: Path) -> None:
    path = _write(tmp_path, "gateway.yaml", (
        "gateway: {id: '${GW}'}\n"
        "mqtt:\n  host: ${H}\n  port: ${P}\n  username: ${U}\n  password: ${PW}\n"
        "devices:\n"
        "  - {name: d1, driver: modbus-tcp, host: '${DEV}',\n"
        "     points: [{name: t, table: holding, address: 0}]}\n"))
    env = {"GW": "site-7", "H": "broker.example.org", "P": "8883", "U": "gateway-user",
           "PW": PASSWORD, "DEV": "127.0.0.1"}
    config = load_gateway_config(path, env=env)
    assert config.mqtt.host == "broker.example.org"
    line = ("cannot connect to broker.example.org:8883 as gateway-user (site-7); device d1 "
            f"at 127.0.0.1; password {PASSWORD}")
    assert logs.scrub(line) == ("cannot connect to broker.example.org:8883 as gateway-user "
                                "(site-7); device d1 at 127.0.0.1; password ***")


def test_a_literal_password_is_a_secret_too(tmp_path: Path) -> None:
    path = _write(tmp_path, "gateway.yaml", (
        "gateway: {id: g}\nmqtt: {host: b, password: literal-pw-123}\ndevices: []\n"))
    load_gateway_config(path, env={})
    assert logs.scrub("pw literal-pw-123") == "pw ***"


ENV_FILE = "MQTT_USER=gateway-user\nMQTT_PASSWORD=hunter2-very-secret\nINFLUX_TOKEN=tok-123456\n"


def test_c_pointed_at_an_environment_file_does_not_print_it(tmp_path: Path) -> None:
    path = _write(tmp_path, "sensegate.env", ENV_FILE)
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path, env={})
    text = str(info.value)
    assert "environment file (KEY=VALUE lines)" in text
    for secret in ("hunter2-very-secret", "tok-123456", "MQTT_PASSWORD", "gateway-user"):
        assert secret not in text


def test_a_file_of_one_value_is_not_quoted(tmp_path: Path) -> None:
    path = _write(tmp_path, "token", "eyJhbGciOi-not-a-config\n")
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path, env={})
    assert "eyJhbGciOi" not in str(info.value)
    assert "a single value where 'key: value' lines were expected" in str(info.value)


def test_a_profile_symlinked_to_another_file_does_not_quote_it(tmp_path: Path) -> None:
    env_file = tmp_path / "elsewhere" / "sensegate.env"
    env_file.parent.mkdir()
    env_file.write_text(ENV_FILE, encoding="utf-8")
    (tmp_path / "profiles").mkdir()
    os.symlink(env_file, tmp_path / "profiles" / "meter.yaml")
    path = _write(tmp_path, "gateway.yaml", (
        "gateway: {id: g}\nmqtt: {host: b}\ndevices:\n"
        "  - {name: d1, driver: modbus-tcp, host: h, profile: meter}\n"))
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path, env={})
    text = str(info.value)
    assert "meter.yaml:1:1: this looks like an environment file" in text
    for secret in ("hunter2-very-secret", "tok-123456", "MQTT_PASSWORD"):
        assert secret not in text


def test_config_loading_does_not_import_the_runtime() -> None:
    code = ("import sys, gateway.config.load; "
            "print(sorted(m for m in sys.modules if m.startswith('gateway.runtime')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ}).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("text", [
    pytest.param("MQTT_PASSWORD=*s3cret-alias\n", id="value-that-reads-as-an-alias"),
    pytest.param("# sensegate\nexport TOKEN=a: b: s3cret-colon\n", id="value-with-colons"),
    pytest.param("PW='s3cret-quote\n", id="unclosed-quote"),
])
def test_an_environment_file_with_a_syntax_error_is_not_quoted(tmp_path: Path,
                                                               text: str) -> None:
    path = _write(tmp_path, "env", text)
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path, env={})
    assert str(info.value) == f"{path}:1:1: this looks like an environment file (KEY=VALUE " \
                              "lines), not a YAML config; its content is not shown"
