"""Test-only views of an outbox file (never used by the product)."""

from __future__ import annotations

import json
import os
import sqlite3

from gateway.edge.outbox.chunks import head_parts
from gateway.edge.outbox.format import DB_NAME


def committed_readings(state_dir: str) -> set[tuple[str, int]]:
    """(device, ts) of every reading committed in ``state_dir``'s outbox and not deleted.

    For tests and diagnosis: what a killed gateway had committed. Reads formats 1 to 3.
    """
    path = os.path.join(state_dir, DB_NAME)
    if not os.path.exists(path):
        return set()
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            return set()
        if version == 1:
            return {(d, int(ts)) for d, ts in conn.execute("SELECT device, ts FROM readings")}
        out: set[tuple[str, int]] = set()
        query = (
            "SELECT head, body, done FROM chunks" if version == 2 else
            "SELECT c.head, c.body, a.parts FROM chunks c LEFT JOIN acked a ON a.id = c.id"
        )
        for head, body, done in conn.execute(query):
            acked = set(json.loads(done)) if done else set()
            begin = 0
            for index, (device, _m, _t, _n, _size, end) in enumerate(head_parts(head)):
                if index not in acked:
                    items = json.loads(b"[" + body[begin:end] + b"]")
                    out.update((device, int(item["ts"])) for item in items)
                begin = end
        return out
    finally:
        conn.close()


