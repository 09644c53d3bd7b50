"""`sensegate read` end to end: a config file, a simulated device, the real command line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from gateway.sim.simulator import ModbusTcpSimulator
from tests.support.modbus_sim import load

pytestmark = pytest.mark.integration

CONFIG = """\
gateway: {{id: probe-test}}
mqtt: {{host: 127.0.0.1}}
devices:
  - name: rws-1
    driver: modbus-tcp
    host: 127.0.0.1
    port: {port}
    unit: 1
    timeout: 300ms
    points:
      - {{name: seq, table: holding, address: 0, type: uint16}}
      - {{name: temp, table: holding, address: 2, type: float32, unit: degC}}
      - {{name: level, table: input, address: 100, type: int16, scale: 0.1, unit: m}}
  - name: other
    driver: modbus-tcp
    host: 127.0.0.1
    port: {port}
    points:
      - {{name: x, table: holding, address: 0, type: uint16}}
"""


async def sensegate(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def site(tmp_path: Path):
    sim = ModbusTcpSimulator([1])
    load(sim.unit(1))
    await sim.start()
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.format(port=sim.port))
    yield sim, str(path)
    await sim.stop()


async def test_table(site) -> None:
    _sim, path = site
    code, out, err = await sensegate("read", "-c", path, "rws-1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["point", "raw", "value", "unit", "quality"]
    assert lines[2].split() == ["temp", "41ac", "0000", "21.5", "degC", "good"]
    assert lines[3].split() == ["level", "ff85", "-12.3", "m", "good"]


async def test_json_and_all_orders(site) -> None:
    _sim, path = site
    code, out, err = await sensegate("read", "-c", path, "rws-1", "--json", "--all-orders")
    assert code == 0, err
    doc = json.loads(out)
    temp = next(p for p in doc["points"] if p["name"] == "temp")
    assert temp["raw"] == "41ac 0000"
    assert temp["value"] == 21.5
    assert temp["orders"]["ABCD"] == 21.5
    assert set(temp["orders"]) == {"ABCD", "DCBA", "BADC", "CDAB"}
    assert doc["ok"] is True and doc["errors"] == []


async def test_exception_exits_1_with_reason(site) -> None:
    sim, path = site
    sim.unit(1).refuse("input", 100)
    code, out, err = await sensegate("read", "-c", path, "rws-1")
    assert code == 1
    assert "level" in out and "bad" in out
    assert (f"error: device 'rws-1' unit 1 bus 'tcp 127.0.0.1:{sim.port}': modbus exception 2 "
            "(illegal data address) reading input 100..100") in err


async def test_timeout_exits_1(site) -> None:
    sim, path = site
    sim.unit(1).fault = "silent"
    code, _out, err = await sensegate("read", "-c", path, "rws-1", "--json")
    assert code == 1
    assert "no response within 0.3s" in err or "no response within 0.3s" in _out


async def test_refused_exits_1(site) -> None:
    sim, path = site
    await sim.stop()
    code, _out, err = await sensegate("read", "-c", path, "rws-1")
    assert code == 1
    assert f"cannot connect to 127.0.0.1:{sim.port}: connection refused" in err


async def test_unknown_device_exits_2(site) -> None:
    _sim, path = site
    code, _out, err = await sensegate("read", "-c", path, "nope")
    assert code == 2
    assert err.strip() == f"no device 'nope' in {path}; known devices: rws-1, other"
