"""A real `sensegate run` under HTTP abuse: polling keeps its schedule, fds and log stay bounded.

The gateway polls simulated Modbus TCP devices (in their own process) and publishes to a real
Mosquitto, while this test (an asyncio client) holds 1,500 slow connections to its metrics
port that never finish a request, and floods it with requests from many connections at once.
Assertions are counts, never timings: scan overruns (the scheduler's own count of slots it
could not start on time) stay near zero, scans keep coming, the process's open file
descriptors stay near the HTTP bound, MQTT stays connected, and the log stays small.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench._harness import Proc, SimProcess, gateway_yaml, metric, scrape, wait_until
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

DEVICES = 20
SLOW_CONNECTIONS = 1500
FLOOD_SECONDS = 12.0
FLOOD_WORKERS = 64  # connections sending requests back to back
MAX_CONNECTIONS = 32  # gateway/runtime/http.py


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as b:
        yield b


@pytest.fixture
def sims() -> Iterator[SimProcess]:
    sim = SimProcess(DEVICES)
    try:
        yield sim
    finally:
        sim.close()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def slow_connections(port: int, count: int, stop: asyncio.Event) -> int:
    """Open ``count`` connections that send half a request head and then nothing."""
    writers = []
    for _ in range(count):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            continue
        try:
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        except (ConnectionError, RuntimeError):
            pass
        writers.append(writer)
    await stop.wait()
    for writer in writers:
        writer.close()
    return len(writers)


async def flood(port: int, until: float, counts: dict[str, int]) -> None:
    """Requests back to back on fresh connections until ``until`` (loop time)."""
    loop = asyncio.get_running_loop()
    path = (b"GET /metrics HTTP/1.0\r\n\r\n", b"GET /healthz HTTP/1.0\r\n\r\n")
    n = 0
    while loop.time() < until:
        n += 1
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(path[n % 2])
            data = await asyncio.wait_for(reader.read(), 10)
            writer.close()
        except (OSError, TimeoutError):
            counts["error"] += 1
            await asyncio.sleep(0.001)
            continue
        counts["answered" if data.startswith(b"HTTP/1.0 200") else "refused"] += 1


async def abuse(port: int, pid: int) -> tuple[dict[str, int], int, int]:
    """Slow connections and a request flood at once; the peak fd count seen meanwhile."""
    stop = asyncio.Event()
    counts = {"answered": 0, "refused": 0, "error": 0}
    slow = asyncio.create_task(slow_connections(port, SLOW_CONNECTIONS, stop))
    loop = asyncio.get_running_loop()
    until = loop.time() + FLOOD_SECONDS
    workers = [asyncio.create_task(flood(port, until, counts)) for _ in range(FLOOD_WORKERS)]
    peak_fds = 0
    while loop.time() < until:
        peak_fds = max(peak_fds, open_fds(pid))
        await asyncio.sleep(0.2)
    await asyncio.gather(*workers)
    stop.set()
    held = await slow
    return counts, held, peak_fds


def test_polling_keeps_its_schedule_under_an_http_flood(
    tmp_path: Path, broker: Mosquitto, sims: SimProcess
) -> None:
    metrics_port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(gateway_yaml(
        gateway_id="gw-flood", state_dir=tmp_path / "state", mqtt_port=broker.port,
        metrics_port=metrics_port, devices=sims.devices(), interval="1s",
    ))
    log_path = tmp_path / "gateway.log"
    gateway = Proc("run", config, log_path).start()
    try:
        def scans() -> float:
            try:
                return metric(scrape(metrics_port), "sensegate_scans_total")
            except OSError:
                return 0.0

        assert wait_until(lambda: scans() >= 3 * DEVICES, 30), log_path.read_text()
        quiet_fds = open_fds(gateway.pid)
        before = scrape(metrics_port)
        started = time.monotonic()

        counts, held, peak_fds = asyncio.run(abuse(metrics_port, gateway.pid))

        # The flood is over: the server answers again, polling went on meanwhile.
        assert wait_until(lambda: scans() > 0, 15)
        after = scrape(metrics_port)
        elapsed = time.monotonic() - started
        slots = DEVICES * elapsed  # 1 s interval
        scanned = metric(after, "sensegate_scans_total") - metric(before, "sensegate_scans_total")
        overruns = (metric(after, "sensegate_scan_overruns_total")
                    - metric(before, "sensegate_scan_overruns_total"))
        report = (f"{counts}, {held} slow connections held, fds {quiet_fds} -> {peak_fds}, "
                  f"{scanned:.0f} scans and {overruns:.0f} overruns in {slots:.0f} slots")
        assert held >= SLOW_CONNECTIONS // 2, report  # the abuse really happened
        assert counts["answered"] >= 100, report
        assert counts["refused"] + counts["error"] > 0, report  # the bound was met
        assert overruns <= max(2.0, 0.01 * slots), report
        assert scanned >= 0.9 * (slots - 2 * DEVICES), report
        assert peak_fds <= quiet_fds + 2 * MAX_CONNECTIONS + 8, report  # open + being reset
        assert metric(after, "sensegate_mqtt_connected") == 1, report
        assert log_path.stat().st_size < 64 * 1024, report
        assert gateway.stop(timeout=30) == 0
        assert "Traceback" not in log_path.read_text()
    finally:
        gateway.kill()
