"""Misbehaving Modbus devices (issue 13 item 15): byte-count lies and exception replies.

A lying byte count must be one ``frame`` error naming the device, not an exception inside
pymodbus's transport (``Fatal error: protocol.data_received()`` with a traceback and a
dropped connection); an exception reply is reported as its code and meaning and is an
answer: the device is not treated as dead (no skipped requests, no backoff).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from drivers import BusRegistry, create_driver
from drivers.modbus import ModbusDriver
from gateway.core.plan import plan_device
from gateway.edge.scheduler import answered
from gateway.sim.simulator import ModbusRtuOverTcpSimulator, ModbusTcpSimulator
from tests.support.modbus_sim import EXPECTED, POINTS, load, tcp_device

pytestmark = pytest.mark.integration


@pytest.fixture
def library_debug() -> Iterator[None]:
    """pymodbus at DEBUG, as with ``--log-level debug``: every line it writes is seen."""
    logger = logging.getLogger("pymodbus")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield
    logger.setLevel(level)


def _library_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The library's lines about the gateway's side: the simulator (a pymodbus server in
    this process) names its own lines ``simulator ...``, and they are left out."""
    return [r for r in caplog.records if r.name.startswith(("pymodbus", "asyncio"))
            and not r.getMessage().startswith("simulator ")]


@pytest.mark.parametrize("driver_name", ["modbus-tcp", "modbus-rtu-over-tcp"])
async def test_byte_count_lie_is_a_frame_error_naming_the_device(
    buses: BusRegistry, caplog: pytest.LogCaptureFixture, library_debug: None,
    driver_name: str,
) -> None:
    rtu = driver_name == "modbus-rtu-over-tcp"
    sim = ModbusRtuOverTcpSimulator([1]) if rtu else ModbusTcpSimulator([1])
    load(sim.unit(1))
    async with sim:
        device = tcp_device(sim.port, driver=driver_name, timeout=0.5, retries=0)
        driver = create_driver(device, None, buses)
        sim.unit(1).fault = "bytecount"
        with caplog.at_level(logging.DEBUG):
            lying = await driver.scan()
            sim.unit(1).fault = None
            healthy = await driver.scan()
        assert lying.reading.values == {}
        assert {e.kind for e in lying.errors} == {"frame"}
        assert len(lying.errors) == len(plan_device(device))
        if not rtu:  # refused at once, with the reason; RTU: the frame never completes
            assert "answer with byte count 28, expected 26" in str(lying.errors[0])
        assert healthy.errors == []
        assert healthy.reading.values == {**EXPECTED, "seq": 2}
        assert sim.connections == 1  # the connection survived the lie: no reconnect
    text = caplog.text
    assert "Fatal error" not in text and "Traceback" not in text
    where = f"device 'dev' unit 1 bus 'tcp 127.0.0.1:{sim.port}'"
    for record in _library_lines(caplog):
        assert record.getMessage().startswith((where, f"tcp 127.0.0.1:{sim.port}")), \
            record.getMessage()


@pytest.mark.parametrize(
    ("code", "meaning"),
    [(1, "illegal function"), (2, "illegal data address"), (3, "illegal data value"),
     (4, "server device failure"), (6, "server device busy"),
     (11, "gateway target device failed to respond")],
)
async def test_exception_reply_is_an_answer_not_a_dead_device(
    buses: BusRegistry, caplog: pytest.LogCaptureFixture, code: int, meaning: str
) -> None:
    sim = ModbusTcpSimulator([1])
    load(sim.unit(1))
    async with sim:
        device = tcp_device(sim.port, retries=2)
        driver = create_driver(device, None, buses)
        assert isinstance(driver, ModbusDriver)
        requests = len(plan_device(device))
        sim.unit(1).fault = "exception"
        sim.unit(1).exception_code = code
        with caplog.at_level(logging.WARNING, logger="sensegate.drivers"):
            first = await driver.scan()
            second = await driver.scan()
        # every request of both scans went out once (no retry of an exception, no request
        # skipped as if the device were dead)
        assert sim.unit(1).reads == 2 * requests
    for result in (first, second):
        assert [(e.kind, e.code) for e in result.errors] == [("exception", code)] * requests
        assert answered(result.reading, result.errors)  # the scheduler does not back off
    assert str(first.errors[0]).startswith(f"modbus exception {code} ({meaning}) reading ")
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all("no answer" not in line for line in lines)
    assert all(line.startswith(f"device 'dev' unit 1 bus 'tcp 127.0.0.1:{sim.port}': ")
               for line in lines)


async def test_late_lying_answer_does_not_break_the_connection(
    buses: BusRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A lie that arrives after the request timed out (no request waits for it) is dropped
    undecoded: the connection stays, the next scan reads."""
    sim = ModbusTcpSimulator([1])
    load(sim.unit(1))
    async with sim:
        # one request per scan: the late answer comes while no request is in flight
        device = tcp_device(sim.port, timeout=0.2, retries=0, points=POINTS[:2])
        assert len(plan_device(device)) == 1
        driver = create_driver(device, None, buses)
        assert (await driver.scan()).errors == []
        sim.unit(1).fault = "bytecount"
        sim.unit(1).delay = 0.3
        with caplog.at_level(logging.DEBUG):
            slow = await driver.scan()
            await asyncio.sleep(0.5)  # the late lies arrive meanwhile
            sim.unit(1).fault = None
            sim.unit(1).delay = 0.0
            again = await driver.scan()
        assert [e.kind for e in slow.errors] == ["timeout"]
        assert again.errors == []
        assert sim.connections == 1
    assert "Fatal error" not in caplog.text and "Traceback" not in caplog.text
