#!/usr/bin/env python3
"""Import time and RSS of a config declaration layer: pydantic 2 vs sensegate's own.

Each variant runs in a fresh interpreter that imports asyncio and yaml first (what the
gateway loads anyway), then the layer, then declares a model of the same shape (device with
points, mqtt, outbox) and validates 100 devices x 20 points. Prints the median of 5 runs:

    python bench/config_layer.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys

_PRELUDE = """
import asyncio, resource, time, yaml
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
base = rss(); t0 = time.perf_counter()
"""

_DATA = """
doc = {"gateway": {"id": "g"}, "mqtt": {"host": "b"}, "devices": [
    {"name": f"d{i}", "driver": "modbus-tcp", "host": "h", "interval": 1.0,
     "points": [{"name": f"p{j}", "table": "holding", "address": j, "type": "uint16"}
                for j in range(20)]} for i in range(100)]}
"""

PYDANTIC = _PRELUDE + """
from typing import Literal
from pydantic import BaseModel, Field
class Point(BaseModel):
    name: str = Field(pattern=r"[A-Za-z0-9_]{1,64}")
    table: Literal["holding", "input", "coil", "discrete"] | None = None
    address: int | None = Field(None, ge=0, le=65535)
    type: Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"] = "uint16"
    scale: float = 1.0
    offset: float = 0.0
class Device(BaseModel):
    name: str
    driver: Literal["modbus-tcp", "modbus-rtu", "modbus-rtu-over-tcp", "serial-line"]
    host: str | None = None
    interval: float = Field(1.0, gt=0)
    points: list[Point] = []
class Mqtt(BaseModel):
    host: str
    port: int | None = None
class Gw(BaseModel):
    id: str
class Config(BaseModel):
    gateway: Gw
    mqtt: Mqtt
    devices: list[Device]
imported = time.perf_counter() - t0; rss_import = rss() - base
""" + _DATA + """
t1 = time.perf_counter(); Config.model_validate(doc); checked = time.perf_counter() - t1
print(imported, rss_import, checked, rss() - base)
"""

OWN = _PRELUDE + """
from gateway.config import schema
from gateway.config.source import parse
imported = time.perf_counter() - t0; rss_import = rss() - base
""" + _DATA + """
text = yaml.safe_dump(doc)
issues = []
node = parse(text, "x.yaml", {}, issues)
t1 = time.perf_counter(); schema.validate(node, schema.GATEWAY, "", issues)
checked = time.perf_counter() - t1
assert not issues, issues[:3]
print(imported, rss_import, checked, rss() - base)
"""


def run(code: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return [float(x) for x in out.split()]


def main() -> None:
    print("layer     import ms  import RSS MiB  validate ms  total RSS MiB (over asyncio+yaml)")
    for name, code in (("pydantic", PYDANTIC), ("own", OWN)):
        runs = [run(code) for _ in range(5)]
        med = [statistics.median(r[i] for r in runs) for i in range(4)]
        print(f"{name:9} {med[0] * 1000:9.1f}  {med[1]:13.1f}  {med[2] * 1000:11.1f}  "
              f"{med[3]:.1f}")


if __name__ == "__main__":
    main()
