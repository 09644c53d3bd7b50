"""The report state file (gateway.edge.reportstate): saved atomically, consumed when read."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.core.model import DeviceConfig, PointConfig, Reading
from gateway.core.report import Reporter
from gateway.edge import reportstate

DEVICE = DeviceConfig("d", "modbus-tcp", (PointConfig("t", "float32", "holding", 0,
                                                      deadband=0.5),), host="h")


def test_saved_state_is_taken_back_once(tmp_path: Path) -> None:
    before = Reporter([DEVICE])
    before.process(Reading("d", 1, {"t": 20.0}, {}))
    reportstate.save(str(tmp_path), before.state())
    assert [p.name for p in tmp_path.iterdir()] == [reportstate.FILE_NAME]  # no temp file left
    saved = reportstate.take(str(tmp_path))
    assert saved is not None
    after = Reporter([DEVICE])
    assert after.restore(saved) == 1
    assert after.process(Reading("d", 2, {"t": 20.2}, {})) == []  # held back: no flood
    # consumed: a crash after this start finds nothing, and publishes afresh
    assert reportstate.take(str(tmp_path)) is None
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_or_foreign_file_is_ignored_and_removed(tmp_path: Path) -> None:
    path = tmp_path / reportstate.FILE_NAME
    for text in ("{not json", json.dumps({"version": 99, "devices": {}}), "[]"):
        path.write_text(text)
        assert reportstate.take(str(tmp_path)) is None
        assert not path.exists()


def test_a_saved_value_of_the_wrong_shape_is_not_restored(tmp_path: Path) -> None:
    reporter = Reporter([DEVICE])
    bad = {"d": {"t": {"rule": [0.5, None, None], "quality": "good", "value": None, "ts": 1}}}
    assert reporter.restore(bad) == 0
    assert reporter.process(Reading("d", 2, {"t": 20.2}, {}))  # first value: published
