"""Logging set-up: one line per event on stderr, with secrets scrubbed.

journald adds the time, so lines carry level, logger and message only. Every secret the
config loader sees (passwords, tokens) is registered in `gateway.core.secrets` and replaced
by *** in any line, in any form (raw, base64, URL-encoded), as a last line of defence
behind `model.Secret`.
"""

from __future__ import annotations

import logging
import sys

from gateway.core.secrets import register as register_secret
from gateway.core.secrets import scrub

__all__ = ["ScrubbingFormatter", "register_secret", "scrub", "setup"]


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
