"""`sensegate write` end to end: a config, pymodbus simulators that accept, refuse or ignore
writes, the real command line, the audit log."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from gateway.sim.simulator import ModbusTcpSimulator

pytestmark = pytest.mark.integration

CONFIG = """\
gateway: {{id: write-test, state_dir: {state}}}
mqtt: {{host: 127.0.0.1}}
devices:
  - name: vms-3
    driver: modbus-tcp
    host: 127.0.0.1
    port: {port}
    unit: 1
    timeout: 300ms
    points:
      - {{name: mode, table: holding, address: 10, writable: true, allowed: [0, 1, 2]}}
      - {{name: dim_pct, table: holding, address: 11, writable: true, min: 0, max: 100,
          max_rate: 2/min}}
      - {{name: setpoint, table: holding, address: 12, type: float32, byte_order: CDAB,
          writable: true}}
      - {{name: temp, table: holding, address: 14, type: int16, scale: 0.1, writable: true}}
      - {{name: lamp, table: holding, address: 20, type: bool, bit: 3, writable: true}}
      - {{name: relay, table: coil, address: 0, type: bool, writable: true}}
      - {{name: seq, table: holding, address: 0, type: uint16}}
  - name: plain
    driver: modbus-tcp
    host: 127.0.0.1
    port: {port}
    unit: 2
    timeout: 300ms
    write_multiple: {multiple}
    points:
      - {{name: dim_pct, table: holding, address: 11, type: uint16, writable: true}}
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
async def sim():
    simulator = ModbusTcpSimulator([1, 2])
    await simulator.start()
    yield simulator
    await simulator.stop()


def config(tmp_path: Path, sim: ModbusTcpSimulator, *, multiple: bool = False,
           state: str | None = None) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.format(port=sim.port, state=state or tmp_path / "state",
                                  multiple="true" if multiple else "false"))
    return str(path)


def audit(tmp_path: Path) -> list[dict]:
    text = (tmp_path / "state" / "commands" / "audit.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


async def test_writes_are_read_back_and_audited(tmp_path: Path, sim) -> None:
    path = config(tmp_path, sim)
    unit = sim.unit(1)
    unit.set_registers("holding", 20, [0b0001])
    code, out, err = await sensegate("write", "-c", path, "vms-3", "dim_pct=40", "mode=2",
                                     "setpoint=21.5", "temp=-12.3", "lamp=true",
                                     "relay=true")
    assert code == 0, out + err
    assert "vms-3 dim_pct = 40 (read back)" in out
    assert "vms-3 temp = -12.3 (read back)" in out
    assert unit.holding[10:12] == [2, 40]
    assert unit.holding[12:14] == [0, 0x41AC]  # CDAB: the low word first
    assert unit.holding[14] == (-123) & 0xFFFF
    assert unit.holding[20] == 0b1001  # the other bits kept
    assert unit.coil[0] is True
    functions = [w[0] for w in unit.writes]
    assert functions == [6, 6, 16, 6, 6, 5]  # one register: FC 6; two: 16; a coil: 5
    events = [(e["event"], e["device"]) for e in audit(tmp_path)]
    assert events == [("received", "vms-3"), ("done", "vms-3")]


@pytest.mark.parametrize(("args", "reason"), [
    (["dim_pct=101"], "dim_pct: 101 is above max 100"),
    (["mode=3"], "mode: 3 is not allowed (allowed: 0, 1, 2)"),
    (["seq=1"], "seq: not writable"),
    (["nope=1"], "unknown point 'nope'"),
    (["temp=1.25"], "temp: 1.25 cannot be written exactly"),
    (["dim_pct=NaN"], "dim_pct: nan is not a finite number"),
    (["dim_pct=forty"], "dim_pct: expected a number, got the string 'forty'"),
    (["lamp=2"], "lamp: expected true or false, got 2"),
    (["dim_pct=1e400"], "not a finite number"),
    (["dim_pct=40", "mode=7"], "mode: 7 is not allowed"),
])
async def test_refused_writes_change_nothing(tmp_path: Path, sim, args: list[str],
                                             reason: str) -> None:
    path = config(tmp_path, sim)
    code, out, _err = await sensegate("write", "-c", path, "vms-3", *args)
    assert code == 2
    assert reason in out
    assert sim.unit(1).writes == []  # all or nothing: nothing at all was written


async def test_a_device_that_refuses_fc6_needs_write_multiple(tmp_path: Path, sim) -> None:
    sim.unit(2).refuse_functions = {6}
    code, out, _err = await sensegate("write", "-c", config(tmp_path, sim), "plain",
                                      "dim_pct=7")
    assert code == 1
    assert "failed: dim_pct: modbus exception 1 (illegal function)" in out
    code, out, err = await sensegate("write", "-c", config(tmp_path, sim, multiple=True),
                                     "plain", "dim_pct=7")
    assert code == 0, out + err
    assert sim.unit(2).writes == [(16, 11, [7])]


async def test_a_write_answered_with_an_exception_fails(tmp_path: Path, sim) -> None:
    sim.unit(1).write_exception = 4
    code, out, _err = await sensegate("write", "-c", config(tmp_path, sim), "vms-3",
                                      "dim_pct=5")
    assert code == 1
    assert "modbus exception 4 (server device failure) writing holding 11" in out


async def test_a_device_that_ignores_writes_fails_its_read_back(tmp_path: Path, sim) -> None:
    sim.unit(1).ignore_writes = True
    sim.unit(1).set_registers("holding", 11, [3])
    code, out, _err = await sensegate("write", "-c", config(tmp_path, sim), "vms-3",
                                      "dim_pct=5")
    assert code == 1
    assert "read-back differs: wrote 5, the device holds 3" in out
    assert [e["event"] for e in audit(tmp_path)] == ["received", "failed"]


async def test_a_silent_device_times_out(tmp_path: Path, sim) -> None:
    sim.unit(1).fault = "silent"
    code, out, _err = await sensegate("write", "-c", config(tmp_path, sim), "vms-3",
                                      "dim_pct=5")
    assert code == 1
    assert "no response within 0.3s writing holding 11" in out


async def test_unknown_device_and_bad_arguments(tmp_path: Path, sim) -> None:
    path = config(tmp_path, sim)
    code, out, _err = await sensegate("write", "-c", path, "ghost", "x=1")
    assert (code, "unknown device 'ghost'" in out) == (2, True)
    code, out, _err = await sensegate("write", "-c", path, "vms-3", "dim_pct")
    assert (code, "'dim_pct' is not POINT=VALUE" in out) == (2, True)


async def test_a_state_dir_that_cannot_be_written_is_one_line(tmp_path: Path, sim) -> None:
    path = config(tmp_path, sim, state="/proc/sensegate-no")
    code, out, err = await sensegate("write", "-c", path, "vms-3", "dim_pct=5")
    assert code == 1
    assert out.startswith("cannot open the command store under /proc/sensegate-no")
    assert "Traceback" not in err
    assert sim.unit(1).writes == []
