"""A real VictoriaMetrics on a free loopback port, owned by a test.

It speaks the InfluxDB v2 write API (`/api/v2/write`), which is what the bridge's `api: v2`
sink uses. Each field becomes a metric named `measurement_field` with the point's tags as
labels; timestamps are stored in milliseconds. Data becomes searchable after a short delay:
`export()` calls `/internal/force_flush` first.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

SampleKey = tuple[str, tuple[tuple[str, str], ...], int]

VICTORIA = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


class Victoria:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sensegate-vm-"))
        self.log = self.dir / "victoria.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Victoria:
        if self.proc is not None and self.proc.poll() is None:
            return self
        logf = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                VICTORIA,
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.dir}/data",
                "-retentionPeriod=100y",
                "-loggerLevel=ERROR",
            ],
            stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"victoria-metrics exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("victoria-metrics did not answer /health")
            time.sleep(0.05)

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.stop(kill=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Victoria:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10):
            pass

    def export(self, match: str = '{__name__!=""}') -> list[dict[str, Any]]:
        """Every series matching `match`: dicts with `metric` (labels), `values`, `timestamps`."""
        self.flush()
        params = urllib.parse.urlencode({"match[]": match, "start": "0"})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{params}", timeout=30) as resp:
            return [json.loads(line) for line in resp.read().splitlines() if line.strip()]

    def samples(self, match: str = '{__name__!=""}') -> dict[SampleKey, float]:
        """(metric name, sorted labels, ts ms) → value, for every sample matching `match`."""
        out: dict[SampleKey, float] = {}
        for series in self.export(match):
            labels = dict(series["metric"])
            name = labels.pop("__name__")
            key = tuple(sorted(labels.items()))
            for ts, value in zip(series["timestamps"], series["values"], strict=True):
                out[(name, key, ts)] = value
        return out
