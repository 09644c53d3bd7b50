"""Modbus protocol facts, declared once: function codes, exception names, the RTU CRC and
the shape of a read response. Pure: no pymodbus, no I/O.

The driver uses pymodbus to send requests and decode answers, and this module to judge the
raw bytes of an answer *before* pymodbus decodes them (`check_answer`): an answer whose
byte count contradicts the request (a device that lies about its length) is refused here
with a reason, instead of reaching pymodbus's decoder, which raises inside the transport's
``data_received`` and drops the connection. The simulators build their frames with the same
helpers (`rtu_frame`, `mbap_frame`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FUNCTION_CODES: dict[str, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
"""Read function code of each Modbus table."""
TABLE_OF_FUNCTION: dict[int, str] = {code: table for table, code in FUNCTION_CODES.items()}

EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


def exception_name(code: int) -> str:
    """``illegal data address`` for 2; ``unknown exception`` for codes the spec does not name."""
    return EXCEPTION_NAMES.get(code, "unknown exception")


def describe_exception(code: int) -> str:
    """``exception 2 (illegal data address)``: how log lines and errors name an exception reply."""
    return f"exception {code} ({exception_name(code)})"


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> bytes:
    """The Modbus RTU CRC of ``data``, as the two bytes sent after it (low byte first)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc.to_bytes(2, "little")


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    """An RTU frame: unit, PDU, CRC."""
    body = bytes([unit]) + pdu
    return body + crc16(body)


def mbap_frame(transaction: int, unit: int, pdu: bytes) -> bytes:
    """A Modbus TCP frame: MBAP header (transaction, protocol 0, length, unit) and PDU."""
    return (transaction.to_bytes(2, "big") + b"\0\0" + (len(pdu) + 1).to_bytes(2, "big")
            + bytes([unit]) + pdu)


def read_byte_count(function_code: int, count: int) -> int:
    """Data bytes of the answer to a read: ``2 x registers``, or ``ceil(bits / 8)``."""
    return math.ceil(count / 8) if function_code in (1, 2) else 2 * count


@dataclass(frozen=True, slots=True)
class Sent:
    """What the answer must match: the read request as it went on the wire."""

    framing: str  # socket | rtu
    unit: int
    function_code: int
    count: int
    transaction: int | None = None  # socket framing only

    @classmethod
    def parse(cls, framing: str, frame: bytes) -> Sent | None:
        """The read request in ``frame`` (as sent); ``None`` for anything else."""
        if framing == "socket":
            if len(frame) < 12:
                return None
            tid, unit, pdu = int.from_bytes(frame[:2], "big"), frame[6], frame[7:]
        else:
            if len(frame) < 8:
                return None
            tid, unit, pdu = None, frame[0], frame[1:-2]
        if len(pdu) < 5 or pdu[0] not in TABLE_OF_FUNCTION:
            return None
        return cls(framing, unit, pdu[0], int.from_bytes(pdu[3:5], "big"), tid)


def check_answer(sent: Sent, received: bytes) -> str | None:
    """Why the bytes received so far cannot be the answer to ``sent`` (a complete frame
    whose byte count or length contradicts the request), or ``None`` when they may be (or
    may become, once more bytes arrive) a valid answer, or are not about this request at all
    (another transaction, another unit, line noise: the library skips those itself)."""
    if sent.framing == "socket":
        return _check_socket(sent, received)
    return _check_rtu(sent, received)


def _check_pdu(sent: Sent, pdu: bytes) -> str | None:
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
    while len(received) - at >= 8:
        length = int.from_bytes(received[at + 4 : at + 6], "big")
        end = at + 6 + length
        tid = int.from_bytes(received[at : at + 2], "big")
        if length < 2:
            return f"answer with MBAP length {length}"
        if end > len(received):
            return None  # the rest is still coming
        if tid == sent.transaction and received[at + 6] == sent.unit:
            return _check_pdu(sent, received[at + 7 : end])
        at = end
    return None


def _check_rtu(sent: Sent, received: bytes) -> str | None:
    if len(received) < 3 or received[0] != sent.unit:
        return None  # noise or another unit: the library hunts for the frame
    function = received[1]
    if function == sent.function_code | 0x80 or function != sent.function_code:
        return None  # an exception is fixed-size; a wrong code is judged by its CRC
    size = 5 + received[2]
    if len(received) < size or crc16(received[: size - 2]) != received[size - 2 : size]:
        return None  # incomplete, or corrupt (a CRC error, judged after the timeout)
    return _check_pdu(sent, received[1 : size - 2])


def rtu_complete(sent: Sent, received: bytes) -> bool:
    """Whether ``received`` holds exactly one whole RTU answer to ``sent`` by its declared
    length, so a failed CRC check means corruption, not a frame cut short."""
    if len(received) < 5 or received[0] != sent.unit:
        return False
    if received[1] == sent.function_code | 0x80:
        return len(received) == 5
    return received[1] == sent.function_code and len(received) == 5 + received[2]


def crc_ok(frame: bytes) -> bool:
    """Whether the last two bytes of ``frame`` are the CRC of the rest."""
    return len(frame) >= 4 and crc16(frame[:-2]) == frame[-2:]
