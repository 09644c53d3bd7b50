"""bench/bandwidth.py on a few simulated minutes: it runs, and its promises hold."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bandwidth_bench_short_run() -> None:
    spec = importlib.util.spec_from_file_location("bandwidth", ROOT / "bench" / "bandwidth.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run(0.1, 1)  # six simulated minutes
    assert result["road_weather"]["within_deadband"] is True
    for site in result["sites"].values():
        assert site["within_deadband"] is True
        for device in site["devices"].values():
            assert device["after"]["payload_bytes"] <= device["before"]["payload_bytes"]
    road = result["sites"]["site-xinwu-road.yaml"]["devices"]
    assert road["noise-1"]["after"]["messages"] < road["noise-1"]["before"]["messages"] / 30
