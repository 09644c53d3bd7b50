"""The outbox store: the in-memory queue, the committer and the take/ack state machine.

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

Past ``outbox.max_bytes``, or the room the file system actually has when that is less
(measured as the database's used pages plus an allowance for the WAL, which is kept small
by checkpoints and ``journal_size_limit``) the oldest chunks are dropped, counted in a
persisted counter, the ``outbox_dropped_total`` metric and a log line.

While the disk refuses commits, `take_unstored` hands the publisher what waits in memory
(at most once). A damaged file is set aside and a deleted one rebuilt from the open copy
(`_check_file`). `problem()` says when the outbox is not healthy.

The file format and its migrations are in `format`, the chunk encoding in `chunks`.
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

from gateway.core.errors import StorageError
from gateway.core.model import OutboxConfig, Reading
from gateway.edge.outbox.chunks import (
    CHUNK_BYTES,
    Row,
    build_chunks,
    dumps,
    finite,
    fragment,
    head_parts,
)
from gateway.edge.outbox.format import (
    DB_NAME,
    INSERT_CHUNK,
    PAGE_SIZE,
    describe_error,
    is_damaged,
    prepare,
    set_aside,
)
from gateway.edge.statedir import make_state_dir
from gateway.runtime.backoff import Backoff
from gateway.runtime.metrics import GatewayMetrics

log = logging.getLogger("sensegate.outbox")

MAX_QUEUED_READINGS = 200_000  # held in memory while the disk refuses commits
COMMIT_RETRY_MAX = 5.0  # seconds between commit attempts while the disk refuses them
TAKE_CHUNK = 64  # chunk rows read per query by `take`
VACUUM_MIN_FREE_PAGES = 256  # give free pages back to the file system past this many
VACUUM_MAX_PAGES_PER_COMMIT = 20_000
DROP_LOG_EVERY = 60.0  # seconds between "dropped the oldest" log lines while at the bound
LOSS_WINDOW = 60.0  # seconds the outbox reports unhealthy after it lost readings
RESERVE_BYTES = 64 * 1024  # free space left on the file system under the bound (SQLite's)
MIN_DATA_BUDGET = 16 * PAGE_SIZE

@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """Readings of one device that travel in one MQTT message: committed ones, or (while the
    disk refuses commits) ones taken straight from memory, ``stored`` False: those go at
    most once."""

    gateway: str  # the gateway id they were polled under: publish under this id only
    device: str
    measurement: str
    tags: dict[str, str]
    parts: tuple[tuple[int, int], ...]  # (chunk id, part index) carried, oldest first
    size: int  # estimated payload bytes
    count: int  # readings carried
    fragments: tuple[bytes, ...]  # the `readings` array items, comma-joined per part
    # what `Outbox.ack` needs per part: (chunk id, part, parts in the chunk, readings, size)
    acks: tuple[tuple[int, int, int, int, int], ...] = ()
    stored: bool = True

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


@dataclass(slots=True)
class _Group:
    """A message being assembled by `take`."""

    gateway: str
    device: str
    measurement: str
    tags: str
    fragments: list[bytes] = field(default_factory=list)
    acks: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    size: int = 0
    count: int = 0


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending_readings: int  # committed and not yet acknowledged, plus queued in memory
    queued_readings: int  # in memory, not yet committed
    pending_messages_estimate: int  # messages the pending readings make at most size
    bytes: int  # on disk: database plus WAL file
    oldest_age_s: float | None  # age of the oldest pending reading, None when empty
    dropped: int  # readings dropped since the outbox was created (persisted)



class Outbox:
    """SQLite (WAL) outbox; see the module docstring for the contract."""

    def __init__(
        self,
        path: str,
        cfg: OutboxConfig,
        gateway_id: str,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        *,
        metrics: GatewayMetrics | None = None,
        max_queued: int = MAX_QUEUED_READINGS,
    ) -> None:
        self.path = path
        self.cfg = cfg
        self.gateway_id = gateway_id
        self._metrics = metrics if metrics is not None else GatewayMetrics()
        self._max_queued = max_queued
        self._writer = writer
        self._reader = reader
        self._wlock = threading.Lock()  # the writer connection and the commit
        self._qlock = threading.Lock()  # the in-memory queues and counters below
        self._rlock = threading.Lock()  # the reader connection (replaced with the file)
        self._queue: deque[Row] = deque()
        self._forget_file()
        self._max_offered = 0  # the highest chunk id `take` ever offered
        self._file_id = _file_id(path)  # (device, inode): a deleted or replaced file shows
        self._damaged = False  # the reader met a damaged page: replace the file
        self._read_failing: str | None = None  # the last reason `take` could not read
        self._unstored_logged: str | None = None  # failure already said by take_unstored
        self._last_loss = -math.inf  # monotonic time readings were last lost
        self._thrown = 0  # readings thrown away: memory full, unstored and unpublished
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
        self._budget = 0  # the bound in force: max_bytes, or less on a small disk
        self._cap: int | None = None  # lowered by each "disk full" the reserve did not avoid
        self._wal_budget = self._data_budget = self._chunk_limit = self._commit_limit = 0
        self._fit_budget()
        self._load()
        self._update_metrics()

    def _forget_file(self) -> None:
        """Set what mirrors the file's content to "empty" (then `_load` reads it)."""
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

    def _load(self) -> None:
        """Read the counts and acknowledged parts of what the file holds."""
        rows, size = self._writer.execute(
            "SELECT coalesce(sum(readings), 0), coalesce(sum(size), 0) FROM chunks"
        ).fetchone()
        self._rows, self._rows_size = int(rows), int(size)
        for cid, head, done in self._writer.execute(
            "SELECT a.id, c.head, a.parts FROM acked a JOIN chunks c ON c.id = a.id"
        ):
            parts = head_parts(head)
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

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        state_dir: str,
        cfg: OutboxConfig,
        gateway_id: str,
        *,
        metrics: GatewayMetrics | None = None,
        max_queued: int = MAX_QUEUED_READINGS,
    ) -> Outbox:
        """Open (creating or migrating) ``state_dir/outbox.db``; raises StorageError."""
        make_state_dir(state_dir)
        path = os.path.join(state_dir, DB_NAME)
        if not os.access(state_dir, os.W_OK | os.X_OK):
            raise StorageError(f"state_dir '{state_dir}' is not writable")
        metrics = metrics if metrics is not None else GatewayMetrics()
        try:
            return cls._open(path, cfg, gateway_id, metrics, max_queued)
        except sqlite3.Error as exc:
            if not is_damaged(exc):
                raise StorageError(
                    f"cannot open outbox '{path}': {describe_error(exc)}"
                ) from exc
            # Never stop polling for a damaged buffer file: keep it aside, start afresh.
            aside = set_aside(path, "damaged")
            log.error(
                "outbox '%s' is damaged (%s): moved it to '%s' (kept for salvage: sqlite3 "
                "FILE .recover) and started a new, empty outbox; what it held is not sent",
                path, describe_error(exc), aside,
            )
            metrics.outbox_files_replaced_total.labels("damaged").inc()
        try:
            return cls._open(path, cfg, gateway_id, metrics, max_queued)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open outbox '{path}': {describe_error(exc)}") from exc

    @classmethod
    def _open(
        cls, path: str, cfg: OutboxConfig, gateway_id: str, metrics: GatewayMetrics,
        max_queued: int,
    ) -> Outbox:
        writer, reader = _connect(path, gateway_id)
        try:
            outbox = cls(
                path, cfg, gateway_id, writer, reader, metrics=metrics, max_queued=max_queued
            )
        except BaseException:
            reader.close()
            writer.close()
            raise
        log.info(
            "outbox %s: %d readings pending, %d dropped so far",
            path, outbox._rows, outbox._dropped,
        )
        return outbox

    # -- producer side -----------------------------------------------------------------

    def add(self, reading: Reading, *, measurement: str, tags: dict[str, str]) -> None:
        """Queue one scan for the next commit. Synchronous, no I/O, never raises for storage."""
        try:
            vals = dumps(reading.values)
            quality = dumps(reading.quality) if reading.quality else None
        except ValueError:  # NaN or infinity: decode should have marked it invalid
            values, qualities = finite(reading)
            vals, quality = dumps(values), dumps(qualities)
        tags_s = json.dumps(tags, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        size = (
            len(vals) + len(quality or "") + len(tags_s) + len(measurement)
            + len(reading.device) + 48
        )
        ts = int(reading.ts)
        row = Row(reading.device, measurement, tags_s, ts, fragment(ts, vals, quality), size)
        with self._qlock:
            self._queue.append(row)
            if len(self._queue) > self._max_queued:
                self._queue.popleft()
                self._dropped += 1
                self._dropped_unpersisted += 1
                self._thrown += 1
                self._last_loss = time.monotonic()
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
        while self.queued():  # a backlog held in memory goes in several commits
            inserted += self._commit()
        self._forget_deleted()
        if inserted:
            self._notify()
        return inserted

    def queued(self) -> int:
        """Readings in memory, not yet committed."""
        with self._qlock:
            return len(self._queue)

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
            # More queued than one commit takes (a backlog after a disk failure): go on.
            delay = 0.0 if self.queued() else interval
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
        open_groups: dict[tuple[str, str, str, str], _Group] = {}
        limit = self.cfg.max_message_bytes
        while True:
            cid0, part0 = self._cursor
            try:
                with self._rlock:
                    rows = self._reader.execute(
                        "SELECT c.id, c.gateway, c.head, c.body, a.parts FROM chunks c "
                        "LEFT JOIN acked a ON a.id = c.id WHERE c.id >= ? ORDER BY c.id "
                        "LIMIT ?",
                        (cid0, TAKE_CHUNK),
                    ).fetchall()
            except sqlite3.Error as exc:
                # Never fatal for the publisher: it asks again on its next round. A damaged
                # file is replaced by the committer's thread (it owns the writer).
                self._damaged = self._damaged or is_damaged(exc)
                reason = describe_error(exc)
                if reason != self._read_failing:
                    log.error("cannot read outbox '%s': %s", self.path, reason)
                    self._read_failing = reason
                return self._messages(groups)
            if not rows:
                break
            with self._qlock:
                acked_map = {
                    cid: set(self._acked[cid]) for cid, *_ in rows if cid in self._acked
                }
            for cid, gateway, head_s, body, done in rows:
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
                    key = (gateway, device, measurement, tags)
                    group = open_groups.get(key)
                    if group is None or (group.size + size > limit and group.count):
                        if len(groups) >= max_messages:
                            self._cursor = (cid, index)
                            return self._messages(groups)
                        group = _Group(gateway, device, measurement, tags)
                        groups.append(group)
                        open_groups[key] = group
                    group.fragments.append(body[begin:end])
                    group.acks.append((cid, index, nparts, n, size))
                    group.size += size
                    group.count += n
                    total += size
                    begin = end
                self._cursor = (cid + 1, 0)
                self._max_offered = max(self._max_offered, cid)
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
                g.gateway, g.device, g.measurement, dict(tags),
                tuple((a[0], a[1]) for a in g.acks), g.size, g.count,
                tuple(g.fragments), tuple(g.acks),
            ))
        return out

    def take_unstored(self, max_messages: int) -> list[OutboxMessage]:
        """While the disk refuses commits: the oldest readings held in memory as messages,
        taken out of memory (so at most once: a message lost in flight is `lost`). Empty
        while commits succeed."""
        if self._failing is None or max_messages <= 0:
            return []
        limit = self.cfg.max_message_bytes
        groups: list[_Group] = []
        open_groups: dict[tuple[str, str, str], _Group] = {}
        with self._qlock:
            queue = self._queue
            while queue:
                row = queue[0]
                key = (row.device, row.measurement, row.tags)
                group = open_groups.get(key)
                if group is None or (group.size + row.size > limit and group.count):
                    if len(groups) >= max_messages:
                        break
                    group = _Group(self.gateway_id, row.device, row.measurement, row.tags)
                    groups.append(group)
                    open_groups[key] = group
                queue.popleft()
                group.fragments.append(row.frag.encode("utf-8"))
                group.size += row.size
                group.count += 1
        if not groups:
            return []
        if self._unstored_logged != self._failing:
            self._unstored_logged = self._failing
            log.error(
                "outbox: the disk refuses commits (%s): publishing readings straight from "
                "memory, at most once (a message lost in flight is not sent again)",
                self._failing,
            )
        return [
            OutboxMessage(
                g.gateway, g.device, g.measurement, dict(json.loads(g.tags)), (), g.size,
                g.count, (b",".join(g.fragments),), (), stored=False,
            )
            for g in groups
        ]

    def lost(self, message: OutboxMessage) -> None:
        """An unstored message could not be published: its readings are gone, counted."""
        if message.stored:
            return  # committed: offered again after `rewind`
        with self._qlock:
            self._dropped += message.count
            self._dropped_unpersisted += message.count
            self._thrown += message.count
            self._last_loss = time.monotonic()

    def problem(self) -> str | None:
        """Why the outbox is not healthy now (commits fail, readings were lost in the last
        minute), or None."""
        if self._failing is not None:
            return f"outbox commits fail: {self._failing}"
        if time.monotonic() - self._last_loss < LOSS_WINDOW:
            return "outbox lost readings in the last minute"
        return None

    def thrown_away(self) -> int:
        """Readings thrown away since the start, other than dropped for the size bound: the
        memory queue full while the disk refused commits, unstored messages that could not
        be published, readings still in memory at close."""
        with self._qlock:
            return self._thrown

    def ack(self, message: OutboxMessage) -> None:
        """The broker acknowledged ``message``: its chunks go with the next commit that
        follows the ack of their last part."""
        if not message.stored:
            self._metrics.outbox_unstored_published_total.inc(message.count)
            for callback in list(self._ack_listeners):
                callback(message.device, message.count)
            return
        delivered = 0
        with self._qlock:
            for cid, index, nparts, n, size in message.acks:
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


    # -- the bound ---------------------------------------------------------------------

    def _room(self) -> int | None:
        """Bytes the outbox may use on its file system: its own files plus the free space
        (statvfs), less a reserve; None when the file system cannot say."""
        try:
            st = os.statvfs(os.path.dirname(self.path) or ".")
        except OSError:
            return None
        own = 0  # (the -shm file is small, fixed, and already off the free space)
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                own += os.stat(self.path + suffix).st_blocks * 512
        return own + st.f_bavail * st.f_frsize - RESERVE_BYTES

    def _fit_budget(self) -> None:
        """Set the bound from ``max_bytes`` and the room actually there (writer lock held,
        or in __init__). On a disk smaller than max_bytes, the WAL's checkpoint threshold,
        the chunk size and the commit size follow the smaller bound, so the outbox drops its
        oldest readings (counted) instead of filling the disk and failing every commit."""
        room = self._room()
        budget = self.cfg.max_bytes if room is None else min(self.cfg.max_bytes, room)
        if self._cap is not None:
            if room is not None and room >= self._cap * 5 // 4 and self._failing is None:
                self._cap = None  # someone freed space: the room decides again
            else:
                budget = min(budget, self._cap)
        budget = max(budget, MIN_DATA_BUDGET + 8 * PAGE_SIZE) // PAGE_SIZE * PAGE_SIZE
        if budget == self._budget:
            return
        if budget < self.cfg.max_bytes and (
            not self._budget or abs(budget - self._budget) > self._budget // 8
        ):
            log.warning(
                "outbox %s: the file system has room for %d bytes, less than max_bytes "
                "(%d): the outbox keeps within %d bytes and drops its oldest readings past "
                "that", self.path, max(room or 0, 0), self.cfg.max_bytes, budget,
            )
        self._budget = budget
        self._wal_budget, wal_pages = wal_budget(budget)
        self._data_budget = max(budget - self._wal_budget, MIN_DATA_BUDGET)
        # Drops for the bound go a chunk at a time: small chunks under small bounds.
        self._chunk_limit = max(4096, min(CHUNK_BYTES, self._data_budget // 32))
        # The WAL is checkpointed past a quarter of its share, and one commit writes at
        # most another quarter (a backlog held in memory goes in several commits): it
        # stays within its share even when a checkpoint cannot finish at once.
        self._commit_limit = max(4096, self._wal_budget // 4)
        self._writer.execute(f"PRAGMA wal_autocheckpoint={wal_pages}")
        self._writer.execute(f"PRAGMA journal_size_limit={self._wal_budget}")

    def _make_room(self) -> None:
        """After "disk full" (someone else took the reserve): give the WAL's space back and
        lower the bound by an eighth, so the next commit drops the oldest to fit. Once per
        episode: when the disk has no room even for that, retrying cannot help until
        someone frees space; meanwhile readings wait in memory (bounded, counted)."""
        with contextlib.suppress(sqlite3.Error):
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._cap = max(MIN_DATA_BUDGET, (self._budget * 7 // 8) // PAGE_SIZE * PAGE_SIZE)

    # -- the file going away ------------------------------------------------------------

    def _check_file(self) -> None:
        """Writer lock held: replace a file that was deleted or replaced under us, or that
        the reader or writer found damaged."""
        if self._damaged:
            self._replace_file("damaged")
        elif _file_id(self.path) != self._file_id:
            self._replace_file("vanished")

    def _replace_file(self, reason: str) -> None:
        """Start on a new file. ``vanished``: rebuilt from the copy still open here (VACUUM
        INTO), so nothing is lost; ``damaged`` (or a rebuild that fails): the old file is
        moved aside and what it held is counted as dropped."""
        rebuilt = False
        if reason == "vanished":
            tmp = self.path + ".rebuild"
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            try:
                self._writer.execute("VACUUM INTO ?", (tmp,))
                rebuilt = True
            except sqlite3.Error as exc:
                log.error("outbox '%s': cannot rebuild from the open copy: %s",
                          self.path, describe_error(exc))
        with self._rlock:
            for conn in (self._reader, self._writer):
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
        if reason == "damaged":
            aside = set_aside(self.path, "damaged")
        elif os.path.exists(self.path):  # someone put another file there: keep it aside
            aside = set_aside(self.path, "foreign")
        else:
            aside = ""
            for suffix in ("-wal", "-shm"):  # of the deleted file: not for the new one
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path + suffix)
        if rebuilt:
            os.replace(self.path + ".rebuild", self.path)
        try:
            writer, reader = _connect(self.path, self.gateway_id)
        except (sqlite3.Error, StorageError) as exc:
            self._damaged = True  # try again at the next commit; readings wait in memory
            raise StorageError(
                f"cannot create a new outbox '{self.path}': {describe_error(exc)}"
                if isinstance(exc, sqlite3.Error) else str(exc)
            ) from exc
        with self._rlock:
            self._writer, self._reader = writer, reader
        self._damaged = False
        self._file_id = _file_id(self.path)
        self._budget = 0  # set the pragmas of the new connection
        self._fit_budget()
        self._metrics.outbox_files_replaced_total.labels(reason).inc()
        if rebuilt:
            log.error(
                "outbox '%s' was deleted or replaced while the gateway ran%s: rebuilt it "
                "from the copy still open, nothing lost", self.path,
                f" (the file found there is kept as '{aside}')" if aside else "",
            )
            return
        with self._qlock:
            lost = max(self._rows - self._acked_readings, 0)
            # Ids go on above every id offered before, and acks of those are ignored.
            high = max(self._max_offered, self._dropped_upto, *self._acked, *self._to_delete,
                       0)
            self._forget_file()
            self._dropped_upto = high
            self._dropped += lost
            persisted = self._dropped - self._dropped_unpersisted
            if lost:
                self._last_loss = time.monotonic()
        self._writer.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('chunks', ?)", (high,)
        )
        self._writer.execute("UPDATE meta SET value = ? WHERE key = 'dropped'", (persisted,))
        log.error(
            "outbox '%s' %s: %s; started a new, empty outbox; %d readings it held are lost "
            "(counted as dropped)", self.path,
            "is damaged" if reason == "damaged" else "was deleted and could not be rebuilt",
            f"moved it to '{aside}' (kept for salvage: sqlite3 FILE .recover)" if aside
            else "nothing to keep", lost,
        )

    # -- the commit --------------------------------------------------------------------

    def _commit(self) -> int:
        with self._wlock:
            if self._closed:
                raise StorageError(f"outbox '{self.path}' is closed")
            try:
                self._check_file()
            except StorageError as exc:
                self._failing = str(exc)
                self._metrics.outbox_commit_errors_total.inc()
                self._update_metrics()
                raise
            self._fit_budget()
            with self._qlock:
                batch = self._take_batch()
                deletes = [i for i in self._to_delete if i > self._dropped_upto]
                self._to_delete = []
                dirty = self._acked_dirty
                self._acked_dirty = set()
                done = [
                    (cid, json.dumps(sorted(self._acked[cid]))) for cid in dirty
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
                        self._thrown += 1
                    if overflow > 0:
                        self._last_loss = time.monotonic()
                    self._to_delete[:0] = deletes
                    self._acked_dirty |= dirty
                    queued = len(self._queue)
                reason = describe_error(exc)
                if is_damaged(exc):
                    self._damaged = True  # the next commit replaces the file
                if reason == "disk full" and self._failing != reason:
                    self._make_room()
                message = (
                    f"cannot commit to outbox '{self.path}': {reason}; "
                    f"{queued} readings held in memory"
                )
                if self._failing != reason:
                    log.error("%s", message)
                self._failing = reason
                self._metrics.outbox_commit_errors_total.inc()
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
                self._last_loss = time.monotonic()
                self._drops_unlogged += dropped_now
                now = time.monotonic()
                if now - self._drop_logged_at >= DROP_LOG_EVERY:
                    log.warning(
                        "outbox at its bound (%d bytes%s): dropped the %d oldest readings "
                        "(%d dropped in all)",
                        self._budget,
                        "" if self._budget >= self.cfg.max_bytes else ", what the disk holds",
                        self._drops_unlogged, self._dropped,
                    )
                    self._drop_logged_at = now
                    self._drops_unlogged = 0
            self._update_metrics()
            return len(batch)

    def _take_batch(self) -> list[Row]:
        """The oldest queued readings, up to the commit size (queue lock held)."""
        queue = self._queue
        if sum(r.size for r in queue) <= self._commit_limit:
            batch = list(queue)
            queue.clear()
            return batch
        batch = []
        size = 0
        while queue and (not batch or size + queue[0].size <= self._commit_limit):
            row = queue.popleft()
            size += row.size
            batch.append(row)
        return batch

    def _write(
        self,
        batch: list[Row],
        deletes: list[int],
        dropped_mem: int,
        done: list[tuple[int, str]],
    ) -> tuple[int, int, int]:
        """One transaction: delete acked chunks, insert the batch as chunks, enforce
        max_bytes. Returns the readings and bytes of the chunks dropped for the bound, and
        how many of those readings were not acknowledged (the dropped count)."""
        w = self._writer
        self._dropped_upto_pending = self._dropped_upto
        w.execute("BEGIN IMMEDIATE")
        if deletes:
            ordered = sorted(deletes)
            for table in ("chunks", "acked"):
                try:  # one statement over sorted ids
                    w.execute(
                        f"DELETE FROM {table} WHERE id IN (SELECT value FROM json_each(?))",
                        (json.dumps(ordered),),
                    )
                except sqlite3.OperationalError as exc:
                    if "json_each" not in str(exc):
                        raise
                    w.executemany(f"DELETE FROM {table} WHERE id = ?", ((i,) for i in ordered))
        if done:  # acked parts of chunks not yet complete: not offered again after a crash
            w.executemany("INSERT OR REPLACE INTO acked (id, parts) VALUES (?, ?)", done)
        dropped = dropped_size = 0
        if batch:
            rows = [
                (*chunk, self.gateway_id)
                for chunk in build_chunks(batch, self.cfg.max_message_bytes, self._chunk_limit)
            ]
            # Make room first: the insert then reuses the pages freed, and the file (and
            # the disk under it) does not grow past the bound even for a moment.
            incoming = sum(len(r[4]) + len(r[5]) + 64 for r in rows)
            dropped, dropped_size = self._enforce_bound(incoming)
            w.executemany(INSERT_CHUNK, rows)
        more, more_size = self._enforce_bound(0)
        dropped += more
        dropped_size += more_size
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

    def _enforce_bound(self, incoming: int) -> tuple[int, int]:
        """Drop the oldest chunks while the used pages (plus ``incoming`` bytes about to be
        inserted) exceed the data budget; returns the readings and estimated bytes dropped."""
        w = self._writer
        dropped = dropped_size = 0
        for _ in range(8):
            used, _pages, _free = self._used_bytes()
            used += incoming
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
            w.execute("DELETE FROM acked WHERE id <= ?", (found[3],))
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
            log.debug("outbox incremental vacuum failed: %s", describe_error(exc))

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

    def _pending(self, conn: sqlite3.Connection) -> tuple[int, int, int, int, int | None]:
        """(pending readings, queued readings, pending bytes, dropped, oldest ts or None);
        ``conn`` is the connection of the calling thread (reader: loop, writer: commit)."""
        with self._qlock:
            queued = len(self._queue)
            pending = self._rows - self._acked_readings + queued
            size = self._rows_size - self._acked_size + sum(r.size for r in self._queue)
            dropped = self._dropped
            oldest_ts = self._queue[0].ts if self._queue else None
        with contextlib.suppress(sqlite3.Error):
            row = conn.execute("SELECT first_ts FROM chunks ORDER BY id LIMIT 1").fetchone()
            if row is not None:
                oldest_ts = int(row[0])
        return max(pending, 0), queued, max(size, 0), dropped, oldest_ts

    def stats(self) -> OutboxStats:
        with self._rlock:
            return self._stats(self._reader)

    def _stats(self, conn: sqlite3.Connection) -> OutboxStats:
        pending, queued, size, dropped, oldest_ts = self._pending(conn)
        age = None if oldest_ts is None or not pending else max(
            0.0, time.time() - oldest_ts / 1e9
        )
        return OutboxStats(
            pending_readings=pending,
            queued_readings=queued,
            pending_messages_estimate=math.ceil(size / self.cfg.max_message_bytes),
            bytes=self.disk_bytes(),
            oldest_age_s=age,
            dropped=dropped,
        )

    # -- metrics -----------------------------------------------------------------------

    def _update_metrics(self) -> None:
        """Push depth, bytes, age and the dropped total to the metrics (writer lock held)."""
        stats = self._stats(self._writer)
        self._metrics.set_outbox(
            pending_readings=stats.pending_readings,
            pending_messages=stats.pending_messages_estimate,
            size_bytes=stats.bytes,
            dropped_total=stats.dropped,
            oldest_age=stats.oldest_age_s or 0.0,
        )
        self._metrics.outbox_healthy.set(0 if self.problem() else 1)

    # -- closing -----------------------------------------------------------------------

    def close(self) -> int:
        """Commit what is queued (best effort), checkpoint the WAL and close. Returns how many
        readings were still in memory and could not be committed: thrown away (said)."""
        with contextlib.suppress(StorageError):
            self.flush()
        with self._wlock:
            if self._closed:
                return 0
            self._closed = True
            with self._rlock, contextlib.suppress(sqlite3.Error):
                self._reader.close()
            with contextlib.suppress(sqlite3.Error):
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.suppress(sqlite3.Error):
                self._writer.close()
        with self._qlock:
            left = len(self._queue)
            self._queue.clear()
            self._thrown += left
        if left:
            log.error(
                "outbox closed with %d readings not committed (%s): they are lost",
                left, self._failing or "closed",
            )
        return left


def _connect(path: str, gateway_id: str) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """The writer (created, migrated, pragmas set) and a read-only reader of ``path``.

    Raises StorageError for a file that is not ours or too new, sqlite3.Error otherwise.
    """
    try:
        writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open outbox '{path}': {describe_error(exc)}") from exc
    try:
        prepare(writer, path, gateway_id)
        # Made by the committer's thread when the file is replaced, used on the loop's
        # (under the reader lock, never at the same time).
        reader = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=10.0,
            check_same_thread=False,
        )
    except BaseException:
        writer.close()
        raise
    return writer, reader


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def wal_budget(budget: int) -> tuple[int, int]:
    """Bytes set aside for the WAL within the bound, and the auto-checkpoint in pages."""
    wal = min(max(budget // 16, 32 * PAGE_SIZE), 8 * 1024 * 1024, max(budget // 4, 8 * PAGE_SIZE))
    return wal, max(4, wal // PAGE_SIZE // 4)

