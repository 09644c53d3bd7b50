"""The one backoff: exponential from ``start`` up to ``cap``, optionally jittered.

Every retry loop of both processes (the gateway's MQTT reconnects and outbox commits, the
bridge's MQTT reconnects and InfluxDB writes) waits ``next()`` seconds between attempts and
calls ``reset()`` after a success. Pure: no clock, no sleeping; the caller sleeps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

JITTER = 0.2  # +-20 %: a fleet that lost its broker together does not come back together


@dataclass
class Backoff:
    start: float
    cap: float
    jitter: float = 0.0
    _next: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.start <= 0 or self.cap < self.start:
            raise ValueError(f"backoff needs 0 < start <= cap, got {self.start}, {self.cap}")
        self._next = self.start

    def next(self) -> float:
        """The delay before the next attempt; the one after it doubles, up to ``cap``."""
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        if self.jitter:
            delay *= random.uniform(1 - self.jitter, 1 + self.jitter)
        return delay

    @property
    def upcoming(self) -> float:
        """The un-jittered delay ``next()`` will return (for log lines said in advance)."""
        return self._next

    def reset(self) -> None:
        """Back to ``start`` after a success."""
        self._next = self.start
