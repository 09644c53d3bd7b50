"""The report-by-exception state across a restart: ``<state_dir>/report-state.json``.

`gateway.core.report.Reporter` decides per point whether a reading is published from what it
last published. So that a restart does not publish every unchanged value again, the daemon
saves that state at a clean stop, *after* the outbox committed everything polled (so the
state never names a reading the outbox has not accepted), and takes it back at start.

The file is consumed when read: it is renamed away at start, so after a crash or a power cut
(no clean stop, so no file) the gateway starts without state and publishes each point's
first reading, the safe side: a state older than what the outbox holds could hold back a
value that differs from what central last received by more than its deadband. A file that
cannot be read or parsed is ignored the same way (logged). Written atomically (temporary
file, fsync, rename, fsync of the directory), a few hundred bytes per device.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

log = logging.getLogger("sensegate.report")

FILE_NAME = "report-state.json"
VERSION = 1


def take(state_dir: str) -> dict[str, Any] | None:
    """The state saved at the last clean stop, or None; the file is removed either way."""
    path = os.path.join(state_dir, FILE_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s: %s; every point publishes its next reading", path, exc)
        return None
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    try:
        doc = json.loads(text)
    except ValueError:
        log.warning("%s is not valid JSON; every point publishes its next reading", path)
        return None
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(
            doc.get("devices"), dict):
        log.warning("%s is not a report state of version %d; ignored", path, VERSION)
        return None
    devices: dict[str, Any] = doc["devices"]
    return devices


def save(state_dir: str, devices: dict[str, Any]) -> None:
    """Write the state atomically; raises OSError."""
    path = os.path.join(state_dir, FILE_NAME)
    tmp = f"{path}.tmp"
    data = json.dumps({"version": VERSION, "devices": devices}, separators=(",", ":"),
                      allow_nan=False)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
