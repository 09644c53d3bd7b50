"""Register grouping: the points of a device -> the fewest Modbus read requests.

Reading every point with its own request wastes bus time (on RS-485 each transaction costs
two frames, two silences and the device's turnaround), so the points of one table are
coalesced. The rules (SPEC §2):

* one request reads one table (holding, input, coil, discrete);
* it spans at most ``max_registers`` registers (``max_bits`` bits for coil/discrete);
* every point lies wholly inside one request; points may overlap (several ``bit`` points
  on one status word, two types decoded from the same registers);
* an address is *unused* when no point of that table names it; a request may include a run
  of unused addresses only up to ``max_gap`` long (0: never read an address no point names).
  Devices answer "illegal data address" for holes in their maps, which is why gaps are
  bounded by the operator rather than by the planner.

The plan is minimal: no valid plan has fewer requests. Why a greedy plan is optimal:
unused runs longer than ``max_gap`` split a table into independent clusters (no request
may cross one, and no point lies across one). Within a cluster, take the not yet covered
point ``p`` with the lowest start. Whatever request covers ``p`` in an optimal plan starts
at or before ``p.start``, and every point it covers starts at or after ``p.start`` (``p``
has the lowest start), so moving that request to start exactly at ``p.start`` and extend
the full limit covers at least the same points. The greedy request is therefore as good
as any choice; induction on the points left does the rest. Note that the points left are
*not* a suffix of the start-sorted list: a long point that does not fit may be followed by
short ones that do, and those are taken. ``tests/unit/test_plan.py`` checks the result
against a brute-force optimum.

Points with their own ``interval`` (SPEC §8) are read on their own schedule: `interval_groups`
splits a device into one group per distinct interval, and each group is planned as above,
so the plan is minimal per interval group (a request never mixes intervals: reading a 1 s
point with a 60 s one would read the 60 s one every second).

Each point is assigned to exactly one request (the first that covers it), so a driver
decodes every point once. Pure: no I/O, no pymodbus.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from gateway.core.modbus import FUNCTION_CODES
from gateway.core.model import (
    BIT_TABLES,
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    MODBUS_DRIVERS,
    TABLES,
    DeviceConfig,
    PointConfig,
)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read: ``count`` registers (or bits) of ``table`` from ``address``."""

    table: str  # holding | input | coil | discrete
    address: int  # first register/bit
    count: int  # registers/bits
    points: tuple[PointConfig, ...]  # points wholly inside [address, address+count)

    @property
    def end(self) -> int:
        """First address after the request."""
        return self.address + self.count

    @property
    def function_code(self) -> int:
        """Modbus function code: 1 coils, 2 discrete inputs, 3 holding, 4 input registers."""
        return FUNCTION_CODES[self.table]


def _span(point: PointConfig) -> tuple[int, int]:
    if point.table is None or point.address is None:
        raise ValueError(f"point {point.name!r} has no modbus table and address")
    if point.address < 0:
        raise ValueError(f"point {point.name!r} has negative address {point.address}")
    return point.address, point.address + point.register_count


def _clusters(points: list[PointConfig], max_gap: int) -> list[list[PointConfig]]:
    """Split start-sorted points where an unused run longer than ``max_gap`` lies."""
    clusters: list[list[PointConfig]] = []
    covered_to = -1  # first address after the union of the points seen so far
    for point in points:
        start, end = _span(point)
        if not clusters or start - covered_to > max_gap:
            clusters.append([point])
        else:
            clusters[-1].append(point)
        covered_to = max(covered_to, end)
    return clusters


def _plan_cluster(table: str, points: list[PointConfig], limit: int) -> list[ReadRequest]:
    """Greedy by lowest uncovered start; optimal (see the module docstring)."""
    requests: list[ReadRequest] = []
    left = points  # start-sorted, stable
    while left:
        start = _span(left[0])[0]
        window_end = start + limit
        taken = [p for p in left if _span(p)[1] <= window_end]
        left = [p for p in left if _span(p)[1] > window_end]
        end = max(_span(p)[1] for p in taken)
        requests.append(ReadRequest(table, start, end - start, tuple(taken)))
    return requests


def _plan_per_point(table: str, points: list[PointConfig]) -> list[ReadRequest]:
    """One request per point (the ``one_request_per_point`` quirk), minimal under it: a
    request reads exactly one point's registers, and a point whose registers lie inside
    another's (bit points of one status word, a uint16 inside a uint32, the same registers
    under two types) rides along, since that request reads no value but the other point's.
    Requests are the maximal spans: each is needed (no other span covers it), and every
    point is inside one of them."""
    spans = sorted({_span(p) for p in points}, key=lambda s: (s[0], -s[1]))
    kept: list[tuple[int, int]] = []
    for start, end in spans:  # by start, longest first: a covering span comes first
        if not any(s <= start and end <= e for s, e in kept):
            kept.append((start, end))
    requests: list[ReadRequest] = []
    taken: set[str] = set()
    for start, end in kept:
        inside = tuple(p for p in points
                       if p.name not in taken and start <= _span(p)[0] and _span(p)[1] <= end)
        taken.update(p.name for p in inside)
        requests.append(ReadRequest(table, start, end - start, inside))
    return requests


def plan_requests(
    points: Iterable[PointConfig],
    *,
    max_gap: int = 10,
    max_registers: int = MAX_READ_REGISTERS,
    max_bits: int = MAX_READ_BITS,
    per_point: bool = False,
) -> list[ReadRequest]:
    """Group Modbus points into the fewest read requests.

    ``max_registers`` limits holding/input requests, ``max_bits`` coil/discrete ones, and
    ``max_gap`` the unused addresses a request may bridge; ``per_point`` reads one point's
    registers per request (`_plan_per_point`). Requests come in table order
    (holding, input, coil, discrete), then by address. Raises ``ValueError`` for a point
    without table or address, or one larger than its table's limit.
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must not be negative, got {max_gap}")
    if max_registers < 1 or max_bits < 1:
        raise ValueError(
            f"request limits must be at least 1, got max_registers {max_registers} "
            f"and max_bits {max_bits}"
        )
    by_table: dict[str, list[PointConfig]] = {t: [] for t in TABLES}
    for point in points:
        _span(point)
        if point.table not in by_table:
            raise ValueError(f"point {point.name!r} has unknown table {point.table!r}")
        by_table[point.table].append(point)

    requests: list[ReadRequest] = []
    for table in TABLES:
        limit = max_bits if table in BIT_TABLES else max_registers
        unit = "bits" if table in BIT_TABLES else "registers"
        table_points = sorted(by_table[table], key=lambda p: _span(p)[0])
        for point in table_points:
            size = point.register_count
            if size > limit:
                raise ValueError(
                    f"point {point.name!r} spans {size} {unit}, "
                    f"more than the limit of {limit} per request"
                )
        if per_point:
            requests.extend(_plan_per_point(table, table_points))
            continue
        for cluster in _clusters(table_points, max_gap):
            requests.extend(_plan_cluster(table, cluster, limit))
    return requests


def plan_device(device: DeviceConfig) -> list[ReadRequest]:
    """The read requests of one scan of ``device``; ``[]`` for serial-line devices."""
    if device.driver not in MODBUS_DRIVERS:
        return []
    return plan_requests(
        device.points,
        max_gap=device.max_gap,
        max_registers=min(device.max_registers, MAX_READ_REGISTERS),
        max_bits=MAX_READ_BITS,
        per_point=device.one_request_per_point,
    )


def interval_groups(device: DeviceConfig) -> list[DeviceConfig]:
    """``device`` split by poll interval: one config per distinct interval (a point's own,
    else the device's), holding that group's points, fastest first. A device whose points
    all share its interval is its only group, unchanged."""
    by_interval: dict[float, list[PointConfig]] = {}
    for point in device.points:
        interval = point.interval if point.interval is not None else device.interval
        by_interval.setdefault(interval, []).append(point)
    if list(by_interval) == [device.interval] or not by_interval:
        return [device]
    return [replace(device, interval=interval, points=tuple(points))
            for interval, points in sorted(by_interval.items())]


def plan_groups(device: DeviceConfig) -> list[tuple[float, list[ReadRequest]]]:
    """(interval, requests of one scan of that group) for each interval group of ``device``."""
    return [(group.interval, plan_device(group)) for group in interval_groups(device)]
