"""`sensegate check`: validate a config without touching hardware or network, and summarise.

A gateway config's summary shows what the gateway will do: devices and points, Modbus
requests per scan after coalescing (`gateway.core.plan`), the bus time one scan of each
RS-485 device takes, and for each bus the total and the share of the bus the configured
intervals need (`gateway.core.bustime`), with a warning past 100 %. A bridge config (a file
with an ``influxdb`` section and no ``gateway`` one, or any file with ``--bridge``) is
loaded as such and summarised. An invalid config raises `ConfigError`; the CLI prints every
issue and exits 2.
"""

from __future__ import annotations

import os
import re
from typing import Literal, TextIO

from gateway.config.load import load_bridge_config, load_gateway_config
from gateway.core.bustime import estimate_bus
from gateway.core.model import MODBUS_DRIVERS, BridgeConfig, DeviceConfig, GatewayConfig
from gateway.core.plan import interval_groups, plan_device
from gateway.core.signing import key_id
from gateway.core.units import format_duration
from gateway.runtime.exitcodes import ExitCode


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _where(device: DeviceConfig) -> str:
    if device.driver == "modbus-rtu":
        return f"bus {device.bus}, unit {device.unit}"
    if device.driver == "serial-line":
        return device.serial.port if device.serial else "-"
    return f"{device.host}:{device.port}, unit {device.unit}"


def _every(device: DeviceConfig) -> str:
    """``10s``, or ``10s (3 points), 1m (2 points)`` for a device with interval groups."""
    groups = interval_groups(device)
    if len(groups) == 1:
        return format_duration(groups[0].interval)
    return ", ".join(f"{format_duration(g.interval)} ({_plural(len(g.points), 'point')})"
                     for g in groups)


def _reporting(device: DeviceConfig) -> str:
    """How the device publishes, when not every scan (SPEC §8)."""
    if device.publish_interval is not None:
        return (f", publishes every {format_duration(device.publish_interval)} "
                f"({', '.join(device.aggregate)})")
    from gateway.core.report import rule_of

    exception = sum(1 for p in device.points if rule_of(device, p).by_exception)
    if exception:
        return f", {_plural(exception, 'point')} by exception"
    return ""


def summary(config: GatewayConfig) -> list[str]:
    """The lines `sensegate check` prints for a valid config."""
    requests = {d.name: sum(len(plan_device(g)) for g in interval_groups(d))
                for d in config.devices}
    points = sum(len(d.points) for d in config.devices)
    modbus = [d for d in config.devices if d.driver in MODBUS_DRIVERS]
    buses = {bus.name: estimate_bus(bus, config.devices) for bus in config.buses}
    bus_time = {name: seconds for est in buses.values() for name, seconds in est.scan_time.items()}
    lines = [
        f"{config.source}: valid",
        f"gateway '{config.id}': {_plural(len(config.devices), 'device')}, "
        f"{_plural(points, 'point')}, {_plural(sum(requests.values()), 'Modbus request')} "
        f"per scan",
        f"mqtt: {', '.join(f'{host}:{port}' for host, port in config.mqtt.nodes)}"
        f"{' (tls)' if config.mqtt.tls else ''}, qos {config.mqtt.qos}, "
        f"format {config.mqtt.format}, topics {config.mqtt.topic_prefix}/{config.id}/...",
    ]
    fleet = config.fleet
    if fleet.key is not None:
        lines.append(f"fleet: remote configuration on (key {key_id(fleet.key)}), probation "
                     f"{format_duration(fleet.probation)}, max_age "
                     f"{format_duration(fleet.max_age)}")
    writable = sum(p.writable for d in config.devices for p in d.points)
    commands = config.commands
    if commands is not None and commands.enabled:
        signed = (f"signed (key {key_id(commands.key)}), max_age "
                  f"{format_duration(commands.max_age)}" if commands.key is not None
                  else "UNSIGNED (no public_key)")
        lines.append(f"commands: on, {signed}, {_plural(writable, 'writable point')}")
    elif writable:
        lines.append(f"commands: off; {_plural(writable, 'writable point')} for sensegate "
                     "write")
    if config.devices:
        lines.append("devices:")
        width = max(len(d.name) for d in config.devices)
        for d in config.devices:
            reqs = (f", {_plural(requests[d.name], 'request')} per scan"
                    if d in modbus else "")
            if d.name in bus_time:
                reqs += f", {_ms(bus_time[d.name])} bus time"
            profile = f", profile {d.profile}" if d.profile else ""
            lines.append(f"  {d.name:<{width}}  {d.driver} ({_where(d)}), every "
                         f"{_every(d)}, {_plural(len(d.points), 'point')}"
                         f"{reqs}{profile}{_reporting(d)}")
    warnings: list[str] = []
    if config.buses:
        lines.append("buses:")
        for bus in config.buses:
            est = buses[bus.name]
            s = bus.serial
            line = (f"  {bus.name}: {s.port} {s.baudrate} {s.bytesize}{s.parity}{s.stopbits}, "
                    f"{_plural(len(est.scan_time), 'device')}")
            if est.scan_time:
                line += (f", {_plural(sum(est.requests.values()), 'request')} per scan, "
                         f"{_ms(sum(est.scan_time.values()))} bus time per scan, "
                         f"{est.rate:.2f} requests/s, "
                         f"{est.utilisation * 100:.1f} % busy at the configured intervals")
            lines.append(line)
            if est.overloaded:
                warnings.append(
                    f"warning: bus '{bus.name}' needs {est.utilisation * 100:.0f} % of its time "
                    "at the configured intervals: scans will overrun; raise the intervals or "
                    "the baud rate, or split the bus")
            elif not est.scan_time:
                warnings.append(f"warning: bus '{bus.name}' has no devices")
    return lines + warnings


BY_ID = "/dev/serial/by-id"
_UNSTABLE = re.compile(r"^/dev/tty(USB|ACM)\d+$")


def stable_names(directory: str = BY_ID) -> dict[str, str]:
    """The stable names present (``/dev/serial/by-id/usb-FTDI_...-port0``) and the device
    each points at now (``/dev/ttyUSB0``); ``{}`` when there are none."""
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return {}
    return {os.path.join(directory, e): os.path.realpath(os.path.join(directory, e))
            for e in entries}


def port_warnings(config: GatewayConfig, names: dict[str, str]) -> list[str]:
    """Warnings for serial ports named ``/dev/ttyUSBn`` or ``/dev/ttyACMn``: the kernel
    numbers adapters in the order they appear, so the name can change at a reboot or a
    replug and the gateway would poll the wrong line. ``names`` (`stable_names`) are the
    stable names to use instead, the one pointing at that port first."""
    ports = [(f"bus '{b.name}'", b.serial.port) for b in config.buses]
    ports += [(f"device '{d.name}'", d.serial.port) for d in config.devices
              if d.serial is not None]
    warnings: list[str] = []
    for who, port in ports:
        if not _UNSTABLE.match(port):
            continue
        same = [name for name, target in names.items() if target == port]
        if same:
            hint = f"use {same[0]} (it points at {port} now)"
        elif names:
            hint = "stable names present: " + ", ".join(
                f"{name} (-> {target})" for name, target in names.items())
        else:
            hint = (f"no {BY_ID} names are present on this machine now; plug the adapter "
                    f"in and run check again, or see docs/commissioning.md")
        warnings.append(f"warning: {who} uses {port}, a name the kernel gives in plug-in "
                        f"order (it can change at a reboot or replug); {hint}")
    return warnings


def bridge_summary(config: BridgeConfig) -> list[str]:
    """The lines `sensegate check` prints for a valid bridge config (no secret in them)."""
    mqtt, amqp, influx = config.mqtt, config.amqp, config.influxdb
    if amqp is not None:
        nodes = ", ".join(f"{host}:{port}" for host, port in amqp.nodes)
        source = (f"amqp: {nodes}{' (tls)' if amqp.tls else ''}, queue {amqp.queue} (quorum) "
                  f"bound to {amqp.exchange} {amqp.binding}, prefetch {amqp.prefetch}")
    else:
        assert mqtt is not None  # the loader requires one of them
        group = (f", shared group {mqtt.shared_group}" if mqtt.shared_group
                 else ", no shared group (one bridge)")
        source = (f"mqtt: {mqtt.host}:{mqtt.port}{' (tls)' if mqtt.tls else ''}, client id "
                  f"{mqtt.client_id}, subscribe {mqtt.subscribe}{group}, qos {mqtt.qos}")
    if influx.api == "v1":
        target = f"database {influx.database}" + (
            f", retention policy {influx.retention_policy}" if influx.retention_policy else "")
    else:
        target = f"org {influx.org}, bucket {influx.bucket}"
    lines = [
        f"{config.source}: valid (bridge config)",
        source,
        f"influxdb: {influx.url} (api {influx.api}), {target}",
        f"batches: up to {influx.batch_size} points, flushed every "
        f"{format_duration(influx.flush_interval)}",
        f"state_dir: {config.state_dir}",
    ]
    if config.metrics is not None:
        lines.append(f"metrics: {config.metrics.host}:{config.metrics.port}")
    return lines


_TOP_LEVEL_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\s*:", re.MULTILINE)


def config_kind(path: str) -> Literal["gateway", "bridge"]:
    """``bridge`` for a file whose top level has ``influxdb`` and no ``gateway``.

    A look at the unindented keys only, no parsing: the loader chosen then reports every
    error of the file, syntax errors included. A file that cannot be read is a gateway
    config (whose loader says why it cannot be read).
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            keys = set(_TOP_LEVEL_KEY.findall(f.read()))
    except OSError:
        return "gateway"
    return "bridge" if "influxdb" in keys and "gateway" not in keys else "gateway"


def run(path: str, out: TextIO, *, bridge: bool | None = None) -> int:
    """Validate the config at ``path`` and print its summary; ConfigError when invalid.

    ``bridge``: True to read it as a bridge config, False as a gateway config, None (the
    default) to tell by its shape (`config_kind`).
    """
    if bridge is None:
        bridge = config_kind(path) == "bridge"
    if bridge:
        lines = bridge_summary(load_bridge_config(path))
    else:
        config = load_gateway_config(path)
        lines = summary(config) + port_warnings(config, stable_names(
            os.environ.get("SENSEGATE_SERIAL_BY_ID", BY_ID)))
    for line in lines:
        print(line, file=out)
    return ExitCode.OK
