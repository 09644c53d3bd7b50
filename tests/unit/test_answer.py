"""drivers.answer: the check of an answer's bytes before pymodbus decodes it (frames built
and CRCs computed by pymodbus's own framers), and gateway.core.modbus's protocol facts."""

from __future__ import annotations

import pytest
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU

from drivers.answer import Sent, check_answer, crc_error
from gateway.core.modbus import describe_exception, read_byte_count

_DECODER = DecodePDU(False)


def mbap_frame(transaction: int, unit: int, pdu: bytes) -> bytes:
    """A Modbus TCP frame, built by pymodbus's socket framer."""
    return FramerSocket(_DECODER).encode(pdu, unit, transaction)


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    """An RTU frame with its CRC, built by pymodbus's RTU framer."""
    return FramerRTU(_DECODER).encode(pdu, unit, 0)


def test_rtu_frame_is_the_textbook_one() -> None:
    # read holding 0..1 of unit 1: the textbook frame 01 03 00 00 00 02 C4 0B
    assert rtu_frame(1, bytes.fromhex("0300000002")) == bytes.fromhex("010300000002c40b")


def test_read_byte_count() -> None:
    assert read_byte_count(3, 2) == 4
    assert read_byte_count(4, 125) == 250
    assert read_byte_count(1, 1) == 1
    assert read_byte_count(2, 9) == 2


@pytest.mark.parametrize(
    ("code", "text"),
    [(2, "exception 2 (illegal data address)"), (6, "exception 6 (server device busy)"),
     (11, "exception 11 (gateway target device failed to respond)"),
     (99, "exception 99 (unknown exception)")],
)
def test_describe_exception(code: int, text: str) -> None:
    assert describe_exception(code) == text




def request(pdu: str, unit: int = 1, transaction: int = 0) -> ModbusPDU:
    """A request PDU as pymodbus's client hands it to ``trace_pdu``."""
    decoded = DecodePDU(True).decode(bytes.fromhex(pdu))
    assert decoded is not None
    decoded.dev_id, decoded.transaction_id = unit, transaction
    return decoded


READ = request("0300000002", transaction=7)  # read holding 0..1
TCP_READ = Sent.of("socket", READ)
RTU_READ = Sent.of("rtu", READ)


def test_sent_of_a_request() -> None:
    assert Sent("socket", 1, 3, 2, 7) == TCP_READ
    assert Sent("rtu", 1, 3, 2, None) == RTU_READ  # RTU frames carry no transaction id
    assert Sent.of("rtu", request("0600010002")) is None  # a write: only reads are judged
    assert Sent.of("socket", request("0100050010", 3, 9)) == Sent("socket", 3, 1, 16, 9)


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


def test_crc_error() -> None:
    assert RTU_READ is not None
    good = rtu_frame(1, bytes.fromhex("030400010002"))
    flipped = good[:-1] + bytes([good[-1] ^ 0xFF])
    assert crc_error(RTU_READ, flipped)
    assert not crc_error(RTU_READ, good)
    assert not crc_error(RTU_READ, flipped[:-1])  # cut short: truncated, not a CRC error
    exception = rtu_frame(1, bytes.fromhex("8302"))
    assert crc_error(RTU_READ, exception[:-1] + bytes([exception[-1] ^ 1]))
    assert not crc_error(RTU_READ, rtu_frame(2, bytes.fromhex("030400010002"))[:-1] + b"\0")
