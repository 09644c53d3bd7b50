"""sd_notify for ``Type=notify`` units, with no dependency beyond the standard library.

systemd passes ``$NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for a socket in the
abstract namespace) to a ``Type=notify`` service; the service sends it newline-separated
``KEY=VALUE`` datagrams: ``READY=1`` once started, ``STATUS=...`` for ``systemctl status``,
``WATCHDOG=1`` at least every ``WatchdogSec=`` (``$WATCHDOG_USEC``), ``RELOADING=1`` and
``STOPPING=1``. See sd_notify(3).

Every function is a no-op returning False when not run under systemd (no
``$NOTIFY_SOCKET``) or when the message cannot be sent: notification must never stop the
daemon. The environment is read on every call, so tests can point it at their own socket.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = [
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if path.startswith("@"):
        return "\0" + path[1:]  # abstract namespace
    if path.startswith("/"):
        return path
    return None  # unset, or a scheme we do not speak (vsock:...)


def _clean(value: object) -> str:
    text = "1" if value is True else "0" if value is False else str(value)
    return text.replace("\n", " ").replace("\r", " ")


def notify(**fields: object) -> bool:
    """Send ``KEY=VALUE`` lines (keys upper-cased) to systemd; True if a datagram was sent.

    ``notify(ready=1, status="polling 4 devices")`` sends ``READY=1\\nSTATUS=polling 4 devices``.
    """
    address = _address()
    if address is None or not fields:
        return False
    message = "\n".join(f"{key.upper()}={_clean(value)}" for key, value in fields.items())
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(message.encode("utf-8"), address)
    except OSError:
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """``READY=1``: startup is complete (optionally with a first ``STATUS=``)."""
    if status_text is None:
        return notify(ready=1)
    return notify(ready=1, status=status_text)


def status(text: str) -> bool:
    """``STATUS=text``: one line shown by ``systemctl status``."""
    return notify(status=text)


def watchdog() -> bool:
    """``WATCHDOG=1``: the keep-alive ping for ``WatchdogSec=``."""
    return notify(watchdog=1)


def reloading() -> bool:
    """``RELOADING=1`` with ``MONOTONIC_USEC``: a config reload started; send ready() after."""
    return notify(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)


def stopping() -> bool:
    """``STOPPING=1``: shutdown has begun."""
    return notify(stopping=1)


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of ``$WATCHDOG_USEC``), or None when disabled.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for; any other
    process gets None.
    """
    raw = os.environ.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000 / 2
