"""Opening an RS-485 port at the line settings asked for, and what to do when it cannot.

A Linux pseudo-terminal (and a few USB adapters) do not keep a parity setting: opening one
at even parity fails with ``EINVAL`` (``(22, 'invalid argument')``), and at odd parity it
"succeeds" with the parity silently dropped. The gateway's decision: when the port refuses
the parity asked for, it opens the port without parity and says so once, as a warning
naming the port (real devices set for that parity will not answer; a simulator on a pty
will). `usable_settings` makes that decision by opening the port once with pyserial before
pymodbus does.

`SENSEGATE_SERIAL_TRACE`: when this environment variable names a file, every line setting
the gateway asks for (``PORT BAUD BYTESIZE PARITY STOPBITS``, the parity as asked, before
any fallback) is appended to it, one line each time a port is opened. A pty keeps the speed
(the simulator reads it with termios) but not the parity, so this is how a test, or a
simulator standing in for devices set to one parity, observes what was asked.
"""

from __future__ import annotations

import errno
import logging
import os
import termios
from dataclasses import replace

import serial  # type: ignore[import-untyped]

from gateway.core.model import SerialSettings

log = logging.getLogger("sensegate.drivers")

TRACE_ENV = "SENSEGATE_SERIAL_TRACE"


def trace_settings(settings: SerialSettings) -> None:
    """Append the settings asked for to the `SENSEGATE_SERIAL_TRACE` file, if one is set."""
    path = os.environ.get(TRACE_ENV)
    if not path:
        return
    line = (f"{settings.port} {settings.baudrate} {settings.bytesize} {settings.parity} "
            f"{settings.stopbits}\n")
    try:
        with open(path, "a", encoding="utf-8") as trace:
            trace.write(line)
    except OSError as exc:
        log.debug("cannot write %s: %s", path, exc)


def usable_settings(settings: SerialSettings) -> tuple[SerialSettings, str | None]:
    """The settings to open ``settings.port`` with, and a warning when they differ.

    Opens the port once at the settings asked for: when that fails with ``EINVAL``, or the
    port comes up without the parity bit set (a pty accepts some opens and drops the
    parity), the port does not keep parity: the settings without parity are returned, with
    the warning to log. Any other failure is left to the real open (which reports it); the
    settings are then returned unchanged.
    """
    trace_settings(settings)
    if settings.parity == "N":
        return settings, None
    try:
        port = serial.Serial(settings.port, settings.baudrate, bytesize=settings.bytesize,
                             parity=settings.parity, stopbits=settings.stopbits, timeout=0)
    except (serial.SerialException, OSError, ValueError, termios.error) as exc:
        code = getattr(exc, "errno", None) or (exc.args[0] if exc.args else None)
        if code != errno.EINVAL and "(22," not in str(exc):
            return settings, None
    else:
        try:
            kept = bool(termios.tcgetattr(port.fd)[2] & termios.PARENB)
        except (termios.error, TypeError):
            kept = True  # not a terminal termios can read: trust the open
        finally:
            port.close()
        if kept:
            return settings, None
    warning = (f"serial port {settings.port} does not keep parity {settings.parity} (a "
               f"pseudo-terminal, or an adapter without parity support): opened without "
               f"parity; devices set to parity {settings.parity} will not answer")
    return replace(settings, parity="N"), warning
