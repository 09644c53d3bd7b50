"""Writing one batch to InfluxDB so that nothing in it can stall the bridge.

A batch ends in one of two ways, never in a third: every line is written or dead-lettered
(with the dead-letter file fsynced) and the caller acknowledges its messages, or the
messages can no longer be acknowledged (their connection is gone) and the broker delivers
them again. What can go wrong on the way, and what happens:

- InfluxDB down, slow, 5xx, 429, 401/403/404 (`SinkError(retryable=True)`): the whole batch
  is retried with capped backoff (0.5 s doubling to 30 s); nothing is acknowledged.
- InfluxDB refuses points (400, 413, 422: `SinkError(retryable=False)`): `write_isolating`
  bisects until each refused line stands alone; it is dead-lettered `rejected` with
  InfluxDB's words, the rest is written.
- a line with no UTF-8 encoding: dead-lettered `write_failed` at once, never sent (ingest
  refuses such text first; this is defence in depth).
- anything else raised while writing (a bug, a library's surprise): retried like an outage;
  once the batch failed `BISECT_AFTER` times in a row it is bisected, and each line that
  still fails alone is dead-lettered `write_failed` with the exception text.
- the dead-letter file cannot be written (`OSError`: a full or read-only disk): retried with
  backoff; nothing is acknowledged meanwhile, and nothing is lost.

While a batch is retried the stats say so (`store_ok` false, `last_error`, `write_errors`), so
`/healthz` answers 503 and `STATUS=` says "failing"; the first batch that goes through sets
them right again. A batch whose every line failed for a reason InfluxDB did not give leaves
`store_ok` false: a store that fails everything is not healthy, even when each failure ends
in the dead-letter file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.bridge.ingest import REJECTED, WRITE_FAILED
from gateway.bridge.sink import Sink
from gateway.core.errors import SinkError
from gateway.runtime.backoff import Backoff
from gateway.runtime.metrics import BridgeMetrics

log = logging.getLogger("sensegate.bridge")

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
# Failures of one batch in a row, for a reason InfluxDB did not give, before it is bisected:
# a passing fault (a sink closed by a reload) is retried, a poison line is isolated.
BISECT_AFTER = 3


@dataclass(frozen=True, slots=True)
class Poison:
    """A line that will not be written: dead-letter it under its message's topic."""

    index: int  # in the batch
    reason: str  # ingest.REJECTED or ingest.WRITE_FAILED
    detail: str
    payload: bytes  # the line, encodable whatever it holds


class WriteStats(Protocol):
    """What the bridge's stats (`/healthz`, `STATUS=`) learn from the writers."""

    write_errors: int
    store_ok: bool
    last_error: str
    points_written: int
    batches_written: int


def _payload(line: str) -> bytes:
    return line.encode("utf-8", "backslashreplace")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def write_isolating(
    sink: Sink, lines: Sequence[str], *, isolate_failures: bool = False
) -> list[Poison]:
    """Write `lines`; return the lines that will not be written (in line order).

    A batch InfluxDB refuses (400/413/422) is bisected until each refused line stands alone,
    so one bad point never poisons the others (rewriting accepted points is harmless: same
    series, same timestamp, same values). With `isolate_failures`, a batch that raises
    anything other than a `SinkError` is bisected the same way. Raises `SinkError(retryable=
    True)` when the store is unavailable, and, without `isolate_failures`, whatever else
    writing raised: the caller retries the whole batch later.
    """
    poison: list[Poison] = []
    sendable: Sequence[str] = lines
    where: Sequence[int] = range(len(lines))
    try:
        body: bytes | None = "\n".join(lines).encode()
    except UnicodeEncodeError:
        body = None
        kept: list[str] = []
        kept_at: list[int] = []
        for i, line in enumerate(lines):
            try:
                line.encode()
            except UnicodeEncodeError as exc:
                poison.append(Poison(i, WRITE_FAILED, f"line is not valid utf-8: {exc}",
                                     _payload(line)))
            else:
                kept.append(line)
                kept_at.append(i)
        sendable, where = kept, kept_at

    async def attempt(lo: int, hi: int, data: bytes | None = None) -> None:
        try:
            await sink.write(data if data is not None else "\n".join(sendable[lo:hi]).encode())
        except SinkError as exc:
            if exc.retryable:
                raise
            reason, detail = REJECTED, str(exc)
        except Exception as exc:
            if not isolate_failures:
                raise
            reason, detail = WRITE_FAILED, f"writing raised {_describe(exc)}"
        else:
            return
        if hi - lo == 1:
            poison.append(Poison(where[lo], reason, detail, _payload(sendable[lo])))
            return
        mid = (lo + hi) // 2
        await attempt(lo, mid)
        await attempt(mid, hi)

    if sendable:
        await attempt(0, len(sendable), body)
    poison.sort(key=lambda p: p.index)
    return poison


async def write_batch(
    lines: Sequence[str],
    *,
    sink: Callable[[], Sink | None],
    wanted: Callable[[], bool],
    dead_letter: Callable[[Poison], None],
    sync: Callable[[], None],
    stats: WriteStats,
    metrics: BridgeMetrics,
) -> bool:
    """Write one batch of lines, dead-letter its poison, fsync the dead letters.

    `sink()` is the current sink (a reload may replace it between attempts); `wanted()` turns
    false once the batch's messages can no longer be acknowledged. True: every line is written
    or dead-lettered, acknowledge the messages. False: given up because `wanted()` turned
    false; the broker delivers the messages again.
    """
    backoff = Backoff(BACKOFF_START, BACKOFF_MAX)
    failures = 0  # in a row, for a reason InfluxDB did not give
    while True:
        if not wanted():
            return False
        current = sink()
        assert current is not None
        try:
            poison = await write_isolating(current, lines,
                                           isolate_failures=failures >= BISECT_AFTER)
            break
        except SinkError as exc:
            error = str(exc)
        except Exception as exc:
            failures += 1
            error = f"writing a batch of {len(lines)} points raised {_describe(exc)}"
            if failures == 1:
                log.exception("%s", error)
            if failures == BISECT_AFTER:
                error += "; bisecting it to find the lines to blame"
        _failed(stats, metrics, error)
        delay = backoff.next()
        log.warning("%s; %d points kept, retrying in %.1fs", error, len(lines), delay)
        await asyncio.sleep(delay)

    await _dead_letter_all(poison, dead_letter, sync, stats, metrics)
    written = len(lines) - len(poison)
    if written == 0 and any(p.reason == WRITE_FAILED for p in poison):
        _failed(stats, metrics, poison[-1].detail)
    else:
        if not stats.store_ok:
            log.info("influxdb %s accepts writes again", current.describe())
        stats.store_ok = True
        metrics.batch_written(written)
    stats.points_written += written
    stats.batches_written += 1
    return True


def _failed(stats: WriteStats, metrics: BridgeMetrics, error: str) -> None:
    stats.write_errors += 1
    stats.store_ok = False
    stats.last_error = error
    metrics.write_error()


async def _dead_letter_all(
    poison: list[Poison],
    dead_letter: Callable[[Poison], None],
    sync: Callable[[], None],
    stats: WriteStats,
    metrics: BridgeMetrics,
) -> None:
    """Append every poison line to the dead-letter file and fsync it, retrying while the
    disk refuses (OSError); a record that cannot be written for another reason is logged
    in full instead, so no line is dropped silently and no batch is held for good."""
    backoff = Backoff(BACKOFF_START, BACKOFF_MAX)
    pending = list(poison)
    while True:
        try:
            while pending:
                try:
                    dead_letter(pending[0])
                except OSError:
                    raise
                except Exception:
                    p = pending[0]
                    log.exception("cannot dead-letter line %d (%s: %s): %r", p.index, p.reason,
                                  p.detail, p.payload[:2000])
                pending.pop(0)
            sync()
            return
        except OSError as exc:
            error = f"cannot write the dead-letter file: {exc}"
            _failed(stats, metrics, error)
            delay = backoff.next()
            log.error("%s; %d dead letters kept, retrying in %.1fs", error, len(pending), delay)
            await asyncio.sleep(delay)
