"""What the page remembers between scans: a little per device, and the last warnings.

Filled on the daemon's loop by the scheduler's ``on_scan`` observer (`ScanJournal.record`)
and by a logging handler (`WarningLog`); read only when someone opens the page. Memory is
bounded by the config, not by time: per device the last scan's raw registers, the last
reading, `RECENT_ERRORS` errors and one counter per minute for the last hour.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.core.model import Reading

RECENT_ERRORS = 20  # errors kept per device for its page
HOUR = 3600.0
WARNINGS = 50  # warning lines kept for the page


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    at: float  # wall time, seconds since the epoch
    kind: str  # DriverError.kind: timeout, exception, crc, ...
    code: int | None  # the Modbus exception code, if any
    message: str


@dataclass(slots=True)
class DeviceJournal:
    """The last scans of one device, as far as the page needs them."""

    reading: Reading | None = None  # the last scan's reading (its values and quality)
    raw: dict[str, tuple[int, ...]] = field(default_factory=dict)  # of the last scan with any
    raw_reading: Reading | None = None  # the reading those raw registers decoded to
    duration: float | None = None  # seconds the last scan took
    last_errors: int = 0  # errors of the last scan
    errors: deque[ErrorEntry] = field(default_factory=lambda: deque(maxlen=RECENT_ERRORS))
    # (minute since the epoch, errors in it), oldest first, at most the last hour's
    per_minute: deque[list[int]] = field(default_factory=lambda: deque(maxlen=61))

    def errors_since(self, since: float) -> int:
        first = int(since // 60)
        return sum(count for minute, count in self.per_minute if minute >= first)


class ScanJournal:
    """Per-device `DeviceJournal`, fed by `record` (the scheduler's ``on_scan``)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.devices: dict[str, DeviceJournal] = {}

    def record(self, device: str, reading: Reading, raw: Mapping[str, Sequence[Any]],
               errors: Sequence[Any], duration: float) -> None:
        journal = self.devices.get(device)
        if journal is None:
            journal = self.devices[device] = DeviceJournal()
        journal.reading = reading
        journal.duration = duration
        journal.last_errors = len(errors)
        if raw:
            kept: dict[str, tuple[int, ...]] = {}
            for name, values in raw.items():
                try:  # registers or bits; anything else a driver might give is left out
                    kept[name] = tuple(int(v) for v in values)
                except (TypeError, ValueError):
                    continue
            journal.raw = kept
            journal.raw_reading = reading
        if not errors:
            return
        now = self.clock()
        for error in errors:
            journal.errors.append(ErrorEntry(now, str(getattr(error, "kind", "io")),
                                             getattr(error, "code", None), str(error)))
        minute = int(now // 60)
        if journal.per_minute and journal.per_minute[-1][0] == minute:
            journal.per_minute[-1][1] += len(errors)
        else:
            journal.per_minute.append([minute, len(errors)])

    def keep_only(self, devices: set[str]) -> None:
        """Forget devices a reload removed."""
        for name in [n for n in self.devices if n not in devices]:
            del self.devices[name]


@dataclass(frozen=True, slots=True)
class WarningEntry:
    at: float  # wall time
    level: str  # WARNING, ERROR, CRITICAL
    logger: str
    message: str  # formatted by the handler's formatter (secrets scrubbed)


class WarningLog(logging.Handler):
    """A logging handler keeping the last `WARNINGS` lines at WARNING and above."""

    def __init__(self, size: int = WARNINGS) -> None:
        super().__init__(logging.WARNING)
        self.entries: deque[WarningEntry] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.entries.append(WarningEntry(record.created, record.levelname, record.name,
                                         message))
