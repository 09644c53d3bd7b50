"""Commands (SPEC §6): a request checked against the config, and the result. Pure.

A request names a device (by its topic, or the `sensegate write` arguments) and values by
point. `plan` checks every value before anything is written (device and point exist,
writable, type, round trip, ``min``/``max``, ``allowed``, ``max_rate``) and returns the
writes, or raises `Refused` with the reason; a command is executed whole or not at all.
The signature, age and replay checks of `gateway.core.signing` come first (in
`gateway.edge.commands`).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.core.encode import Unwritable, Write, encode
from gateway.core.model import DeviceConfig, PointConfig, Value, rate_limit
from gateway.core.signing import Refused, id_and_ts

Status = Literal["done", "refused", "failed", "expired"]
STATUSES: tuple[Status, ...] = ("done", "refused", "failed", "expired")
MAX_VALUES = 64  # points one command may write
MAX_PAYLOAD = 64 * 1024  # bytes of one request


def set_topic(prefix: str, gateway_id: str, device: str) -> str:
    return f"{prefix}/{gateway_id}/{device}/set"


def result_topic(prefix: str, gateway_id: str, device: str) -> str:
    return f"{prefix}/{gateway_id}/{device}/set/result"


def device_of(topic: str, prefix: str, gateway_id: str) -> str | None:
    """The device a ``.../set`` topic of this gateway names, or None."""
    head = f"{prefix}/{gateway_id}/"
    if not topic.startswith(head) or not topic.endswith("/set"):
        return None
    device = topic[len(head):-len("/set")]
    return device if device and "/" not in device else None


@dataclass(frozen=True, slots=True)
class Request:
    id: str
    ts: int  # ns
    values: dict[str, Any]


def parse_request(payload: bytes) -> Request:
    """An unsigned request's ``id``, ``ts`` and ``values``; `Refused` when malformed."""
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refused("not a JSON object") from None
    return request_of(obj)


def request_of(obj: object) -> Request:
    obj, msg_id, ts = id_and_ts(obj)
    values = obj.get("values")
    if not isinstance(values, dict) or not values:
        raise Refused("'values' must be an object of point: value")
    if len(values) > MAX_VALUES:
        raise Refused(f"{len(values)} values: at most {MAX_VALUES} in one command")
    return Request(msg_id, ts, values)


@dataclass
class RateLimiter:
    """Writes per point within its ``max_rate`` window (in memory: a restart forgets)."""

    times: dict[tuple[str, str], deque[float]] = field(default_factory=dict)

    def refusal(self, device: str, point: PointConfig, now: float) -> str | None:
        if point.max_rate is None:
            return None
        count, window = rate_limit(point.max_rate)
        seen = self.times.setdefault((device, point.name), deque())
        while seen and seen[0] <= now - window:
            seen.popleft()
        if len(seen) >= count:
            return (f"{point.name}: over its max_rate {point.max_rate} (next write in "
                    f"{seen[0] + window - now:.0f}s)")
        return None

    def record(self, device: str, point: PointConfig, now: float) -> None:
        if point.max_rate is not None:
            self.times.setdefault((device, point.name), deque()).append(now)


def plan(device: DeviceConfig | None, device_name: str, values: Mapping[str, Any],
         rates: RateLimiter, now: float) -> list[tuple[PointConfig, Write]]:
    """The writes of a command, every value checked; `Refused` with the first reason."""
    if device is None:
        raise Refused(f"unknown device {device_name[:64]!r}")
    points = {p.name: p for p in device.points}
    writes: list[tuple[PointConfig, Write]] = []
    for name, value in values.items():
        point = points.get(name)
        if point is None:
            raise Refused(f"unknown point {name[:64]!r} of device {device.name!r}")
        if not point.writable:
            raise Refused(f"{name}: not writable")
        try:
            write = encode(point, value)
        except Unwritable as exc:
            raise Refused(f"{name}: {exc}") from None
        written = write.value
        if not isinstance(written, bool | str):
            number = float(written)
            if point.min is not None and number < point.min:
                raise Refused(f"{name}: {_show(value)} is below min {point.min:g}")
            if point.max is not None and number > point.max:
                raise Refused(f"{name}: {_show(value)} is above max {point.max:g}")
        if point.allowed and not any(_same(written, a) for a in point.allowed):
            raise Refused(f"{name}: {_show(value)} is not allowed (allowed: "
                          f"{', '.join(f'{a:g}' for a in point.allowed)})")
        reason = rates.refusal(device.name, point, now)
        if reason is not None:
            raise Refused(reason)
        writes.append((point, write))
    return writes


def _same(value: Value, allowed: float) -> bool:
    if isinstance(value, str):
        return False
    return math.isclose(float(value), allowed, rel_tol=1e-12, abs_tol=1e-12)


def _show(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)[:64]


def result_payload(msg_id: str, ts: int, status: Status, reason: str | None = None,
                   values: Mapping[str, Value] | None = None) -> bytes:
    """The result message (SPEC §6)."""
    body: dict[str, Any] = {"id": msg_id, "ts": ts, "status": status}
    if reason is not None:
        body["reason"] = reason
    if values is not None:
        body["values"] = dict(values)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
