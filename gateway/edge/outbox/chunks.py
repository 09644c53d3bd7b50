"""The chunk encoding: how the readings of one commit are stored in ``chunks`` rows.

A commit writes its readings pre-serialised, one row per commit (split past ``CHUNK_BYTES``).
In a row, the readings of one (device, measurement, tags) form a *part*: the device's
readings as the bytes of the json payload's ``readings`` items, comma-joined. The drain
reads, splices and deletes per chunk, not per reading.

``head`` is JSON, [[[measurement, tags JSON], ...], [device, key index, readings, estimated
bytes, end offset, device, ...]]: the chunk's distinct keys, then five items per part;
``body`` holds the parts one after the other, part i spanning body[end(i-1):end(i)].
Pure: no SQLite here (the store and the migrations run the statements).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from gateway.core.model import Reading, Value

CHUNK_BYTES = 512 * 1024  # estimated message bytes per chunk row, at most (see _chunk_limit)


@dataclass(slots=True)
class Row:
    """One queued reading: its message item already serialised."""

    device: str
    measurement: str
    tags: str
    ts: int
    frag: str  # {"ts":...,"values":{...}[,"quality":{...}]}
    size: int


@dataclass(slots=True)
class Part:
    device: str
    measurement: str
    tags: str
    frags: list[str] = field(default_factory=list)
    size: int = 0


def fragment(ts: int, vals: str, quality: str | None) -> str:
    if quality:
        return f'{{"ts":{ts},"values":{vals},"quality":{quality}}}'
    return f'{{"ts":{ts},"values":{vals}}}'


def build_chunks(
    rows: list[Row], part_limit: int, chunk_limit: int
) -> list[tuple[int, int, int, int, str, bytes]]:
    """Rows of one commit as chunk rows (readings, size, first_ts, last_ts, head, body).

    The readings of one (device, measurement, tags) in a chunk form a part, in order; a part
    is at most ``part_limit`` estimated bytes (a message's limit) and a chunk at most
    ``chunk_limit`` (at least one reading each).
    """
    out: list[tuple[int, int, int, int, str, bytes]] = []
    parts: list[Part] = []
    open_parts: dict[tuple[str, str, str], Part] = {}
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
            part = Part(r.device, r.measurement, r.tags)
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


def head_parts(head: str) -> list[tuple[str, str, str, int, int, int]]:
    """A chunk's parts: (device, measurement, tags JSON, readings, bytes, body end)."""
    keys, flat = json.loads(head)
    return [
        (flat[i], *keys[flat[i + 1]], flat[i + 2], flat[i + 3], flat[i + 4])
        for i in range(0, len(flat), 5)
    ]


def dumps(obj: object) -> str:
    """Compact JSON as `gateway.core.payload` writes it (insertion order, UTF-8, no NaN)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def finite(reading: Reading) -> tuple[dict[str, Value], dict[str, str]]:
    """Values that JSON can carry; a non-finite float becomes quality ``invalid``."""
    values: dict[str, Value] = {}
    quality = dict(reading.quality)
    for name, value in reading.values.items():
        if isinstance(value, float) and not math.isfinite(value):
            quality[name] = "invalid"
        else:
            values[name] = value
    return values, quality


