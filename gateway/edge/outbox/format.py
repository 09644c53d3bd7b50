"""The outbox file: its identity, its format version, the migrations, opening pragmas.

The on-disk format carries ``PRAGMA application_id`` (sensegate's outbox) and
``PRAGMA user_version`` (the format version); a newer version is refused, an older one
migrated in place, inside one transaction (a crash mid-migration leaves the old format).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable

from gateway.core.errors import StorageError
from gateway.edge.outbox.chunks import CHUNK_BYTES, Row, build_chunks, fragment

log = logging.getLogger("sensegate.outbox")

DB_NAME = "outbox.db"
FORMAT_VERSION = 3
APPLICATION_ID = 0x53474F42  # "SGOB": this SQLite file is a sensegate outbox
PAGE_SIZE = 4096
MIGRATE_ROWS = 5000  # version-1 rows turned into chunks at a time

SCHEMA_V1 = (
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
CHUNKS_TABLE = """CREATE TABLE chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        readings INTEGER NOT NULL,
        size INTEGER NOT NULL,
        first_ts INTEGER NOT NULL,
        last_ts INTEGER NOT NULL,
        head TEXT NOT NULL,
        body BLOB NOT NULL,
        done TEXT
    )"""


# Version 3: each chunk says which gateway id its readings were polled under; they are
# published under that id only, whatever the id configured when they go out. The parts
# already acknowledged move from `chunks.done` (now always NULL) to a table of their own,
# `acked`: marking a part rewrote the whole chunk row (its body too), which on a full disk
# needed room for a second copy of every partly acknowledged chunk.
# chunk id -> JSON array of the part indices acknowledged, while others are not
ACKED_TABLE = "CREATE TABLE acked (id INTEGER PRIMARY KEY, parts TEXT NOT NULL)"
INSERT_CHUNK = (
    "INSERT INTO chunks (readings, size, first_ts, last_ts, head, body, gateway) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _v0_to_v1(conn: sqlite3.Connection, _gateway_id: str) -> None:
    for statement in SCHEMA_V1:
        conn.execute(statement)


def _v1_to_v2(conn: sqlite3.Connection, _gateway_id: str) -> None:
    """Rows of readings become chunks, in id order (so oldest first stays true)."""
    conn.execute(CHUNKS_TABLE)
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
            Row(device, measurement, tags, int(ts), fragment(int(ts), vals, quality),
                 int(size))
            for _, device, measurement, tags, ts, vals, quality, size in rows
        ]
        conn.executemany(
            "INSERT INTO chunks (readings, size, first_ts, last_ts, head, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            build_chunks(batch, CHUNK_BYTES, CHUNK_BYTES),
        )
    conn.execute("DROP TABLE readings")


def _v2_to_v3(conn: sqlite3.Connection, gateway_id: str) -> None:
    """Chunks get the gateway id. Formats 1 and 2 did not record it: what they hold is taken
    as polled under the id configured at the first start of a version that reads format 3
    (the id cannot change while a gateway runs: a reload refuses it)."""
    conn.execute("ALTER TABLE chunks ADD COLUMN gateway TEXT NOT NULL DEFAULT ''")
    conn.execute("UPDATE chunks SET gateway = ?", (gateway_id,))
    conn.execute(ACKED_TABLE)
    conn.execute(
        "INSERT INTO acked (id, parts) SELECT id, done FROM chunks WHERE done IS NOT NULL"
    )
    conn.execute("UPDATE chunks SET done = NULL WHERE done IS NOT NULL")


# MIGRATIONS[v] turns a version-v database into version v+1, inside the opening
# transaction. Version 0 is a new, empty file. A format change appends a step and bumps
# FORMAT_VERSION.
MIGRATIONS: tuple[Callable[[sqlite3.Connection, str], None], ...] = (
    _v0_to_v1, _v1_to_v2, _v2_to_v3,
)
assert len(MIGRATIONS) == FORMAT_VERSION


def describe_error(exc: sqlite3.Error) -> str:
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


def is_damaged(exc: sqlite3.Error) -> bool:
    """True when the file itself is damaged (a corrupt page, not a database at all)."""
    name = getattr(exc, "sqlite_errorname", "")
    text = str(exc).lower()
    return (
        name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
        or "malformed" in text or "not a database" in text
    )


def set_aside(path: str, why: str) -> str:
    """Rename a damaged outbox file (and its WAL) to ``PATH.WHY-YYYYmmddTHHMMSSZ``, kept for
    diagnosis and salvage (``sqlite3 FILE .recover``); returns the new name. The -shm
    file, a cache of the WAL's index, is removed."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = f"{path}.{why}-{stamp}"
    n = 1
    while os.path.exists(aside):
        n += 1
        aside = f"{path}.{why}-{stamp}-{n}"
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + suffix, aside + suffix)
    with contextlib.suppress(FileNotFoundError):
        os.remove(path + "-shm")
    return aside


def prepare(conn: sqlite3.Connection, path: str, gateway_id: str) -> None:
    """Check the file is an outbox of a version we read; create or migrate it; set pragmas.

    ``gateway_id`` is the configured id, given to what older formats held without one.
    """
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
    # Many builds (Debian's among them) default to secure_delete=ON, which zeroes every
    # freed page: a delete then writes as many bytes to the WAL as it frees, and on a full
    # disk the deletes of a drained backlog could never commit. Readings are no secret;
    # FAST zeroes only what costs no extra I/O.
    conn.execute("PRAGMA secure_delete=FAST")
    if version < FORMAT_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for step in range(version, FORMAT_VERSION):
                MIGRATIONS[step](conn, gateway_id)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        if version:
            log.info("outbox '%s' migrated from format %d to %d", path, version, FORMAT_VERSION)

