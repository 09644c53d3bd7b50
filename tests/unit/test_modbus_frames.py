"""gateway.core.modbus: CRC, frames, and the check of an answer before pymodbus decodes it."""

from __future__ import annotations

import pytest

from gateway.core.modbus import (
    Sent,
    check_answer,
    crc16,
    crc_ok,
    describe_exception,
    mbap_frame,
    rtu_complete,
    rtu_frame,
)


def test_crc16_known_frame() -> None:
    # read holding 0..1 of unit 1: the textbook frame 01 03 00 00 00 02 C4 0B
    assert rtu_frame(1, bytes.fromhex("0300000002")) == bytes.fromhex("010300000002c40b")
    assert crc16(b"") == b"\xff\xff"
    assert crc_ok(bytes.fromhex("010300000002c40b"))
    assert not crc_ok(bytes.fromhex("010300000002c40c"))


@pytest.mark.parametrize(
    ("code", "text"),
    [(2, "exception 2 (illegal data address)"), (6, "exception 6 (server device busy)"),
     (11, "exception 11 (gateway target device failed to respond)"),
     (99, "exception 99 (unknown exception)")],
)
def test_describe_exception(code: int, text: str) -> None:
    assert describe_exception(code) == text


TCP_READ = Sent.parse("socket", mbap_frame(7, 1, bytes.fromhex("0300000002")))
RTU_READ = Sent.parse("rtu", rtu_frame(1, bytes.fromhex("0300000002")))


def test_parse_sent() -> None:
    assert Sent("socket", 1, 3, 2, 7) == TCP_READ
    assert Sent("rtu", 1, 3, 2, None) == RTU_READ
    assert Sent.parse("rtu", rtu_frame(1, bytes.fromhex("0600010002"))) is None  # a write
    assert Sent.parse("rtu", rtu_frame(1, bytes.fromhex("10"))) is None
    assert Sent.parse("socket", b"short") is None


@pytest.mark.parametrize(
    ("received", "verdict"),
    [
        pytest.param(mbap_frame(7, 1, bytes.fromhex("030400010002")), None, id="good"),
        pytest.param(mbap_frame(7, 1, bytes.fromhex("8302")), None, id="exception"),
        pytest.param(mbap_frame(7, 1, bytes.fromhex("030400010002"))[:9], None,
                     id="incomplete: wait"),
        pytest.param(mbap_frame(6, 1, bytes.fromhex("03ff")), None,
                     id="another transaction: not ours to judge"),
        pytest.param(mbap_frame(7, 1, bytes.fromhex("030a00010002")),
                     "answer with byte count 10, expected 4", id="byte count lie (too big)"),
        pytest.param(mbap_frame(7, 1, bytes.fromhex("0303000100")),
                     "answer with byte count 3, expected 4", id="odd byte count"),
        pytest.param(mbap_frame(7, 1, bytes.fromhex("03040001000200")),
                     "answer with 5 data bytes after byte count 4", id="length lie"),
        pytest.param(mbap_frame(7, 1, bytes.fromhex("830203")),
                     "exception answer of 3 bytes, expected 2", id="long exception"),
        pytest.param(mbap_frame(7, 1, bytes.fromhex("03")), "answer without a byte count",
                     id="no byte count"),
        pytest.param(mbap_frame(7, 1, bytes.fromhex("040400010002")),
                     "answer with function code 4 to function code 3", id="wrong function"),
    ],
)
def test_check_socket_answer(received: bytes, verdict: str | None) -> None:
    assert TCP_READ is not None
    assert check_answer(TCP_READ, received) == verdict


@pytest.mark.parametrize(
    ("received", "verdict"),
    [
        pytest.param(rtu_frame(1, bytes.fromhex("030400010002")), None, id="good"),
        pytest.param(rtu_frame(1, bytes.fromhex("030600010002ffff")),
                     "answer with byte count 6, expected 4", id="byte count lie, CRC right"),
        pytest.param(rtu_frame(1, bytes.fromhex("030600010002ffff"))[:-1], None,
                     id="lie not complete yet"),
        pytest.param(b"\x5a\x7f" + rtu_frame(1, bytes.fromhex("030400010002")), None,
                     id="noise first: the library hunts"),
        pytest.param(rtu_frame(2, bytes.fromhex("030400010002")), None, id="another unit"),
    ],
)
def test_check_rtu_answer(received: bytes, verdict: str | None) -> None:
    assert RTU_READ is not None
    assert check_answer(RTU_READ, received) == verdict


def test_rtu_complete() -> None:
    assert RTU_READ is not None
    good = rtu_frame(1, bytes.fromhex("030400010002"))
    assert rtu_complete(RTU_READ, good)
    assert not rtu_complete(RTU_READ, good[:-1])
    assert rtu_complete(RTU_READ, rtu_frame(1, bytes.fromhex("8302")))
