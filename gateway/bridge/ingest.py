"""Payload decoding for the bridge: (topic, payload bytes) → line protocol, or a reason to refuse.

Pure: no I/O, no MQTT, no InfluxDB. Both payload formats of SPEC §3 are read:

- JSON (`{"gateway": …, "device": …, "measurement": …, "tags": {…}, "readings": [{"ts": …,
  "values": {…}}, …]}`): one point per reading, one field per value. orjson decodes the
  usual message; one that leaves the fast path (a refusal, NaN, a number orjson may have
  turned from a huge integer into a float, an unusual value) is decoded again by the
  stdlib, so numbers and reasons are exactly the stdlib's.
- InfluxDB line protocol (`format: influx`): parsed with `gateway.core.lineproto`, one point
  per line, and written again from the parsed form.

Every point is formatted by `gateway.core.lineproto` (escaped, control characters refused), so
whatever a payload holds it cannot add tags, fields or points. A string with no UTF-8 encoding
(a lone surrogate from a JSON `\\ud800` escape, which orjson refuses and the stdlib accepts)
is refused as `bad_encoding`, a tag or field named `time` (InfluxDB drops it) as `bad_name`:
every line this module returns can be encoded and stored as it is. Tags `gateway` and `device`
come from the topic (`…/{gateway}/{device}/data`), which broker ACLs bind to each gateway's
credentials; a payload that names another gateway or device is refused.

A refusal is a `Rejected(reason, detail)`: `reason` is a short stable word used as the
dead-letter reason and the metric label, `detail` says what and where.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.core import lineproto
from gateway.core.lineproto import INT64_MAX, INT64_MIN

MAX_PAYLOAD = 4 * 1024 * 1024  # bytes; a larger message is dead-lettered unread

# Dead-letter reasons (also the `reason` label of the dead-letter counter).
BAD_TOPIC = "bad_topic"
TOO_LARGE = "too_large"
BAD_ENCODING = "bad_encoding"
BAD_JSON = "bad_json"
BAD_SHAPE = "bad_shape"
BAD_VALUE = "bad_value"
NON_FINITE = "non_finite"
BAD_NAME = "bad_name"
TOPIC_MISMATCH = "topic_mismatch"
BAD_LINE_PROTOCOL = "bad_line_protocol"
MISSING_TIMESTAMP = "missing_timestamp"
EMPTY = "empty"
REJECTED = "rejected"  # InfluxDB refused the point (set by the bridge, not here)
WRITE_FAILED = "write_failed"  # writing raised, not for InfluxDB's reason (set by the bridge)
INTERNAL_ERROR = "internal_error"  # decoding raised: a bug, dead-lettered rather than stuck

REASONS: tuple[str, ...] = (
    BAD_TOPIC, TOO_LARGE, BAD_ENCODING, BAD_JSON, BAD_SHAPE, BAD_VALUE, NON_FINITE,
    BAD_NAME, TOPIC_MISMATCH, BAD_LINE_PROTOCOL, MISSING_TIMESTAMP, EMPTY, REJECTED,
    WRITE_FAILED, INTERNAL_ERROR,
)



@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: str


class _Refuse(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


def _no_constants(name: str) -> Any:
    raise _Refuse(NON_FINITE, f"json constant {name} is not a finite number")


_json_decode = json.JSONDecoder(parse_constant=_no_constants).decode
_orjson_loads = orjson.loads
# orjson turns an integer below int64 or above uint64 into a float; a float this large
# may be one, so it leaves the fast path (and an orjson document goes to the stdlib).
_FLOAT_LIMIT = 9.2e18  # just under 2**63


class _NotFast(Exception):
    """An orjson document left the fast path: the stdlib decodes the payload again."""

# Escaped field keys by raw key: field names repeat in every message of a device.
_field_keys: dict[str, str] = {}
_FIELD_KEY_CACHE = 10_000


def _field_key(key: str) -> str:
    escaped = _field_keys.get(key)
    if escaped is None:
        if not isinstance(key, str):
            raise ValueError("field key must be a string")
        escaped = lineproto.escape_field_key(key)
        if len(_field_keys) >= _FIELD_KEY_CACHE:
            _field_keys.clear()
            _field_eq.clear()
        _field_keys[key] = escaped
        _field_eq[key] = escaped + "="
    return escaped


# `measurement,tags` prefixes by (measurement, gateway, device, payload tags): the same
# few per device, message after message.
_prefixes: dict[tuple[object, ...], str] = {}
_PREFIX_CACHE = 10_000
# `escaped_key=` by raw field key, for the fast path of `_fields`.
_field_eq: dict[str, str] = {}


def _fields(values: dict[str, Any]) -> str | None:
    """The field set of one reading, or None when a value needs the careful path.

    Fast path for the common case: keys seen before, finite floats, int64 integers,
    booleans and strings. Anything else (a new key, NaN, a big integer, null, an object)
    returns None and `_fields_checked` decides, with the exact reason.
    """
    parts: list[str] = []
    append = parts.append
    for key, value in values.items():
        k = _field_eq.get(key)
        if k is None:
            return None
        cls = value.__class__
        if cls is float:
            if not -_FLOAT_LIMIT < value < _FLOAT_LIMIT:  # also NaN and ±Infinity
                return None
            append(f"{k}{value!r}")
        elif cls is int:
            if not INT64_MIN <= value <= INT64_MAX:
                return None
            append(f"{k}{value}i")
        elif cls is bool:
            append(k + ("true" if value else "false"))
        elif cls is str:
            try:
                append(k + lineproto.format_field_value(value))
            except ValueError:  # no UTF-8 encoding (stdlib documents only)
                return None
        else:
            return None
    return ",".join(parts)


def _fields_checked(i: int, values: dict[str, Any]) -> str:
    fmt_value = lineproto.format_field_value
    fields: list[str] = []
    for key, value in values.items():
        try:
            escaped = _field_key(key)
        except lineproto.BadText as exc:
            raise _Refuse(BAD_ENCODING, f"readings[{i}].values: {exc}") from None
        except ValueError as exc:
            raise _Refuse(BAD_NAME, f"readings[{i}].values: {exc}") from None
        if value is None or isinstance(value, dict | list):
            kind = "null" if value is None else type(value).__name__
            raise _Refuse(BAD_VALUE, f"readings[{i}].values.{key}: a {kind} is not a value")
        try:
            fields.append(f"{escaped}={fmt_value(value)}")
        except lineproto.BadText as exc:
            raise _Refuse(BAD_ENCODING, f"readings[{i}].values.{key}: {exc}") from None
        except ValueError as exc:
            reason = NON_FINITE if isinstance(value, float) else BAD_VALUE
            raise _Refuse(reason, f"readings[{i}].values.{key}: {exc}") from None
    return ",".join(fields)


# (gateway, device) by topic: one per device, message after message.
_sources: dict[str, tuple[str, str]] = {}
_SOURCE_CACHE = 100_000


def topic_source(topic: str) -> tuple[str, str] | None:
    """`(gateway, device)` of a data topic `…/{gateway}/{device}/data`, else None."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[-1] != "data" or not parts[-3] or not parts[-2]:
        return None
    return parts[-3], parts[-2]


def decode_message(
    topic: str, payload: bytes, *, max_payload: int = MAX_PAYLOAD
) -> list[str] | Rejected:
    """The line-protocol lines (one per point, no newline) a message carries, or why not."""
    source = _sources.get(topic)
    if source is None:
        source = topic_source(topic)
        if source is not None:
            if len(_sources) >= _SOURCE_CACHE:
                _sources.clear()
            _sources[topic] = source
    if source is None:
        return Rejected(BAD_TOPIC, f"topic {topic!r} is not .../<gateway>/<device>/data")
    if len(payload) > max_payload:
        return Rejected(TOO_LARGE, f"payload of {len(payload)} bytes exceeds {max_payload}")
    try:
        if payload[:1] == b"{":
            # The usual case, with orjson, as long as every reading takes the fast path.
            # Anything else (a refusal, NaN, a huge number, an unusual value) the stdlib
            # decodes again below, so that numbers and reasons are exactly its own.
            try:
                return _from_doc(_orjson_loads(payload), *source, fast_only=True)
            except (orjson.JSONDecodeError, _Refuse, _NotFast):
                pass
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejected(BAD_ENCODING,
                            f"payload is not utf-8: {exc.reason} at byte {exc.start}")
        if text.lstrip()[:1] == "{":
            return _from_doc(_json_document(text), *source)
        return _from_line_protocol(text, *source)
    except _Refuse as exc:
        return Rejected(exc.reason, exc.detail)


def _prefix(measurement: str, tags: dict[str, str]) -> str:
    """`measurement,k=v,...` escaped by lineproto, tags sorted, empty tag values omitted."""
    parts = [lineproto.escape_measurement(measurement)]
    for key in sorted(tags):
        escaped_key = lineproto.escape_tag_key(key)
        escaped_value = lineproto.escape_tag(tags[key], kind="tag value")
        if escaped_value:
            parts.append(f"{escaped_key}={escaped_value}")
    return ",".join(parts)


def _check_source(kind: str, claimed: object, actual: str) -> None:
    if claimed is not None and claimed != actual:
        raise _Refuse(TOPIC_MISMATCH, f"payload {kind} {claimed!r} is not the topic's {actual!r}")


def _check_header(measurement: object, tags: object, gateway: str, device: str) -> None:
    if not isinstance(measurement, str):
        raise _Refuse(BAD_SHAPE, "measurement is not a string")
    if not isinstance(tags, dict):
        raise _Refuse(BAD_SHAPE, "tags is not an object")
    for key, value in tags.items():
        if not isinstance(value, str):
            raise _Refuse(BAD_SHAPE, f"tag {key!r} is a {type(value).__name__}, not a string")
    _check_source("gateway", tags.get("gateway"), gateway)
    _check_source("device", tags.get("device"), device)


def _json_document(text: str) -> Any:
    try:
        return _json_decode(text)
    except ValueError as exc:
        raise _Refuse(BAD_JSON, f"invalid json: {exc}") from None
    except RecursionError:
        raise _Refuse(BAD_JSON, "invalid json: nested too deeply") from None


def _from_doc(doc: Any, gateway: str, device: str, *, fast_only: bool = False) -> list[str]:
    if not isinstance(doc, dict):
        raise _Refuse(BAD_SHAPE, f"payload is a json {type(doc).__name__}, not an object")
    _check_source("gateway", doc.get("gateway"), gateway)
    _check_source("device", doc.get("device"), device)
    measurement = doc.get("measurement", device)
    raw_tags = doc.get("tags") or {}
    prefix = None
    if raw_tags.__class__ is dict:
        # Only checked headers are cached (string measurement and tag values, tags that
        # agree with the topic), so a hit stands for the checks below.
        try:
            prefix = _prefixes.get((measurement, gateway, device, *raw_tags.items()))
        except TypeError:  # an unhashable tag value: _check_header says which
            pass
    if prefix is None:
        _check_header(measurement, raw_tags, gateway, device)
    readings = doc.get("readings")
    if not isinstance(readings, list):
        raise _Refuse(BAD_SHAPE, "readings is missing or not a list")
    if prefix is None:
        try:
            prefix = _prefix(measurement, {**raw_tags, "gateway": gateway, "device": device})
        except lineproto.BadText as exc:
            raise _Refuse(BAD_ENCODING, str(exc)) from None
        except ValueError as exc:
            raise _Refuse(BAD_NAME, str(exc)) from None
        if len(_prefixes) >= _PREFIX_CACHE:
            _prefixes.clear()
        _prefixes[(measurement, gateway, device, *raw_tags.items())] = prefix

    lines: list[str] = []
    append = lines.append
    for i, reading in enumerate(readings):
        if reading.__class__ is dict:
            ts = reading.get("ts")
            values = reading.get("values")
            if (ts.__class__ is int and INT64_MIN < ts < INT64_MAX
                    and values.__class__ is dict and values):
                field_set = _fields(values)
                if field_set is not None:
                    append(f"{prefix} {field_set} {ts}")
                    continue
        # the careful path: says exactly what is wrong, or handles the unusual
        if fast_only:
            raise _NotFast
        if not isinstance(reading, dict):
            raise _Refuse(BAD_SHAPE, f"readings[{i}] is not an object")
        ts = reading.get("ts")
        if type(ts) is not int:
            raise _Refuse(BAD_SHAPE, f"readings[{i}].ts is not an integer")
        if not INT64_MIN < ts < INT64_MAX:
            raise _Refuse(BAD_VALUE, f"readings[{i}].ts {ts} is out of range")
        values = reading.get("values")
        if not isinstance(values, dict):
            raise _Refuse(BAD_SHAPE, f"readings[{i}].values is missing or not an object")
        if not values:
            continue  # every point of that scan failed: nothing to store
        append(f"{prefix} {_fields_checked(i, values)} {ts}")
    return lines


def _from_line_protocol(text: str, gateway: str, device: str) -> list[str]:
    try:
        points = lineproto.parse_lines(text)
    except ValueError as exc:
        raise _Refuse(BAD_LINE_PROTOCOL, str(exc)) from None
    if not points:
        raise _Refuse(EMPTY, "payload holds no json object and no line protocol point")
    lines: list[str] = []
    for n, (measurement, tags, fields, ts) in enumerate(points, start=1):
        _check_source("gateway", tags.get("gateway"), gateway)
        _check_source("device", tags.get("device"), device)
        if ts is None:
            raise _Refuse(MISSING_TIMESTAMP, f"point {n} has no timestamp")
        tags["gateway"] = gateway
        tags["device"] = device
        try:
            lines.append(lineproto.format_line(measurement, tags, fields, ts))
        except lineproto.BadName as exc:
            raise _Refuse(BAD_NAME, f"point {n}: {exc}") from None
        except ValueError as exc:
            raise _Refuse(BAD_VALUE, f"point {n}: {exc}") from None
    return lines
