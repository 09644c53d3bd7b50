"""The SQLite outbox: commit, offer, ack, bound, versioning, storage failures."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sqlite3
from pathlib import Path

import pytest

from gateway.core.errors import StorageError
from gateway.core.model import OutboxConfig, Reading
from gateway.edge import outbox as buffer
from gateway.edge.outbox import FORMAT_VERSION, Outbox, read_status
from gateway.edge.outbox.format import SCHEMA_V1
from gateway.runtime.metrics import GatewayMetrics
from tests.support.outbox import committed_readings

TAGS = {"district": "xinwu", "lane": "north"}
GW = "gw-1"


def reading(device: str, ts: int, **values: float) -> Reading:
    return Reading(device, ts, dict(values or {"t": float(ts)}))


def fill(outbox: Outbox, device: str, n: int, start: int = 1) -> None:
    for ts in range(start, start + n):
        outbox.add(reading(device, ts), measurement="m", tags=TAGS)


def all_messages(outbox: Outbox) -> list[buffer.OutboxMessage]:
    out = []
    while batch := outbox.take(1000):
        out.extend(batch)
    return out


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    box = Outbox.open(str(tmp_path), OutboxConfig(max_message_bytes=4096), GW)
    yield box
    box.close()


def test_roundtrip_keeps_everything_a_message_needs(outbox: Outbox) -> None:
    outbox.add(
        Reading("rws-1", 1764000000123456789, {"air_temp": -12.3, "n": 7, "ok": True, "s": "x"},
                {"wind": "bad"}),
        measurement="road_weather", tags=TAGS,
    )
    assert outbox.take() == []  # not committed yet: not offered
    assert outbox.flush() == 1
    [msg] = outbox.take()
    assert (msg.device, msg.measurement, msg.tags) == ("rws-1", "road_weather", TAGS)
    [r] = msg.readings
    assert r.ts == 1764000000123456789
    assert r.values == {"air_temp": -12.3, "n": 7, "ok": True, "s": "x"}
    assert type(r.values["n"]) is int and type(r.values["ok"]) is bool
    assert r.quality == {"wind": "bad"}


def test_scans_of_one_device_share_a_message_up_to_max_bytes_oldest_first(
    outbox: Outbox,
) -> None:
    for ts in range(1, 201):
        outbox.add(reading("a", ts), measurement="m", tags=TAGS)
        outbox.add(reading("b", ts), measurement="m", tags=TAGS)
    outbox.flush()
    msgs = all_messages(outbox)
    assert all(m.size <= 4096 for m in msgs)
    assert len(msgs) < 40  # grouped, not one message per scan
    for dev in ("a", "b"):
        ts = [r.ts for m in msgs if m.device == dev for r in m.readings]
        assert ts == list(range(1, 201))
    firsts = [m.ids[0] for m in msgs]
    assert firsts == sorted(firsts)


def test_take_respects_max_messages_and_never_offers_twice(outbox: Outbox) -> None:
    for ts in range(1, 11):
        for dev in "abcde":
            outbox.add(reading(dev, ts), measurement="m", tags=TAGS)
    outbox.flush()
    first = outbox.take(2)
    assert len(first) == 2
    rest = all_messages(outbox)
    parts = [p for m in first + rest for p in m.parts]
    assert len(parts) == len(set(parts))
    offered = [(m.device, r.ts) for m in first + rest for r in m.readings]
    assert len(offered) == len(set(offered)) == 50
    assert sum(m.count for m in first + rest) == 50


def test_ack_deletes_on_next_commit_and_rewind_offers_only_unacked(
    tmp_path: Path, outbox: Outbox
) -> None:
    fill(outbox, "a", 5)
    fill(outbox, "b", 5)
    outbox.flush()
    msgs = outbox.take()
    assert {m.device for m in msgs} == {"a", "b"}
    acked = next(m for m in msgs if m.device == "a")
    outbox.ack(acked)
    outbox.rewind()  # a reconnect before the deletion was committed
    again = outbox.take()
    assert [m.device for m in again] == ["b"]
    outbox.flush()
    outbox.rewind()
    assert [m.device for m in outbox.take()] == ["b"]
    assert outbox.stats().pending_readings == 5
    outbox.close()
    reopened = Outbox.open(str(tmp_path), OutboxConfig(), GW)
    try:
        [m] = reopened.take()
        assert m.device == "b" and len(m.readings) == 5
    finally:
        reopened.close()


def test_on_ack_counts_each_delivered_reading_once(outbox: Outbox) -> None:
    delivered: list[tuple[str, int]] = []
    outbox.on_ack(lambda device, n: delivered.append((device, n)))
    fill(outbox, "a", 3)
    fill(outbox, "b", 2)
    outbox.flush()
    msgs = outbox.take()
    for message in msgs:
        outbox.ack(message)
    for message in msgs:  # the same messages acked again (a resend): not counted twice
        outbox.ack(message)
    assert sorted(delivered) == [("a", 3), ("b", 2)]


def test_unacked_rows_survive_close_without_ack(tmp_path: Path) -> None:
    box = Outbox.open(str(tmp_path), OutboxConfig(), GW)
    fill(box, "a", 3)
    box.flush()
    assert box.take()  # in flight, never acked
    fill(box, "a", 2, start=4)  # queued, committed by close
    box.close()
    box = Outbox.open(str(tmp_path), OutboxConfig(), GW)
    try:
        assert [r.ts for m in box.take() for r in m.readings] == [1, 2, 3, 4, 5]
    finally:
        box.close()


async def test_committer_commits_within_the_interval(tmp_path: Path) -> None:
    box = Outbox.open(str(tmp_path), OutboxConfig(commit_interval=0.05), GW)
    task = asyncio.create_task(box.run_committer())
    try:
        fill(box, "a", 3)
        assert await box.wait_committed(10.0)
        assert sum(len(m.readings) for m in box.take()) == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        box.close()


def test_stats(outbox: Outbox) -> None:
    s = outbox.stats()
    assert (s.pending_readings, s.oldest_age_s, s.dropped) == (0, None, 0)
    fill(outbox, "a", 3)
    s = outbox.stats()
    assert (s.pending_readings, s.queued_readings) == (3, 3)
    assert s.oldest_age_s is not None and s.oldest_age_s > 1e6  # ts=1 ns: 1970
    outbox.flush()
    s = outbox.stats()
    assert (s.pending_readings, s.queued_readings, s.pending_messages_estimate) == (3, 0, 1)
    assert s.bytes > 0


def disk_bytes(state_dir: Path) -> int:
    return sum(
        os.path.getsize(state_dir / name)
        for name in ("outbox.db", "outbox.db-wal")
        if (state_dir / name).exists()
    )


def test_max_bytes_drops_oldest_counts_them_and_holds_on_disk(tmp_path: Path) -> None:
    max_bytes = 2 * 1024 * 1024
    cfg = OutboxConfig(max_bytes=max_bytes)
    box = Outbox.open(str(tmp_path), cfg, GW)
    values = {f"p{i}": 1000.0 + i for i in range(20)}  # ~400 bytes a row
    added = 0
    peak = 0
    for _ in range(120):
        for _ in range(100):
            added += 1
            box.add(Reading("a", added, dict(values)), measurement="m", tags=TAGS)
        box.flush()
        peak = max(peak, disk_bytes(tmp_path))
    stats = box.stats()
    assert stats.dropped > 0
    assert stats.dropped + stats.pending_readings == added
    assert peak <= max_bytes * 1.05, peak
    left = [r.ts for m in all_messages(box) for r in m.readings]
    assert left == list(range(stats.dropped + 1, added + 1))  # the oldest went
    box.close()
    assert disk_bytes(tmp_path) <= max_bytes * 1.05
    status = read_status(str(tmp_path), cfg)
    assert (status["dropped"], status["readings"]) == (stats.dropped, stats.pending_readings)


def test_drained_backlog_gives_disk_space_back(tmp_path: Path) -> None:
    box = Outbox.open(str(tmp_path), OutboxConfig(), GW)
    values = {f"p{i}": 1000.0 + i for i in range(20)}
    for ts in range(20000):
        box.add(Reading("a", ts, dict(values)), measurement="m", tags=TAGS)
    box.flush()
    full = disk_bytes(tmp_path)
    for m in all_messages(box):
        box.ack(m)
    box.flush()
    box.close()
    assert disk_bytes(tmp_path) < full / 4


def test_space_is_given_back_once_the_backlog_drained_not_while_it_drains(
    tmp_path: Path,
) -> None:
    box = Outbox.open(str(tmp_path), OutboxConfig(), GW)
    values = {f"p{i}": 1000.0 + i for i in range(20)}
    for ts in range(20000):
        box.add(Reading("a", ts, dict(values)), measurement="m", tags=TAGS)
    box.flush()
    full = disk_bytes(tmp_path)
    messages = all_messages(box)
    for m in messages[: len(messages) // 2]:
        box.ack(m)
    box.flush()  # half of the backlog left: free pages stay for the next inserts
    _used, pages, free = box._used_bytes()
    assert free * 4 >= pages  # enough to vacuum, and not vacuumed
    for m in messages[len(messages) // 2:]:
        box.ack(m)
    box.flush()  # drained: the free pages are given back
    assert box.stats().pending_readings == 0
    _used, pages, free = box._used_bytes()
    assert free < 16  # the free pages were given back
    box.close()
    assert disk_bytes(tmp_path) < full / 4


def test_future_format_version_is_refused(tmp_path: Path) -> None:
    Outbox.open(str(tmp_path), OutboxConfig(), GW).close()
    conn = sqlite3.connect(tmp_path / "outbox.db")
    conn.execute(f"PRAGMA user_version={FORMAT_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError) as err:
        Outbox.open(str(tmp_path), OutboxConfig(), GW)
    assert str(err.value) == (
        f"outbox '{tmp_path}/outbox.db' has format version {FORMAT_VERSION + 1}, newer than "
        f"this sensegate reads (version {FORMAT_VERSION}); upgrade sensegate or move the "
        "file away"
    )


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "outbox.db")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="is not a sensegate outbox database"):
        Outbox.open(str(tmp_path), OutboxConfig(), GW)


def test_empty_file_is_migrated_to_the_current_format(tmp_path: Path) -> None:
    (tmp_path / "outbox.db").write_bytes(b"")
    Outbox.open(str(tmp_path), OutboxConfig(), GW).close()
    conn = sqlite3.connect(tmp_path / "outbox.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    conn.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(
            lambda p: (p / "file").write_text("x") and p / "file",
            "state_dir '{d}' is not a directory", id="a-file",
        ),
        pytest.param(
            lambda p: (p / "file").write_text("x") and p / "file" / "sub",
            "cannot create state_dir '{d}': not a directory", id="under-a-file",
        ),
    ],
)
def test_unusable_state_dir_is_a_clear_error(tmp_path: Path, make, message: str) -> None:
    state_dir = make(tmp_path)
    with pytest.raises(StorageError) as err:
        Outbox.open(str(state_dir), OutboxConfig(), GW)
    assert str(err.value) == message.format(d=state_dir)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_read_only_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StorageError, match="is not writable"):
            Outbox.open(str(tmp_path), OutboxConfig(), GW)
    finally:
        tmp_path.chmod(0o700)


def test_full_disk_keeps_readings_in_memory_and_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sensegate.outbox")
    box = Outbox.open(str(tmp_path), OutboxConfig(), GW)
    fill(box, "a", 10)
    box.flush()
    # SQLITE_FULL as on a full disk: the database may not grow past its current pages.
    pages = box._writer.execute("PRAGMA page_count").fetchone()[0]
    box._writer.execute(f"PRAGMA max_page_count={pages}")
    values = {f"p{i}": float(i) for i in range(50)}
    for ts in range(11, 511):
        box.add(Reading("a", ts, dict(values)), measurement="m", tags=TAGS)
    with pytest.raises(StorageError) as err:
        box.flush()
    assert str(err.value) == (
        f"cannot commit to outbox '{tmp_path}/outbox.db': disk full; 500 readings held in memory"
    )
    assert "disk full" in caplog.text
    assert box.stats().pending_readings == 510
    with pytest.raises(StorageError):
        box.flush()  # still full: still nothing lost
    box._writer.execute("PRAGMA max_page_count=1073741823")
    assert box.flush() == 500
    assert "outbox commits resumed" in caplog.text
    box.close()
    box = Outbox.open(str(tmp_path), OutboxConfig(), GW)
    try:
        assert [r.ts for m in all_messages(box) for r in m.readings] == list(range(1, 511))
    finally:
        box.close()


def test_memory_queue_is_bounded_while_commits_fail(tmp_path: Path) -> None:
    box = Outbox.open(str(tmp_path), OutboxConfig(), GW, max_queued=100)
    pages = box._writer.execute("PRAGMA page_count").fetchone()[0]
    box._writer.execute(f"PRAGMA max_page_count={pages}")
    values = {f"p{i}": float(i) for i in range(50)}
    for ts in range(1, 151):
        box.add(Reading("a", ts, dict(values)), measurement="m", tags=TAGS)
    with pytest.raises(StorageError):
        box.flush()
    assert box.stats().dropped == 50
    box._writer.execute("PRAGMA max_page_count=1073741823")
    box.flush()
    assert [r.ts for m in all_messages(box) for r in m.readings] == list(range(51, 151))
    box.close()
    assert read_status(str(tmp_path), OutboxConfig())["dropped"] == 50


def test_read_status_while_open_and_print(tmp_path: Path, monkeypatch) -> None:
    assert read_status(str(tmp_path / "none"), OutboxConfig())["exists"] is False
    box = Outbox.open(str(tmp_path), OutboxConfig(max_message_bytes=1000), GW)
    fill(box, "a", 30)
    fill(box, "b", 1)
    box.flush()
    status = read_status(str(tmp_path), OutboxConfig(max_message_bytes=1000))
    assert status["readings"] == 31
    assert status["messages"] >= 3
    assert status["dropped"] == 0
    assert status["oldest_age_s"] > 0

    class Cfg:
        state_dir = str(tmp_path)
        outbox = OutboxConfig()

    import gateway

    fake = type("config", (), {"load_gateway_config": staticmethod(lambda path: Cfg())})
    monkeypatch.setitem(__import__("sys").modules, "gateway.config.load", fake)
    monkeypatch.setattr(gateway, "config", fake, raising=False)
    out = io.StringIO()
    assert buffer.print_status("gw.yaml", out) == 0
    text = out.getvalue()
    assert "pending readings:  31" in text
    assert "dropped:           0" in text
    box.close()


def test_publisher_json_splice_is_byte_for_byte_build_json(outbox: Outbox) -> None:
    from gateway.core.model import GatewayConfig, MqttConfig
    from gateway.core.payload import build_json
    from gateway.edge.publish import Publisher

    readings = [
        Reading("rws-1", 1764000000123456789, {"air_temp": -12.3, "n": 7, "ok": True,
                                               "s": "grüß \"q\"", "big": 2**63 + 5}),
        Reading("rws-1", 1764000001000000000, {"b": 1.0, "a": 2.5e-12}, {"w": "bad"}),
        Reading("rws-1", 1764000002000000000, {}, {"x": "invalid"}),
    ]
    for r in readings:
        outbox.add(r, measurement="road weather", tags={"z": "1", "a": "ü"})
    outbox.flush()
    [msg] = outbox.take()
    config = GatewayConfig(
        id="gw-1", devices=(), mqtt=MqttConfig(host="h", port=1, client_id="c"),
    )
    publisher = Publisher(config, outbox)
    assert publisher._payload(msg) == build_json(
        "gw-1", "rws-1", "road weather", {"a": "ü", "z": "1"}, readings
    )


def test_non_finite_values_become_invalid_instead_of_breaking_json(outbox: Outbox) -> None:
    outbox.add(Reading("a", 1, {"x": float("nan"), "y": 1.0}), measurement="m", tags={})
    outbox.flush()
    [msg] = outbox.take()
    assert msg.readings[0].values == {"y": 1.0}
    assert msg.readings[0].quality == {"x": "invalid"}


def make_v1_outbox(state_dir: Path, rows: list[tuple[str, int, str, str | None]]) -> None:
    """An outbox in format version 1 (one row per reading) with pending rows."""
    conn = sqlite3.connect(state_dir / "outbox.db", isolation_level=None)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    for statement in SCHEMA_V1:
        conn.execute(statement)
    conn.execute("UPDATE meta SET value = 7 WHERE key = 'dropped'")
    tags = '{"district":"xinwu","lane":"north"}'
    conn.executemany(
        "INSERT INTO readings (device, measurement, tags, ts, vals, quality, size) "
        "VALUES (?, 'm', ?, ?, ?, ?, ?)",
        [(d, tags, ts, vals, q, len(vals) + 60) for d, ts, vals, q in rows],
    )
    conn.execute(f"PRAGMA application_id={buffer.APPLICATION_ID}")
    conn.execute("PRAGMA user_version=1")
    conn.close()


def test_version_1_outbox_is_migrated_and_its_rows_are_offered(tmp_path: Path) -> None:
    rows = [("a", ts, f'{{"t":{ts}.5}}', None) for ts in range(1, 301)]
    rows += [("b", 5, '{"x":1}', '{"y":"bad"}'), ("a", 301, "{}", '{"t":"invalid"}')]
    make_v1_outbox(tmp_path, rows)
    assert committed_readings(str(tmp_path)) == {(d, ts) for d, ts, _, _ in rows}
    assert read_status(str(tmp_path), OutboxConfig())["readings"] == len(rows)
    box = Outbox.open(str(tmp_path), OutboxConfig(max_message_bytes=4096), GW)
    try:
        conn = sqlite3.connect(tmp_path / "outbox.db")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION == 3
        assert {g for (g,) in conn.execute("SELECT gateway FROM chunks")} == {GW}
        assert conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'readings'"
        ).fetchone()[0] == 0
        conn.close()
        stats = box.stats()
        assert (stats.pending_readings, stats.dropped) == (len(rows), 7)
        assert committed_readings(str(tmp_path)) == {(d, ts) for d, ts, _, _ in rows}
        msgs = all_messages(box)
        got = [(m.device, r.ts, r.values, r.quality) for m in msgs for r in m.readings]
        assert [g for g in got if g[0] == "a"] == (
            [("a", ts, {"t": ts + 0.5}, {}) for ts in range(1, 301)]
            + [("a", 301, {}, {"t": "invalid"})]
        )
        assert [g for g in got if g[0] == "b"] == [("b", 5, {"x": 1}, {"y": "bad"})]
        for m in msgs:
            box.ack(m)
        box.flush()
        assert box.stats().pending_readings == 0
        assert committed_readings(str(tmp_path)) == set()
    finally:
        box.close()


def test_partly_acked_chunk_survives_a_restart_without_its_acked_part(tmp_path: Path) -> None:
    box = Outbox.open(str(tmp_path), OutboxConfig(), GW)
    fill(box, "a", 3)
    fill(box, "b", 2)
    box.flush()  # one chunk, two parts
    [a] = [m for m in box.take() if m.device == "a"]
    box.ack(a)
    box.flush()  # records the acked part
    assert committed_readings(str(tmp_path)) == {("b", 1), ("b", 2)}
    assert read_status(str(tmp_path), OutboxConfig())["readings"] == 2
    box._writer.close()  # as after kill -9: no close(), no final commit
    box = Outbox.open(str(tmp_path), OutboxConfig(), GW)
    try:
        assert box.stats().pending_readings == 2
        [b] = box.take()
        assert (b.device, [r.ts for r in b.readings]) == ("b", [1, 2])
        box.ack(b)
        box.flush()
        assert box.stats().pending_readings == 0
        assert box._writer.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0
    finally:
        box.close()


def test_readings_keep_the_gateway_id_they_were_polled_under(tmp_path: Path) -> None:
    """After a change of gateway.id, what the old id buffered still goes out under it."""
    box = Outbox.open(str(tmp_path), OutboxConfig(), "gw-old")
    fill(box, "a", 3)
    box.close()
    box = Outbox.open(str(tmp_path), OutboxConfig(), "gw-new")
    try:
        fill(box, "a", 2, start=10)
        box.flush()
        got = [(m.gateway, m.device, [r.ts for r in m.readings]) for m in all_messages(box)]
        assert got == [("gw-old", "a", [1, 2, 3]), ("gw-new", "a", [10, 11])]
    finally:
        box.close()


def test_version_2_outbox_is_stamped_with_the_configured_gateway_id(tmp_path: Path) -> None:
    box = Outbox.open(str(tmp_path), OutboxConfig(), "gw-x")
    fill(box, "a", 2)
    box.close()
    conn = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    conn.execute("ALTER TABLE chunks DROP COLUMN gateway")  # as format 2 wrote it
    conn.execute("DROP TABLE acked")
    conn.execute("PRAGMA user_version=2")
    conn.close()
    box = Outbox.open(str(tmp_path), OutboxConfig(), "gw-y")
    try:
        assert [(m.gateway, m.count) for m in all_messages(box)] == [("gw-y", 2)]
    finally:
        box.close()


def damage_interior_pages(db: Path) -> None:
    """Overwrite every page but the first (the header) with garbage, as a bad disk might."""
    data = bytearray(db.read_bytes())
    for offset in range(4096, len(data), 4096):
        data[offset:offset + 4096] = bytes((offset // 4096 * 37 + i) % 251 for i in range(4096))
    db.write_bytes(bytes(data))


def test_damaged_file_at_start_is_moved_aside_and_a_new_outbox_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox.open(str(tmp_path), OutboxConfig(), GW)
    fill(box, "a", 500)
    box.close()
    damage_interior_pages(tmp_path / "outbox.db")
    metrics = GatewayMetrics()
    with caplog.at_level(logging.ERROR, "sensegate.outbox"):
        box = Outbox.open(str(tmp_path), OutboxConfig(), GW, metrics=metrics)
    try:
        [aside] = [p for p in tmp_path.iterdir() if ".damaged-" in p.name]
        assert aside.stat().st_size > 4096  # kept, for salvage
        assert f"moved it to '{aside}'" in caplog.text
        assert metrics.outbox_files_replaced_total.labels("damaged").value == 1
        assert box.stats().pending_readings == 0
        fill(box, "b", 3)
        box.flush()
        assert [(m.device, m.count) for m in all_messages(box)] == [("b", 3)]
    finally:
        box.close()


def test_deleted_file_is_noticed_and_rebuilt_from_the_open_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = GatewayMetrics()
    box = Outbox.open(str(tmp_path), OutboxConfig(), GW, metrics=metrics)
    try:
        fill(box, "a", 300)
        box.flush()
        [first] = box.take(1)
        box.ack(first)  # one part acked, the rest pending
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"outbox.db{suffix}").unlink()
        fill(box, "a", 5, start=1000)
        with caplog.at_level(logging.ERROR, "sensegate.outbox"):
            box.flush()
        assert "was deleted or replaced while the gateway ran" in caplog.text
        assert metrics.outbox_files_replaced_total.labels("vanished").value == 1
        assert (tmp_path / "outbox.db").exists()
        box.rewind()
        got = [r.ts for m in all_messages(box) for r in m.readings]
        assert got == [ts for ts in range(1, 301) if ts not in
                       {r.ts for r in first.readings}] + list(range(1000, 1005))
        assert committed_readings(str(tmp_path)) == {("a", ts) for ts in got}
        assert box.stats().dropped == 0
    finally:
        box.close()


def test_while_commits_fail_memory_goes_out_unstored_at_most_once(tmp_path: Path) -> None:
    metrics = GatewayMetrics()
    box = Outbox.open(str(tmp_path), OutboxConfig(), GW, metrics=metrics)
    assert box.take_unstored(10) == [] and box.problem() is None  # commits work: nothing
    pages = box._writer.execute("PRAGMA page_count").fetchone()[0]
    box._writer.execute(f"PRAGMA max_page_count={pages}")  # SQLITE_FULL from now on
    values = {f"p{i}": float(i) for i in range(50)}
    for ts in range(1, 201):
        box.add(Reading("a" if ts % 2 else "b", ts, dict(values)), measurement="m", tags=TAGS)
    with pytest.raises(StorageError):
        box.flush()
    assert box.problem() == "outbox commits fail: disk full"
    first, second = box.take_unstored(2)
    odd, even = list(range(1, 201, 2)), list(range(2, 201, 2))
    assert (first.gateway, first.device, [r.ts for r in first.readings]) == (GW, "a", odd)
    assert (second.device, [r.ts for r in second.readings], second.stored) == ("b", even, False)
    assert box.take_unstored(2) == []  # taken out of memory: at most once
    box.ack(first)
    box.lost(second)  # could not be published: gone, counted
    assert metrics.outbox_unstored_published_total.value == 100
    assert (box.stats().dropped, box.thrown_away()) == (100, 100)
    for ts in range(300, 400):
        box.add(Reading("c", ts, dict(values)), measurement="m", tags=TAGS)
    assert box.close() == 100  # still in memory, the disk still refuses: thrown away
    assert box.thrown_away() == 200
