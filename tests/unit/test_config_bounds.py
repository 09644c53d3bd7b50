"""Config size bounds: every one a positioned error, and an alias bomb fails fast."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from gateway.config import source
from gateway.config.load import load_gateway_config
from gateway.core.errors import ConfigError

HEAD = "gateway: {id: g}\nmqtt: {host: b}\n"


def _errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_gateway_config(str(path), env={})
    return [str(i).removeprefix(f"{tmp_path}/") for i in info.value.issues]


@pytest.mark.timeout(20)
def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    # 10 ** 12 values once expanded: without the bound this runs out of time and memory.
    lines = ["x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, 12)]
    errors = _errors(tmp_path, HEAD + "\n".join(lines) + "\ndevices: []\n")
    assert len(errors) == 1
    assert "the file holds more than 2,000,000 values once its aliases are expanded" in errors[0]
    assert errors[0].startswith("gateway.yaml:")


def test_aliases_within_the_bound_still_work(tmp_path: Path) -> None:
    first = ("  - {name: d0, driver: modbus-tcp, host: h0,\n"
             "     points: &p [{name: v, table: input, address: 0}]}\n")
    others = "".join(f"  - {{name: d{i}, driver: modbus-tcp, host: h{i}, points: *p}}\n"
                     for i in range(1, 50))
    path = tmp_path / "gateway.yaml"
    path.write_text(HEAD + "devices:\n" + first + others, encoding="utf-8")
    config = load_gateway_config(str(path), env={})
    assert len(config.devices) == 50
    assert all(d.points[0].name == "v" for d in config.devices)


def test_a_file_larger_than_the_bound_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    with path.open("w", encoding="utf-8") as fh:
        fh.write(HEAD + "# " + "x" * (source.MAX_FILE_BYTES) + "\ndevices: []\n")
    with pytest.raises(ConfigError) as info:
        load_gateway_config(str(path), env={})
    assert [str(i).removeprefix(f"{tmp_path}/") for i in info.value.issues] == [
        "gateway.yaml:1:1: the file is larger than 4 MiB, the most a config may be"]


def test_too_many_devices(tmp_path: Path) -> None:
    device = "  - {name: d, driver: modbus-tcp, host: h, points: [{name: v, table: input, " \
             "address: 0}]}\n"
    errors = _errors(tmp_path, HEAD + "devices:\n" + device * 10_001)
    assert errors[0] == "gateway.yaml:4:3: devices: 10,001 entries; at most 10,000 are allowed"


def test_too_many_points(tmp_path: Path) -> None:
    points = "".join(f"      - {{name: p{i}, table: input, address: {i}}}\n"
                     for i in range(1001))
    errors = _errors(tmp_path, HEAD + "devices:\n  - name: d\n    driver: modbus-tcp\n"
                                      "    host: h\n    points:\n" + points)
    assert errors == [
        "gateway.yaml:8:7: devices[0].points: 1,001 entries; at most 1,000 are allowed"]


@pytest.mark.parametrize(("key", "path"), [
    pytest.param("host", "mqtt.host", id="host"),
    pytest.param("client_id", "mqtt.client_id", id="client-id"),
])
def test_long_strings_are_refused(tmp_path: Path, key: str, path: str) -> None:
    text = f"gateway: {{id: g}}\nmqtt: {{host: b, {key}: {'x' * 5000}}}\ndevices: []\n"
    if key == "host":
        text = f"gateway: {{id: g}}\nmqtt: {{host: {'x' * 5000}}}\ndevices: []\n"
    errors = _errors(tmp_path, text)
    assert len(errors) == 1
    assert f"{path}: the value 'xxxxxxxxxxxxxxxxxxxx...' has 5,000 characters; at most " \
           "1,024 are allowed" in errors[0]


def test_a_long_secret_is_refused_without_quoting_it(tmp_path: Path) -> None:
    errors = _errors(tmp_path, f"gateway: {{id: g}}\nmqtt: {{host: b, password: "
                               f"{'s' * 2000}}}\ndevices: []\n")
    assert errors == ["gateway.yaml:2:27: mqtt.password: the value has 2,000 characters; at "
                      "most 1,024 are allowed"]


def _site(devices: int, points: int) -> str:
    """bench/rss.py's site: Modbus TCP devices with flow-style points."""
    kinds = [("uint16", "holding", a) for a in range(8)] + [
        ("float32", "holding", 8 + 2 * i) for i in range(4)] + [
        ("uint16", "input", a) for a in range(8)]
    lines = [HEAD.rstrip("\n"), "devices:"]
    for n in range(devices):
        lines += [f"  - name: dev-{n:04d}", "    driver: modbus-tcp", "    host: 127.0.0.1",
                  f"    port: {20000 + n}", "    unit: 1", "    interval: 1s",
                  "    timeout: 1s", "    retries: 0", "    points:"]
        lines += [f"      - {{name: p{i:02d}, table: {table}, address: {address}, "
                  f"type: {kind}}}" for i, (kind, table, address) in enumerate(kinds[:points])]
    return "\n".join(lines) + "\n"


def test_loading_100_devices_stays_within_its_memory_bound(tmp_path: Path) -> None:
    """The load's transient peak is most of the daemon's RSS above its imports (issue 12:
    11.5 MiB when PyYAML's composed tree sat beside ours; about 2.8 MiB since)."""
    path = tmp_path / "gateway.yaml"
    path.write_text(_site(100, 20), encoding="utf-8")
    load_gateway_config(str(path), env={})  # first load: lazy imports and caches
    tracemalloc.start()
    try:
        config = load_gateway_config(str(path), env={})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(config.devices) == 100 and all(len(d.points) == 20 for d in config.devices)
    assert peak < 6 * 2**20, f"load peak {peak / 2**20:.1f} MiB"
