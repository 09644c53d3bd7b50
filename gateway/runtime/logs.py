"""Logging set-up: one line per event on stderr, with secrets scrubbed and repeats summarised.

journald adds the time, so lines carry level, logger and message only. Every secret the
config loader sees (passwords, tokens) is registered in `gateway.core.secrets` and replaced
by *** in any line, in any form (raw, base64, URL-encoded), as a last line of defence
behind `model.Secret`.
"""

from __future__ import annotations

import atexit
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from gateway.core.secrets import register as register_secret
from gateway.core.secrets import scrub

__all__ = ["ScrubbingFormatter", "register_secret", "scrub", "setup"]


class ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


# -- repeated lines ------------------------------------------------------------------------

REPEAT_BURST = 10  # lines of one template from one logger let through per window ...
REPEAT_WINDOW = 60.0  # ... of this many seconds; the rest is counted and summarised
REPEAT_KEYS_MAX = 1000  # templates tracked at once (the oldest windows are closed first)


@dataclass(slots=True)
class _Window:
    start: float
    seen: int
    level: int
    template: str


class RepeatLimiter(logging.Filter):
    """Let at most `burst` lines of one message template from one logger through per
    `window` seconds; the rest are dropped and counted, and when the window ends one line
    says how many: ``... repeated 523 times in 60 s: "reconnect failed: %s"``.

    The key is the logger and the *template* (``record.msg`` before ``%`` formatting), so
    "device %s timed out" for 100 devices is one key: 100 devices failing together say so
    ten times and then once a minute. A summary is written when the next line of any kind
    passes after its window ended, or at `flush` (at exit); journald then keeps
    the size of the log bounded by the number of distinct templates, not by the fault rate.
    """

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], object],
        *,
        burst: int = REPEAT_BURST,
        window: float = REPEAT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.emit = emit  # how a summary line is written (the handler's `handle`)
        self.burst = burst
        self.window = window
        self.clock = clock
        self.suppressed = 0  # lines dropped so far, all keys
        self._windows: dict[tuple[str, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "repeat_summary", False):
            return True
        now = self.clock()
        self._close_expired(now)
        key = (record.name, str(record.msg))
        win = self._windows.get(key)
        if win is None:
            if len(self._windows) >= REPEAT_KEYS_MAX:
                self._close_oldest()
            self._windows[key] = _Window(now, 1, record.levelno, str(record.msg))
            return True
        win.seen += 1
        win.level = max(win.level, record.levelno)
        if win.seen <= self.burst:
            return True
        self.suppressed += 1
        return False

    def flush(self) -> None:
        """Write the summaries of every open window (call at stop)."""
        for key in list(self._windows):
            self._close(key)

    def _close_expired(self, now: float) -> None:
        expired = [k for k, w in self._windows.items() if now - w.start >= self.window]
        for key in expired:
            self._close(key)

    def _close_oldest(self) -> None:
        oldest = min(self._windows, key=lambda k: self._windows[k].start)
        self._close(oldest)

    def _close(self, key: tuple[str, str]) -> None:
        win = self._windows.pop(key)
        dropped = win.seen - self.burst
        if dropped <= 0:
            return
        span = self.clock() - win.start
        record = logging.LogRecord(
            key[0], win.level, __file__, 0,
            "... repeated %d times in %.0f s: %r", (dropped, span, win.template), None)
        record.repeat_summary = True
        self.emit(record)


_limiter: RepeatLimiter | None = None
_stream: TextIO | None = None


def flush_repeats() -> None:
    """Summarise the lines held back so far (registered to run at exit by `setup`)."""
    if _limiter is not None and _stream is not None and not _stream.closed:
        _limiter.flush()


def setup(level: str = "info") -> None:
    global _limiter, _stream
    _stream = sys.stderr
    handler = logging.StreamHandler(_stream)
    handler.setFormatter(ScrubbingFormatter("%(levelname)s %(name)s: %(message)s"))
    if _limiter is None:
        atexit.register(flush_repeats)  # the held-back counts are said before the process ends
    _limiter = RepeatLimiter(handler.handle)
    handler.addFilter(_limiter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party libraries are chatty at INFO; keep their warnings and errors only.
    for noisy in ("pymodbus", "asyncio", "amqtt", "transitions", "urllib3", "influxdb_client"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
