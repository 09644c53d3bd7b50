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


# Modicon register numbers ("40001-style"): the leading digit names the table.
MODICON_TABLES: dict[int, str] = {0: "coil", 1: "discrete", 3: "input", 4: "holding"}
_MODICON_PREFIX: dict[str, int] = {table: digit for digit, table in MODICON_TABLES.items()}


def modicon_address(number: int) -> tuple[str, int]:
    """A Modicon register number -> ``(table, protocol address)``.

    Five digits below 100000 (``40001`` .. ``49999`` is holding 0 .. 9998; ``30001`` input,
    ``10001`` discrete, ``1`` .. ``9999`` coil), six digits from 100000 (``400001`` ..
    ``465536`` holding 0 .. 65535, and so on; a six-digit coil number ``010001`` reads as
    10001, a five-digit discrete number, so coils past 9999 need ``addressing: one-based``).
    Raises ``ValueError`` with what is wrong: a leading digit that names no table (2, 5-9),
    a number ending in ``0000`` (register numbers start at 1), or past 65536.
    """
    digits = 6 if number >= 100_000 else 5
    prefix, offset = divmod(number, 10 ** (digits - 1))
    table = MODICON_TABLES.get(prefix)
    if table is None or number < 0:
        raise ValueError(f"{number} is not a Modicon register number: the leading digit of "
                         f"a {digits}-digit number says the table (0 coil, 1 discrete, "
                         f"3 input, 4 holding)")
    if offset == 0:
        raise ValueError(f"{number} is not a Modicon register number: they start at "
                         f"{prefix}{'0' * (digits - 2)}1 (address 0)")
    if offset > 65536:
        raise ValueError(f"{number} is past the last {table} register number "
                         f"{prefix}65536")
    return table, offset - 1


def modicon_number(table: str, address: int) -> int:
    """The five- or six-digit Modicon register number of ``table`` ``address``."""
    prefix = _MODICON_PREFIX[table]
    if address < 9999:
        return prefix * 10_000 + address + 1
    return prefix * 100_000 + address + 1
