"""`sensegate scan`: find the Modbus devices on an RS-485 line or behind a TCP host.

Prints the time the scan may take first, then one line per unit that answered, then a
config stub (buses and devices) to paste and edit. Never writes to a device. Refuses a port
or host the local gateway's config polls (the scan's requests would collide with the
gateway's on the bus) unless ``--force``. The pure part (orders, estimate, stub) is
`gateway.core.scan`; the wire side is `drivers.probe`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from gateway.config.load import load_gateway_config
from gateway.core.errors import ConfigError
from gateway.core.model import DEFAULT_MODBUS_TCP_PORT, MODBUS_DRIVERS, SerialSettings
from gateway.core.scan import (
    Found,
    config_stub,
    estimate,
    format_duration,
)
from gateway.runtime.exitcodes import ExitCode

if TYPE_CHECKING:
    from drivers.probe import Prober


@dataclass(frozen=True, slots=True)
class ScanOptions:
    port: str | None  # serial device
    host: str | None  # TCP host
    tcp_port: int
    lines: Sequence[tuple[int, str]]  # line settings to try, in order (one unless auto)
    units: Sequence[int]
    timeout: float
    force: bool
    config: str  # the local gateway's config, for the live-bus check
    framing: str = "rtu"


def polled_by_gateway(options: ScanOptions) -> str | None:
    """What of the local gateway's config polls the scan's port or host, or None."""
    if not os.path.exists(options.config):
        return None
    try:
        config = load_gateway_config(options.config)
    except (ConfigError, OSError):
        return None
    if options.port is not None:
        wanted = os.path.realpath(options.port)
        for bus in config.buses:
            if os.path.realpath(bus.serial.port) == wanted:
                return f"bus '{bus.name}' of {options.config} uses {bus.serial.port}"
        for device in config.devices:
            if device.serial is not None and os.path.realpath(device.serial.port) == wanted:
                return f"device '{device.name}' of {options.config} uses {device.serial.port}"
        return None
    for device in config.devices:
        if (device.driver in MODBUS_DRIVERS and device.host == options.host
                and (device.port or DEFAULT_MODBUS_TCP_PORT) == options.tcp_port):
            return (f"device '{device.name}' of {options.config} polls "
                    f"{options.host}:{options.tcp_port}")
    return None


def run(options: ScanOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    busy = polled_by_gateway(options)
    if busy is not None and not options.force:
        print(f"refusing to scan: {busy}; its requests would collide with the scan's. Stop "
              f"the gateway (systemctl stop sensegate) or pass --force", file=err)
        return ExitCode.USAGE
    return asyncio.run(_scan(options, out, err))


async def _scan(options: ScanOptions, out: TextIO, err: TextIO) -> int:
    from drivers.probe import Prober

    units = list(options.units)
    where = options.port or f"{options.host}:{options.tcp_port}"
    if options.port is not None:
        lines = list(options.lines)
        worst = estimate(lines, units, options.timeout)
        tries = (f"{len(lines)} line settings x " if len(lines) > 1 else
                 f"{lines[0][0]} 8{lines[0][1]}1, ")
        print(f"scanning {where}: {tries}{len(units)} unit ids, at most "
              f"{format_duration(worst)}{_narrow_hint(units)}", file=out, flush=True)
    else:
        lines = [(0, "N")]
        worst = len(units) * (options.timeout + 0.01)
        print(f"scanning {where}: {len(units)} unit ids, at most "
              f"{format_duration(worst)}{_narrow_hint(units)}", file=out, flush=True)

    for baud, parity in lines:
        if options.port is not None:
            settings = SerialSettings(options.port, baudrate=baud, parity=parity)  # type: ignore[arg-type]
            prober = Prober.rtu(settings, options.timeout, options.framing)
        else:
            prober = Prober.tcp(options.host or "", options.tcp_port, options.timeout)
        if not await prober.connect():
            prober.close()
            print(f"cannot open {where}", file=err)
            return ExitCode.FAILED
        if prober.warning:
            print(f"warning: {prober.warning}", file=err)
        try:
            found = await _units(prober, units, out, searching=len(lines) > 1)
        finally:
            prober.close()
        if found:
            if options.port is not None:
                print(f"# {len(found)} device(s) at {baud} 8{parity}1", file=out)
            print(config_stub(found, port=options.port, baud=baud, parity=parity,
                              host=options.host, tcp_port=options.tcp_port,
                              framing=options.framing), file=out, end="")
            return ExitCode.OK
    print(f"no device answered on {where}", file=err)
    return ExitCode.FAILED


def _narrow_hint(units: list[int]) -> str:
    return " (--units 1-20 narrows it)" if len(units) > 20 else ""


async def _units(prober: Prober, units: list[int], out: TextIO, *,
                 searching: bool) -> list[Found]:
    """Probe ``units`` in order. While ``searching`` for the line setting, a setting is
    scanned over the whole range (devices may sit at high ids) and the first setting at
    which any unit answers is the line's: the estimate counts every setting in full."""
    found: list[Found] = []
    for unit in units:
        hit = await prober.probe(unit)
        if hit is None:
            continue
        found.append(hit)
        label = f" ({hit.label})" if hit.label else ""
        print(f"unit {unit}: answered with {hit.answer}{label}", file=out, flush=True)
    return found
