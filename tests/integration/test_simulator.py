"""The simulators' faults, byte for byte on the wire (raw sockets, frames built by pymodbus's
framers): what the driver tests rely on the simulators to send."""

from __future__ import annotations

import asyncio

import pytest
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU

from gateway.sim.simulator import ModbusRtuOverTcpSimulator, ModbusTcpSimulator

pytestmark = pytest.mark.integration

_DECODER = DecodePDU(False)
READ = "0300000002"  # read holding 0..1
ANSWER = "030412345678"  # its answer: 0x1234, 0x5678


def rtu(pdu: str, unit: int = 1) -> bytes:
    return FramerRTU(_DECODER).encode(bytes.fromhex(pdu), unit, 0)


def mbap(pdu: str, unit: int = 1, transaction: int = 5) -> bytes:
    return FramerSocket(_DECODER).encode(bytes.fromhex(pdu), unit, transaction)


async def exchange(port: int, frame: bytes, expect: int) -> bytes:
    """Send ``frame``; what comes back until ``expect`` bytes or a quiet spell."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b""
    try:
        writer.write(frame)
        while len(data) < expect:
            try:
                chunk = await asyncio.wait_for(reader.read(256), 0.3)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        writer.close()
    return data


def _crc_right(frame: bytes) -> bool:
    return FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big"))


@pytest.mark.parametrize(
    ("fault", "unit", "read", "expected"),
    [
        pytest.param(None, 1, READ, rtu(ANSWER), id="healthy"),
        pytest.param("crc", 1, READ, rtu(ANSWER)[:-1] + bytes([rtu(ANSWER)[-1] ^ 0xFF]),
                     id="crc: last byte flipped"),
        pytest.param("truncated", 1, READ, rtu(ANSWER)[:4], id="truncated: first half"),
        pytest.param("exception", 1, READ, rtu("8302"), id="exception"),
        pytest.param(None, 1, "0303e70002", rtu("8302"), id="illegal address"),
        pytest.param("silent", 1, READ, b"", id="silent"),
        pytest.param(None, 9, READ, b"", id="a unit not there"),
    ],
)
async def test_rtu_over_tcp_answers(
    fault: str | None, unit: int, read: str, expected: bytes
) -> None:
    async with ModbusRtuOverTcpSimulator([1]) as sim:
        sim.unit(1).set_registers("holding", 0, [0x1234, 0x5678])
        sim.unit(1).fault = fault
        got = await exchange(sim.port, rtu(read, unit), len(expected) or 1)
        assert got == expected
        assert sim.unit(1).reads == (0 if fault == "silent" or unit != 1 else 1)


async def test_rtu_byte_count_lie_keeps_a_right_crc() -> None:
    async with ModbusRtuOverTcpSimulator([1]) as sim:
        sim.unit(1).set_registers("holding", 0, [0x1234, 0x5678])
        sim.unit(1).fault = "bytecount"
        got = await exchange(sim.port, rtu(READ), len(rtu(ANSWER)))
    healthy = rtu(ANSWER)
    assert len(got) == len(healthy)
    assert got[2] == healthy[2] + 2  # the byte count lies ...
    assert got[:2] + got[3:-2] == healthy[:2] + healthy[3:-2]  # ... and nothing else
    assert _crc_right(got)


async def test_rtu_garbage_is_no_frame() -> None:
    async with ModbusRtuOverTcpSimulator([1]) as sim:
        sim.unit(1).fault = "garbage"
        got = await exchange(sim.port, rtu(READ), len(rtu(ANSWER)))
    assert len(got) == len(rtu(ANSWER))
    assert got[0] != 1 or not _crc_right(got)


async def test_tcp_byte_count_lie_keeps_the_mbap_length() -> None:
    async with ModbusTcpSimulator([1]) as sim:
        sim.unit(1).set_registers("holding", 0, [0x1234, 0x5678])
        healthy = await exchange(sim.port, mbap(READ), len(mbap(ANSWER)))
        sim.unit(1).fault = "bytecount"
        got = await exchange(sim.port, mbap(READ), len(mbap(ANSWER)))
    assert healthy == mbap(ANSWER)
    assert got == healthy[:8] + bytes([healthy[8] + 2]) + healthy[9:]


async def test_tcp_writes_change_the_tables_and_connections_are_counted() -> None:
    async with ModbusTcpSimulator([1]) as sim:
        got = await exchange(sim.port, mbap("100007000204abcd0001"), len(mbap("1000070002")))
        assert got == mbap("1000070002")
        assert sim.unit(1).holding[7:9] == [0xABCD, 1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        for _ in range(50):  # the server counts the connection once it has accepted it
            if sim.connections == 1:
                break
            await asyncio.sleep(0.01)
        assert sim.connections == 1
        writer.close()
