"""A missing InfluxDB 1.x database (issue 14 item 14): created when allowed, else the error
says the exact command; real Mosquitto and a real `influxd` that starts without it."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_bridge import (
    bridge_config,
    expected_rows,
    make_messages,
    publish,
    start_bridge,
    stored_rows,
    v1,
    wait_for,
    wait_for_rows,
)
from tests.support.influxdb import InfluxDB
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_influx() -> Iterator[InfluxDB]:
    with InfluxDB(database="city sensing", create=False) as db:
        yield db


def databases(db: InfluxDB) -> list[str]:
    result = db.query("SHOW DATABASES")["results"][0]
    return sorted(v[0] for s in result.get("series", []) for v in s.get("values", []))


async def test_the_database_is_created_when_missing(
    mosquitto: Mosquitto, empty_influx: InfluxDB, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert "city sensing" not in databases(empty_influx)
    msgs = make_messages(["gw-a"], ["rws-1"], 20, 2)
    running = await start_bridge(bridge_config(mosquitto, tmp_path, v1(empty_influx)))
    await publish(mosquitto, msgs)
    await wait_for(lambda: running.bridge.stats.acked >= len(msgs), what="every message acked",
                   info=lambda: running.bridge.stats)
    assert await running.stop() == 0
    assert "city sensing" in databases(empty_influx)
    assert stored_rows(empty_influx) == expected_rows(msgs)
    assert f"influxdb v1 {empty_influx.url}: created database 'city sensing' " \
           "(influxdb.create_database)" in caplog.text
    assert running.bridge.stats.write_errors == 0


async def test_when_not_allowed_the_error_says_the_command(
    mosquitto: Mosquitto, empty_influx: InfluxDB, tmp_path: Path
) -> None:
    msgs = make_messages(["gw-a"], ["rws-1"], 10, 1)
    running = await start_bridge(bridge_config(
        mosquitto, tmp_path, v1(empty_influx, create_database=False)))
    bridge = running.bridge
    await publish(mosquitto, msgs)
    await wait_for(lambda: bridge.stats.write_errors > 0, what="a failed write")
    assert bridge.stats.acked == 0
    assert not bridge.stats.store_ok
    command = """influx -execute 'CREATE DATABASE "city sensing"'"""
    assert bridge.stats.last_error == (
        f"influxdb v1 {empty_influx.url}: database 'city sensing' does not exist; create it "
        f"with: {command} (or set influxdb.create_database: true)")
    assert "city sensing" not in databases(empty_influx)
    # what the operator runs (no `influx` CLI here: the same statement through /query)
    statement = shlex.split(command)[2]
    empty_influx.query(statement, post=True)
    await wait_for_rows(empty_influx, 'SELECT * FROM "weather"', len(msgs))
    await wait_for(lambda: bridge.stats.acked >= len(msgs), what="every message acked")
    assert await running.stop() == 0
    assert stored_rows(empty_influx) == expected_rows(msgs)
