"""The durable offline buffer (outbox): SQLite in WAL mode under ``gateway.state_dir``.

Life of a reading (docs/outbox.md has the durability argument in full):

1. ``Outbox.add`` puts it on an in-memory queue: synchronous, no I/O, safe to call from the
   poller's sink for hundreds of devices.
2. The committer (``await outbox.run_committer()`` as a task, or ``flush()``) writes every
   queued reading in one transaction at most ``outbox.commit_interval`` apart. WAL with
   ``synchronous=FULL``: the commit returns only after the WAL is fsynced, so a power cut
   loses at most the readings still queued in memory (the last uncommitted batch).
   The commit stores readings pre-serialised in chunks: one row per commit (split past
   ``CHUNK_BYTES``), holding per device a *part*, the device's readings as the bytes of
   the json payload's ``readings`` items. The drain reads, splices and deletes per chunk,
   not per reading.
3. ``take`` offers committed parts only, oldest first, grouped into messages (the parts of
   one device share a message up to ``outbox.max_message_bytes``).
4. ``ack(message)`` after the broker acknowledged the message; a chunk is deleted by the
   commit after the ack of its last part (same transaction as the next inserts, so acks
   cost no extra fsync). Parts offered but never acked are offered again after
   ``rewind()`` (the publisher calls it on every connect): duplicates are possible, with
   the same ``ts``, loss is not.

Past ``outbox.max_bytes`` (measured as the database's used pages plus an allowance for the
WAL, which is kept small by checkpoints and ``journal_size_limit``) the oldest chunks are
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

from gateway.core.errors import StorageError
from gateway.core.model import OutboxConfig, Reading, Value
from gateway.runtime.backoff import Backoff
from gateway.runtime.metrics import GatewayMetrics

log = logging.getLogger("sensegate.outbox")

DB_NAME = "outbox.db"
FORMAT_VERSION = 2
APPLICATION_ID = 0x53474F42  # "SGOB": this SQLite file is a sensegate outbox
PAGE_SIZE = 4096
MAX_QUEUED_READINGS = 200_000  # held in memory while the disk refuses commits
COMMIT_RETRY_MAX = 5.0  # seconds between commit attempts while the disk refuses them
TAKE_CHUNK = 64  # chunk rows read per query by `take`
CHUNK_BYTES = 512 * 1024  # estimated message bytes per chunk row, at most (see _chunk_limit)
MIGRATE_ROWS = 5000  # version-1 rows turned into chunks at a time
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

# Version 2: one row per chunk of a commit instead of one row per reading. `head` is JSON,
# [[[measurement, tags JSON], ...], [device, key index, readings, estimated bytes, end
# offset, device, ...]]: the chunk's distinct keys, then five items per part;
# `body` the parts' `readings` array items (the json payload's bytes, comma-joined within a
# part) one after the other, part i spanning body[end(i-1):end(i)]. `done` lists the parts
# already acknowledged (JSON array of indices, NULL for none) while others are not.
_CHUNKS = """CREATE TABLE chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        readings INTEGER NOT NULL,
        size INTEGER NOT NULL,
        first_ts INTEGER NOT NULL,
        last_ts INTEGER NOT NULL,
        head TEXT NOT NULL,
        body BLOB NOT NULL,
        done TEXT
    )"""


def _v0_to_v1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1:
        conn.execute(statement)


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """Rows of readings become chunks, in id order (so oldest first stays true)."""
    conn.execute(_CHUNKS)
    last = 0
    while True:
        rows = conn.execute(
            "SELECT id, device, measurement, tags, ts, vals, quality, size FROM readings "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (last, MIGRATE_ROWS),
        ).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        batch = [
            _Row(device, measurement, tags, int(ts), _fragment(int(ts), vals, quality),
                 int(size))
            for _, device, measurement, tags, ts, vals, quality, size in rows
        ]
        conn.executemany(_INSERT_CHUNK, _chunks(batch, CHUNK_BYTES, CHUNK_BYTES))
    conn.execute("DROP TABLE readings")


# _MIGRATIONS[v] turns a version-v database into version v+1, inside the opening
# transaction. Version 0 is a new, empty file. A format change appends a step and bumps
# FORMAT_VERSION.
_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v0_to_v1, _v1_to_v2)
assert len(_MIGRATIONS) == FORMAT_VERSION

_INSERT_CHUNK = (
    "INSERT INTO chunks (readings, size, first_ts, last_ts, head, body) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """Committed readings of one device that travel in one MQTT message."""

    device: str
    measurement: str
    tags: dict[str, str]
    parts: tuple[tuple[int, int], ...]  # (chunk id, part index) carried, oldest first
    size: int  # estimated payload bytes
    count: int  # readings carried
    fragments: tuple[bytes, ...]  # the `readings` array items, comma-joined per part
    _acks: tuple[tuple[int, int, int, int, int], ...] = ()  # (id, part, parts, n, size)

    @property
    def ids(self) -> tuple[tuple[int, int], ...]:
        """Where the readings are stored: (chunk id, part index), oldest first."""
        return self.parts

    @property
    def readings(self) -> tuple[Reading, ...]:
        """The readings decoded (the influx format needs them; json splices the bytes)."""
        items = json.loads(b"[" + b",".join(self.fragments) + b"]")
        return tuple(
            Reading(self.device, int(item["ts"]), item["values"], item.get("quality") or {})
            for item in items
        )

    def json_readings(self) -> bytes:
        """The ``readings`` array items of the ``format: json`` payload, comma-separated.

        Stored pre-serialised at commit: byte for byte what ``payload.build_json`` writes
        for `readings` (the stored JSON uses its settings).
        """
        return b",".join(self.fragments)


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
    """One queued reading: its message item already serialised."""

    device: str
    measurement: str
    tags: str
    ts: int
    frag: str  # {"ts":...,"values":{...}[,"quality":{...}]}
    size: int


@dataclass(slots=True)
class _Part:
    device: str
    measurement: str
    tags: str
    frags: list[str] = field(default_factory=list)
    size: int = 0


@dataclass(slots=True)
class _Group:
    """A message being assembled by `take`."""

    device: str
    measurement: str
    tags: str
    fragments: list[bytes] = field(default_factory=list)
    acks: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    size: int = 0
    count: int = 0


def _fragment(ts: int, vals: str, quality: str | None) -> str:
    if quality:
        return f'{{"ts":{ts},"values":{vals},"quality":{quality}}}'
    return f'{{"ts":{ts},"values":{vals}}}'


def _chunks(
    rows: list[_Row], part_limit: int, chunk_limit: int
) -> list[tuple[int, int, int, int, str, bytes]]:
    """Rows of one commit as chunk rows (readings, size, first_ts, last_ts, head, body).

    The readings of one (device, measurement, tags) in a chunk form a part, in order; a part
    is at most ``part_limit`` estimated bytes (a message's limit) and a chunk at most
    ``chunk_limit`` (at least one reading each).
    """
    out: list[tuple[int, int, int, int, str, bytes]] = []
    parts: list[_Part] = []
    open_parts: dict[tuple[str, str, str], _Part] = {}
    size = count = 0
    first = last = 0

    def close() -> None:
        keys: dict[tuple[str, str], int] = {}
        flat: list[object] = []
        bodies: list[bytes] = []
        end = 0
        for p in parts:
            body = ",".join(p.frags).encode("utf-8")
            end += len(body)
            bodies.append(body)
            k = keys.setdefault((p.measurement, p.tags), len(keys))
            flat += (p.device, k, len(p.frags), p.size, end)
        head = [[list(key) for key in keys], flat]
        out.append((
            count, size, first, last,
            json.dumps(head, separators=(",", ":"), ensure_ascii=False), b"".join(bodies),
        ))

    for r in rows:
        if count and size + r.size > chunk_limit:
            close()
            parts, open_parts, size, count = [], {}, 0, 0
        key = (r.device, r.measurement, r.tags)
        part = open_parts.get(key)
        if part is None or (part.size + r.size > part_limit and part.frags):
            part = _Part(r.device, r.measurement, r.tags)
            parts.append(part)
            open_parts[key] = part
        part.frags.append(r.frag)
        part.size += r.size
        if count:
            first, last = min(first, r.ts), max(last, r.ts)
        else:
            first = last = r.ts
        size += r.size
        count += 1
    if count:
        close()
    return out


def _head_parts(head: str) -> list[tuple[str, str, str, int, int, int]]:
    """A chunk's parts: (device, measurement, tags JSON, readings, bytes, body end)."""
    keys, flat = json.loads(head)
    return [
        (flat[i], *keys[flat[i + 1]], flat[i + 2], flat[i + 3], flat[i + 4])
        for i in range(0, len(flat), 5)
    ]


def _dumps(obj: object) -> str:
    """Compact JSON as `gateway.core.payload` writes it (insertion order, UTF-8, no NaN)."""
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
        metrics: GatewayMetrics | None = None,
        max_queued: int = MAX_QUEUED_READINGS,
    ) -> None:
        self.path = path
        self.cfg = cfg
        self._metrics = metrics if metrics is not None else GatewayMetrics()
        self._max_queued = max_queued
        self._writer = writer
        self._reader = reader
        self._wlock = threading.Lock()  # the writer connection and the commit
        self._qlock = threading.Lock()  # the in-memory queues and counters below
        self._queue: deque[_Row] = deque()
        self._to_delete: list[int] = []  # fully acked chunk ids for the next commit
        self._dropped_upto = 0  # drops remove a prefix of ids: every id <= this is gone
        self._dropped_upto_pending = 0
        self._deleted_recently: list[int] = []  # deleted chunk ids `take` may forget
        # chunk id -> acked part indices, while the chunk may still be in the table
        self._acked: dict[int, set[int]] = {}
        # chunk id -> [acked readings, acked bytes] still counted in _rows/_rows_size
        self._acked_counts: dict[int, list[int]] = {}
        self._acked_dirty: set[int] = set()  # partly acked chunks whose `done` is stale
        self._acked_readings = 0  # readings in acked parts of chunks still in the table
        self._acked_size = 0
        self._cursor = (0, 0)  # next (chunk id, part) to offer since the last rewind
        self._rows = 0  # committed readings not yet deleted
        self._rows_size = 0
        self._tags: dict[str, dict[str, str]] = {}  # tags JSON -> dict, for messages
        self._dropped = 0  # persisted + dropped in memory
        self._dropped_unpersisted = 0
        self._drop_logged_at = -DROP_LOG_EVERY
        self._drops_unlogged = 0
        self._failing: str | None = None  # reason commits fail, None when healthy
        self._closed = False
        self._committed = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self._ack_listeners: list[Callable[[str, int], None]] = []
        self._wal_budget, wal_pages = _wal_budget(cfg.max_bytes)
        self._data_budget = max(cfg.max_bytes - self._wal_budget, 16 * PAGE_SIZE)
        # Drops for the bound go a chunk at a time: small chunks under small bounds.
        self._chunk_limit = max(4096, min(CHUNK_BYTES, self._data_budget // 32))
        self._writer.execute(f"PRAGMA wal_autocheckpoint={wal_pages}")
        self._writer.execute(f"PRAGMA journal_size_limit={wal_pages * PAGE_SIZE}")
        rows, size = self._writer.execute(
            "SELECT coalesce(sum(readings), 0), coalesce(sum(size), 0) FROM chunks"
        ).fetchone()
        self._rows, self._rows_size = int(rows), int(size)
        for cid, head, done in self._writer.execute(
            "SELECT id, head, done FROM chunks WHERE done IS NOT NULL"
        ):
            parts = _head_parts(head)
            acked = self._acked[cid] = set(json.loads(done))
            counts = self._acked_counts[cid] = [0, 0]
            for index in acked:
                counts[0] += parts[index][3]
                counts[1] += parts[index][4]
            self._acked_readings += counts[0]
            self._acked_size += counts[1]
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
        metrics: GatewayMetrics | None = None,
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
        ts = int(reading.ts)
        row = _Row(reading.device, measurement, tags_s, ts, _fragment(ts, vals, quality), size)
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

    def on_ack(self, callback: Callable[[str, int], None]) -> Callable[[], None]:
        """Call ``callback(device, readings)`` when an ack delivers readings for the first
        time (a resent part is not counted twice). Returns a function that removes it."""
        self._ack_listeners.append(callback)
        return lambda: (
            self._ack_listeners.remove(callback) if callback in self._ack_listeners else None
        )

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
        backoff = Backoff(interval, max(interval, COMMIT_RETRY_MAX))
        delay = interval
        while True:
            await asyncio.sleep(delay)
            with self._qlock:
                idle = not self._queue and not self._to_delete and not self._acked_dirty
            if idle:
                continue
            try:
                inserted = await asyncio.to_thread(self._commit)
            except StorageError:
                delay = backoff.next()
                continue
            backoff.reset()
            delay = interval
            if inserted:
                self._notify()

    # -- consumer side -----------------------------------------------------------------

    def take(self, max_messages: int = 100, max_bytes: int | None = None) -> list[OutboxMessage]:
        """Committed readings not yet offered since the last ``rewind``, oldest first, as
        messages.

        Only reads; the readings stay until ``ack``. At most ``max_messages`` messages and,
        when given, about ``max_bytes`` estimated bytes in all (at least one part).
        """
        if max_messages <= 0:
            return []
        total = 0
        self._forget_deleted()
        groups: list[_Group] = []
        open_groups: dict[tuple[str, str, str], _Group] = {}
        limit = self.cfg.max_message_bytes
        while True:
            cid0, part0 = self._cursor
            try:
                rows = self._reader.execute(
                    "SELECT id, head, body, done FROM chunks WHERE id >= ? ORDER BY id "
                    "LIMIT ?",
                    (cid0, TAKE_CHUNK),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(
                    f"cannot read outbox '{self.path}': {_describe(exc)}"
                ) from exc
            if not rows:
                break
            with self._qlock:
                acked_map = {
                    cid: set(self._acked[cid]) for cid, _, _, _ in rows if cid in self._acked
                }
            for cid, head_s, body, done in rows:
                acked = acked_map.get(cid)
                if done is not None:
                    acked = (acked or set()) | set(json.loads(done))
                keys, flat = json.loads(head_s)
                nparts = len(flat) // 5
                start = part0 if cid == cid0 else 0
                begin = flat[start * 5 - 1] if start else 0
                for index in range(start, nparts):
                    device, k, n, size, end = flat[index * 5:index * 5 + 5]
                    measurement, tags = keys[k]
                    if acked is not None and index in acked:
                        begin = end
                        continue
                    if max_bytes is not None and total and total + size > max_bytes:
                        self._cursor = (cid, index)
                        return self._messages(groups)
                    key = (device, measurement, tags)
                    group = open_groups.get(key)
                    if group is None or (group.size + size > limit and group.count):
                        if len(groups) >= max_messages:
                            self._cursor = (cid, index)
                            return self._messages(groups)
                        group = _Group(device, measurement, tags)
                        groups.append(group)
                        open_groups[key] = group
                    group.fragments.append(body[begin:end])
                    group.acks.append((cid, index, nparts, n, size))
                    group.size += size
                    group.count += n
                    total += size
                    begin = end
                self._cursor = (cid + 1, 0)
            if len(rows) < TAKE_CHUNK:
                break
        return self._messages(groups)

    def _messages(self, groups: list[_Group]) -> list[OutboxMessage]:
        out = []
        tag_cache = self._tags
        for g in groups:
            tags = tag_cache.get(g.tags)
            if tags is None:
                if len(tag_cache) > 10_000:
                    tag_cache.clear()
                tags = tag_cache[g.tags] = json.loads(g.tags)
            out.append(OutboxMessage(
                g.device, g.measurement, dict(tags),
                tuple((a[0], a[1]) for a in g.acks), g.size, g.count,
                tuple(g.fragments), tuple(g.acks),
            ))
        return out

    def ack(self, message: OutboxMessage) -> None:
        """The broker acknowledged ``message``: its chunks go with the next commit that
        follows the ack of their last part."""
        delivered = 0
        with self._qlock:
            for cid, index, nparts, n, size in message._acks:
                if cid <= self._dropped_upto:
                    continue  # dropped for the size bound meanwhile: already gone
                acked = self._acked.get(cid)
                if acked is None:
                    acked = self._acked[cid] = set()
                elif index in acked:
                    continue
                acked.add(index)
                delivered += n
                counts = self._acked_counts.get(cid)
                if counts is None:
                    counts = self._acked_counts[cid] = [0, 0]
                counts[0] += n
                counts[1] += size
                self._acked_readings += n
                self._acked_size += size
                if len(acked) == nparts:
                    self._to_delete.append(cid)
                    self._acked_dirty.discard(cid)
                else:
                    self._acked_dirty.add(cid)
        if delivered:
            for callback in list(self._ack_listeners):
                callback(message.device, delivered)

    def rewind(self) -> None:
        """Offer again every committed reading offered but never acked (on reconnect)."""
        self._forget_deleted()
        self._cursor = (0, 0)

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
            return self._rows - self._acked_readings + len(self._queue)


    # -- the commit --------------------------------------------------------------------

    def _commit(self) -> int:
        with self._wlock:
            if self._closed:
                raise StorageError(f"outbox '{self.path}' is closed")
            with self._qlock:
                batch = list(self._queue)
                self._queue.clear()
                deletes = [i for i in self._to_delete if i > self._dropped_upto]
                self._to_delete = []
                dirty = self._acked_dirty
                self._acked_dirty = set()
                done = [
                    (json.dumps(sorted(self._acked[cid])), cid) for cid in dirty
                    if cid > self._dropped_upto and cid in self._acked
                ]
                dropped_mem = self._dropped_unpersisted
            try:
                dropped_rows, dropped_size, dropped_now = self._write(
                    batch, deletes, dropped_mem, done
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
                    self._acked_dirty |= dirty
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
                self._rows += len(batch) - dropped_rows
                self._rows_size += sum(r.size for r in batch) - dropped_size
                gone = deletes
                deleted = set(deletes)
                if dropped_rows:  # acked parts of dropped chunks: delivered, and gone too
                    gone = deletes + [c for c in self._acked_counts if c <= self._dropped_upto]
                for cid in gone:
                    counts = self._acked_counts.pop(cid, None)
                    if counts is None:
                        continue
                    self._acked_readings -= counts[0]
                    self._acked_size -= counts[1]
                    if cid in deleted:
                        self._rows -= counts[0]
                        self._rows_size -= counts[1]
                self._rows_size = max(self._rows_size, 0)
                self._dropped_unpersisted -= dropped_mem
                self._dropped += dropped_now
                self._deleted_recently.extend(gone)
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
        self,
        batch: list[_Row],
        deletes: list[int],
        dropped_mem: int,
        done: list[tuple[str, int]],
    ) -> tuple[int, int, int]:
        """One transaction: delete acked chunks, insert the batch as chunks, enforce
        max_bytes. Returns the readings and bytes of the chunks dropped for the bound, and
        how many of those readings were not acknowledged (the dropped count)."""
        w = self._writer
        self._dropped_upto_pending = self._dropped_upto
        w.execute("BEGIN IMMEDIATE")
        if deletes:
            ordered = sorted(deletes)
            try:  # one statement over sorted ids
                w.execute(
                    "DELETE FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps(ordered),),
                )
            except sqlite3.OperationalError as exc:
                if "json_each" not in str(exc):
                    raise
                w.executemany("DELETE FROM chunks WHERE id = ?", ((i,) for i in ordered))
        if done:  # acked parts of chunks not yet complete: not offered again after a crash
            w.executemany("UPDATE chunks SET done = ? WHERE id = ?", done)
        if batch:
            w.executemany(
                _INSERT_CHUNK, _chunks(batch, self.cfg.max_message_bytes, self._chunk_limit)
            )
        dropped, dropped_size = self._enforce_bound()
        dropped_unacked = dropped
        if dropped:
            upto = self._dropped_upto_pending
            with self._qlock:
                dropped_unacked -= sum(
                    c[0] for cid, c in self._acked_counts.items() if cid <= upto
                )
        if dropped_unacked or dropped_mem:
            w.execute(
                "UPDATE meta SET value = value + ? WHERE key = 'dropped'",
                (dropped_unacked + dropped_mem,),
            )
        w.execute("COMMIT")
        self._dropped_upto = self._dropped_upto_pending
        if not dropped:
            self._maybe_vacuum()
        return dropped, dropped_size, dropped_unacked

    def _used_bytes(self) -> tuple[int, int, int]:
        w = self._writer
        pages = w.execute("PRAGMA page_count").fetchone()[0]
        free = w.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * PAGE_SIZE, pages, free

    def _enforce_bound(self) -> tuple[int, int]:
        """Drop the oldest chunks while the used pages exceed the data budget; returns the
        readings and estimated bytes dropped."""
        w = self._writer
        dropped = dropped_size = 0
        for _ in range(8):
            used, _pages, _free = self._used_bytes()
            if used <= self._data_budget:
                break
            chunks = w.execute("SELECT count(*) FROM chunks").fetchone()[0]
            per_chunk = max(used / max(chunks, 1), 1.0)
            target = self._data_budget * 0.97
            n = max(1, math.ceil((used - target) / per_chunk))
            found = w.execute(
                "SELECT count(*), coalesce(sum(readings), 0), coalesce(sum(size), 0), max(id) "
                "FROM (SELECT id, readings, size FROM chunks ORDER BY id LIMIT ?)",
                (n,),
            ).fetchone()
            if not found[0]:
                break
            w.execute("DELETE FROM chunks WHERE id <= ?", (found[3],))
            self._dropped_upto_pending = max(self._dropped_upto_pending, int(found[3]))
            dropped += int(found[1])
            dropped_size += int(found[2])
        return dropped, dropped_size

    def _maybe_vacuum(self) -> None:
        """Give free pages back to the file system once a backlog has drained.

        After the commit, as a transaction of its own: a failure here costs nothing but
        space. Not while a backlog drains (more than a MiB committed and unacknowledged):
        the free pages are reused by the next inserts anyway, and the publisher needs the
        CPU meanwhile.
        """
        with self._qlock:
            backlog = self._rows_size - self._acked_size
        if backlog > VACUUM_MIN_FREE_PAGES * PAGE_SIZE:
            return
        try:
            _used, pages, free = self._used_bytes()
            if free >= VACUUM_MIN_FREE_PAGES and free * 4 >= pages:
                # Python's sqlite3 `execute` steps a statement without result columns once,
                # and a step of incremental_vacuum frees one page; `executescript` steps it
                # to the end in C, without the GIL (it would commit an open transaction
                # first: there is none here). Bounded per commit so it never stalls long.
                self._writer.executescript(
                    f"PRAGMA incremental_vacuum({min(free, VACUUM_MAX_PAGES_PER_COMMIT)});"
                )
        except sqlite3.Error as exc:
            log.debug("outbox incremental vacuum failed: %s", _describe(exc))

    def _forget_deleted(self) -> None:
        # Runs on the event loop thread only (take, rewind, flush), never concurrently with
        # `take`, so a part `take` reads is either in the table or in `_acked`.
        with self._qlock:
            if not self._deleted_recently:
                return
            for cid in self._deleted_recently:
                self._acked.pop(cid, None)
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
            pending = self._rows - self._acked_readings + queued
            size = (
                self._rows_size - self._acked_size + sum(r.size for r in self._queue)
            )
            dropped = self._dropped
            oldest_queued = self._queue[0].ts if self._queue else None
        oldest_ts: int | None = None
        with contextlib.suppress(sqlite3.Error):
            row = self._reader.execute(
                "SELECT first_ts FROM chunks ORDER BY id LIMIT 1"
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
        self._metrics.outbox_commit_errors_total.inc()

    def _update_metrics(self) -> None:
        """Push depth, bytes, age and the dropped total to the metrics (writer lock held)."""
        with self._qlock:
            pending = self._rows - self._acked_readings + len(self._queue)
            size = self._rows_size - self._acked_size
            dropped = self._dropped
            oldest_ts = self._queue[0].ts if self._queue else None
        with contextlib.suppress(sqlite3.Error):
            row = self._writer.execute(
                "SELECT first_ts FROM chunks ORDER BY id LIMIT 1"
            ).fetchone()
            if row is not None:
                oldest_ts = int(row[0])
        age = 0.0 if oldest_ts is None or pending <= 0 else max(0.0, time.time() - oldest_ts / 1e9)
        self._metrics.set_outbox(
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
                _MIGRATIONS[step](conn)
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
        if version == 1:  # not migrated yet (the daemon migrates at start)
            groups = conn.execute(
                "SELECT count(*), sum(size) FROM readings GROUP BY device, measurement, tags"
            ).fetchall()
            oldest = conn.execute("SELECT ts FROM readings ORDER BY id LIMIT 1").fetchone()
        else:
            per_key: dict[tuple[str, str, str], list[int]] = {}
            for head, done in conn.execute("SELECT head, done FROM chunks"):
                acked = set(json.loads(done)) if done else set()
                for index, (device, measurement, tags, n, size, _end) in enumerate(
                    _head_parts(head)
                ):
                    if index in acked:
                        continue
                    acc = per_key.setdefault((device, measurement, tags), [0, 0])
                    acc[0] += n
                    acc[1] += size
            groups = [tuple(v) for v in per_key.values()]
            oldest = conn.execute(
                "SELECT first_ts FROM chunks ORDER BY id LIMIT 1"
            ).fetchone()
        for count, size in groups:
            readings += count
            messages += max(1, math.ceil(size / cfg.max_message_bytes))
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


def committed_readings(state_dir: str) -> set[tuple[str, int]]:
    """(device, ts) of every reading committed in ``state_dir``'s outbox and not deleted.

    For tests and diagnosis: what a killed gateway had committed. Reads format 1 and 2.
    """
    path = os.path.join(state_dir, DB_NAME)
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            return set()
        if version == 1:
            return {(d, int(ts)) for d, ts in conn.execute("SELECT device, ts FROM readings")}
        out: set[tuple[str, int]] = set()
        for head, body, done in conn.execute("SELECT head, body, done FROM chunks"):
            acked = set(json.loads(done)) if done else set()
            begin = 0
            for index, (device, _m, _t, _n, _size, end) in enumerate(_head_parts(head)):
                if index not in acked:
                    items = json.loads(b"[" + body[begin:end] + b"]")
                    out.update((device, int(item["ts"])) for item in items)
                begin = end
        return out
    finally:
        conn.close()


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
    from gateway.config.load import load_gateway_config
    from gateway.runtime.exitcodes import ExitCode

    config = load_gateway_config(config_path)
    try:
        status = read_status(config.state_dir, config.outbox)
    except StorageError as exc:
        print(f"error: {exc}", file=out)
        return ExitCode.FAILED
    if not status["exists"]:
        print(f"outbox: {status['path']} (none yet: nothing buffered)", file=out)
        return ExitCode.OK
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
    return ExitCode.OK


__all__ = [
    "FORMAT_VERSION",
    "Outbox",
    "OutboxMessage",
    "OutboxStats",
    "Value",
    "committed_readings",
    "print_status",
    "read_status",
]
