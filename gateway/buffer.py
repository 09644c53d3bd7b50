"""The durable offline buffer (outbox): SQLite in WAL mode under ``gateway.state_dir``.

Life of a reading (docs/outbox.md has the durability argument in full):

1. ``Outbox.add`` puts it on an in-memory queue: synchronous, no I/O, safe to call from the
   poller's sink for hundreds of devices.
2. The committer (``await outbox.run_committer()`` as a task, or ``flush()``) writes every
   queued reading in one transaction at most ``outbox.commit_interval`` apart. WAL with
   ``synchronous=FULL``: the commit returns only after the WAL is fsynced, so a power cut
   loses at most the readings still queued in memory (the last uncommitted batch).
3. ``take`` offers committed rows only, oldest first, grouped into messages (the scans of
   one device share a message up to ``outbox.max_message_bytes``).
4. ``ack(message)`` after the broker acknowledged the message; the rows are deleted by the
   next commit (same transaction as the next inserts, so acks cost no extra fsync). Rows
   offered but never acked are offered again after ``rewind()`` (the publisher calls it on
   every connect): duplicates are possible, with the same ``ts``, loss is not.

Past ``outbox.max_bytes`` (measured as the database's used pages plus an allowance for the
WAL, which is kept small by checkpoints and ``journal_size_limit``) the oldest rows are
dropped, counted in a persisted counter, the ``outbox_dropped_total`` metric and a log line.

The on-disk format carries ``PRAGMA application_id`` (sensegate's outbox) and
``PRAGMA user_version`` (the format version); a newer version is refused, an older one
migrated in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from gateway.errors import StorageError
from gateway.model import OutboxConfig, Reading, Value

log = logging.getLogger("sensegate.outbox")

DB_NAME = "outbox.db"
FORMAT_VERSION = 1
APPLICATION_ID = 0x53474F42  # "SGOB": this SQLite file is a sensegate outbox
PAGE_SIZE = 4096
MAX_QUEUED_READINGS = 200_000  # held in memory while the disk refuses commits
TAKE_CHUNK = 2000  # rows read per query by `take`
VACUUM_MIN_FREE_PAGES = 256  # give free pages back to the file system past this many
VACUUM_MAX_PAGES_PER_COMMIT = 20_000
DROP_LOG_EVERY = 60.0  # seconds between "dropped the oldest" log lines while at the bound

_SCHEMA_V1 = (
    """CREATE TABLE readings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device TEXT NOT NULL,
        measurement TEXT NOT NULL,
        tags TEXT NOT NULL,
        ts INTEGER NOT NULL,
        vals TEXT NOT NULL,
        quality TEXT,
        size INTEGER NOT NULL
    )""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO meta (key, value) VALUES ('dropped', 0)",
)

# _MIGRATIONS[v] turns a version-v database into version v+1. Version 0 is a new, empty
# file. A future format change appends one function here and bumps FORMAT_VERSION.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (_SCHEMA_V1,)
assert len(_MIGRATIONS) == FORMAT_VERSION


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """Committed readings of one device that travel in one MQTT message."""

    device: str
    measurement: str
    tags: dict[str, str]
    ids: tuple[int, ...]  # outbox row ids, oldest first
    size: int  # estimated payload bytes
    sizes: tuple[int, ...]  # estimated bytes of each row, as ids
    rows: tuple[tuple[int, str, str | None], ...]  # (ts, values JSON, quality JSON or None)

    @property
    def readings(self) -> tuple[Reading, ...]:
        return tuple(
            Reading(self.device, ts, json.loads(vals), json.loads(quality) if quality else {})
            for ts, vals, quality in self.rows
        )

    def json_readings(self) -> str:
        """The ``readings`` array items of the ``format: json`` payload, comma-separated.

        Built from the stored JSON without decoding it: byte for byte what
        ``payload.build_json`` writes for `readings` (the stored JSON uses its settings).
        """
        return ",".join(
            f'{{"ts":{ts},"values":{vals},"quality":{quality}}}' if quality
            else f'{{"ts":{ts},"values":{vals}}}'
            for ts, vals, quality in self.rows
        )


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending_readings: int  # committed and not yet acknowledged, plus queued in memory
    queued_readings: int  # in memory, not yet committed
    pending_messages_estimate: int  # messages the pending readings make at most size
    bytes: int  # on disk: database plus WAL file
    oldest_age_s: float | None  # age of the oldest pending reading, None when empty
    dropped: int  # readings dropped since the outbox was created (persisted)


@dataclass(slots=True)
class _Row:
    device: str
    measurement: str
    tags: str
    ts: int
    vals: str
    quality: str | None
    size: int


@dataclass(slots=True)
class _Group:
    device: str
    measurement: str
    tags: str
    rows: list[tuple[int, str, str | None]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    size: int = 0


def _dumps(obj: object) -> str:
    """Compact JSON as `gateway.payload` writes it (insertion order, UTF-8, no NaN)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _finite(reading: Reading) -> tuple[dict[str, Value], dict[str, str]]:
    """Values that JSON can carry; a non-finite float becomes quality ``invalid``."""
    values: dict[str, Value] = {}
    quality = dict(reading.quality)
    for name, value in reading.values.items():
        if isinstance(value, float) and not math.isfinite(value):
            quality[name] = "invalid"
        else:
            values[name] = value
    return values, quality


def _describe(exc: sqlite3.Error) -> str:
    """A short, lower-case reason for an SQLite error (no secrets can be in it)."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL" or "full" in str(exc):
        return "disk full"
    if name.startswith("SQLITE_READONLY") or "readonly" in str(exc):
        return "read-only file system or file"
    if name.startswith("SQLITE_CANTOPEN"):
        return "cannot open the database file"
    if name.startswith("SQLITE_IOERR"):
        return f"i/o error ({name.lower()})"
    if name == "SQLITE_BUSY" or "locked" in str(exc):
        return "database is locked by another process"
    return str(exc).lower()


class Outbox:
    """SQLite (WAL) outbox; see the module docstring for the contract."""

    def __init__(
        self,
        path: str,
        cfg: OutboxConfig,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        *,
        metrics: Any = None,
        max_queued: int = MAX_QUEUED_READINGS,
    ) -> None:
        self.path = path
        self.cfg = cfg
        self._metrics = metrics
        self._max_queued = max_queued
        self._writer = writer
        self._reader = reader
        self._wlock = threading.Lock()  # the writer connection and the commit
        self._qlock = threading.Lock()  # the in-memory queues and counters below
        self._queue: deque[_Row] = deque()
        self._to_delete: list[tuple[int, int]] = []  # acked (id, size) for the next commit
        self._dropped_upto = 0  # drops remove a prefix of ids: every id <= this is gone
        self._dropped_upto_pending = 0
        self._deleted_recently: list[int] = []  # deleted ids `take` may forget
        self._acked: set[int] = set()  # acked ids not yet known deleted
        self._cursor = 0  # highest row id offered since the last rewind
        self._rows = 0  # committed rows not yet deleted
        self._rows_size = 0
        self._dropped = 0  # persisted + dropped in memory
        self._dropped_unpersisted = 0
        self._drop_logged_at = -DROP_LOG_EVERY
        self._drops_unlogged = 0
        self._failing: str | None = None  # reason commits fail, None when healthy
        self._closed = False
        self._committed = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self._wal_budget, wal_pages = _wal_budget(cfg.max_bytes)
        self._data_budget = max(cfg.max_bytes - self._wal_budget, 16 * PAGE_SIZE)
        self._writer.execute(f"PRAGMA wal_autocheckpoint={wal_pages}")
        self._writer.execute(f"PRAGMA journal_size_limit={wal_pages * PAGE_SIZE}")
        rows, size = self._writer.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM readings"
        ).fetchone()
        self._rows, self._rows_size = int(rows), int(size)
        self._dropped = int(
            self._writer.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()[0]
        )
        self._update_metrics()

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        state_dir: str,
        cfg: OutboxConfig,
        *,
        metrics: Any = None,
        max_queued: int = MAX_QUEUED_READINGS,
    ) -> Outbox:
        """Open (creating or migrating) ``state_dir/outbox.db``; raises StorageError."""
        if os.path.exists(state_dir) and not os.path.isdir(state_dir):
            raise StorageError(f"state_dir '{state_dir}' is not a directory")
        try:
            os.makedirs(state_dir, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create state_dir '{state_dir}': {exc.strerror or exc}".lower()
            ) from exc
        path = os.path.join(state_dir, DB_NAME)
        if not os.access(state_dir, os.W_OK | os.X_OK):
            raise StorageError(f"state_dir '{state_dir}' is not writable")
        try:
            writer = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open outbox '{path}': {_describe(exc)}") from exc
        try:
            _prepare(writer, path)
            reader = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=10.0
            )
        except sqlite3.Error as exc:
            writer.close()
            raise StorageError(f"cannot open outbox '{path}': {_describe(exc)}") from exc
        except StorageError:
            writer.close()
            raise
        outbox = cls(path, cfg, writer, reader, metrics=metrics, max_queued=max_queued)
        log.info(
            "outbox %s: %d readings pending, %d dropped so far",
            path, outbox._rows, outbox._dropped,
        )
        return outbox

    # -- producer side -----------------------------------------------------------------

    def add(self, reading: Reading, *, measurement: str, tags: dict[str, str]) -> None:
        """Queue one scan for the next commit. Synchronous, no I/O, never raises for storage."""
        try:
            vals = _dumps(reading.values)
            quality = _dumps(reading.quality) if reading.quality else None
        except ValueError:  # NaN or infinity: decode should have marked it invalid
            values, qualities = _finite(reading)
            vals, quality = _dumps(values), _dumps(qualities)
        tags_s = json.dumps(tags, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        size = (
            len(vals) + len(quality or "") + len(tags_s) + len(measurement)
            + len(reading.device) + 48
        )
        row = _Row(reading.device, measurement, tags_s, int(reading.ts), vals, quality, size)
        with self._qlock:
            self._queue.append(row)
            if len(self._queue) > self._max_queued:
                self._queue.popleft()
                self._dropped += 1
                self._dropped_unpersisted += 1
                if self._dropped_unpersisted == 1:
                    log.error(
                        "outbox memory queue full (%d readings) while commits fail: "
                        "dropping the oldest queued readings",
                        self._max_queued,
                    )

    def flush(self) -> int:
        """Commit everything queued (and delete acked rows) now; returns rows inserted.

        Raises StorageError when the commit fails; the readings stay queued in memory.
        """
        inserted = self._commit()
        self._forget_deleted()
        if inserted:
            self._notify()
        return inserted

    def on_commit(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` on the event loop after each commit that added rows.

        Returns a function that removes the callback again.
        """
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _notify(self) -> None:
        self._committed.set()
        for callback in list(self._listeners):
            callback()

    async def run_committer(self) -> None:
        """Commit queued readings at most ``commit_interval`` apart, until cancelled.

        The commit (and its fsync) runs in a worker thread so the event loop never waits
        for the disk. Failures are logged once per episode and retried with backoff.
        """
        interval = max(0.01, self.cfg.commit_interval)
        delay = interval
        while True:
            await asyncio.sleep(delay)
            with self._qlock:
                idle = not self._queue and not self._to_delete
            if idle:
                continue
            try:
                inserted = await asyncio.to_thread(self._commit)
            except StorageError:
                delay = min(max(delay * 2, interval), 5.0)
                continue
            delay = interval
            if inserted:
                self._notify()

    # -- consumer side -----------------------------------------------------------------

    def take(self, max_messages: int = 100, max_bytes: int | None = None) -> list[OutboxMessage]:
        """Committed rows not yet offered since the last ``rewind``, oldest first, as messages.

        Only reads; the rows stay until ``ack``. At most ``max_messages`` messages and, when
        given, about ``max_bytes`` estimated bytes in all (at least one row).
        """
        if max_messages <= 0:
            return []
        total = 0
        self._forget_deleted()
        groups: list[_Group] = []
        open_groups: dict[tuple[str, str, str], _Group] = {}
        limit = self.cfg.max_message_bytes
        while True:
            try:
                rows = self._reader.execute(
                    "SELECT id, device, measurement, tags, ts, vals, quality, size "
                    "FROM readings WHERE id > ? ORDER BY id LIMIT ?",
                    (self._cursor, TAKE_CHUNK),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(
                    f"cannot read outbox '{self.path}': {_describe(exc)}"
                ) from exc
            if not rows:
                break
            with self._qlock:
                acked = self._acked.copy() if self._acked else None
            for rid, device, measurement, tags, ts, vals, quality, size in rows:
                if acked is not None and rid in acked:
                    self._cursor = rid
                    continue
                if max_bytes is not None and total and total + size > max_bytes:
                    return self._messages(groups)
                key = (device, measurement, tags)
                group = open_groups.get(key)
                if group is None or (group.size + size > limit and group.ids):
                    if len(groups) >= max_messages:
                        return self._messages(groups)
                    group = _Group(device, measurement, tags)
                    groups.append(group)
                    open_groups[key] = group
                group.rows.append((ts, vals, quality))
                group.ids.append(rid)
                group.sizes.append(size)
                group.size += size
                total += size
                self._cursor = rid
            if len(rows) < TAKE_CHUNK:
                break
        return self._messages(groups)

    @staticmethod
    def _messages(groups: list[_Group]) -> list[OutboxMessage]:
        return [
            OutboxMessage(
                g.device, g.measurement, json.loads(g.tags), tuple(g.ids), g.size,
                tuple(g.sizes), tuple(g.rows),
            )
            for g in groups
        ]

    def ack(self, message: OutboxMessage) -> None:
        """The broker acknowledged ``message``: its rows go with the next commit."""
        sizes = message.sizes or (0,) * len(message.ids)
        with self._qlock:
            for rid, size in zip(message.ids, sizes, strict=True):
                if rid not in self._acked:
                    self._acked.add(rid)
                    self._to_delete.append((rid, size))

    def rewind(self) -> None:
        """Offer again every committed row that was offered but never acked (on reconnect)."""
        self._forget_deleted()
        self._cursor = 0

    async def wait_committed(self, timeout: float) -> bool:
        """Wait until a commit added rows (or ``timeout``); True when it did."""
        try:
            await asyncio.wait_for(self._committed.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self._committed.clear()
        return True

    def unacked_readings(self) -> int:
        """Readings committed or queued that the broker has not acknowledged yet."""
        with self._qlock:
            return self._rows - len(self._to_delete) + len(self._queue)

    # -- the commit --------------------------------------------------------------------

    def _commit(self) -> int:
        with self._wlock:
            if self._closed:
                raise StorageError(f"outbox '{self.path}' is closed")
            with self._qlock:
                batch = list(self._queue)
                self._queue.clear()
                deletes = [(i, n) for i, n in self._to_delete if i > self._dropped_upto]
                self._to_delete = []
                dropped_mem = self._dropped_unpersisted
            try:
                dropped_now, dropped_size = self._write(
                    batch, [i for i, _ in deletes], dropped_mem
                )
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._writer.execute("ROLLBACK")
                with self._qlock:
                    self._queue.extendleft(reversed(batch))
                    overflow = len(self._queue) - self._max_queued
                    for _ in range(max(0, overflow)):
                        self._queue.popleft()
                        self._dropped += 1
                        self._dropped_unpersisted += 1
                    self._to_delete[:0] = deletes
                    queued = len(self._queue)
                reason = _describe(exc)
                message = (
                    f"cannot commit to outbox '{self.path}': {reason}; "
                    f"{queued} readings held in memory"
                )
                if self._failing != reason:
                    log.error("%s", message)
                self._failing = reason
                self._count_commit_error()
                self._update_metrics()
                raise StorageError(message) from exc
            if self._failing is not None:
                log.info("outbox commits resumed after failure: %s", self._failing)
                self._failing = None
            with self._qlock:
                self._rows += len(batch) - len(deletes) - dropped_now
                self._rows_size += (
                    sum(r.size for r in batch) - sum(n for _, n in deletes) - dropped_size
                )
                self._rows_size = max(self._rows_size, 0)
                self._dropped_unpersisted -= dropped_mem
                self._dropped += dropped_now
                self._deleted_recently.extend(i for i, _ in deletes)
            if dropped_now:
                self._drops_unlogged += dropped_now
                now = time.monotonic()
                if now - self._drop_logged_at >= DROP_LOG_EVERY:
                    log.warning(
                        "outbox over max_bytes (%d bytes): dropped the %d oldest readings "
                        "(%d dropped in all)",
                        self.cfg.max_bytes, self._drops_unlogged, self._dropped,
                    )
                    self._drop_logged_at = now
                    self._drops_unlogged = 0
            self._update_metrics()
            return len(batch)

    def _write(
        self, batch: list[_Row], deletes: list[int], dropped_mem: int
    ) -> tuple[int, int]:
        """One transaction: delete acked rows, insert the batch, enforce max_bytes."""
        w = self._writer
        self._dropped_upto_pending = self._dropped_upto
        w.execute("BEGIN IMMEDIATE")
        if deletes:
            ordered = sorted(deletes)
            try:  # one statement over sorted ids: about 3x faster than one per id
                w.execute(
                    "DELETE FROM readings WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps(ordered),),
                )
            except sqlite3.OperationalError as exc:
                if "json_each" not in str(exc):
                    raise
                w.executemany("DELETE FROM readings WHERE id = ?", ((i,) for i in ordered))
        if batch:
            w.executemany(
                "INSERT INTO readings (device, measurement, tags, ts, vals, quality, size) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((r.device, r.measurement, r.tags, r.ts, r.vals, r.quality, r.size)
                 for r in batch),
            )
        dropped, dropped_size = self._enforce_bound(len(batch) - len(deletes))
        if dropped or dropped_mem:
            w.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'dropped'",
                (dropped + dropped_mem,),
            )
        if not dropped:
            self._maybe_vacuum()
        w.execute("COMMIT")
        self._dropped_upto = self._dropped_upto_pending
        return dropped, dropped_size

    def _used_bytes(self) -> tuple[int, int, int]:
        w = self._writer
        pages = w.execute("PRAGMA page_count").fetchone()[0]
        free = w.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * PAGE_SIZE, pages, free

    def _enforce_bound(self, rows_delta: int) -> tuple[int, int]:
        """Drop the oldest rows while the used pages exceed the data budget."""
        w = self._writer
        dropped = dropped_size = 0
        for _ in range(8):
            used, _pages, _free = self._used_bytes()
            if used <= self._data_budget:
                break
            rows = max(self._rows + rows_delta - dropped, 1)
            per_row = max(used / rows, 1.0)
            target = self._data_budget * 0.97
            n = max(1, math.ceil((used - target) / per_row))
            found = w.execute(
                "SELECT count(*), coalesce(sum(size), 0), max(id) FROM "
                "(SELECT id, size FROM readings ORDER BY id LIMIT ?)",
                (n,),
            ).fetchone()
            if not found[0]:
                break
            w.execute("DELETE FROM readings WHERE id <= ?", (found[2],))
            self._dropped_upto_pending = max(self._dropped_upto_pending, int(found[2]))
            dropped += int(found[0])
            dropped_size += int(found[1])
        return dropped, dropped_size

    def _maybe_vacuum(self) -> None:
        """Give free pages back to the file system once a backlog has drained."""
        _used, pages, free = self._used_bytes()
        if free >= VACUUM_MIN_FREE_PAGES and free * 4 >= pages:
            # Python's sqlite3 steps a statement without result columns once, and each step
            # of incremental_vacuum frees one page: so one execute per page, bounded per
            # commit (about 5 µs a page) so a commit never stalls for long.
            for _ in range(min(free, VACUUM_MAX_PAGES_PER_COMMIT)):
                self._writer.execute("PRAGMA incremental_vacuum(1)")

    def _forget_deleted(self) -> None:
        # Runs on the event loop thread only (take, rewind, flush), never concurrently with
        # `take`, so a row `take` reads is either in the table or in `_acked`.
        with self._qlock:
            if not self._deleted_recently:
                return
            self._acked.difference_update(self._deleted_recently)
            self._deleted_recently = []

    # -- status ------------------------------------------------------------------------

    def disk_bytes(self) -> int:
        """Database plus WAL file size on disk."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(self.path + suffix)
        return total

    def stats(self) -> OutboxStats:
        with self._qlock:
            queued = len(self._queue)
            pending = self._rows - len(self._to_delete) + queued
            size = (
                self._rows_size - sum(n for _, n in self._to_delete)
                + sum(r.size for r in self._queue)
            )
            dropped = self._dropped
            oldest_queued = self._queue[0].ts if self._queue else None
        oldest_ts: int | None = None
        with contextlib.suppress(sqlite3.Error):
            row = self._reader.execute(
                "SELECT ts FROM readings ORDER BY id LIMIT 1"
            ).fetchone()
            if row is not None:
                oldest_ts = int(row[0])
        if oldest_ts is None:
            oldest_ts = oldest_queued
        age = None if oldest_ts is None or pending <= 0 else max(
            0.0, time.time() - oldest_ts / 1e9
        )
        messages = math.ceil(max(size, 0) / self.cfg.max_message_bytes) if pending > 0 else 0
        return OutboxStats(
            pending_readings=max(pending, 0),
            queued_readings=queued,
            pending_messages_estimate=messages,
            bytes=self.disk_bytes(),
            oldest_age_s=age,
            dropped=dropped,
        )

    # -- metrics -----------------------------------------------------------------------

    def _count_commit_error(self) -> None:
        if self._metrics is None:
            return
        counter = getattr(self._metrics, "outbox_commit_errors_total", None)
        registry = getattr(self._metrics, "registry", None)
        if counter is None and registry is not None:
            from prometheus_client import Counter

            counter = Counter(
                "outbox_commit_errors", "Outbox commits that failed (disk full, read-only)",
                namespace="sensegate", registry=registry,
            )
            self._metrics.outbox_commit_errors_total = counter
        if counter is not None:
            counter.inc()

    def _update_metrics(self) -> None:
        """Push depth, bytes, age and the dropped total to the metrics (writer lock held)."""
        set_outbox = getattr(self._metrics, "set_outbox", None)
        if set_outbox is None:
            return
        with self._qlock:
            pending = self._rows - len(self._to_delete) + len(self._queue)
            size = self._rows_size - sum(n for _, n in self._to_delete)
            dropped = self._dropped
            oldest_ts = self._queue[0].ts if self._queue else None
        with contextlib.suppress(sqlite3.Error):
            row = self._writer.execute("SELECT ts FROM readings ORDER BY id LIMIT 1").fetchone()
            if row is not None:
                oldest_ts = int(row[0])
        age = 0.0 if oldest_ts is None or pending <= 0 else max(0.0, time.time() - oldest_ts / 1e9)
        set_outbox(
            pending_readings=max(pending, 0),
            pending_messages=math.ceil(max(size, 0) / self.cfg.max_message_bytes),
            size_bytes=self.disk_bytes(),
            dropped_total=dropped,
            oldest_age=age,
        )

    # -- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Commit what is queued (best effort), checkpoint the WAL and close."""
        with contextlib.suppress(StorageError):
            self._commit()
        with self._wlock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(sqlite3.Error):
                self._reader.close()
            with contextlib.suppress(sqlite3.Error):
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.suppress(sqlite3.Error):
                self._writer.close()
        with self._qlock:
            left = len(self._queue)
        if left:
            log.error("outbox closed with %d readings not committed", left)


def _wal_budget(max_bytes: int) -> tuple[int, int]:
    """Bytes set aside for the WAL within max_bytes, and the auto-checkpoint in pages."""
    budget = min(max(max_bytes // 16, 64 * PAGE_SIZE), 8 * 1024 * 1024)
    return budget, max(16, budget // PAGE_SIZE // 2)


def _prepare(conn: sqlite3.Connection, path: str) -> None:
    """Check the file is an outbox of a version we read; create or migrate it; set pragmas."""
    conn.execute("PRAGMA busy_timeout=10000")
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
        raise StorageError(f"'{path}' is not a sensegate outbox database; move it away")
    if version > FORMAT_VERSION:
        raise StorageError(
            f"outbox '{path}' has format version {version}, newer than this sensegate "
            f"reads (version {FORMAT_VERSION}); upgrade sensegate or move the file away"
        )
    if version == 0:
        # A new file: these must be set before the first table exists.
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StorageError(f"outbox '{path}': cannot switch to wal journal mode (got {mode!r})")
    conn.execute("PRAGMA synchronous=FULL")
    if version < FORMAT_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for step in range(version, FORMAT_VERSION):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        if version:
            log.info("outbox '%s' migrated from format %d to %d", path, version, FORMAT_VERSION)


# -- `sensegate outbox` ----------------------------------------------------------------


def read_status(state_dir: str, cfg: OutboxConfig) -> dict[str, Any]:
    """Status of the outbox in ``state_dir`` read through a read-only connection.

    Works while the daemon runs (WAL readers never block the writer) and when it does not.
    """
    path = os.path.join(state_dir, DB_NAME)
    if not os.path.exists(path):
        return {"path": path, "exists": False}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        # No -shm/-wal and a directory we cannot write: no writer runs, read it as is.
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open outbox '{path}': {_describe(exc)}") from exc
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > FORMAT_VERSION:
            raise StorageError(
                f"outbox '{path}' has format version {version}, newer than this sensegate "
                f"reads (version {FORMAT_VERSION})"
            )
        if version == 0:
            return {"path": path, "exists": True, "readings": 0, "messages": 0,
                    "bytes": 0, "oldest_age_s": None, "dropped": 0, "version": 0}
        readings, messages = 0, 0
        for count, size in conn.execute(
            "SELECT count(*), sum(size) FROM readings GROUP BY device, measurement, tags"
        ):
            readings += count
            messages += max(1, math.ceil(size / cfg.max_message_bytes))
        oldest = conn.execute("SELECT ts FROM readings ORDER BY id LIMIT 1").fetchone()
        dropped = conn.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()[0]
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read outbox '{path}': {_describe(exc)}") from exc
    finally:
        conn.close()
    size = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            size += os.path.getsize(path + suffix)
    return {
        "path": path,
        "exists": True,
        "version": version,
        "readings": readings,
        "messages": messages,
        "bytes": size,
        "max_bytes": cfg.max_bytes,
        "oldest_age_s": None if oldest is None else max(0.0, time.time() - oldest[0] / 1e9),
        "dropped": int(dropped),
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def print_status(config_path: str, out: IO[str]) -> int:
    """`sensegate outbox -c FILE`: pending messages and readings, bytes, oldest age, dropped."""
    from gateway.config import load_gateway_config

    config = load_gateway_config(config_path)
    try:
        status = read_status(config.state_dir, config.outbox)
    except StorageError as exc:
        print(f"error: {exc}", file=out)
        return 1
    if not status["exists"]:
        print(f"outbox: {status['path']} (none yet: nothing buffered)", file=out)
        return 0
    print(f"outbox:            {status['path']}", file=out)
    print(f"pending messages:  {status['messages']} (estimate)", file=out)
    print(f"pending readings:  {status['readings']}", file=out)
    print(
        f"bytes on disk:     {status['bytes']} ({_size(status['bytes'])} of "
        f"{_size(status.get('max_bytes', 0))})",
        file=out,
    )
    print(f"oldest:            {_age(status['oldest_age_s'])}", file=out)
    print(f"dropped:           {status['dropped']}", file=out)
    return 0


__all__ = [
    "FORMAT_VERSION",
    "Outbox",
    "OutboxMessage",
    "OutboxStats",
    "Value",
    "print_status",
    "read_status",
]
