"""The bridge's batching rules (gateway.bridge.batching): pure, table-tested."""

from __future__ import annotations

import pytest

from gateway.bridge import ingest
from gateway.bridge.batching import (
    HELD_BATCHES,
    Batch,
    Inbound,
    decode,
    max_messages,
    reading_paused,
)
from gateway.bridge.codec import Publish


@pytest.mark.parametrize(("held", "paused", "expected"), [
    pytest.param(0, False, False, id="idle"),
    pytest.param(100 * HELD_BATCHES, False, False, id="at the limit: keep reading"),
    pytest.param(100 * HELD_BATCHES + 1, False, True, id="over the limit: pause"),
    pytest.param(100 * HELD_BATCHES - 1, True, True, id="paused, still above half"),
    pytest.param(100 * HELD_BATCHES // 2, True, False, id="paused, down to half: resume"),
])
def test_reading_pauses_with_hysteresis(held: int, paused: bool, expected: bool) -> None:
    assert reading_paused(held, 100, paused) is expected


@pytest.mark.parametrize(("window", "expected"), [(10000, 2000), (5, 1), (1, 1), (12, 2)])
def test_a_batch_leaves_room_in_the_receive_window(window: int, expected: int) -> None:
    assert max_messages(window) == expected


def test_a_message_over_the_limit_is_refused_by_its_size() -> None:
    big = Publish("sensegate/gw/dev/data", b"", 1, 5, False, ingest.MAX_PAYLOAD + 1)
    result = decode(big)
    assert isinstance(result, ingest.Rejected)
    assert result.reason == ingest.TOO_LARGE
    assert str(ingest.MAX_PAYLOAD + 1) in result.detail


def test_a_decoder_bug_is_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(topic: str, payload: bytes) -> list[str]:
        raise KeyError("bug")

    monkeypatch.setattr(ingest, "decode_message", boom)
    result = decode(Publish("t/g/d/data", b"{}", 1, 1, False, 2))
    assert isinstance(result, ingest.Rejected)
    assert result.reason == ingest.INTERNAL_ERROR


def test_batch_owner_finds_the_message_of_a_line() -> None:
    batch = Batch(lines=["a", "b", "c", "d"])
    session = object()
    firsts = [0, 0, 1, 3]  # the second message carried no line (dead-lettered)
    batch.messages = [Inbound(session, i + 1, 1, f"t{i}", f)  # type: ignore[arg-type]
                      for i, f in enumerate(firsts)]
    assert [batch.owner(i).mid for i in range(4)] == [2, 3, 3, 4]
