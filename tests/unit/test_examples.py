"""Every YAML file under config/ stays valid: gateway configs pass `check`, the bridge
example loads, and every shipped profile (gateway/config/sensor_profiles) validates on its
own."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from gateway.commands import check
from gateway.config.load import load_bridge_config
from gateway.config.profiles import check_profile

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG = ROOT / "config"
PROFILES = ROOT / "gateway" / "config" / "sensor_profiles"


def _env(path: Path) -> dict[str, str]:
    names = re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text(encoding="utf-8"))
    return {name: f"example-{name.lower()}" for name in names}


def _configs() -> list[Path]:
    return sorted(CONFIG.rglob("*.yaml"))


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in _configs()])
def test_example_config_is_valid(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _env(path).items():
        monkeypatch.setenv(name, value)
    if path.name.startswith("bridge"):
        assert load_bridge_config(str(path)).influxdb.url
        return
    out = io.StringIO()
    assert check.run(str(path), out) == 0
    assert out.getvalue().startswith(f"{path}: valid\n")


def test_driver_examples_exist() -> None:
    names = {p.name for p in _configs()}
    assert {"modbus-tcp.yaml", "modbus-rtu.yaml", "modbus-rtu-over-tcp.yaml",
            "serial-line.yaml", "gateway.example.yaml", "bridge.example.yaml"} <= names


def test_profiles_ship() -> None:
    assert len(list(PROFILES.glob("*.yaml"))) >= 5


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name)
                                  for p in sorted(PROFILES.glob("*.yaml"))])
def test_shipped_profile_is_valid(path: Path) -> None:
    assert [str(i) for i in check_profile(str(path), env=_env(path))] == []
