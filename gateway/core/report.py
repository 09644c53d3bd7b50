"""Report by exception and edge aggregation (SPEC §8): which readings a gateway publishes.

Every scan still gives a `Reading`; `Reporter.process` turns it into what is published:

* **Deadband and heartbeat.** A point with a ``deadband`` (engineering units),
  ``deadband_pct`` (of the last value published) or ``heartbeat`` (its own or its device's)
  is published only when its value moved more than the deadband from the last value
  published, when its heartbeat has passed since then, or when its quality changed. A value
  held back is absent from ``values`` *and* from ``quality``: absent from both means
  unchanged. A change of quality (good → bad or invalid, and back) is always published at
  once, so report by exception never hides a failed read; an unchanged bad quality is
  repeated at each heartbeat. The first reading of a point after start (without saved
  state) or after a reload that changed its settings is always published. A point with
  none of the three is published on every scan, as before. A scan with nothing left to
  publish gives no reading at all.
* **Aggregation.** A device with ``publish_interval`` and ``aggregate`` publishes once per
  window: windows are aligned to the wall clock (``[k * P, (k + 1) * P)`` seconds since the
  epoch, as scan slots are), the reading's ``ts`` is the window's end, and each numeric point
  gives ``<point>_min``, ``_max``, ``_mean``, ``_last``, ``_count`` (bool and string points:
  ``_last`` and ``_count``). Integers stay integers (``min``, ``max``, ``last`` of a counter
  are its exact register values); ``count`` is the number of good values. A point with no
  good value in a window gets quality ``bad`` for it (in the first window after a start or
  reload, only if it was read: a slower interval group may not have come round yet). A
  window is closed by the first reading of the device at or past its end; a reading that
  arrives for a window already closed (another interval group's scan) is counted in the
  current one. Windows are held in
  memory only: a restart mid-window loses at most that window's partial aggregate, and the
  first window after a start or reload holds only what was read since.

The state of the deadband logic (per point: last value and quality published, and when) can
be taken out (`Reporter.state`) and given back (`Reporter.restore`) so a restart does not
publish a flood of unchanged values; `gateway.edge.reportstate` keeps it in the state
directory. Pure: no I/O, no clock (times are the readings' ``ts``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.model import DeviceConfig, PointConfig, Reading, Value

NS = 1_000_000_000
_EPSILON = 1e-9  # relative slack of the deadband comparison (20.3 - 20.2 is 0.10000000000000142)


@dataclass(frozen=True, slots=True)
class Rule:
    """How one point is reported: its effective settings (the point's own, else the device's)."""

    deadband: float | None = None
    deadband_pct: float | None = None
    heartbeat: float | None = None  # seconds
    interval: float = 1.0  # the point's poll interval, seconds

    @property
    def by_exception(self) -> bool:
        """Whether the point is published only on change (else: every scan)."""
        return self.deadband is not None or self.deadband_pct is not None or (
            self.heartbeat is not None)

    def key(self) -> list[Any]:
        """What saved state must match to be used again (JSON-able)."""
        return [self.deadband, self.deadband_pct, self.heartbeat]


def point_interval(device: DeviceConfig, point: PointConfig) -> float:
    """A point's poll interval: its own, else its device's."""
    return point.interval if point.interval is not None else device.interval


def rule_of(device: DeviceConfig, point: PointConfig) -> Rule:
    """The effective report settings of ``point`` of ``device``."""
    numeric = point.type not in ("bool", "string")
    if point.deadband is not None or point.deadband_pct is not None:
        deadband, pct = point.deadband, point.deadband_pct
    else:
        deadband, pct = device.deadband, device.deadband_pct
    if not numeric:  # a bool or a string is published on every change
        deadband, pct = (0.0 if deadband is not None or pct is not None else None), None
    heartbeat = point.heartbeat if point.heartbeat is not None else device.heartbeat
    return Rule(deadband, pct, heartbeat, point_interval(device, point))


@dataclass(slots=True)
class Last:
    """What was last published for one point."""

    quality: str  # good | bad | invalid
    value: Value | None  # the value when good
    ts: int  # ns, the reading that published it


def moved(rule: Rule, old: Value | None, new: Value) -> bool:
    """Whether ``new`` moved past the deadband from ``old`` (the last value published)."""
    if old is None:
        return True
    if isinstance(new, (bool, str)) or isinstance(old, (bool, str)):
        return new != old
    diff = abs(new - old)
    if rule.deadband_pct is not None:
        limit = abs(old) * rule.deadband_pct / 100.0
    else:
        limit = rule.deadband or 0.0
    return diff > limit + _EPSILON * max(abs(new), abs(old), 1.0)


def due(rule: Rule, last: Last | None, quality: str, value: Value | None, ts: int) -> bool:
    """Whether this scan's ``quality`` (and ``value`` when good) of a point is published."""
    if last is None or not rule.by_exception or quality != last.quality:
        return True
    # Scans fall on a grid: half an interval of slack keeps a heartbeat that is a multiple
    # of the interval from slipping one scan for a millisecond of jitter.
    if rule.heartbeat is not None and ts - last.ts >= (rule.heartbeat - rule.interval / 2) * NS:
        return True
    if quality != "good":
        return False
    assert value is not None
    return moved(rule, last.value, value)


# -- aggregation -------------------------------------------------------------------------------


def window_of(ts: int, publish_interval: float) -> tuple[int, int]:
    """Start and end (ns) of the wall-clock-aligned window holding ``ts``."""
    length = round(publish_interval * NS)
    start = ts - ts % length
    return start, start + length


@dataclass(slots=True)
class _Acc:
    """One point's aggregate over one window."""

    count: int = 0
    low: Any = None
    high: Any = None
    total: Any = 0
    last: Any = None


@dataclass(slots=True)
class Window:
    """The aggregates of one device over ``[start, end)``."""

    start: int
    end: int
    first: bool = False  # the first window after a start or reload: read from mid-window
    points: dict[str, _Acc] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)  # points read, whatever their quality

    def add(self, reading: Reading) -> None:
        self.seen.update(reading.quality)
        self.seen.update(reading.values)
        for name, value in reading.values.items():
            acc = self.points.get(name)
            if acc is None:
                acc = self.points[name] = _Acc()
            acc.count += 1
            acc.last = value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                acc.low = value if acc.low is None else min(acc.low, value)
                acc.high = value if acc.high is None else max(acc.high, value)
                acc.total += value


def aggregate_reading(device: DeviceConfig, window: Window) -> Reading:
    """The reading a closed window publishes, ``ts`` its end."""
    values: dict[str, Value] = {}
    quality: dict[str, str] = {}
    for point in device.points:
        acc = window.points.get(point.name)
        if acc is None or acc.count == 0:
            if point.name in window.seen or not window.first:
                quality[point.name] = "bad"
            continue
        numeric = acc.low is not None
        for kind in device.aggregate:
            if kind == "count":
                values[f"{point.name}_count"] = acc.count
            elif kind == "last":
                values[f"{point.name}_last"] = acc.last
            elif not numeric:
                continue
            elif kind == "min":
                values[f"{point.name}_min"] = acc.low
            elif kind == "max":
                values[f"{point.name}_max"] = acc.high
            elif kind == "mean":
                values[f"{point.name}_mean"] = acc.total / acc.count
    return Reading(device.name, window.end, values, quality)


# -- the reporter ------------------------------------------------------------------------------


def _aggregation(device: DeviceConfig) -> tuple[Any, ...] | None:
    """What a running window depends on; None when the device does not aggregate."""
    if device.publish_interval is None or not device.aggregate:
        return None
    return (device.publish_interval, device.aggregate, tuple(p.name for p in device.points))


class Reporter:
    """Per gateway: the readings to publish for each scan (see the module docstring)."""

    def __init__(self, devices: Iterable[DeviceConfig] = ()) -> None:
        self._devices: dict[str, DeviceConfig] = {}
        self._rules: dict[str, dict[str, Rule]] = {}  # device -> point -> rule (by exception)
        self._last: dict[str, dict[str, Last]] = {}
        self._windows: dict[str, Window] = {}
        self.apply(devices)

    def apply(self, devices: Iterable[DeviceConfig]) -> None:
        """Move to a new config: a point whose settings changed (or a new one) publishes its
        next reading at once; a device whose aggregation changed starts a fresh window."""
        new = {d.name: d for d in devices}
        for name in list(self._devices):
            old = self._devices[name]
            device = new.get(name)
            if device is None or _aggregation(device) != _aggregation(old):
                self._windows.pop(name, None)
        self._devices = new
        rules: dict[str, dict[str, Rule]] = {}
        for device in new.values():
            if _aggregation(device) is not None:
                continue
            own = {p.name: r for p in device.points if (r := rule_of(device, p)).by_exception}
            if own:
                rules[device.name] = own
        for name in list(self._last):
            kept = {point: last for point, last in self._last[name].items()
                    if self._rules.get(name, {}).get(point) == rules.get(name, {}).get(point)
                    and point in rules.get(name, {})}
            if kept:
                self._last[name] = kept
            else:
                del self._last[name]
        self._rules = rules

    def process(self, reading: Reading) -> list[Reading]:
        """The readings to publish for one scan of a device (none, one, or closed windows)."""
        device = self._devices.get(reading.device)
        if device is None:
            return [reading]
        if _aggregation(device) is not None:
            return self._aggregate(device, reading)
        rules = self._rules.get(device.name)
        if rules is None:
            return [reading]
        last = self._last.setdefault(device.name, {})
        values: dict[str, Value] = {}
        quality: dict[str, str] = {}
        ts = reading.ts
        for name, value in reading.values.items():
            rule = rules.get(name)
            if rule is None:
                values[name] = value
                continue
            prev = last.get(name)
            if due(rule, prev, "good", value, ts):
                values[name] = value
                last[name] = Last("good", value, ts)
        for name, q in reading.quality.items():
            rule = rules.get(name)
            if rule is None:
                quality[name] = q
                continue
            prev = last.get(name)
            if due(rule, prev, q, None, ts):
                quality[name] = q
                last[name] = Last(q, None, ts)
        if not values and not quality:
            return []
        return [Reading(reading.device, ts, values, quality)]

    def _aggregate(self, device: DeviceConfig, reading: Reading) -> list[Reading]:
        assert device.publish_interval is not None
        out: list[Reading] = []
        window = self._windows.get(device.name)
        first = window is None
        if window is not None and reading.ts >= window.end:
            out.append(aggregate_reading(device, window))
            window = None
        if window is None:
            start, end = window_of(reading.ts, device.publish_interval)
            window = self._windows[device.name] = Window(start, end, first)
        window.add(reading)
        return out

    # -- saved state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The deadband state, JSON-able: per device and point, the rule and what was last
        published."""
        out: dict[str, Any] = {}
        for device, points in self._last.items():
            rules = self._rules.get(device, {})
            out[device] = {
                name: {"rule": rules[name].key(), "quality": last.quality,
                       "value": last.value, "ts": last.ts}
                for name, last in points.items() if name in rules
            }
        return out

    def restore(self, state: Mapping[str, Any]) -> int:
        """Take back saved state for points whose settings are the same; returns how many
        points were restored (the others publish their next reading at once)."""
        restored = 0
        for device, points in state.items():
            rules = self._rules.get(device)
            if rules is None or not isinstance(points, Mapping):
                continue
            for name, saved in points.items():
                rule = rules.get(name)
                if rule is None or not isinstance(saved, Mapping):
                    continue
                if _restorable(rule, saved):
                    self._last.setdefault(device, {})[name] = Last(
                        saved["quality"], saved["value"], int(saved["ts"]))
                    restored += 1
        return restored


def _restorable(rule: Rule, saved: Mapping[str, Any]) -> bool:
    if saved.get("rule") != rule.key() or not isinstance(saved.get("ts"), int):
        return False
    quality, value = saved.get("quality"), saved.get("value")
    if quality == "good":
        return isinstance(value, (int, float, str, bool)) and not (
            isinstance(value, float) and not math.isfinite(value))
    return quality in ("bad", "invalid") and value is None
