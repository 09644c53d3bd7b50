"""The technician's page: its weight, and the gateway's CPU with and without it open.

    .venv/bin/python bench/page.py [--devices 20] [--interval 1s] [--seconds 30]

All on this machine, on free loopback ports: simulated Modbus TCP devices (a process of
their own) → ``python -m gateway run`` (``--log-level info``) → a local Mosquitto. Once
every device has scanned, the gateway's CPU time (user + system, /proc/<pid>/stat) is
measured over ``--seconds`` three times: nobody looking, the page open in headless Chromium
(its script polls the page's cells once per device interval), and nobody looking again.

Weight: the bytes of ``/`` (HTML), its CSS and script, and one refresh (``/?cells=1``), as
served for this gateway; and, rendered in-process from the same code, the main page of a
large gateway (100 devices x 20 points, with errors on every device) to check the 100 KB
bound where it is hardest to keep.

One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import Proc, SimProcess, cpu_seconds, gateway_yaml, machine, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return bytes(resp.read())


def large_page() -> dict[str, Any]:
    """Bytes of the main page and of one refresh for 100 devices x 20 points, all failing,
    and the time to build and render one refresh (median of 20)."""
    from gateway.core.errors import DriverError
    from gateway.core.model import (
        BusConfig,
        DeviceConfig,
        GatewayConfig,
        MqttConfig,
        PointConfig,
        Reading,
        SerialSettings,
    )
    from gateway.edge.page import BrokerState, OutboxState, PageState, ScanJournal, config_facts
    from gateway.edge.page.journal import WarningEntry
    from gateway.edge.page.render import render_main
    from gateway.edge.page.view import main_view

    points = tuple(PointConfig(f"point_{i:02d}", "float32", "holding", 2 * i, unit="degC")
                   for i in range(20))
    devices = tuple(
        DeviceConfig(f"device-{n:03d}", "modbus-rtu", points, bus=f"rs485-{n % 4}",
                     unit=n % 247 + 1)
        for n in range(100)
    )
    buses = tuple(BusConfig(f"rs485-{b}", SerialSettings(f"/dev/ttyUSB{b}")) for b in range(4))
    config = GatewayConfig("xinwu-road-017", MqttConfig("broker", 1883, "c"), devices,
                           buses=buses)
    now = time.time()
    journal = ScanJournal()
    for d in devices:
        values = {p.name: 21.5 + i for i, p in enumerate(points[:10])}
        quality = {p.name: "bad" for p in points[10:]}
        error = DriverError("modbus exception 2 illegal data address reading holding 20..39",
                            device=d.name, kind="exception", code=2)
        journal.record(d.name, Reading(d.name, int(now * 1e9), values, quality), {}, [error],
                       0.05)
    warnings = tuple(WarningEntry(now, "WARNING", "sensegate.drivers",
                                  f"device 'device-{n:03d}' unit 1 bus 'rs485-0': no response "
                                  "within 1s reading holding 0..39 (2 attempts)")
                     for n in range(50))
    state = PageState(now, config, "0.1.0", now - 3600, "ab" * 32,
                      BrokerState("broker:1883", True, now - 60),
                      OutboxState(0, None, 0, 4096), {}, journal.devices, warnings,
                      facts=config_facts(config))  # as the daemon keeps them
    rendered = render_main(main_view(state), "0.1.0")
    costs = []
    for _ in range(20):
        started = time.perf_counter()
        render_main(main_view(state), "0.1.0").cells_json()
        costs.append(time.perf_counter() - started)
    return {"html_bytes": len(rendered.html.encode()), "cells_bytes": len(rendered.cells_json()),
            "render_ms_median": round(sorted(costs)[len(costs) // 2] * 1000, 2)}


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1366,768"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def cpu_percent(pid: int, seconds: float) -> float:
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.support.mosquitto import Mosquitto
    from tests.support.ports import free_port

    out: dict[str, Any] = {"bench": "page", "devices": args.devices, "interval": args.interval,
                           "seconds": args.seconds, "machine": machine()}
    with tempfile.TemporaryDirectory() as tmp, Mosquitto() as broker:
        sims = SimProcess(args.devices)
        port = free_port()
        config = Path(tmp) / "gateway.yaml"
        config.write_text(gateway_yaml(
            gateway_id="gw-page-bench", state_dir=Path(tmp) / "state", mqtt_port=broker.port,
            metrics_port=port, devices=sims.devices(), interval=args.interval,
        ))
        gateway = Proc("run", config, Path(tmp) / "gateway.log").start()
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: b'"ok"' in _try(base + "/?cells=1")
                       and b"waiting" not in _try(base + "/?cells=1"), 60)
            html, css, js = (fetch(base + p) for p in
                             ("/", "/static/page.css", "/static/page.js"))
            cells = fetch(base + "/?cells=1")
            out["page"] = {"html_bytes": len(html), "css_bytes": len(css),
                           "js_bytes": len(js), "total_bytes": len(html) + len(css) + len(js),
                           "refresh_bytes": len(cells)}
            out["cpu_percent_idle"] = round(cpu_percent(gateway.pid, args.seconds), 2)
            driver = browser()
            try:
                driver.get(base + "/")
                time.sleep(2)  # the first refreshes
                out["cpu_percent_page_open"] = round(cpu_percent(gateway.pid, args.seconds), 2)
                started = time.monotonic()
                for _ in range(20):
                    fetch(base + "/")
                out["ms_per_page_request"] = round((time.monotonic() - started) * 50, 2)
            finally:
                driver.quit()
            time.sleep(1)
            out["cpu_percent_idle_after"] = round(cpu_percent(gateway.pid, args.seconds), 2)
        finally:
            gateway.stop()
            sims.close()
    out["large_gateway_100x20"] = large_page()
    return out


def _try(url: str) -> bytes:
    try:
        return fetch(url)
    except OSError:
        return b""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--seconds", type=float, default=30.0)
    print(json.dumps(run(parser.parse_args())), flush=True)


if __name__ == "__main__":
    main()
