"""MQTT topics and payloads of SPEC §3: what a gateway publishes, byte for byte.

The publisher builds messages from outbox rows with these functions and the bridge reads
them back, so the wire format lives in one place:

* data topic ``{prefix}/{gateway}/{device}/data``, status topic ``{prefix}/{gateway}/status``;
* ``format: json``: one compact UTF-8 JSON object per message, carrying one or more scans
  (``readings``), each with integer-nanosecond ``ts``, ``values`` (good points only) and
  ``quality`` only when some point of that scan is not good. NaN and infinities are refused
  (``ValueError``): decode marks them ``invalid``, so they never reach ``values``;
* ``format: influx``: InfluxDB line protocol, one line per scan, tags ``gateway``,
  ``device`` and the configured tags, nanosecond timestamps, one field per good value;
  Telegraf's ``mqtt_consumer`` reads it with ``data_format = "influx"``. Line protocol has
  no place for a point without fields, so a scan with no good value produces no line, and
  quality is not carried (only ``format: json`` carries it). A message whose scans all
  lack good values is empty (``b""``); callers should not publish it.

Tags passed in are already merged (gateway tags, then device tags). ``gateway`` and
``device`` always come from the arguments, never from the configured tags. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.core.lineproto import format_line
from gateway.core.model import Reading

_TOPIC_FORBIDDEN = ("+", "#", "/", "\x00")


def _topic_segment(kind: str, text: str) -> str:
    if not text or any(ch in text for ch in _TOPIC_FORBIDDEN):
        raise ValueError(f"{kind} {text!r} cannot be a topic level")
    return text


def _prefix(prefix: str) -> str:
    stripped = prefix.strip("/")
    if not stripped or any(ch in stripped for ch in ("+", "#", "\x00")):
        raise ValueError(f"topic prefix {prefix!r} is not a valid topic")
    return stripped


def data_topic(prefix: str, gateway_id: str, device: str) -> str:
    """``{prefix}/{gateway_id}/{device}/data``."""
    return (
        f"{_prefix(prefix)}/{_topic_segment('gateway id', gateway_id)}/"
        f"{_topic_segment('device', device)}/data"
    )


def status_topic(prefix: str, gateway_id: str) -> str:
    """``{prefix}/{gateway_id}/status``, published retained and as the last will."""
    return f"{_prefix(prefix)}/{_topic_segment('gateway id', gateway_id)}/status"


def config_set_topic(prefix: str, gateway_id: str) -> str:
    """``{prefix}/{gateway_id}/config/set``: signed configs from the operations centre (§7)."""
    return f"{_prefix(prefix)}/{_topic_segment('gateway id', gateway_id)}/config/set"


def config_result_topic(prefix: str, gateway_id: str) -> str:
    """``{prefix}/{gateway_id}/config/result``: ``applied``, ``refused``, ``rolled_back``."""
    return f"{_prefix(prefix)}/{_topic_segment('gateway id', gateway_id)}/config/result"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def status_payload(state: str, ts_ns: int, **extra: Any) -> bytes:
    """``{"state": ..., "ts": ...}`` plus any extra keys, as compact JSON.

    ``state`` is ``online`` or ``offline`` (SPEC §3); ``ts`` integer nanoseconds.
    """
    return _dumps({"state": state, "ts": ts_ns, **extra})


@dataclass(frozen=True, slots=True)
class Health:
    """What the retained status carries besides state and ts (SPEC §7): the health record."""

    version: str
    config_sha256: str
    config_applied_ts: int  # ns
    devices_total: int
    failing: tuple[str, ...]  # names of the devices whose last scan got no answer
    outbox_pending: int  # readings
    outbox_oldest_s: float | None  # age of the oldest pending reading, None when empty
    outbox_dropped: int
    uptime_s: float


def health_payload(state: str, ts_ns: int, health: Health) -> bytes:
    """The health record of SPEC §7 as compact JSON: a §3 status with more keys.

    Sizes are rounded (whole seconds) so an unchanged gateway sends the same few hundred
    bytes every time: the record crosses cellular links every ``status_interval``.
    """
    oldest = health.outbox_oldest_s
    return status_payload(
        state, ts_ns,
        version=health.version,
        config={"sha256": health.config_sha256, "applied_ts": health.config_applied_ts},
        devices={"total": health.devices_total, "failing": sorted(health.failing)},
        outbox={"pending": health.outbox_pending,
                "oldest_s": None if oldest is None else round(oldest),
                "dropped": health.outbox_dropped},
        uptime_s=round(health.uptime_s),
    )


def _reading_json(reading: Reading) -> dict[str, Any]:
    item: dict[str, Any] = {"ts": reading.ts, "values": dict(reading.values)}
    if reading.quality:
        item["quality"] = dict(reading.quality)
    return item


def build_json(
    gateway_id: str,
    device: str,
    measurement: str,
    tags: Mapping[str, str],
    readings: Sequence[Reading],
) -> bytes:
    """The ``format: json`` payload of SPEC §3 carrying ``readings`` (scans of one device)."""
    return _dumps({
        "gateway": gateway_id,
        "device": device,
        "measurement": measurement,
        "tags": dict(tags),
        "readings": [_reading_json(r) for r in readings],
    })


def build_influx(
    gateway_id: str,
    device: str,
    measurement: str,
    tags: Mapping[str, str],
    readings: Sequence[Reading],
) -> bytes:
    """The ``format: influx`` payload: one line per scan with a good value, ``\\n``-ended."""
    line_tags = {**tags, "gateway": gateway_id, "device": device}
    lines = [
        format_line(measurement, line_tags, r.values, r.ts) + "\n"
        for r in readings
        if r.values
    ]
    return "".join(lines).encode("utf-8")


def build_payload(
    fmt: str,
    gateway_id: str,
    device: str,
    measurement: str,
    tags: Mapping[str, str],
    readings: Sequence[Reading],
) -> bytes:
    """The payload in the configured ``mqtt.format`` (``json`` or ``influx``)."""
    if fmt == "json":
        return build_json(gateway_id, device, measurement, tags, readings)
    if fmt == "influx":
        return build_influx(gateway_id, device, measurement, tags, readings)
    raise ValueError(f"unknown payload format {fmt!r}")
