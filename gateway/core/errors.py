"""The small, typed error tree of sensegate.

Errors from other libraries (pymodbus, pyserial, sqlite3, aiomqtt, influxdb-client) are
wrapped at the edge with ``raise XError(...) from exc`` so callers only ever see these.
Messages are lower case with no full stop and quote the bad value and where it is.
"""

from __future__ import annotations

from dataclasses import dataclass


class SensegateError(Exception):
    """Base of every error sensegate raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem found in a config file, pointing at FILE:LINE:COL (1-based)."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: {where}{self.message}"

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line, self.col, self.path)


class ConfigError(SensegateError):
    """A config that cannot be used; carries every issue found, sorted by position."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = sorted(issues, key=ConfigIssue.sort_key)
        super().__init__("\n".join(str(i) for i in self.issues))


class DriverError(SensegateError):
    """A device could not be read: no answer, exception response, bad frame, parse failure.

    ``kind`` is a short machine-friendly reason used for counters and quality
    (``timeout``, ``connection``, ``exception``, ``crc``, ``parse``, ``io``).
    """

    def __init__(
        self,
        message: str,
        *,
        device: str,
        unit: int | None = None,
        bus: str | None = None,
        kind: str = "io",
        code: int | None = None,
    ) -> None:
        self.device = device
        self.unit = unit
        self.bus = bus
        self.kind = kind
        self.code = code
        super().__init__(message)

    def where(self) -> str:
        """``device 'x' unit 3 bus 'rs485-a'``: every log line about a device names all three."""
        parts = [f"device {self.device!r}"]
        if self.unit is not None:
            parts.append(f"unit {self.unit}")
        if self.bus is not None:
            parts.append(f"bus {self.bus!r}")
        return " ".join(parts)


class StorageError(SensegateError):
    """The offline buffer cannot be written or read (full disk, unwritable dir, bad version)."""


class PublishError(SensegateError):
    """MQTT publishing failed (broker unreachable, refused, TLS failure)."""


class SinkError(SensegateError):
    """The bridge could not write to InfluxDB; ``retryable`` tells whether to try again."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        self.retryable = retryable
        self.status = status
        super().__init__(message)
