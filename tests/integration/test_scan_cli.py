"""`sensegate scan` end to end: the CLI in a subprocess against pymodbus simulators on a pty
(several units, a line speed and parity to find) and on TCP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.line import TRACE_ENV
from gateway.config.load import load_gateway_config
from gateway.sim.simulator import ModbusRtuSimulator, ModbusTcpSimulator
from tests.support.modbus_sim import load

pytestmark = pytest.mark.integration


async def sensegate(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, "SENSEGATE_CONFIG": "/nonexistent",
                                     **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def line(tmp_path: Path) -> AsyncIterator[tuple[ModbusRtuSimulator, Path]]:
    trace = tmp_path / "line.trace"
    sim = ModbusRtuSimulator([3, 17])
    for unit in sim.units.values():
        load(unit)
    sim.identify_as("Eastron", "SDM630", "2.1")
    sim.listen_at(19200, "E", str(trace))  # the devices are set to 19200 8E1
    sim.record_frames = True
    await sim.start()
    yield sim, trace
    await sim.stop()


async def test_auto_baud_finds_speed_parity_and_units(
    line: tuple[ModbusRtuSimulator, Path], tmp_path: Path
) -> None:
    sim, trace = line
    code, out, err = await sensegate("scan", "--port", sim.path, "--baud", "auto",
                                     "--units", "1-20", env={TRACE_ENV: str(trace)})
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"scanning {sim.path}: 24 line settings x 20 unit ids, at most ")
    assert "unit 3: answered with registers (Eastron SDM630 2.1)" in lines
    assert "unit 17: answered with registers (Eastron SDM630 2.1)" in lines
    assert "# 2 device(s) at 19200 8E1" in lines
    # the settings asked for, in order: 9600 8N1 first, then 19200 8E1, where units answered
    asked = [tuple(t.split()[1:4]) for t in trace.read_text().splitlines()]
    assert asked == [("9600", "8", "N"), ("19200", "8", "E")]
    assert "does not keep parity E" in err  # a pty: opened without parity, said so
    # never writes: only reads of holding registers (3) and identification (43) went out
    functions = {f.data[1] for f in sim.frames if f.direction == "rx" and len(f.data) > 1}
    assert functions <= {3, 43}
    # the stub is a config once gateway and mqtt are added
    stub = out[out.index("buses:"):]
    path = tmp_path / "gateway.yaml"
    path.write_text("gateway: {id: site}\nmqtt: {host: broker}\n" + stub)
    config = load_gateway_config(str(path))
    assert [d.unit for d in config.devices] == [3, 17]
    assert (config.buses[0].serial.port, config.buses[0].serial.baudrate,
            config.buses[0].serial.parity) == (sim.path, 19200, "E")


async def test_fixed_wrong_setting_finds_nothing(line: tuple[ModbusRtuSimulator, Path]) -> None:
    sim, trace = line
    code, out, err = await sensegate("scan", "--port", sim.path, "--baud", "9600",
                                     "--units", "1-5", env={TRACE_ENV: str(trace)})
    assert code == 1
    assert out.splitlines()[0].startswith(f"scanning {sim.path}: 9600 8N1, 5 unit ids")
    assert f"no device answered on {sim.path}" in err


async def test_refuses_a_port_the_gateway_polls(
    line: tuple[ModbusRtuSimulator, Path], tmp_path: Path
) -> None:
    sim, trace = line
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "gateway: {id: site}\nmqtt: {host: broker}\n"
        f"buses:\n  - {{name: field, port: {sim.path}, baudrate: 19200, parity: E}}\n"
        "devices:\n  - name: m\n    driver: modbus-rtu\n    bus: field\n    unit: 3\n"
        "    points: [{name: v, table: holding, address: 0}]\n")
    code, out, err = await sensegate("scan", "-c", str(config), "--port", sim.path,
                                     "--baud", "19200", "--parity", "E", "--units", "3",
                                     env={TRACE_ENV: str(trace)})
    assert code == 2
    assert out == ""
    assert f"refusing to scan: bus 'field' of {config} uses {sim.path}" in err
    assert sim.units[3].reads == 0
    code, out, err = await sensegate("scan", "-c", str(config), "--port", sim.path,
                                     "--baud", "19200", "--parity", "E", "--units", "3",
                                     "--force", env={TRACE_ENV: str(trace)})
    assert code == 0, err
    assert "unit 3: answered with registers" in out


async def test_tcp_host_over_unit_ids() -> None:
    sim = ModbusTcpSimulator([1, 5, 6])
    for unit in sim.units.values():
        load(unit)
    sim.unit(5).fault = "exception"
    sim.unit(6).fault = "exception"  # a TCP gateway: nothing behind unit 6
    sim.unit(6).exception_code = 11
    await sim.start()
    try:
        code, out, err = await sensegate("scan", "--host", f"127.0.0.1:{sim.port}",
                                         "--units", "1-6")
    finally:
        await sim.stop()
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"scanning 127.0.0.1:{sim.port}: 6 unit ids")
    assert "unit 1: answered with registers" in out
    assert "unit 5: answered with exception 2 (illegal data address)" in out
    assert "unit 2:" not in out
    assert "unit 6:" not in out
    assert f"    host: 127.0.0.1\n    port: {sim.port}\n    unit: 5" in out
