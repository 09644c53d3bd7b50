"""Modbus protocol facts, declared once: function codes, exception names and the byte
count of a read answer. Pure: no pymodbus, no I/O, no frames.

Frames (MBAP headers, RTU CRCs) are pymodbus's: the driver judges raw answers with
pymodbus's framers in `drivers.answer`, and the simulators are pymodbus servers.
"""

from __future__ import annotations

import math

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


def read_byte_count(function_code: int, count: int) -> int:
    """Data bytes of the answer to a read: ``2 x registers``, or ``ceil(bits / 8)``."""
    return math.ceil(count / 8) if function_code in (1, 2) else 2 * count
