"""Report by exception and aggregation (gateway.core.report): table tests of the pure logic."""

from __future__ import annotations

import json

import pytest

from gateway.core.model import DeviceConfig, PointConfig, Reading, Value
from gateway.core.report import (
    NS,
    Last,
    Reporter,
    Rule,
    due,
    moved,
    rule_of,
    window_of,
)

S = NS  # one second in ns
T0 = 1_764_000_000 * S  # a whole minute


def point(name: str, type_: str = "float32", **kw: object) -> PointConfig:
    return PointConfig(name, type_, "holding", 0, **kw)  # type: ignore[arg-type]


def device(*points: PointConfig, **kw: object) -> DeviceConfig:
    return DeviceConfig("d", "modbus-tcp", points, host="h", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rule", "old", "new", "expected"),
    [
        pytest.param(Rule(0.2), 20.0, 20.2, False, id="exactly the deadband: held"),
        pytest.param(Rule(0.1), 20.2, 20.3, False, id="float noise at the deadband: held"),
        pytest.param(Rule(0.2), 20.0, 20.21, True, id="past the deadband"),
        pytest.param(Rule(0.2), 20.0, 19.79, True, id="past it downwards"),
        pytest.param(Rule(0.0), 5, 5, False, id="deadband 0: unchanged"),
        pytest.param(Rule(0.0), 5, 6, True, id="deadband 0: any change"),
        pytest.param(Rule(None, 1.0), 200.0, 202.0, False, id="1 % of 200 is 2: held"),
        pytest.param(Rule(None, 1.0), 200.0, 202.5, True, id="past 1 %"),
        pytest.param(Rule(None, 1.0), 0.0, 0.001, True, id="percent of 0: any change"),
        pytest.param(Rule(0.5), True, False, True, id="bool: on change"),
        pytest.param(Rule(0.5), "A", "A", False, id="string unchanged"),
        pytest.param(Rule(10), 2**53 + 1, 2**53 + 3, False, id="big integers exact"),
        pytest.param(Rule(0.5), None, 1.0, True, id="nothing published yet"),
    ],
)
def test_moved(rule: Rule, old: Value | None, new: Value, expected: bool) -> None:
    assert moved(rule, old, new) is expected


BAND = Rule(0.5, None, 60.0, 10.0)  # deadband 0.5, heartbeat 1 min, polled every 10 s


@pytest.mark.parametrize(
    ("rule", "last", "quality", "value", "ts", "expected"),
    [
        pytest.param(BAND, None, "good", 1.0, T0, True, id="first value after start"),
        pytest.param(BAND, None, "bad", None, T0, True, id="first reading bad"),
        pytest.param(BAND, Last("good", 1.0, T0), "good", 1.2, T0 + 10 * S, False,
                     id="within deadband: held"),
        pytest.param(BAND, Last("good", 1.0, T0), "good", 1.6, T0 + 10 * S, True,
                     id="moved: published"),
        pytest.param(BAND, Last("good", 1.0, T0), "bad", None, T0 + 10 * S, True,
                     id="good to bad at once"),
        pytest.param(BAND, Last("bad", None, T0), "good", 1.0, T0 + 10 * S, True,
                     id="bad to good at once, even the same value"),
        pytest.param(BAND, Last("bad", None, T0), "invalid", None, T0 + 10 * S, True,
                     id="bad to invalid"),
        pytest.param(BAND, Last("bad", None, T0), "bad", None, T0 + 10 * S, False,
                     id="still bad: held"),
        pytest.param(BAND, Last("bad", None, T0), "bad", None, T0 + 60 * S, True,
                     id="still bad at the heartbeat: repeated"),
        pytest.param(BAND, Last("good", 1.0, T0), "good", 1.0, T0 + 60 * S, True,
                     id="heartbeat"),
        pytest.param(BAND, Last("good", 1.0, T0), "good", 1.0, T0 + 55 * S, True,
                     id="heartbeat a little early: within half an interval"),
        pytest.param(BAND, Last("good", 1.0, T0), "good", 1.0, T0 + 50 * S, False,
                     id="heartbeat not yet"),
        pytest.param(Rule(0.5), Last("good", 1.0, T0), "good", 1.0, T0 + 10**6 * S, False,
                     id="no heartbeat: never repeated"),
        pytest.param(Rule(), Last("good", 1.0, T0), "good", 1.0, T0 + S, True,
                     id="not by exception: every scan"),
    ],
)
def test_due(rule: Rule, last: Last | None, quality: str, value: Value | None, ts: int,
             expected: bool) -> None:
    assert due(rule, last, quality, value, ts) is expected


def test_rule_of_takes_the_point_then_the_device() -> None:
    d = device(point("a"), point("b", deadband_pct=2.0), point("c", heartbeat=600.0),
               point("flag", "bool"), point("i", interval=60.0),
               deadband=0.5, heartbeat=900.0, interval=10.0)
    rules = {p.name: rule_of(d, p) for p in d.points}
    assert rules["a"] == Rule(0.5, None, 900.0, 10.0)
    assert rules["b"] == Rule(None, 2.0, 900.0, 10.0)  # its own kind of deadband wins
    assert rules["c"] == Rule(0.5, None, 600.0, 10.0)
    assert rules["flag"] == Rule(0.0, None, 900.0, 10.0)  # bool: on change
    assert rules["i"].interval == 60.0
    assert not rule_of(device(point("x")), point("x")).by_exception


def run(reporter: Reporter, *scans: tuple[int, dict[str, Value], dict[str, str]]
        ) -> list[tuple[int, dict[str, Value], dict[str, str]]]:
    out = []
    for ts, values, quality in scans:
        for r in reporter.process(Reading("d", ts, dict(values), dict(quality))):
            out.append((r.ts, r.values, r.quality))
    return out


def test_reporter_holds_back_and_never_hides_a_failure() -> None:
    d = device(point("t", deadband=0.5, heartbeat=30.0), point("n"), interval=10.0)
    published = run(
        Reporter([d]),
        (T0, {"t": 10.0, "n": 1.0}, {}),  # first: both
        (T0 + 10 * S, {"t": 10.2, "n": 1.0}, {}),  # t held back; n is published every scan
        (T0 + 20 * S, {"n": 1.0}, {"t": "bad"}),  # failure at once
        (T0 + 30 * S, {"n": 1.0}, {"t": "bad"}),  # still bad: absent from both
        (T0 + 40 * S, {"t": 10.2, "n": 1.0}, {}),  # back: at once, though within the band
        (T0 + 50 * S, {"t": 10.3, "n": 1.0}, {}),
        (T0 + 70 * S, {"t": 10.3, "n": 1.0}, {}),  # heartbeat 30 s after 40 s
    )
    assert published == [
        (T0, {"t": 10.0, "n": 1.0}, {}),
        (T0 + 10 * S, {"n": 1.0}, {}),
        (T0 + 20 * S, {"n": 1.0}, {"t": "bad"}),
        (T0 + 30 * S, {"n": 1.0}, {}),
        (T0 + 40 * S, {"t": 10.2, "n": 1.0}, {}),
        (T0 + 50 * S, {"n": 1.0}, {}),
        (T0 + 70 * S, {"t": 10.3, "n": 1.0}, {}),
    ]


def test_a_scan_with_nothing_to_publish_gives_no_reading() -> None:
    d = device(point("t", deadband=1.0))
    reporter = Reporter([d])
    assert run(reporter, (T0, {"t": 1.0}, {})) == [(T0, {"t": 1.0}, {})]
    assert run(reporter, (T0 + S, {"t": 1.5}, {})) == []


def test_reconstruction_error_stays_within_the_deadband() -> None:
    """Fill each held-back scan with the last value published: never off by more than 0.3."""
    d = device(point("t", deadband=0.3))
    reporter = Reporter([d])
    last = None
    for i in range(2000):
        truth = round(10 + 5 * __import__("math").sin(i / 50) + (i % 7) * 0.05, 2)
        for r in reporter.process(Reading("d", T0 + i * S, {"t": truth}, {})):
            last = r.values["t"]
        assert last is not None and abs(truth - float(last)) <= 0.3 + 1e-9


def test_state_survives_a_restart_and_a_changed_setting_publishes_again() -> None:
    d = device(point("t", deadband=0.5), point("u", deadband=0.5), heartbeat=60.0)
    before = Reporter([d])
    run(before, (T0, {"t": 1.0, "u": 2.0}, {}))
    saved = json.loads(json.dumps(before.state()))  # as the sidecar file holds it
    after = Reporter([d])
    assert after.restore(saved) == 2
    assert run(after, (T0 + 10 * S, {"t": 1.1, "u": 2.1}, {})) == []  # no flood
    assert run(after, (T0 + 60 * S, {"t": 1.1, "u": 2.1}, {})) == [
        (T0 + 60 * S, {"t": 1.1, "u": 2.1}, {})]  # heartbeat counted from before the restart
    changed = device(point("t", deadband=0.2), point("u", deadband=0.5), heartbeat=60.0)
    other = Reporter([changed])
    assert other.restore(saved) == 1  # t's deadband changed: its saved state is not used
    assert run(other, (T0 + 10 * S, {"t": 1.1, "u": 2.1}, {})) == [
        (T0 + 10 * S, {"t": 1.1}, {})]


def test_reload_keeps_unchanged_points_and_resets_changed_ones() -> None:
    d = device(point("t", deadband=0.5), point("u", deadband=0.5))
    reporter = Reporter([d])
    run(reporter, (T0, {"t": 1.0, "u": 2.0}, {}))
    reporter.apply([device(point("t", deadband=0.5), point("u", deadband=0.1))])
    assert run(reporter, (T0 + S, {"t": 1.0, "u": 2.0}, {})) == [(T0 + S, {"u": 2.0}, {})]


# -- aggregation ------------------------------------------------------------------------------


def test_window_of_is_aligned_to_the_wall_clock() -> None:
    assert window_of(T0 + 61 * S, 60.0) == (T0 + 60 * S, T0 + 120 * S)
    assert window_of(T0, 60.0) == (T0, T0 + 60 * S)


AGG = device(point("t"), point("count", "uint64"), point("door", "bool"),
             publish_interval=60.0, aggregate=("min", "max", "mean", "last", "count"))


def test_windows_publish_min_max_mean_last_count_at_their_end() -> None:
    counter = 2**62 + 1  # a float would round it
    published = run(
        Reporter([AGG]),
        (T0 + 1 * S, {"t": 1.0, "count": counter, "door": False}, {}),  # first window, partial
        (T0 + 61 * S, {"t": 2.0, "count": counter + 1, "door": True}, {}),
        (T0 + 71 * S, {"count": counter + 2, "door": True}, {"t": "bad"}),
        (T0 + 81 * S, {"t": 4.0, "count": counter + 3}, {"door": "bad"}),
        (T0 + 121 * S, {"count": counter + 4, "door": False}, {"t": "bad"}),
        (T0 + 181 * S, {"t": 5.0, "count": counter + 5, "door": False}, {}),
    )
    assert published[0] == (T0 + 60 * S, {
        "t_min": 1.0, "t_max": 1.0, "t_mean": 1.0, "t_last": 1.0, "t_count": 1,
        "count_min": counter, "count_max": counter, "count_mean": float(counter),
        "count_last": counter, "count_count": 1, "door_last": False, "door_count": 1}, {})
    ts, values, quality = published[1]
    assert ts == T0 + 120 * S
    assert values["t_min"] == 2.0 and values["t_max"] == 4.0 and values["t_mean"] == 3.0
    assert values["t_count"] == 2 and values["t_last"] == 4.0
    assert values["count_last"] == counter + 3 and isinstance(values["count_last"], int)
    assert values["count_min"] == counter + 1 and values["count_count"] == 3
    assert values["door_last"] is True and values["door_count"] == 2
    assert quality == {}
    # a window in which t never read good: quality bad for t, the others as usual
    ts, values, quality = published[2]
    assert ts == T0 + 180 * S and quality == {"t": "bad"}
    assert not any(k.startswith("t_") for k in values)
    assert values["count_last"] == counter + 4


def test_only_the_listed_aggregates_are_published() -> None:
    d = device(point("t"), publish_interval=60.0, aggregate=("last",))
    published = run(Reporter([d]), (T0, {"t": 1.0}, {}), (T0 + 60 * S, {"t": 2.0}, {}))
    assert published == [(T0 + 60 * S, {"t_last": 1.0}, {})]


def test_the_first_window_does_not_call_unread_points_bad() -> None:
    """After a start mid-window a slow point may not have been read yet: absent, not bad."""
    d = device(point("fast"), point("slow", interval=60.0), interval=1.0,
               publish_interval=60.0, aggregate=("last",))
    published = run(Reporter([d]), (T0 + 50 * S, {"fast": 1.0}, {}),
                    (T0 + 60 * S, {"fast": 2.0}, {}), (T0 + 120 * S, {"fast": 3.0}, {}))
    assert published == [(T0 + 60 * S, {"fast_last": 1.0}, {}),
                         (T0 + 120 * S, {"fast_last": 2.0}, {"slow": "bad"})]


def test_a_window_survives_a_reload_that_does_not_change_it() -> None:
    reporter = Reporter([AGG])
    run(reporter, (T0 + 10 * S, {"t": 1.0}, {}))
    other = DeviceConfig("other", "modbus-tcp", (point("x"),), host="h")
    reporter.apply([AGG, other])  # an unrelated change
    run(reporter, (T0 + 20 * S, {"t": 3.0}, {}))
    (_ts, values, _), = run(reporter, (T0 + 60 * S, {"t": 9.0}, {}))
    assert values["t_count"] == 2 and values["t_mean"] == 2.0
    changed = DeviceConfig("d", "modbus-tcp", AGG.points, host="h", publish_interval=60.0,
                           aggregate=("last",))
    reporter.apply([changed])  # the partial window of a changed device is dropped
    assert run(reporter, (T0 + 120 * S, {"t": 10.0}, {})) == []


def test_a_restart_loses_at_most_the_partial_window() -> None:
    before = Reporter([AGG])
    run(before, (T0 + 10 * S, {"t": 1.0}, {}), (T0 + 30 * S, {"t": 2.0}, {}))
    after = Reporter([AGG])  # restarted at T0 + 40 s: the first 40 s of the window are gone
    published = run(after, (T0 + 50 * S, {"t": 5.0}, {}), (T0 + 70 * S, {"t": 6.0}, {}),
                    (T0 + 130 * S, {"t": 7.0}, {}))
    assert [(ts, v["t_count"], v["t_min"]) for ts, v, _ in published] == [
        (T0 + 60 * S, 1, 5.0), (T0 + 120 * S, 1, 6.0)]


def test_a_late_reading_of_a_closed_window_counts_in_the_current_one() -> None:
    d = device(point("a"), point("b", interval=10.0), interval=1.0, publish_interval=60.0,
               aggregate=("count",))
    published = run(Reporter([d]), (T0 + 59 * S, {"a": 1.0}, {}),
                    (T0 + 60 * S, {"a": 1.0}, {}),  # closes the first window
                    (T0 + 59 * S + S // 2, {"b": 1.0}, {}),  # b's scan of 59.5 s, delivered late
                    (T0 + 120 * S, {"a": 1.0}, {}))
    assert published[1] == (T0 + 120 * S, {"a_count": 1, "b_count": 1}, {})
