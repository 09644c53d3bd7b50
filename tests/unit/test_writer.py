"""Writing a batch: bisection of refused and failing batches, retries, and dead letters that
always end the batch (fake sinks that fail on particular lines; no real store needed)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.bridge import writer
from gateway.bridge.deadletter import DeadLetters
from gateway.bridge.ingest import REJECTED, WRITE_FAILED
from gateway.bridge.sink import Sink
from gateway.bridge.writer import Poison, write_batch, write_isolating
from gateway.core.errors import SinkError
from gateway.core.model import InfluxConfig
from gateway.runtime.metrics import BridgeMetrics


class FakeSink(Sink):
    """Refuses (400) any body holding a line in `bad`, raises `crash` for one holding a line
    in `poison`, is down (retryable) for the next `down` writes; records what it accepted."""

    def __init__(self, *, bad: set[str] | None = None, poison: set[str] | None = None,
                 crash: Exception | None = None, down: int = 0) -> None:
        super().__init__(InfluxConfig(url="http://127.0.0.1:1", api="v1"))
        self.bad = {line.encode() for line in bad or ()}
        self.poison = {line.encode() for line in poison or ()}
        self.crash = crash or RuntimeError("the client library tripped")
        self.down = down
        self.accepted: list[bytes] = []
        self.calls = 0

    def _write_blocking(self, body: bytes) -> None:
        self.calls += 1
        if self.down:
            self.down -= 1
            raise SinkError("influxdb unreachable", retryable=True)
        lines = body.split(b"\n")
        if any(line in self.poison for line in lines):
            raise self.crash
        if any(line in self.bad for line in lines):
            raise SinkError("field type conflict", retryable=False, status=400)
        self.accepted.extend(lines)


@dataclass
class Stats:
    write_errors: int = 0
    store_ok: bool = True
    last_error: str = ""
    points_written: int = 0
    batches_written: int = 0


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "BACKOFF_START", 0.001)
    monkeypatch.setattr(writer, "BACKOFF_MAX", 0.002)


# -- write_isolating ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "bad_at"),
    [
        pytest.param(1, [], id="one-good"),
        pytest.param(1, [0], id="one-bad"),
        pytest.param(10, [3], id="one-bad-in-ten"),
        pytest.param(10, [0, 9], id="first-and-last"),
        pytest.param(33, [5, 6, 7, 20], id="several"),
        pytest.param(8, list(range(8)), id="all-bad"),
    ],
)
@pytest.mark.parametrize("kind", ["rejected", "raises"])
async def test_write_isolating_writes_all_good_lines(n: int, bad_at: list[int],
                                                     kind: str) -> None:
    lines = [f"m x={i}" for i in range(n)]
    culprits = {lines[i] for i in bad_at}
    if kind == "rejected":
        sink = FakeSink(bad=culprits)
    else:
        sink = FakeSink(poison=culprits, crash=UnicodeEncodeError("utf-8", "\ud800", 0, 1, "x"))
    poison = await write_isolating(sink, lines, isolate_failures=True)
    assert [p.index for p in poison] == bad_at
    assert [p.payload for p in poison] == [lines[i].encode() for i in bad_at]
    for p in poison:
        if kind == "rejected":
            assert (p.reason, p.detail) == (REJECTED, "field type conflict")
        else:
            assert p.reason == WRITE_FAILED
            assert p.detail.startswith("writing raised UnicodeEncodeError: 'utf-8' codec")
    assert set(sink.accepted) == {line.encode() for i, line in enumerate(lines)
                                  if i not in bad_at}
    await sink.close()


async def test_write_isolating_one_request_when_all_good() -> None:
    sink = FakeSink()
    assert await write_isolating(sink, ["m x=1", "m x=2"]) == []
    assert sink.calls == 1
    await sink.close()


async def test_write_isolating_raises_when_store_down() -> None:
    sink = FakeSink(down=1)
    with pytest.raises(SinkError) as info:
        await write_isolating(sink, ["m x=1"])
    assert info.value.retryable
    await sink.close()


async def test_write_isolating_raises_other_failures_unless_isolating() -> None:
    sink = FakeSink(poison={"m x=2"})
    with pytest.raises(RuntimeError):
        await write_isolating(sink, ["m x=1", "m x=2"])
    assert sink.calls == 1
    await sink.close()


async def test_a_line_with_no_utf8_encoding_is_poison_and_never_sent() -> None:
    sink = FakeSink()
    lines = ["m x=1", 'm s="\ud800" 1', "m x=3"]
    poison = await write_isolating(sink, lines)
    assert poison == [Poison(1, WRITE_FAILED, poison[0].detail, b'm s="\\ud800" 1')]
    assert "surrogates not allowed" in poison[0].detail
    assert sink.accepted == [b"m x=1", b"m x=3"]
    assert sink.calls == 1
    await sink.close()


# -- write_batch --------------------------------------------------------------------------


class Recorder:
    def __init__(self, *, fail: list[Exception] | None = None) -> None:
        self.letters: list[Poison] = []
        self.syncs = 0
        self.fail = fail or []

    def dead_letter(self, p: Poison) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.letters.append(p)

    def sync(self) -> None:
        self.syncs += 1


async def run_batch(sink: FakeSink, lines: list[str], *, stats: Stats | None = None,
                    recorder: Recorder | None = None, wanted: bool = True) -> tuple[
                        bool, Stats, Recorder]:
    stats = stats or Stats()
    recorder = recorder or Recorder()
    done = await write_batch(lines, sink=lambda: sink, wanted=lambda: wanted,
                             dead_letter=recorder.dead_letter, sync=recorder.sync,
                             stats=stats, metrics=BridgeMetrics())
    return done, stats, recorder


async def test_a_batch_that_keeps_raising_is_bisected_and_its_poison_dead_lettered() -> None:
    lines = [f"m x={i}" for i in range(10)]
    sink = FakeSink(poison={"m x=4"}, crash=TypeError("a bug"))
    done, stats, rec = await run_batch(sink, lines)
    assert done
    assert [(p.index, p.reason, p.detail) for p in rec.letters] == [
        (4, WRITE_FAILED, "writing raised TypeError: a bug")]
    assert rec.syncs == 1
    assert sorted(sink.accepted) == sorted(line.encode() for line in lines if line != "m x=4")
    # retried whole BISECT_AFTER times, unhealthy meanwhile, healthy once through
    assert stats.write_errors == writer.BISECT_AFTER
    assert stats.store_ok
    assert stats.points_written == 9
    assert stats.batches_written == 1
    await sink.close()


async def test_a_passing_failure_is_retried_not_dead_lettered() -> None:
    class Flaky(FakeSink):
        def _write_blocking(self, body: bytes) -> None:
            if self.calls < writer.BISECT_AFTER - 1:
                self.calls += 1
                raise RuntimeError("cannot schedule new futures after shutdown")
            super()._write_blocking(body)

    lines = ["m x=1", "m x=2"]
    sink = Flaky()
    done, stats, rec = await run_batch(sink, lines)
    assert done
    assert rec.letters == []
    assert sink.accepted == [b"m x=1", b"m x=2"]
    assert stats.store_ok and stats.points_written == 2
    await sink.close()


async def test_a_store_that_fails_everything_is_not_healthy() -> None:
    lines = ["m x=1", "m x=2", "m x=3"]
    sink = FakeSink(poison=set(lines))
    done, stats, rec = await run_batch(sink, lines)
    assert done  # dead-lettered, not held for good
    assert [p.index for p in rec.letters] == [0, 1, 2]
    assert not stats.store_ok
    assert stats.last_error == "writing raised RuntimeError: the client library tripped"
    assert stats.points_written == 0
    await sink.close()


async def test_store_down_then_back() -> None:
    sink = FakeSink(down=2, bad={"m x=2"})
    done, stats, rec = await run_batch(sink, ["m x=1", "m x=2"])
    assert done
    assert [(p.index, p.reason) for p in rec.letters] == [(1, REJECTED)]
    assert stats.write_errors == 2
    assert stats.store_ok
    assert stats.points_written == 1
    await sink.close()


async def test_given_up_when_the_messages_cannot_be_acknowledged() -> None:
    sink = FakeSink()
    done, stats, rec = await run_batch(sink, ["m x=1"], wanted=False)
    assert not done
    assert sink.calls == 0 and rec.letters == [] and stats.batches_written == 0
    await sink.close()


async def test_a_dead_letter_file_that_refuses_is_retried_then_the_batch_ends() -> None:
    sink = FakeSink(bad={"m x=2"})
    rec = Recorder(fail=[OSError(28, "No space left on device")])
    done, stats, rec = await run_batch(sink, ["m x=1", "m x=2"], recorder=rec)
    assert done
    assert [p.index for p in rec.letters] == [1]
    assert stats.write_errors == 1
    assert stats.store_ok  # healthy again once the dead letter is on disk


async def test_a_dead_letter_that_cannot_be_recorded_is_logged_not_held(
        caplog: pytest.LogCaptureFixture) -> None:
    sink = FakeSink(bad={"m x=2"})
    rec = Recorder(fail=[ValueError("a bug in the dead-letter path")])
    done, _, rec = await run_batch(sink, ["m x=1", "m x=2"], recorder=rec)
    assert done
    assert rec.letters == [] and rec.syncs == 1
    assert "cannot dead-letter line 1 (rejected: field type conflict): b'm x=2'" in caplog.text


# -- the dead-letter file takes anything ----------------------------------------------------


def test_dead_letter_of_text_with_no_utf8_encoding(tmp_path: Path) -> None:
    dl = DeadLetters(tmp_path)
    dl.append("sensegate/g\udcff/d/data", WRITE_FAILED, b'm s="\xed\xa0\x80" 1',
              detail="line 'm s=\"\ud800\"' failed")
    dl.close()
    [rec] = [json.loads(line) for line in (tmp_path / "deadletter.jsonl").read_text(
        encoding="utf-8").splitlines()]
    assert rec["topic"] == "sensegate/g\\udcff/d/data"
    assert rec["detail"] == "line 'm s=\"\\ud800\"' failed"
    assert base64.b64decode(rec["payload_b64"]) == b'm s="\xed\xa0\x80" 1'
