"""Logging set-up: one line per event on stderr, with secrets scrubbed.

journald adds the time, so lines carry level, logger and message only. Every secret the
config loader sees (passwords, tokens) is registered here and replaced by *** in any line,
as a last line of defence behind `model.Secret`.
"""

from __future__ import annotations

import logging
import sys

_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Never let this exact string reach a log line (ignored when too short to be a secret)."""
    if len(value) >= 3:
        _secrets.add(value)


def scrub(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScrubbingFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party libraries are chatty at INFO; keep their warnings and errors only.
    for noisy in ("pymodbus", "asyncio", "amqtt", "transitions", "urllib3", "influxdb_client"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
