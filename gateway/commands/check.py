"""`sensegate check`: validate a config without touching hardware or network, and summarise.

The summary shows what the gateway will do: devices and points, Modbus requests per scan
after coalescing (`gateway.core.plan`), and for each RS-485 bus the bus time one round of scans
takes and the share of the bus the configured intervals need (`gateway.core.bustime`), with a
warning past 100 %. An invalid config raises `ConfigError`; the CLI prints every issue and
exits 2.
"""

from __future__ import annotations

from typing import TextIO

from gateway.config.load import load_gateway_config
from gateway.core.bustime import estimate_bus
from gateway.core.model import MODBUS_DRIVERS, DeviceConfig, GatewayConfig
from gateway.core.plan import plan_device
from gateway.core.units import format_duration

EXIT_OK = 0


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


def summary(config: GatewayConfig) -> list[str]:
    """The lines `sensegate check` prints for a valid config."""
    requests = {d.name: len(plan_device(d)) for d in config.devices}
    points = sum(len(d.points) for d in config.devices)
    modbus = [d for d in config.devices if d.driver in MODBUS_DRIVERS]
    lines = [
        f"{config.source}: valid",
        f"gateway '{config.id}': {_plural(len(config.devices), 'device')}, "
        f"{_plural(points, 'point')}, {_plural(sum(requests.values()), 'Modbus request')} "
        f"per scan",
        f"mqtt: {config.mqtt.host}:{config.mqtt.port}"
        f"{' (tls)' if config.mqtt.tls else ''}, qos {config.mqtt.qos}, "
        f"format {config.mqtt.format}, topics {config.mqtt.topic_prefix}/{config.id}/...",
    ]
    if config.devices:
        lines.append("devices:")
        width = max(len(d.name) for d in config.devices)
        for d in config.devices:
            reqs = (f", {_plural(requests[d.name], 'request')} per scan"
                    if d in modbus else "")
            profile = f", profile {d.profile}" if d.profile else ""
            lines.append(f"  {d.name:<{width}}  {d.driver} ({_where(d)}), every "
                         f"{format_duration(d.interval)}, {_plural(len(d.points), 'point')}"
                         f"{reqs}{profile}")
    warnings: list[str] = []
    if config.buses:
        lines.append("buses:")
        for bus in config.buses:
            est = estimate_bus(bus, config.devices)
            s = bus.serial
            line = (f"  {bus.name}: {s.port} {s.baudrate} {s.bytesize}{s.parity}{s.stopbits}, "
                    f"{_plural(len(est.scan_time), 'device')}")
            if est.scan_time:
                line += (f", {_plural(sum(est.requests.values()), 'request')} per scan, "
                         f"{_ms(sum(est.scan_time.values()))} bus time per scan, "
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


def run(path: str, out: TextIO) -> int:
    """Validate the config at ``path`` and print its summary; ConfigError when invalid."""
    config = load_gateway_config(path)
    for line in summary(config):
        print(line, file=out)
    return EXIT_OK
