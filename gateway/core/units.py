"""Durations and sizes as operators write them: ``500ms``, ``10s``, ``5m``, ``1h``, ``512MiB``.

A bare number is seconds (durations) or bytes (sizes). Errors are `ValueError` with a lower
case message quoting the text, ready to be wrapped into a config issue.
"""

from __future__ import annotations

import math
import re

_DURATION_UNITS: dict[str, float] = {
    "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
}
_SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_QUANTITY = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*\Z")

DURATION_PATTERN = r"^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d)?\s*$"
SIZE_PATTERN = r"^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*([kKmMgGtT]i?[bB]|[bB])?\s*$"


def parse_duration(value: str | float) -> float:
    """Seconds in ``value``: ``"500ms"`` -> 0.5, ``"5m"`` -> 300.0, ``2`` -> 2.0."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} is not a duration")
        return float(value)
    m = _QUANTITY.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a duration; write e.g. '500ms', '10s', '5m', '1h'")
    number, unit = m.groups()
    factor = _DURATION_UNITS.get(unit or "s")
    if factor is None:
        raise ValueError(f"{value!r} has an unknown duration unit {unit!r}; use ms, s, m, h or d")
    return float(number) * factor


def parse_size(value: str | int) -> int:
    """Bytes in ``value``: ``"512MiB"`` -> 536870912, ``"1kB"`` -> 1000, ``4096`` -> 4096."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is not a size")
        return value
    if isinstance(value, float):
        raise ValueError(f"{value!r} is not a size; write a whole number of bytes or e.g. '512MiB'")
    m = _QUANTITY.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a size; write e.g. '512KiB', '512MiB', '1GiB'")
    number, unit = m.groups()
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(
            f"{value!r} has an unknown size unit {unit!r}; use B, kB, MB, GB, KiB, MiB or GiB")
    if not unit and "." in number:
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(float(number) * factor) if "." in number else int(number) * factor


def format_duration(seconds: float) -> str:
    """The shortest natural spelling: 0.5 -> '500ms', 60 -> '1m', 1.5 -> '1.5s'."""
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, factor in (("h", 3600.0), ("m", 60.0)):
        if seconds >= factor and seconds % factor == 0:
            return f"{seconds / factor:g}{unit}"
    return f"{seconds:g}s"


def format_size(size: int) -> str:
    """Bytes in binary units when exact: 536870912 -> '512MiB'."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def format_age(seconds: float | None) -> str:
    """``4 s``, ``3 min``, ``2 h 5 min``, ``3 d 4 h``; ``never`` for None."""
    if seconds is None or math.isnan(seconds):
        return "never"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"
