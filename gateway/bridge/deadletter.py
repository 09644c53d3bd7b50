"""The bridge's dead-letter file: messages (or points) that cannot be decoded or written.

One JSON object per line in `state_dir/deadletter.jsonl`:

    {"time": "2025-11-24T16:00:00.123456Z", "topic": "sensegate/g/d/data",
     "reason": "bad_json", "detail": "expecting value at line 1 column 1",
     "bytes": 17, "payload": "not json at all {"}

`payload` holds the payload as text when it is valid UTF-8, else `payload_b64` holds it
base64-encoded; either is cut to `max_payload` bytes (`"truncated": true`). A topic or detail
that is not valid Unicode (a lone surrogate) is written with that character as `\\udXXX`
text, so a record can be written whatever the message held. Past `max_bytes`
the file is rotated to `deadletter.jsonl.1` (… up to `keep` old files), like logrotate.
`sync()` flushes and fsyncs; the bridge calls it before it acknowledges the messages, so a
dead letter is on disk before the broker forgets the message.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import IO, Any

FILE_NAME = "deadletter.jsonl"


def _utc_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def _text(text: str) -> str:
    """`text` as valid Unicode: a character UTF-8 cannot carry becomes `\\udXXX` text."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def record(
    topic: str, reason: str, payload: bytes, *, detail: str | None = None, max_payload: int
) -> dict[str, Any]:
    """The JSON object written for one dead letter (pure, apart from the clock)."""
    rec: dict[str, Any] = {"time": _utc_now(), "topic": _text(topic), "reason": _text(reason)}
    if detail:
        rec["detail"] = _text(detail[:500])
    rec["bytes"] = len(payload)
    cut = payload[:max_payload]
    if len(payload) > max_payload:
        rec["truncated"] = True
    try:
        rec["payload"] = cut.decode("utf-8")
    except UnicodeDecodeError:
        if len(payload) > max_payload:
            # The cut may have split a UTF-8 sequence: try the text without its tail.
            for back in (1, 2, 3):
                try:
                    rec["payload"] = cut[:-back].decode("utf-8")
                    break
                except UnicodeDecodeError:
                    continue
        if "payload" not in rec:
            rec["payload_b64"] = base64.b64encode(cut).decode("ascii")
    return rec


class DeadLetters:
    """Appends dead letters to `state_dir/deadletter.jsonl`, rotating past `max_bytes`."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        max_bytes: int = 64 * 1024 * 1024,
        keep: int = 3,
        max_payload: int = 64 * 1024,
    ) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / FILE_NAME
        self.max_bytes = max_bytes
        self.keep = keep
        self.max_payload = max_payload
        self._file: IO[str] | None = None
        self._size = 0
        self._dirty = False
        self.written = 0

    def _open(self) -> IO[str]:
        if self._file is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8", errors="backslashreplace")
            self._size = self._file.tell()
        return self._file

    def append(
        self, topic: str, reason: str, payload: bytes, *, detail: str | None = None
    ) -> None:
        line = json.dumps(
            record(topic, reason, payload, detail=detail, max_payload=self.max_payload),
            ensure_ascii=False,
        ) + "\n"
        f = self._open()
        if self._size and self._size + len(line) > self.max_bytes:
            self._rotate()
            f = self._open()
        f.write(line)
        self._size += len(line.encode("utf-8", "backslashreplace"))
        self._dirty = True
        self.written += 1

    def _rotate(self) -> None:
        self.sync()
        if self._file is not None:
            self._file.close()
            self._file = None
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{FILE_NAME}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{FILE_NAME}.{i + 1}"))
        if self.keep > 0:
            os.replace(self.path, self.path.with_name(f"{FILE_NAME}.1"))
        else:
            self.path.unlink(missing_ok=True)

    def sync(self) -> None:
        """Flush and fsync what was appended since the last call."""
        if self._file is not None and self._dirty:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._dirty = False

    def close(self) -> None:
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None
