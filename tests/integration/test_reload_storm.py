"""A real `sensegate run` with a 1,000-device config under a SIGHUP storm.

20 devices are polled every second from simulated Modbus TCP devices (their own process);
980 more on the same simulators every hour make the config as large as a big site's. While
they poll, the test sends 150 SIGHUPs back to back and rewrites the file between them (each
write atomic, as an editor or a config tool does). Counts, never timings:

- the scheduler counts no overruns (a reload parsed on the loop stops polling for seconds);
- far fewer reloads run than SIGHUPs were sent (requests coalesce: one running, one pending);
- the file written last is the config that runs (its device is polled, the one it removed
  is no longer).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench._harness import MEASUREMENT, Proc, SimProcess, gateway_yaml, metric, scrape, wait_until
from tests.support.mosquitto import Mosquitto
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

FAST = 20
FILLER = 980
SIGHUPS = 150


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as b:
        yield b


@pytest.fixture
def sims() -> Iterator[SimProcess]:
    sim = SimProcess(FAST)
    try:
        yield sim
    finally:
        sim.close()


def device_block(name: str, port: int, interval: str) -> str:
    return (f"  - name: {name}\n    driver: modbus-tcp\n    host: 127.0.0.1\n    port: {port}\n"
            f"    unit: 1\n    interval: {interval}\n    timeout: 1s\n    retries: 0\n"
            f"    measurement: {MEASUREMENT}\n    points:\n"
            "      - {name: seq, table: holding, address: 0, type: uint32}\n")


def config_text(base: str, ports: list[int], extra: str) -> str:
    """The fast devices (``base``), the filler, and one more device named ``extra``."""
    filler = "".join(device_block(f"filler-{n:04d}", ports[n % len(ports)], "1h")
                     for n in range(FILLER - 1))
    return base + filler + device_block(extra, ports[0], "1s")


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_sighup_storm_on_a_large_config_keeps_polling_and_applies_the_last_file(
    tmp_path: Path, broker: Mosquitto, sims: SimProcess
) -> None:
    metrics_port = free_port()
    base = gateway_yaml(
        gateway_id="gw-reload", state_dir=tmp_path / "state", mqtt_port=broker.port,
        metrics_port=metrics_port, devices=sims.devices(), interval="1s",
    )
    ports = [port for _, port in sims.devices()]
    config = tmp_path / "gateway.yaml"
    write_atomically(config, config_text(base, ports, "extra-first"))
    log_path = tmp_path / "gateway.log"
    gateway = Proc("run", config, log_path).start()

    def scans(text: dict[str, float] | None = None) -> dict[str, float]:
        try:
            return text or scrape(metrics_port)
        except OSError:
            return {}

    try:
        assert wait_until(lambda: "started gateway" in log_path.read_text(), 60), \
            log_path.read_text()
        assert wait_until(
            lambda: metric(scans(), "sensegate_scans_total") >= FILLER + 3 * FAST, 60)
        before = scrape(metrics_port)
        started = time.monotonic()
        assert gateway.proc is not None
        for n in range(SIGHUPS):
            if n == SIGHUPS // 2:
                write_atomically(config, config_text(base, ports, "extra-middle"))
            gateway.proc.send_signal(signal.SIGHUP)
            time.sleep(0.02)
        write_atomically(config, config_text(base, ports, "extra-last"))
        gateway.proc.send_signal(signal.SIGHUP)

        last = 'sensegate_scans_total{device="extra-last"}'
        assert wait_until(lambda: metric(scans(), last) >= 2, 90), log_path.read_text()[-3000:]
        # Settle: no reload left running, then a last look at the counts.
        assert wait_until(lambda: log_path.read_text().count("reloading ") ==
                          log_path.read_text().count("reloaded: "), 60)
        after = scrape(metrics_port)
        elapsed = time.monotonic() - started
        log = log_path.read_text()
        reloads = log.count("reloading ")
        overruns = (metric(after, "sensegate_scan_overruns_total")
                    - metric(before, "sensegate_scan_overruns_total"))
        slots = FAST * elapsed
        report = f"{reloads} reloads for {SIGHUPS + 1} SIGHUPs, {overruns:.0f} overruns in " \
                 f"{slots:.0f} slots"
        assert 2 <= reloads <= SIGHUPS // 3, report  # coalesced, and the last file was read
        assert "reload refused" not in log, report
        assert overruns <= max(2.0, 0.01 * slots), report
        assert 'device="extra-first"' not in "\n".join(after), report  # removed: forgotten
        assert 'device="extra-middle"' not in "\n".join(after), report
        assert f"reloaded: {FAST + FILLER} devices" in log, report
        assert gateway.stop(timeout=30) == 0
        assert "Traceback" not in log_path.read_text()
    finally:
        gateway.kill()
