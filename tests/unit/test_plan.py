"""Register grouping: table tests in the Telegraf style and a brute-force optimality check."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.model import DeviceConfig, PointConfig, SerialSettings
from gateway.core.plan import (
    ReadRequest,
    interval_groups,
    plan_device,
    plan_groups,
    plan_requests,
)


def pt(name: str, address: int, type_: str = "uint16", table: str = "holding", **kw: object
       ) -> PointConfig:
    return PointConfig(name=name, type=type_, table=table, address=address, **kw)  # type: ignore[arg-type]


def shape(requests: list[ReadRequest]) -> list[tuple[str, int, int, tuple[str, ...]]]:
    return [(r.table, r.address, r.count, tuple(p.name for p in r.points)) for r in requests]


@pytest.mark.parametrize(
    ("points", "kwargs", "expected"),
    [
        pytest.param([], {}, [], id="no points"),
        pytest.param([pt("a", 0)], {}, [("holding", 0, 1, ("a",))], id="single point"),
        pytest.param(
            [pt("a", 0), pt("b", 1), pt("c", 2, "float32")], {},
            [("holding", 0, 4, ("a", "b", "c"))], id="contiguous",
        ),
        pytest.param(
            [pt("a", 0), pt("b", 11)], {},
            [("holding", 0, 12, ("a", "b"))], id="gap of 10 bridged",
        ),
        pytest.param(
            [pt("a", 0), pt("b", 12)], {},
            [("holding", 0, 1, ("a",)), ("holding", 12, 1, ("b",))], id="gap of 11 split",
        ),
        pytest.param(
            [pt("a", 0), pt("b", 2)], {"max_gap": 0},
            [("holding", 0, 1, ("a",)), ("holding", 2, 1, ("b",))], id="max_gap 0 never bridges",
        ),
        pytest.param(
            [pt("a", 0), pt("b", 1)], {"max_gap": 0},
            [("holding", 0, 2, ("a", "b"))], id="max_gap 0 adjacent points join",
        ),
        pytest.param(
            [pt("b", 5), pt("a", 0)], {},
            [("holding", 0, 6, ("a", "b"))], id="unsorted input",
        ),
        pytest.param(
            [pt("a", 0), pt("b", 124)], {"max_gap": 200},
            [("holding", 0, 125, ("a", "b"))], id="exactly 125 registers",
        ),
        pytest.param(
            [pt("a", 0), pt("b", 124, "float32")], {"max_gap": 200},
            [("holding", 0, 1, ("a",)), ("holding", 124, 2, ("b",))], id="126 registers split",
        ),
        pytest.param(
            [pt("s", 0, "string", length=125)], {},
            [("holding", 0, 125, ("s",))], id="single point at limit",
        ),
        pytest.param(
            [pt("a", 0), pt("b", 3, "float64"), pt("c", 6)], {"max_registers": 4},
            [("holding", 0, 1, ("a",)), ("holding", 3, 4, ("b", "c"))],
            id="device max_registers",
        ),
        pytest.param(
            [pt("b0", 10, "bool", bit=0), pt("b3", 10, "bool", bit=3), pt("w", 10)], {},
            [("holding", 10, 1, ("b0", "b3", "w"))], id="bit points on one status word",
        ),
        pytest.param(
            [pt("f", 0, "float32"), pt("hi", 0), pt("lo", 1)], {"max_registers": 2},
            [("holding", 0, 2, ("f", "hi", "lo"))], id="two types on the same registers",
        ),
        pytest.param(
            # a long point that does not fit must not stop a later short one from joining
            [pt("a", 0), pt("long", 1, "float64"), pt("c", 3)], {"max_registers": 4},
            [("holding", 0, 4, ("a", "c")), ("holding", 1, 4, ("long",))],
            id="short point after a long one that does not fit",
        ),
        pytest.param(
            [pt("c", 0, "bool", "coil"), pt("c2", 1999, "bool", "coil")], {"max_gap": 2000},
            [("coil", 0, 2000, ("c", "c2"))], id="2000 bits",
        ),
        pytest.param(
            [pt("c", 0, "bool", "coil"), pt("c2", 2000, "bool", "coil")], {"max_gap": 2000},
            [("coil", 0, 1, ("c",)), ("coil", 2000, 1, ("c2",))], id="2001 bits split",
        ),
        pytest.param(
            [pt("d", 0, "bool", "discrete"), pt("c", 0, "bool", "coil"), pt("i", 0, "int16",
             "input"), pt("h", 0)], {},
            [("holding", 0, 1, ("h",)), ("input", 0, 1, ("i",)), ("coil", 0, 1, ("c",)),
             ("discrete", 0, 1, ("d",))], id="table order",
        ),
        pytest.param(
            [pt("c", 0, "bool", "coil"), pt("r", 130, "bool", "coil")], {"max_registers": 10,
                                                                         "max_gap": 200},
            [("coil", 0, 131, ("c", "r"))], id="max_registers does not limit bits",
        ),
        pytest.param(
            # address 1 is not named by 'a' or 'c' but by 'x': it is not unused
            [pt("a", 0), pt("x", 1, "float64"), pt("c", 2)], {"max_gap": 0, "max_registers": 4},
            [("holding", 0, 3, ("a", "c")), ("holding", 1, 4, ("x",))],
            id="gap rule counts every point of the table",
        ),
    ],
)
def test_plan_requests(points: list[PointConfig], kwargs: dict[str, int],
                       expected: list[tuple[str, int, int, tuple[str, ...]]]) -> None:
    assert shape(plan_requests(points, **kwargs)) == expected


@pytest.mark.parametrize(
    ("points", "kwargs", "message"),
    [
        pytest.param([pt("s", 0, "string", length=126)], {},
                     "point 's' spans 126 registers, more than the limit of 125 per request",
                     id="string too long"),
        pytest.param([pt("f", 0, "float64")], {"max_registers": 3},
                     "point 'f' spans 4 registers, more than the limit of 3 per request",
                     id="float64 over device limit"),
        pytest.param([PointConfig(name="p")], {},
                     "point 'p' has no modbus table and address", id="serial-line point"),
        pytest.param([pt("a", 0)], {"max_gap": -1}, "max_gap must not be negative, got -1",
                     id="negative gap"),
        pytest.param([pt("a", -1)], {}, "point 'a' has negative address -1",
                     id="negative address"),
    ],
)
def test_plan_requests_fail(points: list[PointConfig], kwargs: dict[str, int],
                            message: str) -> None:
    with pytest.raises(ValueError) as info:
        plan_requests(points, **kwargs)
    assert str(info.value) == message


def test_plan_device_uses_device_options() -> None:
    device = DeviceConfig(
        name="d", driver="modbus-tcp", host="h",
        points=(pt("a", 0), pt("b", 3), pt("c", 0, "bool", "coil")),
        max_gap=1, max_registers=50,
    )
    assert shape(plan_device(device)) == [
        ("holding", 0, 1, ("a",)), ("holding", 3, 1, ("b",)), ("coil", 0, 1, ("c",)),
    ]


def test_plan_device_skips_serial_line() -> None:
    device = DeviceConfig(
        name="pm", driver="serial-line", serial=SerialSettings(port="/dev/ttyUSB1"),
        points=(PointConfig(name="pm25"),), pattern="(?P<pm25>.*)",
    )
    assert plan_device(device) == []


def test_function_codes() -> None:
    assert [ReadRequest(t, 0, 1, ()).function_code
            for t in ("coil", "discrete", "holding", "input")] == [1, 2, 3, 4]


# --- optimality against brute force ---------------------------------------------------

SIZES = {"uint16": 1, "int32": 2, "float64": 4}


def fewest_covering(windows: set[frozenset[int]], n_points: int) -> int:
    """Fewest of ``windows`` (each the set of points one request reads) that read every one
    of ``n_points`` points, by trying every combination."""
    everything = frozenset(range(n_points))
    for n in range(1, n_points + 1):
        for combo in itertools.combinations(windows, n):
            if frozenset().union(*combo) == everything:
                return n
    raise AssertionError("no plan exists")


def brute_force_minimum(points: list[PointConfig], max_gap: int, limit: int) -> int:
    """Fewest requests by trying every set of candidate windows, straight from the rules."""
    spans = [(p.address or 0, (p.address or 0) + p.register_count) for p in points]
    named = {a for s, e in spans for a in range(s, e)}

    def valid(start: int, end: int) -> bool:
        if end - start > limit:
            return False
        run = 0
        for address in range(start, end):
            run = 0 if address in named else run + 1
            if run > max_gap:
                return False
        return True

    windows = {
        frozenset(i for i, (ps, pe) in enumerate(spans) if s <= ps and pe <= e)
        for s in {s for s, _ in spans} for e in {e for _, e in spans}
        if s < e and valid(s, e)
    }
    return fewest_covering(windows, len(points))


def check_valid(requests: list[ReadRequest], points: list[PointConfig], max_gap: int,
                limit: int) -> None:
    named = {a for p in points for a in range(p.address or 0,
                                                (p.address or 0) + p.register_count)}
    assigned = [p.name for r in requests for p in r.points]
    assert sorted(assigned) == sorted(p.name for p in points)  # each point exactly once
    for r in requests:
        assert 1 <= r.count <= limit
        for p in r.points:
            assert r.address <= (p.address or 0)
            assert (p.address or 0) + p.register_count <= r.end
        run = 0
        for address in range(r.address, r.end):
            run = 0 if address in named else run + 1
            assert run <= max_gap


point_maps = st.lists(
    st.tuples(st.integers(0, 14), st.sampled_from(sorted(SIZES))), min_size=1, max_size=6,
)


@settings(max_examples=400, deadline=None)
@given(spec=point_maps, max_gap=st.integers(0, 3), limit=st.integers(4, 7))
def test_plan_is_minimal(spec: list[tuple[int, str]], max_gap: int, limit: int) -> None:
    points = [pt(f"p{i}", address, type_) for i, (address, type_) in enumerate(spec)]
    requests = plan_requests(points, max_gap=max_gap, max_registers=limit)
    check_valid(requests, points, max_gap, limit)
    assert len(requests) == brute_force_minimum(points, max_gap, limit)
    assert [r.address for r in requests] == sorted(r.address for r in requests)


# --- interval groups (SPEC §8): minimal per group ---------------------------------------


def test_interval_groups_split_by_point_interval() -> None:
    device = DeviceConfig(
        name="d", driver="modbus-tcp", host="h", interval=10.0,
        points=(pt("a", 0), pt("b", 1, interval=1.0), pt("c", 2), pt("d", 3, interval=60.0)),
    )
    groups = interval_groups(device)
    assert [(g.interval, [p.name for p in g.points]) for g in groups] == [
        (1.0, ["b"]), (10.0, ["a", "c"]), (60.0, ["d"])]
    assert all(g.name == "d" for g in groups)
    # a and c are not adjacent (b sits between them) but the gap of 1 is bridged
    assert [(i, shape(r)) for i, r in plan_groups(device)] == [
        (1.0, [("holding", 1, 1, ("b",))]),
        (10.0, [("holding", 0, 3, ("a", "c"))]),
        (60.0, [("holding", 3, 1, ("d",))]),
    ]


def test_a_device_with_one_interval_is_its_own_group() -> None:
    device = DeviceConfig(name="d", driver="modbus-tcp", host="h", interval=5.0,
                          points=(pt("a", 0), pt("b", 1, interval=5.0)))
    assert interval_groups(device) == [device]


@settings(max_examples=300, deadline=None)
@given(spec=st.lists(st.tuples(st.integers(0, 14), st.sampled_from(sorted(SIZES)),
                               st.sampled_from([None, 1.0, 60.0])), min_size=1, max_size=7),
       max_gap=st.integers(0, 3), limit=st.integers(4, 7))
def test_plan_is_minimal_per_interval_group(spec: list[tuple[int, str, float | None]],
                                            max_gap: int, limit: int) -> None:
    points = tuple(pt(f"p{i}", address, type_, interval=interval)
                   for i, (address, type_, interval) in enumerate(spec))
    device = DeviceConfig(name="d", driver="modbus-tcp", host="h", interval=10.0,
                          points=points, max_gap=max_gap, max_registers=limit)
    seen: list[str] = []
    for interval, requests in plan_groups(device):
        group = [p for p in points if (p.interval or 10.0) == interval]
        check_valid(requests, group, max_gap, limit)
        # no request mixes intervals, and each group is as small as brute force allows
        assert {p.name for r in requests for p in r.points} == {p.name for p in group}
        assert len(requests) == brute_force_minimum(group, max_gap, limit)
        seen += [p.name for p in group]
    assert sorted(seen) == sorted(p.name for p in points)


# --- one request per point (device quirk): minimal under the rule ------------------------

def per_point_minimum(points: list[PointConfig]) -> int:
    """Fewest requests when each request reads exactly one point's registers, by brute force."""
    spans = [(p.address or 0, (p.address or 0) + p.register_count) for p in points]
    windows = {frozenset(i for i, (ps, pe) in enumerate(spans) if s <= ps and pe <= e)
               for s, e in spans}
    return fewest_covering(windows, len(points))


@settings(max_examples=300, deadline=None)
@given(spec=point_maps)
def test_one_request_per_point_is_minimal_under_the_rule(spec: list[tuple[int, str]]) -> None:
    points = [pt(f"p{i}", address, type_) for i, (address, type_) in enumerate(spec)]
    requests = plan_requests(points, max_gap=10, per_point=True)
    check_valid(requests, points, 10, 125)
    spans = {((p.address or 0), p.register_count) for p in points}
    for r in requests:  # every request reads one point's registers, nothing more
        assert (r.address, r.count) in spans
    assert len(requests) == per_point_minimum(points)


def test_one_request_per_point_on_a_device() -> None:
    device = DeviceConfig(
        name="d", driver="modbus-tcp", host="h", one_request_per_point=True,
        points=(pt("a", 0, "uint16"), pt("b", 1, "uint16"), pt("c", 2, "int32"),
                pt("c_low", 3, "uint16"),
                PointConfig("alarm", "bool", "holding", 0, bit=3)),
    )
    requests = plan_device(device)
    assert [(r.address, r.count, [p.name for p in r.points]) for r in requests] == [
        (0, 1, ["a", "alarm"]), (1, 1, ["b"]), (2, 2, ["c", "c_low"])]
    grouped = plan_device(DeviceConfig(name="d", driver="modbus-tcp", host="h",
                                       points=device.points))
    assert len(grouped) == 1
