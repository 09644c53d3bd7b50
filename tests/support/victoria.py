"""A real VictoriaMetrics on a free loopback port, owned by a test.

It speaks the InfluxDB v2 write API (`/api/v2/write`), which is what the bridge's `api: v2`
sink uses. Each field becomes a metric named `measurement_field` with the point's tags as
labels; timestamps are stored in milliseconds. Data becomes searchable after a short delay:
`export()` calls `/internal/force_flush` first.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tests.support.ports import free_port
from tests.support.server import ServerProcess

SampleKey = tuple[str, tuple[tuple[str, str], ...], int]

VICTORIA = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


class Victoria(ServerProcess):
    log_name = "victoria.log"

    def __init__(self) -> None:
        super().__init__("sensegate-vm-")
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            VICTORIA,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.dir}/data",
            "-retentionPeriod=100y",
            "-loggerLevel=ERROR",
        ]

    def wait_ready(self) -> None:
        self.wait_http(f"{self.url}/health", 200)

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
