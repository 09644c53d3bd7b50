"""`sensegate read -c FILE DEVICE [--json] [--all-orders]`: poll one device once, now.

Prints every point (name, raw registers in hex, value, unit, quality) as a table or as
JSON, and why the device failed when it did. Exit codes: 0 every request answered,
1 the device failed (some or all of its points could not be read), 2 no such device
(the known devices are listed) or a bad config.

``--all-orders`` adds, for each multi-register point, its registers decoded under every
byte order: the quickest way to find a device's byte order on site.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from gateway.core.decode import decode_all_orders, format_raw, is_multi_register
from gateway.core.model import DeviceConfig, GatewayConfig, PointConfig
from gateway.runtime.exitcodes import ExitCode


def run(path: str, device: str, out: TextIO, *, as_json: bool = False,
        all_orders: bool = False) -> int:
    from gateway.config.load import load_gateway_config

    config = load_gateway_config(path)
    return probe(config, device, out, as_json=as_json, all_orders=all_orders)


def probe(config: GatewayConfig, name: str, out: TextIO, *, as_json: bool = False,
          all_orders: bool = False) -> int:
    """``run`` on a loaded config (tests build configs in code)."""
    device = next((d for d in config.devices if d.name == name), None)
    if device is None:
        known = ", ".join(d.name for d in config.devices) or "none"
        print(f"no device {name!r} in {config.source or 'the config'}; known devices: {known}",
              file=sys.stderr)
        return ExitCode.USAGE
    return asyncio.run(_probe(config, device, out, as_json=as_json, all_orders=all_orders))


async def _probe(config: GatewayConfig, device: DeviceConfig, out: TextIO, *, as_json: bool,
                 all_orders: bool) -> int:
    from drivers import BusRegistry, create_driver

    buses = BusRegistry(config.buses)
    driver = create_driver(device, config, buses)
    driver_log = logging.getLogger("sensegate.drivers")
    level = driver_log.level
    driver_log.setLevel(logging.ERROR)  # the failures are printed below, once
    try:
        result = await driver.scan()
    finally:
        driver_log.setLevel(level)
        await driver.close()
        await buses.close()
    rows = [_row(p, result.raw.get(p.name), result.reading.values, result.reading.quality,
                 all_orders) for p in device.points]
    errors = [
        {"kind": e.kind, "code": e.code, "where": e.where(), "message": str(e)}
        for e in result.errors
    ]
    if as_json:
        doc = {"device": device.name, "ts": result.reading.ts, "ok": not errors,
               "points": rows, "errors": errors}
        print(json.dumps(doc, indent=2), file=out)
    else:
        _print_table(rows, out, all_orders)
        for error in errors:
            print(f"error: {error['where']}: {error['message']}", file=sys.stderr)
    return ExitCode.FAILED if errors else ExitCode.OK


def _row(point: PointConfig, raw: Sequence[Any] | None, values: dict[str, Any],
         quality: dict[str, str], all_orders: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": point.name,
        "raw": _hex(point, raw),
        "value": values.get(point.name),
        "unit": point.unit,
        "quality": quality.get(point.name, "good"),
    }
    if all_orders and raw is not None and is_multi_register(point):
        row["orders"] = decode_all_orders(point, raw)
    return row


def _hex(point: PointConfig, raw: Sequence[Any] | None) -> str | None:
    return None if raw is None else format_raw(point, raw)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _print_table(rows: list[dict[str, Any]], out: TextIO, all_orders: bool) -> None:
    header = ("point", "raw", "value", "unit", "quality")
    lines = [header] + [
        (r["name"], r["raw"] or "-", _text(r["value"]), r["unit"] or "", r["quality"])
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip(),
              file=out)
    if all_orders:
        for r in rows:
            if "orders" in r:
                decoded = "  ".join(f"{o}={_text(v)}" for o, v in r["orders"].items())
                print(f"{r['name']}: {decoded}", file=out)
