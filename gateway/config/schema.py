"""The config language in one place: every field with its type, default, limits and help.

This declarative field model drives three things, so they cannot drift apart:
validation and defaults (`validate`, used by `config.load` and `config.profiles`), the
JSON Schema printed by `sensegate schema` (`gateway_json_schema`, `bridge_json_schema`) and
the config reference in the docs. Rules that span several fields (per-driver requirements,
duplicate names, register ranges) live in `gateway.config.load`.

Hand-written on purpose (no pydantic): the gateway runs on small boxes.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config.source import MAPPING, SCALAR, SEQUENCE, Node, describe
from gateway.core import model
from gateway.core.errors import ConfigIssue
from gateway.core.units import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

NO_DEFAULT: Any = object()
INVALID: Any = object()  # a value that produced an issue; cross-field checks skip it

NAME_PATTERN = r"[A-Za-z0-9_-]{1,64}"
NAME_HINT = "use 1-64 letters, digits, '_' or '-'"
POINT_PATTERN = r"[A-Za-z0-9_]{1,64}"
POINT_HINT = "use 1-64 letters, digits or '_'"
PROFILE_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
PROFILE_HINT = "use 1-64 letters, digits, '_', '.' or '-'"

# Byte-order spellings accepted and normalised at load (case-insensitive), after Telegraf's
# normalizeByteOrder: the word order (MSW/LSW first) and the byte order within a word.
BYTE_ORDER_ALIASES: dict[str, str] = {
    "big": "ABCD", "big-endian": "ABCD", "be": "ABCD", "msw-be": "ABCD", "msw": "ABCD",
    "little": "DCBA", "little-endian": "DCBA", "le": "DCBA", "lsw-le": "DCBA", "lsw": "DCBA",
    "msw-le": "BADC", "big-swap": "BADC",
    "lsw-be": "CDAB", "little-swap": "CDAB",
}
PARITY_ALIASES: dict[str, str] = {"none": "N", "even": "E", "odd": "O"}


@dataclass(frozen=True, slots=True)
class Field:
    """One config field. ``kind`` is one of the keys of `_CHECKERS` or object/list/map."""

    kind: str
    description: str = ""
    default: Any = NO_DEFAULT
    required: bool = False
    choices: tuple[Any, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    noun: str = ""  # enum messages: "'flaot32' is not a data type"
    pattern: str | None = None
    pattern_hint: str = ""
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False  # strictly more than 0
    fields: Mapping[str, Field] | None = None  # object
    items: Field | None = None  # list
    secret: bool = False  # never quoted in a message
    drivers: tuple[str, ...] = ()  # device fields: the drivers it applies to (empty: all)
    default_note: str = ""  # a computed default, described for the docs and editors
    json_extra: Mapping[str, Any] = field(default_factory=dict)


def obj(description: str, fields: dict[str, Field], **kw: Any) -> Field:
    return Field("object", description, fields=fields, **kw)


# --- the field model ----------------------------------------------------------------------

_TAGS = Field("map", "tags added to every reading (string values); 'gateway' and 'device' "
                     "are reserved", default={})

_TLS = obj("TLS settings; presence enables TLS", {
    "ca_file": Field("str", "CA certificate(s) to verify the broker (PEM); default: system CAs"),
    "cert_file": Field("str", "client certificate (PEM) for mutual TLS"),
    "key_file": Field("str", "client private key (PEM)"),
    "insecure": Field("bool", "skip hostname verification (test rigs only)", default=False),
})

_METRICS = obj("Prometheus metrics on /metrics and /healthz; absent: no metrics server", {
    "listen": Field("listen", "HOST:PORT to listen on", default="127.0.0.1:9108"),
})

_SERIAL_LINE_FIELDS: dict[str, Field] = {
    "baudrate": Field("int", "bits per second", default=9600, positive=True),
    "parity": Field("enum", "N | E | O", default="N", choices=("N", "E", "O"),
                    aliases=PARITY_ALIASES, noun="a parity"),
    "stopbits": Field("int", "1 or 2", default=1, minimum=1, maximum=2),
    "bytesize": Field("int", "data bits, 5-8", default=8, minimum=5, maximum=8),
}

BUS = obj("an RS-485 line shared by Modbus RTU devices", {
    "name": Field("str", "bus name, referenced by devices' `bus`", required=True,
                  pattern=NAME_PATTERN, pattern_hint=NAME_HINT, noun="bus name"),
    "port": Field("str", "serial device, e.g. /dev/ttyUSB0", required=True),
    **_SERIAL_LINE_FIELDS,
    "frame_gap": Field("duration", "extra silence between transactions, for devices that "
                       "need it", default=0.0),
    "turnaround": Field("duration", "allowance for a device's reply latency, used by the bus "
                        "time estimate", default=0.01),
})

BYTE_ORDER = Field("enum", "ABCD (big endian) | DCBA | BADC | CDAB; aliases: big, little, "
                   "MSW-BE, MSW-LE, LSW-BE, LSW-LE", choices=model.BYTE_ORDERS,
                   aliases=BYTE_ORDER_ALIASES, noun="a byte order")

POINT = obj("one value read from the device", {
    "name": Field("str", "unique within the device; the field name in InfluxDB", required=True,
                  pattern=POINT_PATTERN, pattern_hint=POINT_HINT, noun="point name"),
    "table": Field("enum", "Modbus table: holding | input | coil | discrete",
                   choices=model.TABLES, noun="a table"),
    "address": Field("int", "0-based protocol address", minimum=0, maximum=65535),
    "type": Field("enum", "data type", choices=model.DATA_TYPES, noun="a data type",
                  default_note="uint16 for registers, bool for coils and discretes, float64 "
                  "for serial-line points"),
    "byte_order": Field("enum", BYTE_ORDER.description, choices=model.BYTE_ORDERS,
                        aliases=BYTE_ORDER_ALIASES, noun="a byte order",
                        default_note="the device's byte_order, else ABCD"),
    "scale": Field("float", "value = raw * scale + offset", default=1.0),
    "offset": Field("float", "value = raw * scale + offset", default=0.0),
    "unit": Field("str", "unit of measure, informational (e.g. degC)"),
    "bit": Field("int", "read one bit (0 = least significant) of a holding/input register; "
                 "type must be bool", minimum=0, maximum=15),
    "length": Field("int", "registers a string occupies (two characters each)",
                    minimum=1, maximum=model.MAX_READ_REGISTERS),
    "invalid_values": Field("list", "raw values (before scale and offset) that mean \"no "
                            "reading\", e.g. [32767] on an int16 or [65535] on a uint16 "
                            "register: the point gets quality invalid instead of a value; "
                            "numeric points only, each value within the point's type",
                            items=Field("number"), default=[]),
})

_MODBUS = model.MODBUS_DRIVERS
_TCP = ("modbus-tcp", "modbus-rtu-over-tcp")
_SERIAL = ("serial-line",)

DEVICE = obj("one sensor or meter", {
    "name": Field("str", "unique device name; topic segment and tag", required=True,
                  pattern=NAME_PATTERN, pattern_hint=NAME_HINT, noun="device name"),
    "driver": Field("enum", "how the device is read", required=True, choices=model.DRIVERS,
                    noun="a driver"),
    "profile": Field("str", "a register map for one sensor model (PROFILE.yaml, searched in "
                     "gateway.profile_dirs, <config dir>/profiles, the shipped profiles)",
                     pattern=PROFILE_PATTERN, pattern_hint=PROFILE_HINT, noun="profile name"),
    "host": Field("str", "address of the Modbus TCP server or serial gateway", drivers=_TCP),
    "port": Field("port", "TCP port (modbus-tcp, modbus-rtu-over-tcp) or serial device "
                  "(serial-line)", drivers=(*_TCP, *_SERIAL),
                  default_note="502 for TCP drivers"),
    "bus": Field("str", "name of the RS-485 bus (modbus-rtu)", drivers=("modbus-rtu",)),
    "unit": Field("int", "Modbus unit / slave id: 1-247 on serial lines, 0-255 on TCP",
                  default=1, minimum=0, maximum=255, drivers=_MODBUS),
    **{k: Field(f.kind, f.description, default=f.default, choices=f.choices,
                aliases=f.aliases, noun=f.noun, minimum=f.minimum, maximum=f.maximum,
                positive=f.positive, drivers=_SERIAL)
       for k, f in _SERIAL_LINE_FIELDS.items()},
    "request": Field("escaped", "sent every interval; absent: the sensor streams. C-style "
                     "escapes are read whatever the YAML quoting: `\\r`, `\\n`, `\\t`, `\\xHH` "
                     "(one byte), `\\\\` (a backslash), so `'R\\r\\n'`, `R\\r\\n` and "
                     "`\"R\\r\\n\"` all send R, CR, LF; other characters are sent as UTF-8",
                     drivers=_SERIAL),
    "pattern": Field("regex", "regular expression with one named group per point",
                     drivers=_SERIAL),
    "interval": Field("duration", "time between scans", default=1.0, positive=True),
    "timeout": Field("duration", "time to wait for an answer", default=1.0, positive=True),
    "retries": Field("int", "extra attempts of a failed request in one scan", default=1,
                     minimum=0, maximum=10),
    "measurement": Field("str", "InfluxDB measurement", default_note="the device name"),
    "tags": _TAGS,
    "byte_order": Field("enum", "default byte order of this device's points",
                        choices=model.BYTE_ORDERS, aliases=BYTE_ORDER_ALIASES,
                        noun="a byte order", drivers=_MODBUS),
    "max_gap": Field("int", "unused registers a request may bridge (0: never read an "
                     "unnamed address)", default=10, minimum=0, maximum=model.MAX_READ_BITS,
                     drivers=_MODBUS),
    "max_registers": Field("int", "largest request the device accepts, in registers",
                           default=model.MAX_READ_REGISTERS, minimum=1,
                           maximum=model.MAX_READ_REGISTERS, drivers=_MODBUS),
    "points": Field("list", "the values to read (with a profile: added to or replacing the "
                    "profile's points of the same name)", items=POINT),
}, json_extra={"allOf": [
    {"if": {"properties": {"driver": {"const": "modbus-tcp"}}},
     "then": {"required": ["host"]}},
    {"if": {"properties": {"driver": {"const": "modbus-rtu-over-tcp"}}},
     "then": {"required": ["host"]}},
    {"if": {"properties": {"driver": {"const": "modbus-rtu"}}},
     "then": {"required": ["bus"]}},
    {"if": {"properties": {"driver": {"const": "serial-line"}}},
     "then": {"required": ["port"]}},
]})

GATEWAY = obj("sensegate gateway config", {
    "gateway": obj("this gateway", {
        "id": Field("str", "gateway id; topic segment and tag", required=True,
                    pattern=NAME_PATTERN, pattern_hint=NAME_HINT, noun="gateway id"),
        "tags": _TAGS,
        "state_dir": Field("str", "the offline buffer lives here", default="/var/lib/sensegate"),
        "profile_dirs": Field("list", "directories searched first for device profiles",
                              items=Field("str"), default=[]),
        "status_interval": Field("duration", "the retained health record on "
                                 "{prefix}/{id}/status is refreshed this often (and on change)",
                                 default=60.0, minimum=1.0),
    }, required=True),
    "mqtt": obj("the MQTT broker readings are published to", {
        "host": Field("str", "broker host name or address", required=True),
        "port": Field("int", "broker port", minimum=1, maximum=65535,
                      default_note="1883, or 8883 when tls is set"),
        "client_id": Field("str", "MQTT client id", default_note="sensegate-<gateway.id>"),
        "username": Field("str", "user name"),
        "password": Field("str", "password (use ${VAR})", secret=True),
        "tls": _TLS,
        "qos": Field("int", "0, 1 or 2", default=1, minimum=0, maximum=2),
        "topic_prefix": Field("str", "first topic segment", default="sensegate",
                              pattern=r"[^#+\s]+", pattern_hint="no '#', '+' or spaces",
                              noun="topic prefix"),
        "format": Field("enum", "payload format: json | influx (line protocol)", default="json",
                        choices=("json", "influx"), noun="a payload format"),
        "keepalive": Field("duration", "MQTT keepalive", default=30.0, positive=True),
    }, required=True),
    "outbox": obj("the offline buffer", {
        "max_bytes": Field("size", "past it the oldest messages are dropped, and counted",
                           default=512 * 1024 * 1024, minimum=1024 * 1024),
        "max_message_bytes": Field("size", "several scans of one device share a message up "
                                   "to this size", default=256 * 1024, minimum=1024),
        "commit_interval": Field("duration", "readings are committed in batches at most this "
                                 "far apart", default=0.2, positive=True),
    }, default={}),
    "metrics": _METRICS,
    "fleet": obj("signed remote configuration from the operations centre; off unless "
                 "public_key is set", {
        "public_key": Field("str", "Ed25519 public key of the operations centre: the base64 "
                            "line of KEY.pub, or the path of a file holding it (or PEM)"),
        "probation": Field("duration", "a pushed config that loses the broker or fails more "
                           "devices within this time is rolled back", default=120.0,
                           positive=True),
        "max_age": Field("duration", "a config message signed longer ago (or further in the "
                         "future) than this is refused", default=300.0, positive=True),
        "keep": Field("int", "configs kept under state_dir/fleet/configs", default=5,
                      minimum=1, maximum=100),
    }, default={}),
    "buses": Field("list", "RS-485 lines shared by Modbus RTU devices", items=BUS, default=[]),
    "devices": Field("list", "the sensors to poll", items=DEVICE, required=True),
})

PROFILE = obj("a register map for one sensor model (config/profiles/<name>.yaml)", {
    "model": Field("str", "sensor model", required=True),
    "description": Field("str", "what the sensor measures"),
    "manufacturer": Field("str", "maker of the sensor"),
    "interval": DEVICE.fields["interval"],  # type: ignore[index]
    "timeout": DEVICE.fields["timeout"],  # type: ignore[index]
    "retries": DEVICE.fields["retries"],  # type: ignore[index]
    "byte_order": DEVICE.fields["byte_order"],  # type: ignore[index]
    "max_gap": DEVICE.fields["max_gap"],  # type: ignore[index]
    "max_registers": DEVICE.fields["max_registers"],  # type: ignore[index]
    "request": DEVICE.fields["request"],  # type: ignore[index]
    "pattern": DEVICE.fields["pattern"],  # type: ignore[index]
    "points": Field("list", "the sensor's points", items=POINT, required=True),
})

# Device-level settings a profile may provide; the device's own value wins.
PROFILE_DEFAULTS: tuple[str, ...] = (
    "interval", "timeout", "retries", "byte_order", "max_gap", "max_registers", "request",
    "pattern",
)

BRIDGE = obj("sensegate bridge config (MQTT to InfluxDB)", {
    "mqtt": obj("the broker the gateways publish to", {
        "host": Field("str", "broker host name or address", required=True),
        "port": Field("int", "broker port", minimum=1, maximum=65535,
                      default_note="1883, or 8883 when tls is set"),
        "client_id": Field("str", "fixed client id, so the broker keeps the session",
                           default="sensegate-bridge"),
        "username": Field("str", "user name"),
        "password": Field("str", "password (use ${VAR})", secret=True),
        "tls": _TLS,
        "subscribe": Field("str", "topic filter of the data messages",
                           default="sensegate/+/+/data"),
        "shared_group": Field("str", "MQTT shared subscription group: bridges in one group "
                              "share the load", pattern=r"[^#+/\s]+",
                              pattern_hint="no '#', '+', '/' or spaces", noun="group name"),
        "qos": Field("int", "0, 1 or 2", default=1, minimum=0, maximum=2),
        "keepalive": Field("duration", "MQTT keepalive", default=30.0, positive=True),
        "session_expiry": Field("duration", "how long the broker keeps the queue while the "
                                "bridge is away", default=7 * 24 * 3600.0, positive=True),
        "receive_maximum": Field("int", "unacknowledged messages the broker may send at once "
                                 "(MQTT v5)", default=10000, minimum=1, maximum=65535),
    }, required=True),
    "influxdb": obj("where readings are written", {
        "url": Field("str", "e.g. http://127.0.0.1:8086", required=True,
                     pattern=r"https?://\S+", pattern_hint="write http://HOST:PORT",
                     noun="url"),
        "api": Field("enum", "v2 (InfluxDB 2.x, 3.x, 1.8+) | v1 (/write, InfluxDB 1.x)",
                     default="v2", choices=("v1", "v2"), noun="an InfluxDB API"),
        "org": Field("str", "organisation (v2)"),
        "bucket": Field("str", "bucket (v2)"),
        "token": Field("str", "API token (v2; use ${VAR})", secret=True),
        "database": Field("str", "database (v1)"),
        "retention_policy": Field("str", "retention policy (v1)"),
        "username": Field("str", "user name (v1)"),
        "password": Field("str", "password (v1; use ${VAR})", secret=True),
        "create_database": Field("bool", "create the database when InfluxDB says it is missing "
                                 "(v1; needs a user with ALL PRIVILEGES)", default=True),
        "batch_size": Field("int", "points per write", default=5000, minimum=1,
                            maximum=1_000_000),
        "flush_interval": Field("duration", "longest wait before a partial batch is written",
                                default=1.0, positive=True),
        "timeout": Field("duration", "HTTP timeout of one write", default=10.0, positive=True),
    }, required=True),
    "state_dir": Field("str", "dead letters and bridge state live here",
                       default="/var/lib/sensegate-bridge"),
    "metrics": obj(_METRICS.description, {
        "listen": Field("listen", "HOST:PORT to listen on", default="127.0.0.1:9109"),
    }),
})


# --- validation ---------------------------------------------------------------------------


class Section:
    """A validated mapping: converted values (defaults applied) plus where each came from."""

    __slots__ = ("node", "path", "values")

    def __init__(self, node: Node, path: str, values: dict[str, Any]) -> None:
        self.node = node
        self.path = path
        self.values = values

    def get(self, key: str, default: Any = None) -> Any:
        value = self.values.get(key, default)
        return default if value is INVALID else value

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def given(self, key: str) -> bool:
        """Whether the YAML wrote this key (whatever its value)."""
        return key in self.node.value

    def ok(self, key: str) -> bool:
        """Whether the key holds a valid value (given or defaulted)."""
        value = self.values.get(key, INVALID)
        return value is not INVALID and value is not None

    def at(self, key: str) -> Node:
        """The node to point at for ``key``: its value, else the mapping itself."""
        return self.node.get(key) or self.node

    def key_at(self, key: str) -> Node:
        return self.node.key_node(key) or self.node

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key


def _did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    if not close:
        lowered = {str(o).lower(): str(o) for o in options}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f"; did you mean '{close[0]}'?" if close else ""


_KIND_NOUN = {
    "str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
    "duration": "a duration", "size": "a size", "listen": "a HOST:PORT address",
    "port": "a port", "regex": "a regular expression", "enum": "a value",
    "escaped": "a string", "number": "a number",
    "object": "a mapping", "list": "a list", "map": "a mapping",
}


def _type_issue(node: Node, path: str, f: Field) -> ConfigIssue:
    noun = _KIND_NOUN[f.kind]
    if node.kind == SCALAR:
        return node.issue(path, f"{describe(node, f.secret)} is not {noun}")
    return node.issue(path, f"expected {noun}, got {describe(node)}")


def _range(value: float, node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> bool:
    what = describe(node, f.secret)
    if f.positive and value <= 0:
        issues.append(node.issue(path, f"{what} must be more than 0"))
        return False
    lo, hi = f.minimum, f.maximum
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if lo is not None and hi is not None:
            issues.append(node.issue(path, f"{what} is out of range {lo:g}..{hi:g}"))
        elif lo is not None:
            issues.append(node.issue(path, f"{what} must be at least {lo:g}"))
        else:
            issues.append(node.issue(path, f"{what} must be at most {hi:g}"))
        return False
    return True


def _scalar_text(node: Node) -> str | None:
    """A string field's value: the source text of any scalar (so '017' stays '017')."""
    value = node.value
    if isinstance(value, str):
        return value
    if value is None or node.text is None:
        return None
    return node.text


def _check_str(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    text = _scalar_text(node) if node.kind == SCALAR else None
    if text is None:
        issues.append(_type_issue(node, path, f))
        return INVALID
    if f.pattern is not None and not re.fullmatch(f.pattern, text):
        hint = f"; {f.pattern_hint}" if f.pattern_hint else ""
        noun = f.noun or path.rsplit(".", 1)[-1]
        issues.append(node.issue(path, f"{describe(node, f.secret)} is not a valid {noun}{hint}"))
        return INVALID
    return text


def _check_int(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    value = node.value
    if node.kind != SCALAR or isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and node.kind == SCALAR:
            value = int(value)
        else:
            issues.append(_type_issue(node, path, f))
            return INVALID
    return value if _range(value, node, path, f, issues) else INVALID


def _check_float(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    value = node.value
    if node.kind != SCALAR or isinstance(value, bool) or not isinstance(value, int | float):
        issues.append(_type_issue(node, path, f))
        return INVALID
    if not math.isfinite(value):
        issues.append(node.issue(path, f"{describe(node)} is not a finite number"))
        return INVALID
    return float(value) if _range(value, node, path, f, issues) else INVALID


def _check_number(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    """A finite number kept as written: ``32767`` stays an int (exact for 64-bit values)."""
    value = node.value
    if node.kind != SCALAR or isinstance(value, bool) or not isinstance(value, int | float):
        issues.append(_type_issue(node, path, f))
        return INVALID
    if isinstance(value, float) and not math.isfinite(value):
        issues.append(node.issue(path, f"{describe(node)} is not a finite number"))
        return INVALID
    return value


def _check_bool(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    if node.kind != SCALAR or not isinstance(node.value, bool):
        issues.append(_type_issue(node, path, f))
        return INVALID
    return node.value


def _parse_scalar(node: Node, path: str, f: Field, issues: list[ConfigIssue],
                  parse: Callable[[Any], Any], hint: str) -> Any:
    """`parse(value)` of a scalar, or INVALID with an issue saying what to write instead."""
    if node.kind != SCALAR:
        issues.append(_type_issue(node, path, f))
        return INVALID
    try:
        if node.value is None:
            raise ValueError
        return parse(node.value)
    except ValueError:
        issues.append(node.issue(path, f"{describe(node)} {hint}"))
        return INVALID


def _check_duration(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    seconds = _parse_scalar(node, path, f, issues, parse_duration,
                            "is not a duration; write e.g. 500ms, 10s, 5m, 1h")
    if seconds is INVALID:
        return INVALID
    return seconds if _range(seconds, node, path, f, issues) else INVALID


def _check_size(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    size = _parse_scalar(node, path, f, issues, parse_size,
                         "is not a size; write e.g. 512KiB, 512MiB, 1GiB")
    if size is INVALID:
        return INVALID
    if f.minimum is not None and size < f.minimum:
        issues.append(node.issue(
            path, f"{describe(node)} must be at least {format_size(int(f.minimum))}"))
        return INVALID
    return size


def _check_enum(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    value = node.value
    if node.kind == SCALAR and value in f.choices:
        return value
    text = _scalar_text(node) if node.kind == SCALAR else None
    if text is not None:
        alias = f.aliases.get(text.lower())
        if alias is not None:
            return alias
        if text.upper() in f.choices and f.aliases:
            return text.upper()  # lenient case for the aliased enums (byte order, parity)
    if text is None and node.kind != SCALAR:
        issues.append(_type_issue(node, path, f))
        return INVALID
    hint = _did_you_mean(text or "", [*f.choices, *f.aliases])
    if not hint:
        hint = "; expected one of " + ", ".join(str(c) for c in f.choices)
    issues.append(node.issue(path, f"{describe(node)} is not {f.noun or 'allowed'}{hint}"))
    return INVALID


def parse_listen(value: Any) -> tuple[str, int] | None:
    """``"HOST:PORT"``, ``":PORT"`` (all interfaces) or a bare port (loopback) -> (host, port)."""
    host, port_text = "127.0.0.1", None
    if isinstance(value, int) and not isinstance(value, bool):
        port_text = str(value)
    elif isinstance(value, str):
        host, sep, port_text = value.rpartition(":")
        if not sep:
            host, port_text = "127.0.0.1", value
        host = host.strip("[]") or "0.0.0.0"
    if port_text is None or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return (host, int(port_text))


def _check_listen(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    listen = parse_listen(node.value)
    if listen is None:
        issues.append(node.issue(path, f"{describe(node)} is not a HOST:PORT address"))
        return INVALID
    return listen


def _check_port(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    value = node.value
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 < value < 65536:
            return value
        issues.append(node.issue(path, f"{describe(node)} is out of range 1..65535"))
        return INVALID
    if isinstance(value, str) and value:
        return value
    issues.append(_type_issue(node, path, f))
    return INVALID


def _check_regex(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    if node.kind != SCALAR or not isinstance(node.value, str):
        issues.append(_type_issue(node, path, f))
        return INVALID
    try:
        re.compile(node.value)
    except re.error as exc:
        issues.append(node.issue(path, f"{describe(node)} is not a valid regular expression: "
                                       f"{exc.msg} at position {exc.pos}"))
        return INVALID
    return node.value


_ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\"}
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|[rnt\\]|x[0-9A-Fa-f]?|.?)", re.DOTALL)


def unescape(text: str) -> bytes:
    """``R\\r\\n`` -> ``b"R\\r\\n"``: C-style escapes (``\\r \\n \\t \\xHH \\\\``) become the
    bytes they name, everything else is UTF-8. Raises ``ValueError`` naming the first bad
    escape and its position."""
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(text):
        out += text[pos:match.start()].encode("utf-8")
        code = match.group(1)
        if len(code) == 3 and code[0] == "x":
            out.append(int(code[1:], 16))
        elif code in _ESCAPES:
            out += _ESCAPES[code]
        else:
            raise ValueError(f"unknown escape '\\{code}' at position {match.start()}")
        pos = match.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


def _check_escaped(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    text = _check_str(node, path, f, issues)
    if text is INVALID:
        return INVALID
    try:
        return unescape(text)
    except ValueError as exc:
        issues.append(node.issue(path, f"{describe(node)} has an {exc}; use \\r, \\n, \\t, "
                                       "\\xHH or \\\\"))
        return INVALID


def _check_map(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    if node.kind != MAPPING:
        issues.append(_type_issue(node, path, f))
        return INVALID
    out: dict[str, str] = {}
    for key, (_, vnode) in node.value.items():
        text = _scalar_text(vnode) if vnode.kind == SCALAR else None
        if text is None:
            issues.append(vnode.issue(f"{path}.{key}", f"expected a string, got "
                                                       f"{describe(vnode)}"))
            continue
        out[key] = text
    return out


def _check_list(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    if node.kind != SEQUENCE:
        issues.append(_type_issue(node, path, f))
        return INVALID
    item = f.items or Field("str")
    return [validate(child, item, f"{path}[{i}]", issues) for i, child in enumerate(node.value)]


def _check_object(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    if node.kind != MAPPING:
        issues.append(_type_issue(node, path, f))
        return INVALID
    fields = f.fields or {}
    values: dict[str, Any] = {}
    pairs = node.value
    for key, (key_node, value_node) in pairs.items():
        child = fields.get(key)
        sub = f"{path}.{key}" if path else key
        if child is None:
            issues.append(key_node.issue(sub, f"unknown key '{key}'{_did_you_mean(key, fields)}"))
            continue
        if value_node.bad:
            values[key] = INVALID
        elif value_node.kind == SCALAR and value_node.value is None:
            if child.required:
                issues.append(value_node.issue(sub, f"'{key}' needs a value"))
                values[key] = INVALID
        else:
            values[key] = validate(value_node, child, sub, issues)
    for key, child in fields.items():
        if key in values:
            continue
        if child.required and key not in pairs:
            issues.append(node.issue(path, f"missing required key '{key}'"))
            values[key] = INVALID
        elif child.default is not NO_DEFAULT:
            values[key] = _default(child, node, f"{path}.{key}" if path else key)
    return Section(node, path, values)


def _default(f: Field, node: Node, path: str) -> Any:
    """A fresh default value; an absent object gets a Section of its fields' defaults."""
    if f.kind == "object":
        return Section(node, path, {k: _default(c, node, f"{path}.{k}")
                                    for k, c in (f.fields or {}).items()
                                    if c.default is not NO_DEFAULT})
    default = f.default
    if f.kind == "listen":
        return parse_listen(default)
    if isinstance(default, list | dict):
        return type(default)(default)
    return default


_CHECKERS = {
    "str": _check_str, "int": _check_int, "float": _check_float, "bool": _check_bool,
    "number": _check_number,
    "duration": _check_duration, "size": _check_size, "enum": _check_enum,
    "listen": _check_listen, "port": _check_port, "regex": _check_regex, "map": _check_map,
    "escaped": _check_escaped,
    "list": _check_list, "object": _check_object,
}


def validate(node: Node, f: Field, path: str, issues: list[ConfigIssue]) -> Any:
    """Check ``node`` against ``f``; return the converted value, or INVALID after an issue.

    Objects become `Section`s with defaults applied; lists keep one entry per item.
    """
    if node.bad:
        return INVALID
    return _CHECKERS[f.kind](node, path, f, issues)


# --- JSON Schema --------------------------------------------------------------------------

_ENV_REF = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*\}"}


def _json_default(f: Field) -> Any:
    if f.kind == "duration":
        return format_duration(f.default)
    if f.kind == "size":
        return format_size(f.default)
    return f.default


def json_schema(f: Field) -> dict[str, Any]:
    """The JSON Schema (draft-07) of one field; scalars also accept a ``${VAR}`` reference."""
    doc: dict[str, Any]
    if f.kind == "object":
        fields = f.fields or {}
        doc = {"type": "object",
               "properties": {k: json_schema(c) for k, c in fields.items()},
               "additionalProperties": False}
        required = [k for k, c in fields.items() if c.required]
        if required:
            doc["required"] = required
    elif f.kind == "list":
        doc = {"type": "array", "items": json_schema(f.items or Field("str"))}
    elif f.kind == "map":
        doc = {"type": "object",
               "additionalProperties": {"type": ["string", "number", "boolean"]}}
    elif f.kind == "enum":
        spellings = [*f.aliases, *(a.upper() for a in f.aliases)]
        doc = {"enum": list(dict.fromkeys([*f.choices, *spellings]))}
    elif f.kind in ("str", "regex", "escaped"):
        doc = {"type": "string"}
        if f.pattern:
            doc["pattern"] = f"^(?:{f.pattern})$"
    elif f.kind in ("int", "float", "number"):
        doc = {"type": "integer" if f.kind == "int" else "number"}
        if f.minimum is not None:
            doc["minimum"] = f.minimum
        if f.maximum is not None:
            doc["maximum"] = f.maximum
        if f.positive:
            doc["exclusiveMinimum"] = 0
    elif f.kind == "bool":
        doc = {"type": "boolean"}
    elif f.kind == "duration":
        doc = {"type": ["string", "number"], "pattern": DURATION_PATTERN}
    elif f.kind == "size":
        doc = {"type": ["string", "integer"], "pattern": SIZE_PATTERN}
    elif f.kind == "listen":
        doc = {"type": ["string", "integer"]}
    elif f.kind == "port":
        doc = {"type": ["integer", "string"]}
    else:  # pragma: no cover - every kind is handled above
        raise AssertionError(f.kind)
    if f.kind not in ("object", "list", "map", "str", "regex", "escaped"):
        doc = {"anyOf": [doc, _ENV_REF]}
    description = f.description
    if f.default_note:
        description = f"{description} (default: {f.default_note})"
    if f.drivers:
        description = f"{description} [{', '.join(f.drivers)}]"
    if description:
        doc["description"] = description
    if f.default is not NO_DEFAULT and f.kind not in ("object",):
        doc["default"] = _json_default(f)
    doc.update(f.json_extra)
    return doc


def _document(f: Field, title: str) -> dict[str, Any]:
    doc = json_schema(f)
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": title, **doc}


def gateway_json_schema() -> dict[str, Any]:
    """The JSON Schema of the gateway config, for editors (VS Code YAML)."""
    return _document(GATEWAY, "sensegate gateway config")


def bridge_json_schema() -> dict[str, Any]:
    """The JSON Schema of the bridge config."""
    return _document(BRIDGE, "sensegate bridge config")


def profile_json_schema() -> dict[str, Any]:
    """The JSON Schema of a device profile (config/profiles/*.yaml)."""
    return _document(PROFILE, "sensegate device profile")
