"""`sensegate write -c FILE DEVICE POINT=VALUE...`: a technician's write on site (SPEC §1, §6).

The same checks as a command from the centre (device, point, writable, type, round trip,
min/max, allowed, max_rate) but no signature, then the write, the read-back printed, and
the command and its result in the audit log under ``state_dir``. ``VALUE`` is read as JSON
(``40``, ``21.5``, ``true``, ``"text"``), else as a string. Exit 0 done, 1 failed,
2 refused (or a bad config or arguments).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any, TextIO

from gateway.core.command import Request
from gateway.core.model import GatewayConfig
from gateway.runtime.exitcodes import ExitCode

EXIT = {"done": ExitCode.OK, "failed": ExitCode.FAILED, "refused": ExitCode.USAGE,
        "expired": ExitCode.USAGE}


def parse_assignments(items: Sequence[str]) -> dict[str, Any] | str:
    """``["dim_pct=40", "mode=2"]`` -> values, or why not."""
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            return f"{item!r} is not POINT=VALUE"
        try:
            values[name] = json.loads(text)
        except ValueError:
            values[name] = text
    return values


def run(path: str, device: str, assignments: Sequence[str], out: TextIO) -> int:
    from gateway.config.load import load_gateway_config

    return asyncio.run(write(load_gateway_config(path), device, assignments, out))


async def write(config: GatewayConfig, device: str, assignments: Sequence[str],
                out: TextIO) -> int:
    from drivers.bus import BusRegistry
    from drivers.modbus import ModbusWriter
    from gateway.edge.commands import Commander

    values = parse_assignments(assignments)
    if isinstance(values, str):
        print(values, file=out)
        return ExitCode.USAGE
    import sqlite3

    buses = BusRegistry(config.buses)
    try:
        commander = Commander(config, lambda name: ModbusWriter(config.device(name), buses),
                              public_key=b"")  # local: no signature
    except (OSError, sqlite3.Error) as exc:
        print(f"cannot open the command store under {config.state_dir}: {exc} (run as the "
              "gateway's user: the ids and the audit log live there)", file=out)
        return ExitCode.FAILED
    try:
        request = Request(f"local-{uuid.uuid4()}", time.time_ns(), values)
        outcome = await commander.execute(device, request, source="local", check_age=False)
    finally:
        commander.close()
        await buses.close()
    if outcome.status == "done":
        for name, value in (outcome.values or {}).items():
            print(f"{device} {name} = {json.dumps(value)} (read back)", file=out)
    else:
        print(f"{outcome.status}: {outcome.reason}", file=out)
    return EXIT[outcome.status]
