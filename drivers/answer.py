"""The raw bytes of a Modbus answer, judged before pymodbus decodes them.

The driver uses pymodbus to send requests and decode answers, and this module to judge the
bytes of an answer *before* pymodbus decodes them (`check_answer`, called from the
client's ``trace_packet`` hook): an answer whose byte count contradicts the request (a
device that lies about its length) is refused here with a reason, instead of reaching
pymodbus's decoder, which raises inside the transport's ``data_received`` and drops the
connection. After a timeout, `crc_error` tells a whole RTU answer with a bad CRC from a
frame cut short.

Frames are pymodbus's business: a Modbus TCP answer is cut out of the receive buffer by
pymodbus's own socket framer (``FramerSocket.decode``), and RTU CRCs are computed by
``FramerRTU.check_CRC``. The protocol facts (function codes, the byte count a read answer
must carry) are `gateway.core.modbus`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU

from gateway.core.modbus import TABLE_OF_FUNCTION, read_byte_count

_SOCKET = FramerSocket(DecodePDU(False))  # client side: decodes answers


@dataclass(frozen=True, slots=True)
class Sent:
    """What the answer must match: the read request as it went out."""

    framing: str  # socket | rtu | ascii
    unit: int
    function_code: int
    count: int
    transaction: int | None = None  # socket framing only

    @classmethod
    def of(cls, framing: str, request: ModbusPDU) -> Sent | None:
        """The read request ``request`` (as pymodbus's ``trace_pdu`` hook hands it over
        before sending); ``None`` for anything but a read."""
        if request.function_code not in TABLE_OF_FUNCTION:
            return None
        transaction = request.transaction_id if framing == "socket" else None
        return cls(framing, request.dev_id, request.function_code, request.count, transaction)


def check_answer(sent: Sent, received: bytes) -> str | None:
    """Why the bytes received so far cannot be the answer to ``sent`` (a complete frame
    whose byte count or length contradicts the request), or ``None`` when they may be (or
    may become, once more bytes arrive) a valid answer, or are not about this request at all
    (another transaction, another unit, line noise: the library skips those itself)."""
    if sent.framing == "socket":
        return _check_socket(sent, received)
    if sent.framing == "ascii":
        return None  # hex text with an LRC: pymodbus's ASCII framer judges it
    return _check_rtu(sent, received)


def check_pdu(sent: Sent, pdu: bytes) -> str | None:
    """Why the PDU ``pdu`` (function code onwards) cannot answer ``sent``, or ``None``."""
    if not pdu:
        return "empty answer"
    function = pdu[0]
    if function == sent.function_code | 0x80:
        return None if len(pdu) == 2 else f"exception answer of {len(pdu)} bytes, expected 2"
    if function != sent.function_code:
        return f"answer with function code {function} to function code {sent.function_code}"
    expected = read_byte_count(sent.function_code, sent.count)
    if len(pdu) < 2:
        return "answer without a byte count"
    if pdu[1] != expected:
        return f"answer with byte count {pdu[1]}, expected {expected}"
    if len(pdu) != 2 + expected:
        return f"answer with {len(pdu) - 2} data bytes after byte count {pdu[1]}"
    return None


def _check_socket(sent: Sent, received: bytes) -> str | None:
    at = 0
    while at < len(received):
        used, unit, transaction, pdu = _SOCKET.decode(received[at:])
        if not used:
            return None  # the rest is still coming
        if transaction == sent.transaction and unit == sent.unit:
            return check_pdu(sent, pdu)
        at += used
    return None


def _crc_right(frame: bytes) -> bool:
    """Whether the last two bytes of ``frame`` are the RTU CRC of the rest (pymodbus's)."""
    return len(frame) >= 4 and FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big"))


def _check_rtu(sent: Sent, received: bytes) -> str | None:
    if len(received) < 3 or received[0] != sent.unit:
        return None  # noise or another unit: the library hunts for the frame
    function = received[1]
    if function == sent.function_code | 0x80 or function != sent.function_code:
        return None  # an exception is fixed-size; a wrong code is judged by its CRC
    size = 5 + received[2]
    if len(received) < size or not _crc_right(received[:size]):
        return None  # incomplete, or corrupt (a CRC error, judged after the timeout)
    return check_pdu(sent, received[1 : size - 2])


def _rtu_complete(sent: Sent, received: bytes) -> bool:
    """Whether ``received`` holds exactly one whole RTU answer to ``sent`` by its declared
    length, so a failed CRC check means corruption, not a frame cut short."""
    if len(received) < 5 or received[0] != sent.unit:
        return False
    if received[1] == sent.function_code | 0x80:
        return len(received) == 5
    return received[1] == sent.function_code and len(received) == 5 + received[2]


def crc_error(sent: Sent, received: bytes) -> bool:
    """Whether ``received`` (what came before a timeout) is one whole RTU answer to
    ``sent`` whose CRC is wrong: a CRC error, not a truncated or garbled frame."""
    return _rtu_complete(sent, received) and not _crc_right(received)
