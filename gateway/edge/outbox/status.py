"""`sensegate outbox`: the status of a state_dir's outbox, read beside a running daemon."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import time
from typing import IO, Any

from gateway.core.errors import StorageError
from gateway.core.model import OutboxConfig
from gateway.core.units import format_age
from gateway.edge.outbox.chunks import head_parts
from gateway.edge.outbox.format import DB_NAME, FORMAT_VERSION, describe_error


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
            raise StorageError(f"cannot open outbox '{path}': {describe_error(exc)}") from exc
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
            query = (
                "SELECT head, done FROM chunks" if version == 2 else
                "SELECT c.head, a.parts FROM chunks c LEFT JOIN acked a ON a.id = c.id"
            )
            for head, done in conn.execute(query):
                acked = set(json.loads(done)) if done else set()
                for index, (device, measurement, tags, n, size, _end) in enumerate(
                    head_parts(head)
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
        raise StorageError(f"cannot read outbox '{path}': {describe_error(exc)}") from exc
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
    print(f"oldest:            {format_age(status['oldest_age_s'])}", file=out)
    print(f"dropped:           {status['dropped']}", file=out)
    return ExitCode.OK


