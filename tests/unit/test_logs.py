"""Repeated log lines are summarised (gateway/runtime/logs.py RepeatLimiter)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from gateway.runtime.logs import RepeatLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


Logged = tuple[logging.Logger, io.StringIO, RepeatLimiter, Clock]


@pytest.fixture
def logged() -> Iterator[Logged]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    clock = Clock()
    limiter = RepeatLimiter(handler.handle, burst=3, window=60.0, clock=clock)
    handler.addFilter(limiter)
    logger = logging.getLogger("sensegate.test-repeats")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield logger, out, limiter, clock
    finally:
        logger.handlers.clear()
        logger.propagate = True


def test_a_flood_of_one_template_is_summarised(logged: Logged) -> None:
    logger, out, limiter, clock = logged
    for n in range(526):
        logger.error("reconnect failed: %s", f"[Errno 24] attempt {n}")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # the burst; the rest is held back
    assert limiter.suppressed == 523
    clock.now = 61.0
    logger.warning("something else")
    lines = out.getvalue().splitlines()
    assert lines[3] == ("ERROR sensegate.test-repeats: ... repeated 523 times in 61 s: "
                        "'reconnect failed: %s'")
    assert lines[4] == "WARNING sensegate.test-repeats: something else"


def test_templates_and_loggers_are_counted_apart(logged: Logged) -> None:
    logger, out, limiter, _ = logged
    other = logger.getChild("other")
    for _ in range(5):
        logger.info("a %s", 1)
        logger.info("b %s", 1)
        other.info("a %s", 1)
    assert len(out.getvalue().splitlines()) == 9
    assert limiter.suppressed == 6


def test_flush_writes_open_summaries_and_quiet_windows_say_nothing(logged: Logged) -> None:
    logger, out, limiter, clock = logged
    for _ in range(3):
        logger.info("few")
    for _ in range(10):
        logger.info("many")
    limiter.flush()
    lines = out.getvalue().splitlines()
    assert lines[-1] == "INFO sensegate.test-repeats: ... repeated 7 times in 0 s: 'many'"
    assert sum("repeated" in line for line in lines) == 1
    # a new window starts: the burst passes again
    clock.now = 1.0
    logger.info("many")
    assert out.getvalue().splitlines()[-1] == "INFO sensegate.test-repeats: many"
