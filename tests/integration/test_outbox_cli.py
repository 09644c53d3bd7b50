"""`sensegate outbox` on a real gateway's buffer: a broker that never answers leaves every
reading pending, and the command reports exactly what is on disk, also while the daemon runs."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from bench._harness import PYTHON, ROOT, Proc, SimProcess, gateway_yaml, wait_until
from tests.support.outbox import committed_readings
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def outbox_status(config: Path) -> tuple[int, str]:
    done = subprocess.run([PYTHON, "-m", "gateway", "outbox", "-c", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout


def pending(text: str) -> int:
    match = re.search(r"^pending readings:\s+(\d+)", text, re.MULTILINE)
    assert match, text
    return int(match.group(1))


def test_outbox_reports_what_a_gateway_without_broker_kept(tmp_path: Path) -> None:
    sim = SimProcess(2)
    config = tmp_path / "gateway.yaml"
    state = tmp_path / "state"
    config.write_text(gateway_yaml(
        gateway_id="gw-offline", state_dir=state, mqtt_port=free_port(),  # nothing listens
        metrics_port=free_port(), devices=sim.devices(), interval="200ms",
    ))
    gateway = Proc("run", config, tmp_path / "gateway.log").start()
    try:
        db = state / "outbox.db"
        assert wait_until(db.exists, 30)
        time.sleep(2.0)
        code, live = outbox_status(config)  # read-only, beside the running daemon
        assert code == 0 and pending(live) > 0, live
        assert gateway.stop(timeout=30) == 0
        rows = len(committed_readings(str(state)))
        code, text = outbox_status(config)
        assert code == 0
        assert pending(text) == rows >= pending(live)
        assert re.search(r"^dropped:\s+0$", text, re.MULTILINE), text
        assert re.search(r"^oldest:\s+\d", text, re.MULTILINE), text
    finally:
        gateway.kill()
        sim.close()
