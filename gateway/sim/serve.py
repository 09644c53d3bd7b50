"""`sensegate simulate -c FILE [DEVICE...]`: the config's devices, simulated here (or, with
``--profile NAME``, one device per shipped or local profile: Modbus TCP, or serial-line for
a profile with a pattern).

Each Modbus TCP (or RTU over TCP) device gets a pymodbus server on a free loopback port,
each RS-485 bus a pty with all its devices behind it, each serial-line device a pty of its
own printing records its own ``pattern`` reads (`gateway.sim.simulator`,
`gateway.sim.records`): streaming twice per interval (at least every half second), or
answering its ``request``. Every value is plausible and changes every second (`plausible`).
The command prints where each listens and a copy of the config pointing at them (``-o
FILE`` writes it there too), so a technician can practise ``check``, ``read --all-orders``
and ``run`` without hardware. A serial-line device whose pattern no record can be built for
(a look-around, a back-reference, ...) is left out with the reason printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, TextIO

import yaml

from gateway.config.load import load_gateway_config
from gateway.config.profiles import ProfileLoader
from gateway.core.decode import scale_factors
from gateway.core.model import (
    BIT_TABLES,
    INTEGER_RANGES,
    DeviceConfig,
    GatewayConfig,
    PointConfig,
    Value,
)
from gateway.runtime.exitcodes import ExitCode
from gateway.sim.records import RecordFormat, Unsupported
from gateway.sim.simulator import (
    ModbusRtuOverTcpSimulator,
    ModbusRtuSimulator,
    ModbusSimulator,
    ModbusTcpSimulator,
    SerialLineSimulator,
    SimUnit,
)

# Engineering values by unit of measure: (centre, swing); a counter unit only grows.
_TYPICAL: dict[str, tuple[float, float]] = {
    "degc": (18.0, 6.0), "°c": (18.0, 6.0), "c": (18.0, 6.0), "v": (230.0, 3.0),
    "a": (12.0, 4.0), "hz": (50.0, 0.05), "%": (55.0, 20.0), "%rh": (55.0, 20.0),
    "hpa": (1013.0, 8.0), "m/s": (4.0, 3.0), "deg": (180.0, 90.0), "°": (180.0, 90.0),
    "w": (1500.0, 800.0), "kw": (1.5, 0.8), "var": (200.0, 100.0), "va": (1600.0, 800.0),
    "db": (55.0, 10.0), "dba": (55.0, 10.0), "m": (1.2, 0.3), "mm/h": (1.0, 1.0),
    "ug/m3": (12.0, 8.0), "µg/m3": (12.0, 8.0), "ppm": (420.0, 30.0), "lux": (300.0, 250.0),
}
_COUNTERS = frozenset({"wh", "kwh", "mwh", "varh", "kvarh", "m3", "l", "mm", "s", "h"})


def plausible(point: PointConfig, t: float, seed: int = 0, power: int = 0) -> Value:
    """A raw value (before scale and offset) ``point`` could read at time ``t`` seconds:
    the typical engineering value for its unit, swinging slowly, converted back to raw and
    clamped to the type; counters (Wh, m3, ...) grow; bools toggle every 10 s. ``power``:
    the power of ten its scale-factor point holds (`factor_powers`)."""
    if point.type == "string":
        return "SIM"
    if point.type == "bool" or point.table in BIT_TABLES:
        return int(t // 10 + seed) % 2 == 0
    unit = (point.unit or "").lower()
    phase = seed * 0.7
    if unit in _COUNTERS:
        value = 1000.0 + t * 0.5
    else:
        centre, swing = _TYPICAL.get(unit, (100.0, 10.0))
        value = centre + swing * math.sin(t / 30.0 + phase)
    scale = (point.scale or 1.0) * 10.0 ** power
    raw: float = (value - point.offset) / scale
    limits = INTEGER_RANGES.get(point.type)
    if limits is None:  # float types
        return raw
    return max(limits[0], min(limits[1], round(raw)))


def factor_powers(device: DeviceConfig) -> dict[str, int]:
    """The power of ten served in each scale-factor point of ``device`` (SunSpec sunssf):
    -1 (one decimal) when the first point it scales measures something, 0 for a counter."""
    units = {p.name: (p.unit or "").lower() for p in device.points}
    powers: dict[str, int] = {}
    for f in scale_factors(device.points):
        powers.setdefault(f.factor, 0 if units.get(f.point) in _COUNTERS else -1)
    return powers


class Served:
    """The simulators of one config, and what they replaced in it."""

    def __init__(self) -> None:
        self.simulators: list[ModbusSimulator | SerialLineSimulator] = []
        self.units: list[tuple[SimUnit, DeviceConfig]] = []
        self.lines: list[tuple[SerialLineSimulator, RecordFormat]] = []
        self.where: list[str] = []
        self.notes: list[str] = []  # what is not simulated, and why
        self.tcp: dict[str, tuple[str, int]] = {}  # device -> (host, port)
        self.buses: dict[str, str] = {}  # bus -> pty path
        self.ports: dict[str, str] = {}  # serial-line device -> pty path
        self.skipped: list[str] = []

    def fill(self, t: float) -> None:
        for seed, (unit, device) in enumerate(self.units):
            powers = factor_powers(device)
            for point in device.points:
                if point.table is None or point.address is None:
                    continue
                if point.bit is not None:
                    continue
                if point.name in powers:
                    value: Value = powers[point.name]
                else:
                    power = powers.get(point.scale_factor or "", 0)
                    value = plausible(point, t, seed, power)
                with contextlib.suppress(ValueError, OverflowError, IndexError):
                    unit.set_point(point, value)
        for seed, (line, form) in enumerate(self.lines):
            with contextlib.suppress(Unsupported):  # a value no spelling fits: the last one
                texts = form.texts(_printed(form.device, t, seed))
                form.line(texts)
                line.values = dict(texts)


def _printed(device: DeviceConfig, t: float, seed: int) -> dict[str, Value]:
    """The raw values a serial-line ``device`` prints at ``t``: `plausible`, each point
    with a phase of its own (a PM10 channel is not the PM2.5 one)."""
    return {p.name: plausible(p, t, seed + i) for i, p in enumerate(device.points)}


def _serial_line(served: Served, device: DeviceConfig) -> SerialLineSimulator | None:
    """A pty printing ``device``'s records, or None after a note saying why not."""
    seed = len(served.lines)  # as `Served.fill` numbers them
    try:
        form = RecordFormat.of(device)
        texts = form.texts(_printed(device, 0.0, seed))
        form.line(texts)
    except Unsupported as why:
        served.notes.append(f"device {device.name}: not simulated: no record can be built "
                            f"from its pattern: {why}")
        served.skipped.append(device.name)
        return None
    period = min(device.interval, 1.0) / 2  # every scan finds a record not yet read
    line = SerialLineSimulator(form.template, texts, request=device.request, period=period)
    line.record_frames = False
    served.lines.append((line, form))
    served.ports[device.name] = line.path
    mode = ("answering " + repr(device.request.decode("utf-8", "replace"))
            if device.request is not None else f"a record every {period:g}s")
    served.where.append(f"device {device.name}: serial-line {line.path} ({mode})")
    if form.missing:
        served.notes.append(f"device {device.name}: no record carries "
                            f"{', '.join(form.missing)} (read as bad)")
    return line


def _size(devices: Sequence[DeviceConfig]) -> int:
    top = max((p.address or 0) + p.register_count
              for d in devices for p in d.points if p.address is not None)
    return max(1000, top + 1)


def _bit_size(devices: Sequence[DeviceConfig]) -> int:
    """Coils and discretes to serve: up to the highest bit point (pymodbus builds large bit
    tables slowly, and a register map at 40000 needs none)."""
    return 1 + max((p.address or 0 for d in devices for p in d.points
                    if p.table in BIT_TABLES), default=0)


def _sized(sim: ModbusSimulator, devices: Sequence[DeviceConfig]) -> None:
    for unit in sim.units.values():
        unit.bit_size = _bit_size(devices)


async def start(config: GatewayConfig, names: Sequence[str]) -> Served:
    served = Served()
    chosen = [d for d in config.devices if not names or d.name in names]
    by_bus: dict[str, list[DeviceConfig]] = {}
    for device in chosen:
        if device.driver == "modbus-rtu" and device.bus is not None:
            by_bus.setdefault(device.bus, []).append(device)
        elif device.driver in ("modbus-tcp", "modbus-rtu-over-tcp"):
            kind = ModbusTcpSimulator if device.driver == "modbus-tcp" else (
                ModbusRtuOverTcpSimulator)
            sim = kind([device.unit], size=_size([device]))
            _sized(sim, [device])
            await sim.start()
            served.simulators.append(sim)
            served.units.append((sim.unit(device.unit), device))
            served.tcp[device.name] = (sim.host, sim.port)
            served.where.append(f"device {device.name}: {device.driver} {sim.host}:{sim.port} "
                                f"unit {device.unit}")
        elif device.driver == "serial-line":
            printer = _serial_line(served, device)
            if printer is not None:
                await printer.start()
                served.simulators.append(printer)
    for bus, devices in by_bus.items():
        line = ModbusRtuSimulator([d.unit for d in devices], size=_size(devices))
        line.record_frames = False
        _sized(line, devices)
        await line.start()
        served.simulators.append(line)
        served.buses[bus] = line.path
        for device in devices:
            served.units.append((line.unit(device.unit), device))
        units = ", ".join(f"{d.name} (unit {d.unit})" for d in devices)
        served.where.append(f"bus {bus}: {line.path} with {units}")
    for simulator in served.simulators:
        simulator.record_frames = False
    served.fill(0.0)
    return served


def pointing_config(path: str, served: Served) -> str:
    """The config file's YAML with hosts, ports and bus ports replaced by the simulators'."""
    with open(path, encoding="utf-8") as source:
        data: Any = yaml.safe_load(source)
    for device in data.get("devices") or []:
        if isinstance(device, dict) and device.get("name") in served.tcp:
            device["host"], device["port"] = served.tcp[device["name"]]
        elif isinstance(device, dict) and device.get("name") in served.ports:
            device["port"] = served.ports[device["name"]]
    for bus in data.get("buses") or []:
        if isinstance(bus, dict) and bus.get("name") in served.buses:
            bus["port"] = served.buses[bus["name"]]
    if isinstance(data.get("devices"), list) and served.skipped:
        data["devices"] = [d for d in data["devices"]
                           if not (isinstance(d, dict) and d.get("name") in served.skipped)]
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


async def serve(path: str, names: Sequence[str], out: TextIO, err: TextIO,
                write: str | None, duration: float | None) -> int:
    config = load_gateway_config(path)
    unknown = [n for n in names if n not in {d.name for d in config.devices}]
    if unknown:
        print(f"no device named {', '.join(unknown)} in {path}", file=err)
        return ExitCode.USAGE
    served = await start(config, names)
    try:
        for line in served.where:
            print(line, file=out)
        for note in served.notes:
            print(note, file=err)
        text = pointing_config(path, served)
        if write:
            _write(write, text)
            print(f"config pointing at the simulators: {write}", file=out)
        else:
            print("--- a config pointing at the simulators:", file=out)
            print(text, file=out, end="")
        print("simulating; Ctrl-C to stop", file=out, flush=True)
        await _until_stopped(served, duration)
    finally:
        for simulator in served.simulators:
            with contextlib.suppress(Exception):
                await simulator.stop()
    return ExitCode.OK


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as target:
        target.write(text)


async def _until_stopped(served: Served, duration: float | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    began = time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        elapsed = time.monotonic() - began
        served.fill(elapsed)
        if duration is not None and elapsed >= duration:
            break


def profile_site(profiles: Sequence[str], directory: str) -> str:
    """A config file in ``directory`` with one device per profile (named after it), for
    ``sensegate simulate --profile NAME``: serial-line for a profile with a pattern, Modbus
    TCP for the others; its path."""
    lines = ["gateway: {id: practice}", "mqtt: {host: 127.0.0.1}", "devices:"]
    loader = ProfileLoader([], os.environ)
    for name in profiles:
        found = loader.find(name)
        profile = loader.load_file(found, []) if found is not None else None
        where = (["    driver: serial-line", "    port: /dev/null"]
                 if profile is not None and profile.is_serial else
                 ["    driver: modbus-tcp", "    host: 127.0.0.1"])
        lines += [f"  - name: {name.replace('.', '-')}", *where, f"    profile: {name}"]
    path = os.path.join(directory, "profiles.yaml")
    _write(path, "\n".join(lines) + "\n")
    return path


def run(path: str, names: Sequence[str], write: str | None = None,
        duration: float | None = None, profiles: Sequence[str] = ()) -> int:
    if not profiles:
        return asyncio.run(serve(path, names, sys.stdout, sys.stderr, write, duration))
    with tempfile.TemporaryDirectory(prefix="sensegate-simulate-") as directory:
        site = profile_site(profiles, directory)
        return asyncio.run(serve(site, names, sys.stdout, sys.stderr, write, duration))
