"""Config loading: YAML file -> validated, defaulted `gateway.core.model` objects.

`gateway.config.schema` checks each field on its own (type, range, enum, pattern) and applies the
plain defaults, all from the declarations on the model dataclasses; `build` makes a dataclass
from a validated section the same way for every class. This module adds what spans several
fields: per-driver requirements (the declarations' ``applies_to`` / ``required_for``),
computed defaults (MQTT port and client id, TCP port 502, measurement), unique names,
serial ports used twice, Modbus units used twice on a bus, register ranges, serial-line
patterns against their points, and device profiles. Every issue of the file (and of the
profiles it uses) is collected and raised at once as a `ConfigError`.
"""

from __future__ import annotations

import codecs
import dataclasses
import gc
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar, get_origin
from urllib.parse import urlsplit

from gateway.config import schema
from gateway.config.profiles import Profile, ProfileLoader
from gateway.config.schema import Section
from gateway.config.source import Node, describe
from gateway.core import secrets
from gateway.core.declare import Field, declared, strip_none
from gateway.core.errors import ConfigError, ConfigIssue
from gateway.core.modbus import modicon_address
from gateway.core.model import (
    BIT_TABLES,
    DEFAULT_MODBUS_TCP_PORT,
    INTEGER_RANGES,
    INTEGER_TYPES,
    MAX_READ_REGISTERS,
    MODBUS_DRIVERS,
    SIXTY_FOUR_BIT_TYPES,
    TCP_DRIVERS,
    TYPE_REGISTERS,
    WORD_ORDERS_64,
    BridgeConfig,
    BridgeMqttConfig,
    BusConfig,
    CommandsConfig,
    DeviceConfig,
    FleetConfig,
    GatewayConfig,
    MqttConfig,
    PointConfig,
    Secret,
    SerialSettings,
)

# Names a tag may not have, and why; a point may not be named `time` either.
RESERVED_TAGS: dict[str, str] = {
    "gateway": "sensegate adds it to every reading",
    "device": "sensegate adds it to every reading",
    "time": "InfluxDB keeps the timestamp under 'time' and drops a tag of that name",
}
ADDRESS_SPACE = 65536


def load_gateway_config(path: str, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Load, validate and default the gateway config at ``path``.

    Raises `ConfigError` carrying every issue of the file and of the profiles it uses.
    """
    return _load(path, schema.GATEWAY, env,
                 lambda data, env, issues: _GatewayBuilder(path, env, issues).build(data))


def load_bridge_config(path: str, env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Load, validate and default the bridge config at ``path`` (SPEC §4)."""
    return _load(path, schema.BRIDGE, env,
                 lambda data, _env, issues: _build_bridge(path, data, issues))


_Config = TypeVar("_Config")


def _load(path: str, kind: Field, env: Mapping[str, str] | None,
          build: Callable[[Any, Mapping[str, str], list[ConfigIssue]], _Config | None],
          ) -> _Config:
    """Read `path` against the schema `kind` and build the config, or raise every issue."""
    env = os.environ if env is None else env
    issues: list[ConfigIssue] = []
    with _gc_paused():
        data = _read(path, kind, env, issues)
        config = None if data is None else build(data, env, issues)
    _raise_if(issues)
    assert config is not None
    return config


def check_profile(path: str, env: Mapping[str, str] | None = None) -> list[ConfigIssue]:
    """Every issue of the profile file at ``path`` on its own (no device uses it)."""
    env = os.environ if env is None else env
    issues: list[ConfigIssue] = []
    profile = ProfileLoader([], env).load_file(path, issues)
    if profile is not None:
        driver = "serial-line" if profile.is_serial else "modbus-tcp"
        points = [p for p in profile.points if isinstance(p, Section)]
        built = [_point(p, driver, profile.section.get("byte_order"),
                        profile.section.get("max_registers", MAX_READ_REGISTERS), issues)
                 for p in points]
        _unique_points(points, issues)
        if profile.is_serial and profile.section.ok("pattern"):
            _pattern_matches_points(profile.section, profile.section["pattern"],
                                    [p for p in built if p is not None], points, issues)
    return _dedupe(issues)


# --- helpers ------------------------------------------------------------------------------


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while loading: the node tree is acyclic, and the collector's
    repeated passes over ~100k fresh objects otherwise cost more than the parse itself."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _dedupe(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    # Order-preserving (not a set): issues at one position keep the order they were found in.
    return sorted(dict.fromkeys(issues), key=ConfigIssue.sort_key)


def _raise_if(issues: list[ConfigIssue]) -> None:
    """Raise every issue, each message scrubbed of any registered secret (all forms)."""
    if issues:
        raise ConfigError([dataclasses.replace(i, message=secrets.scrub(i.message))
                           for i in _dedupe(issues)])


def _read(
    path: str, root: Field, env: Mapping[str, str], issues: list[ConfigIssue],
) -> Section | None:
    from gateway.config import source as yamlsrc

    node = yamlsrc.load(path, env, issues)
    if node is None:
        if not issues:
            issues.append(ConfigIssue(path, 1, 1, "", "the file is empty"))
        return None
    data = schema.validate(node, root, "", issues)
    return data if isinstance(data, Section) else None


# A device named so would have the command topic {prefix}/{id}/config/set of SPEC §6, the
# topic of signed remote configuration (SPEC §7, gateway.edge.fleet).
RESERVED_DEVICE = "config"


def _where(first: Node, here: Node) -> str:
    """'line 12', or 'FILE:12' when the first one is in another file (a profile)."""
    if first.file != here.file:
        return f"{first.file}:{first.line}"
    return f"line {first.line}"


def _check_tags(section: Section, issues: list[ConfigIssue]) -> dict[str, str]:
    tags: dict[str, str] = section.get("tags") or {}
    tags_node = section.node.get("tags")
    for name, why in RESERVED_TAGS.items():
        if name in tags and tags_node is not None:
            key = tags_node.key_node(name) or tags_node
            issues.append(key.issue(f"{section.sub('tags')}.{name}",
                                    f"tag '{name}' is reserved: {why}"))
    return tags


_Built = TypeVar("_Built")


def build(cls: type[_Built], section: Section, **given: Any) -> _Built:
    """The dataclass ``cls`` from a validated section, by its declarations.

    Each declared key takes its validated value (defaults applied): a nested dataclass is
    built from its sub-section, an ``inline`` one from this same section, a key of a
    ``section`` from that sub-mapping, a secret wrapped in `Secret`, a list made a tuple.
    A key that is absent, invalid or ``computed`` keeps the dataclass default; ``given``
    holds what the caller computed (and wins).
    """
    kwargs: dict[str, Any] = {}
    for name, sub_section, how, nested in _plan(cls):
        if name in given:
            continue
        source = section.get(sub_section) if sub_section else section
        if not isinstance(source, Section):
            continue
        if how == "inline":
            kwargs[name] = build(nested, source)
            continue
        value = source.get(name)
        if value is None:
            continue
        if how == "object":
            if not isinstance(value, Section):
                continue
            value = build(nested, value)
        elif how == "secret":
            value = Secret(value)
        elif how == "tuple" and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    kwargs.update(given)
    return cls(**kwargs)


_PLANS: dict[type, tuple[tuple[str, str, str, Any], ...]] = {}


def _plan(cls: type) -> tuple[tuple[str, str, str, Any], ...]:
    """How `build` fills each declared YAML key of ``cls``: (attribute, YAML sub-mapping,
    how: inline | object | secret | tuple | value, the nested dataclass)."""
    known = _PLANS.get(cls)
    if known is not None:
        return known
    plan = []
    for name, decl, annotation in declared(cls):
        if not decl.yaml:
            continue
        kind = strip_none(annotation)
        how = ("inline" if decl.inline else "object" if dataclasses.is_dataclass(kind)
               else "secret" if kind is Secret else "tuple" if get_origin(kind) is tuple
               else "value")
        plan.append((name, decl.section, how, kind))
    _PLANS[cls] = tuple(plan)
    return _PLANS[cls]


def _selector_rules(section: Section, f: Field, issues: list[ConfigIssue]) -> None:
    """Keys that do not apply to, or are required by, the value of the object's selector
    (a device's ``driver``, the InfluxDB ``api``), from the declarations."""
    value = section.get(f.selector)
    if value is None:
        return
    fields = f.fields or {}
    for key, child in fields.items():
        if value in child.required_for and not section.given(key):
            issues.append(section.node.issue(section.path, f"missing required key '{key}' "
                                                           f"for {f.selector} '{value}'"))
    for key, child in fields.items():
        if child.applies_to and value not in child.applies_to and section.given(key):
            issues.append(section.key_at(key).issue(
                section.sub(key), f"'{key}' does not apply to {f.selector} '{value}'"))


def _mqtt_port(m: Section) -> int:
    port: int | None = m.get("port")
    return port or (8883 if m.get("tls") is not None else 1883)


def _unique_points(points: list[Section], issues: list[ConfigIssue]) -> None:
    seen: dict[str, Section] = {}
    for point in points:
        name = point.get("name")
        if name is None:
            continue
        first = seen.get(name)
        if first is not None:
            here = point.at("name")
            where = _where(first.at("name"), here)
            issues.append(here.issue(point.sub("name"),
                                     f"duplicate point name '{name}' (first at {where})"))
        else:
            seen[name] = point


# --- points -------------------------------------------------------------------------------

def _point(
    p: Section, driver: str, device_order: str | None, max_registers: int,
    issues: list[ConfigIssue], addressing: str = "protocol",
) -> PointConfig | None:
    """Check one point for ``driver``; the PointConfig, or None when it cannot be built."""
    start = len(issues)
    if p.get("name") == "time":
        issues.append(p.at("name").issue(p.sub("name"), "point name 'time' is reserved: "
                                                        "InfluxDB keeps the timestamp under "
                                                        "'time' and drops a field of that "
                                                        "name; rename the point"))
    if driver not in MODBUS_DRIVERS:
        for key, f in (schema.POINT.fields or {}).items():
            if f.applies_to and driver not in f.applies_to and p.given(key):
                issues.append(p.key_at(key).issue(
                    p.sub(key), f"'{key}' does not apply to {driver} points"))
        dtype = p.get("type") if p.given("type") else "float64"
        return _make_point(p, dtype, None, None, "ABCD", None, None, issues, start)
    converted = _addressed(p, addressing, issues)
    if converted is None:
        return None
    p = converted
    dtype = _modbus_type(p, issues)
    _modbus_keys(p, dtype, issues)
    if len(issues) == start and dtype is not None:
        _register_range(p, dtype, max_registers, issues)
    order = p.get("byte_order") or _narrow(device_order, dtype) or "ABCD"
    if (p.given("byte_order") and order in WORD_ORDERS_64 and dtype is not None
            and dtype not in SIXTY_FOUR_BIT_TYPES):
        issues.append(p.at("byte_order").issue(
            p.sub("byte_order"), f"byte order {order} is a 64-bit word order; a '{dtype}' "
                                 f"point takes ABCD, CDAB, BADC or DCBA"))
    return _make_point(p, dtype, p.get("table"), p.get("address"), order, p.get("bit"),
                       p.get("length"), issues, start)


def _addressed(p: Section, addressing: str, issues: list[ConfigIssue]) -> Section | None:
    """The point with its ``address`` (and, for Modicon numbers, ``table``) converted to the
    protocol address the device's ``addressing`` says it is written in; None after an issue."""
    address = p.get("address")
    if not isinstance(address, int) or isinstance(address, bool):
        return p
    here = p.at("address")
    if addressing == "protocol":
        if address > ADDRESS_SPACE - 1:
            hint = (f"; {address} looks like a Modicon register number: set the device's "
                    f"addressing: modicon" if address >= 100_001 else "")
            issues.append(here.issue(p.sub("address"), f"{address} is out of range "
                                                       f"0..{ADDRESS_SPACE - 1}{hint}"))
            return None
        return p
    if addressing == "one-based":
        if not 1 <= address <= ADDRESS_SPACE:
            issues.append(here.issue(p.sub("address"), f"{address} is not a register number: "
                                                       f"with addressing one-based they run "
                                                       f"from 1 (address 0) to {ADDRESS_SPACE}"))
            return None
        return Section(p.node, p.path, {**p.values, "address": address - 1})
    try:
        table, converted = modicon_address(address)
    except ValueError as exc:
        issues.append(here.issue(p.sub("address"), f"{exc} (addressing modicon)"))
        return None
    given = p.get("table")
    if given is not None and given != table:
        issues.append(here.issue(
            p.sub("address"), f"{address} is {'an' if table == 'input' else 'a'} {table} "
                              f"register number in modicon addressing ({table} address "
                              f"{converted}), but the point says table "
                              f"{given}: drop 'table', or use addressing protocol or one-based "
                              f"for a plain number"))
        return None
    return Section(p.node, p.path, {**p.values, "address": converted, "table": table})


def _narrow(device_order: str | None, dtype: str | None) -> str | None:
    """A device's default order for one point: a 64-bit word order, for a narrower point,
    is the order inside each 32-bit half (``CDABGHEF`` -> ``CDAB``, ``EFGHABCD`` -> ``ABCD``)."""
    if device_order in WORD_ORDERS_64 and dtype not in SIXTY_FOUR_BIT_TYPES:
        return device_order[:4].translate(str.maketrans("EFGH", "ABCD"))
    return device_order


def _modbus_type(p: Section, issues: list[ConfigIssue]) -> str | None:
    """A Modbus point's table and address are there; its type, defaulted by its table."""
    for key in ("table", "address"):
        if not p.given(key) and p.get(key) is None:
            issues.append(p.node.issue(p.path, f"missing required key '{key}' for a modbus "
                                               "point"))
    table = p.get("table")
    dtype: str | None = p.get("type")
    if dtype is None and not p.given("type") and table is not None:
        dtype = "bool" if table in BIT_TABLES else "uint16"
    if table in BIT_TABLES and dtype is not None and dtype != "bool":
        issues.append(p.at("type").issue(p.sub("type"), f"'{dtype}' is not possible for a "
                                                        f"{table} point: {table}s are bool"))
        return None
    return dtype


def _modbus_keys(p: Section, dtype: str | None, issues: list[ConfigIssue]) -> None:
    """``bit``, ``length`` and ``byte_order`` only where the table and type allow them."""
    table = p.get("table")
    if p.given("bit") and p.get("bit") is not None:
        if table in BIT_TABLES:
            issues.append(p.key_at("bit").issue(p.sub("bit"), f"'bit' does not apply to "
                                                              f"{table} points"))
        elif dtype is not None and dtype != "bool":
            issues.append(p.key_at("bit").issue(p.sub("bit"), f"'bit' needs type bool, not "
                                                              f"'{dtype}'"))
    if dtype == "string" and not p.given("length"):
        issues.append(p.node.issue(p.path, "missing required key 'length' for a string point"))
    if p.given("length") and dtype is not None and dtype != "string":
        issues.append(p.key_at("length").issue(p.sub("length"), f"'length' applies only to "
                                                                f"string points, not "
                                                                f"'{dtype}'"))
    if p.given("encoding") and dtype is not None and dtype != "string":
        issues.append(p.key_at("encoding").issue(p.sub("encoding"), f"'encoding' applies only "
                                                                    f"to string points, not "
                                                                    f"'{dtype}'"))
    elif p.given("encoding") and isinstance(p.get("encoding"), str):
        try:
            codecs.lookup(p.get("encoding"))
        except LookupError:
            issues.append(p.at("encoding").issue(
                p.sub("encoding"), f"unknown text encoding {describe(p.at('encoding'))}: "
                                   f"use utf-8, ascii, latin-1, cp1252 or another Python "
                                   f"codec name"))
    if table in BIT_TABLES and p.given("byte_order"):
        issues.append(p.key_at("byte_order").issue(
            p.sub("byte_order"), f"'byte_order' does not apply to {table} points"))


def _register_range(p: Section, dtype: str, max_registers: int,
                    issues: list[ConfigIssue]) -> None:
    """The point fits in one request and in the 65,536 addresses."""
    table, address = p.get("table"), p.get("address")
    if table is None:
        return
    count = 1 if table in BIT_TABLES else (
        p.get("length") or 1 if dtype == "string" else TYPE_REGISTERS[dtype])
    if table not in BIT_TABLES and count > max_registers:
        key = "length" if dtype == "string" else "type"
        issues.append(p.at(key).issue(p.sub(key), f"a point of {count} registers does not fit "
                                                  f"in one request (max_registers "
                                                  f"{max_registers})"))
    if address is not None and address + count > ADDRESS_SPACE:
        issues.append(p.at("address").issue(
            p.sub("address"), f"the point's {count} registers from {address} run past the "
                              f"last address 65535"))



def _invalid_values(
    p: Section, dtype: str | None, issues: list[ConfigIssue]
) -> tuple[int | float, ...]:
    """A point's ``invalid_values``, each a raw value its type can hold."""
    values = p.get("invalid_values") or []
    if not isinstance(values, list) or not values or dtype is None:
        return ()
    if dtype in ("bool", "string") or p.given("bit"):
        issues.append(p.key_at("invalid_values").issue(
            p.sub("invalid_values"), f"'invalid_values' does not apply to {dtype} points"))
        return ()
    limits = INTEGER_RANGES.get(dtype)
    if limits is None:  # float16, float32, float64
        return tuple(float(v) for v in values if v is not schema.INVALID)
    nodes = p.at("invalid_values").value
    out: list[int | float] = []
    for i, value in enumerate(values):
        if value is schema.INVALID:
            continue  # reported by the schema
        node = nodes[i] if isinstance(nodes, list) and i < len(nodes) else p.at("invalid_values")
        path = f"{p.sub('invalid_values')}[{i}]"
        if isinstance(value, float) and not value.is_integer():
            issues.append(node.issue(path, f"{describe(node)} is not an integer, and a "
                                           f"'{dtype}' point reads only integers"))
        elif not limits[0] <= value <= limits[1]:
            issues.append(node.issue(path, f"{describe(node)} is out of range "
                                           f"{limits[0]}..{limits[1]} of '{dtype}': the "
                                           f"point can never read it"))
        else:
            out.append(int(value))
    return tuple(out)


def _make_point(
    p: Section, dtype: str | None, table: str | None, address: int | None, order: str,
    bit: int | None, length: int | None, issues: list[ConfigIssue], start: int,
) -> PointConfig | None:
    name = p.get("name")
    invalid = _invalid_values(p, dtype, issues)
    if p.given("output") and dtype in ("bool", "string"):
        issues.append(p.key_at("output").issue(p.sub("output"), f"'output' applies only to "
                                                                f"numeric points, not "
                                                                f"'{dtype}'"))
    if len(issues) != start or name is None or dtype is None:
        return None
    point = build(PointConfig, p, name=name, type=dtype, table=table, address=address,
                  byte_order=order, bit=bit, length=length, invalid_values=invalid)
    _writable(p, point, issues)
    return point if len(issues) == start else None


def _writable(p: Section, point: PointConfig, issues: list[ConfigIssue]) -> None:
    """``writable`` only on holding and coil points; ``min``/``max``/``allowed``/
    ``max_rate`` only on writable points, each a value the point can encode."""
    from gateway.core.encode import (
        Unwritable,
        encodable_range,
        encode,
        is_numeric,
        unwritable_type,
    )

    extras = [k for k in ("min", "max", "allowed", "max_rate") if p.given(k)]
    if not point.writable:
        for key in extras:
            issues.append(p.key_at(key).issue(p.sub(key), f"'{key}' applies only to a "
                                                          "point with 'writable: true'"))
        return
    if point.table not in ("holding", "coil"):
        issues.append(p.at("writable").issue(
            p.sub("writable"), f"{'an' if point.table == 'input' else 'a'} {point.table} "
                               "point cannot be written (Modbus writes only holding "
                               "registers and coils)"))
        return
    why = unwritable_type(point)
    if why is not None:
        issues.append(p.at("writable").issue(p.sub("writable"), f"cannot be written: {why}"))
        return
    if point.scale == 0:
        issues.append(p.at("scale").issue(p.sub("scale"), "a writable point needs a scale "
                                                          "other than 0"))
        return
    span = encodable_range(point)
    for key in ("min", "max"):
        value = getattr(point, key)
        if value is None:
            continue
        if span is None or not is_numeric(point):
            issues.append(p.key_at(key).issue(p.sub(key), f"'{key}' applies only to numeric "
                                                          f"points, not {point.type}"))
        elif not span[0] <= value <= span[1]:
            issues.append(p.at(key).issue(
                p.sub(key), f"{key} {value:g} is outside {span[0]:g}..{span[1]:g}, what "
                            f"{point.type} with scale {point.scale:g} and offset "
                            f"{point.offset:g} can hold"))
    if point.min is not None and point.max is not None and point.min > point.max:
        issues.append(p.at("min").issue(p.sub("min"), f"min {point.min:g} is more than max "
                                                      f"{point.max:g}"))
    nodes = p.at("allowed").value if p.given("allowed") else None
    for i, value in enumerate(point.allowed):
        node = nodes[i] if isinstance(nodes, list) and i < len(nodes) else p.at("allowed")
        try:
            encode(point, value)
        except Unwritable as exc:
            issues.append(node.issue(f"{p.sub('allowed')}[{i}]", f"{value:g} cannot be "
                                                                 f"written: {exc}"))


def _pattern_matches_points(
    where: Section, pattern: str, built: list[PointConfig], points: list[Section],
    issues: list[ConfigIssue],
) -> None:
    """A serial-line pattern's named groups and the points must name the same things."""
    groups = set(re.compile(pattern).groupindex)
    node = where.at("pattern")
    names = [p.get("name") for p in points if p.get("name") is not None]
    for name in sorted(set(groups) - set(names)):
        issues.append(node.issue(where.sub("pattern"), f"group '{name}' of the pattern is "
                                                       "not a point; add a point or rename "
                                                       "the group"))
    for p in points:
        name = p.get("name")
        if name is not None and name not in groups:
            issues.append(p.at("name").issue(
                p.sub("name"), f"point '{name}' is not a named group of the pattern; add "
                               f"(?P<{name}>...) to it"))


# --- gateway ------------------------------------------------------------------------------


class _GatewayBuilder:
    def __init__(self, path: str, env: Mapping[str, str], issues: list[ConfigIssue]) -> None:
        self.path = path
        self.env = env
        self.issues = issues
        self.serial_ports: dict[str, tuple[str, Node]] = {}  # port -> (owner, node)

    def build(self, data: Section) -> GatewayConfig | None:
        gw = data.get("gateway")
        gw_id = gw.get("id") if isinstance(gw, Section) else None
        tags = _check_tags(gw, self.issues) if isinstance(gw, Section) else {}
        m = data.get("mqtt")
        buses = self._buses(data.get("buses") or [])
        profile_dirs = gw.get("profile_dirs") or [] if isinstance(gw, Section) else []
        base = os.path.dirname(self.path)
        dirs = [d if os.path.isabs(d) else os.path.join(base, d) for d in profile_dirs]
        loader = ProfileLoader([*dirs, os.path.join(base, "profiles")], self.env)
        devices = self._devices(data.get("devices") or [], buses, loader)
        if isinstance(data.get("http"), Section) and isinstance(data.get("metrics"), Section):
            here = data.node.key_node("metrics") or data.at("metrics")
            self.issues.append(here.issue(
                "metrics", "'metrics' is the old name of 'http': give one of them, not both"))
        commands = self._commands(data.get("commands"), base)
        fleet = self._fleet(data.get("fleet"), base)
        if self.issues or not isinstance(gw, Section) or not isinstance(m, Section):
            return None
        mqtt = build(MqttConfig, m, port=_mqtt_port(m),
                     client_id=m.get("client_id") or f"sensegate-{gw_id}")
        extra = {"commands": commands} if commands is not None else {}
        return build(GatewayConfig, data, mqtt=mqtt, devices=tuple(devices),
                     buses=tuple(buses.values()), tags=tags, source=self.path, fleet=fleet,
                     **extra)

    def _commands(self, c: Any, base: str) -> CommandsConfig | None:
        """``commands:`` with its public key read and parsed (inline, or a file next to the
        config), as for ``fleet:``."""
        if not isinstance(c, Section):
            return None
        text = c.get("public_key")
        if text is None:
            return build(CommandsConfig, c)
        key = self._public_key(c, text, base)
        return build(CommandsConfig, c, key=key) if key is not None else None

    def _fleet(self, f: Any, base: str) -> FleetConfig:
        if not isinstance(f, Section):
            return FleetConfig()
        text = f.get("public_key")
        key = self._public_key(f, text, base) if text is not None else None
        return build(FleetConfig, f, key=key)

    def _public_key(self, f: Section, text: str, base: str) -> bytes | None:
        """The key inline (base64) or from a file (a relative path: to the config's dir)."""
        from gateway.core.signing import parse_public_key

        try:
            return parse_public_key(text)
        except ValueError as inline_error:
            path = text if os.path.isabs(text) else os.path.join(base, text)
            looks_like_path = text.startswith((".", "/", "~")) or text.endswith((".pub", ".pem"))
            if not os.path.exists(path) and not looks_like_path:
                reason = str(inline_error)
            else:
                try:
                    with open(path, encoding="utf-8") as fh:
                        return parse_public_key(fh.read())
                except OSError as exc:
                    reason = f"cannot read {path}: {(exc.strerror or str(exc)).lower()}"
                except (ValueError, UnicodeDecodeError) as exc:
                    reason = f"{path}: {exc}"
        self.issues.append(f.at("public_key").issue(f.sub("public_key"), reason))
        return None

    def _claim_port(self, port: str, owner: str, node: Node, path: str) -> None:
        first = self.serial_ports.get(port)
        if first is not None:
            self.issues.append(node.issue(path, f"serial port '{port}' is already used by "
                                                f"{first[0]} ({_where(first[1], node)})"))
        else:
            self.serial_ports[port] = (owner, node)

    def _buses(self, items: list[Any]) -> dict[str, BusConfig]:
        buses: dict[str, BusConfig] = {}
        nodes: dict[str, Node] = {}
        for b in items:
            if not isinstance(b, Section):
                continue
            name = b.get("name")
            if name is not None and name in nodes:
                here = b.at("name")
                self.issues.append(here.issue(b.sub("name"), f"duplicate bus name '{name}' "
                                                             f"(first at line "
                                                             f"{nodes[name].line})"))
                continue
            port = b.get("port")
            if port is not None:
                self._claim_port(port, f"bus '{name}'", b.at("port"), b.sub("port"))
            if name is None or port is None:
                continue
            nodes[name] = b.at("name")
            buses[name] = build(BusConfig, b)
        return buses

    def _devices(
        self, items: list[Any], buses: dict[str, BusConfig], loader: ProfileLoader,
    ) -> list[DeviceConfig]:
        devices: list[DeviceConfig] = []
        names: dict[str, Node] = {}
        units: dict[tuple[str, int], tuple[str, Node]] = {}
        for d in items:
            if not isinstance(d, Section):
                continue
            name = d.get("name")
            if name == RESERVED_DEVICE:
                self.issues.append(d.at("name").issue(
                    d.sub("name"), f"device name '{name}' is reserved: "
                                   f"{{topic_prefix}}/{{gateway.id}}/{name}/set is the gateway's "
                                   f"remote configuration topic, so commands to this device "
                                   f"could not be told apart from it; rename the device"))
            if name is not None:
                if name in names:
                    here = d.at("name")
                    self.issues.append(here.issue(d.sub("name"), f"duplicate device name "
                                                                 f"'{name}' (first at line "
                                                                 f"{names[name].line})"))
                else:
                    names[name] = d.at("name")
            device = self._device(d, buses, loader)
            if device is None:
                continue
            if device.driver == "modbus-rtu" and device.bus is not None:
                key = (device.bus, device.unit)
                first = units.get(key)
                if first is not None:
                    here = d.at("unit")
                    self.issues.append(here.issue(
                        d.sub("unit"), f"unit {device.unit} on bus '{device.bus}' is already "
                                       f"used by device '{first[0]}' ({_where(first[1], here)})"))
                else:
                    units[key] = (device.name, d.at("unit"))
            devices.append(device)
        return devices

    def _device(
        self, d: Section, buses: dict[str, BusConfig], loader: ProfileLoader,
    ) -> DeviceConfig | None:
        issues = self.issues
        start = len(issues)
        driver = d.get("driver")
        if driver is None:
            return None  # already reported; per-driver checks would only add noise
        name = d.get("name")
        tags = _check_tags(d, issues)
        _selector_rules(d, schema.DEVICE, issues)
        profile = self._profile(d, driver, loader)

        def setting(key: str) -> Any:
            """The device's value, else its profile's, else the default."""
            if d.given(key) or profile is None or not profile.section.given(key):
                return d.get(key)
            return profile.section.get(key)

        port, serial = self._port(d, driver, name)
        if driver == "modbus-rtu":
            self._check_bus(d, buses)
        unit = d.get("unit")
        if driver in ("modbus-rtu", "modbus-rtu-over-tcp") and unit is not None and not (
                1 <= unit <= 247):
            issues.append(d.at("unit").issue(d.sub("unit"), f"{describe(d.at('unit'))} is out "
                                                            f"of range 1..247 for {driver}"))
        codes = setting("retry_exceptions")
        if isinstance(codes, list) and any(isinstance(c, int) and not 1 <= c <= 255
                                           for c in codes):
            where = d if d.given("retry_exceptions") or profile is None else profile.section
            issues.append(where.at("retry_exceptions").issue(
                where.sub("retry_exceptions"), "Modbus exception codes run from 1 to 255 "
                                               "(e.g. 6: server device busy)"))
        pattern = setting("pattern")
        # A profile that failed to load has been reported; its pattern is unknown.
        if (driver == "serial-line" and pattern is None and not d.given("pattern")
                and not d.given("profile")):
            issues.append(d.node.issue(d.path, "missing required key 'pattern' for driver "
                                               "'serial-line'"))

        point_sections = _merged_points(d, profile, issues)
        if not point_sections and not d.given("points") and len(issues) == start:
            issues.append(d.node.issue(d.path, "no points: list them under 'points' or name a "
                                               "'profile'"))
        max_registers = setting("max_registers")
        points = [_point(p, driver, setting("byte_order"), max_registers, issues,
                         setting("addressing"))
                  for p in point_sections]
        if driver == "serial-line" and pattern is not None:
            where = d if d.given("pattern") or profile is None else profile.section
            _pattern_matches_points(where, pattern, [p for p in points if p is not None],
                                    point_sections, issues)
        if len(issues) == start:
            _reporting(d, profile, setting, point_sections, issues)
            _scale_factors(points, point_sections, setting("interval"), issues)

        if len(issues) != start or name is None:
            return None
        return build(
            DeviceConfig, d, points=tuple(p for p in points if p is not None),
            **{key: tuple(v) if isinstance(v := setting(key), list) else v
               for key in schema.PROFILE_DEFAULTS},
            measurement=d.get("measurement") or name, tags=tags, port=port, serial=serial,
        )

    def _profile(self, d: Section, driver: str, loader: ProfileLoader) -> Profile | None:
        """The device's profile: device-level defaults and points it may override or extend."""
        if not d.ok("profile"):
            return None
        profile = loader.load(d["profile"], d.at("profile"), d.sub("profile"), self.issues)
        if profile is not None and profile.is_serial != (driver == "serial-line"):
            kind = "serial-line" if profile.is_serial else "modbus"
            self.issues.append(d.at("profile").issue(
                d.sub("profile"), f"profile '{d['profile']}' is a {kind} profile; it cannot "
                                  f"be used by a {driver} device"))
            return None
        return profile

    def _port(
        self, d: Section, driver: str, name: str | None,
    ) -> tuple[int | None, SerialSettings | None]:
        """A device's ``port``: the TCP port of the TCP drivers, the serial-line's device."""
        port = d.get("port")
        if driver in TCP_DRIVERS:
            if isinstance(port, str):
                self.issues.append(d.at("port").issue(
                    d.sub("port"), f"{describe(d.at('port'))} is not a TCP port"))
            return (port if isinstance(port, int) else DEFAULT_MODBUS_TCP_PORT), None
        if driver != "serial-line" or port is None:
            return None, None
        if isinstance(port, int):
            self.issues.append(d.at("port").issue(
                d.sub("port"), f"{describe(d.at('port'))} is not a serial device path"))
            return None, None
        self._claim_port(port, f"device '{name}'", d.at("port"), d.sub("port"))
        return None, build(SerialSettings, d)

    def _check_bus(self, d: Section, buses: dict[str, BusConfig]) -> None:
        bus = d.get("bus")
        if bus is None or bus in buses:
            return
        here = d.at("bus")
        hint = schema.did_you_mean(bus, buses) or (
            "; add it under buses" if not buses else
            "; buses are " + ", ".join(f"'{b}'" for b in buses))
        self.issues.append(here.issue(d.sub("bus"), f"bus {describe(here)} is not "
                                                    f"defined{hint}"))


def _duration(seconds: float) -> str:
    from gateway.core.units import format_duration

    return format_duration(seconds)


def _scale_factors(points: list[PointConfig | None], sections: list[Section],
                   interval: float | None, issues: list[ConfigIssue]) -> None:
    """Each ``scale_factor`` names another integer point of the device, read in the same
    scans, that has no scale factor itself; the point it scales is a number, not written."""
    by_name = {p.name: p for p in points if p is not None}
    for point, p in zip(points, sections, strict=True):
        name = point.scale_factor if point is not None else None
        if point is None or name is None:
            continue
        factor = by_name.get(name)
        why = None
        if point.type in ("bool", "string"):
            why = f"a scale factor applies only to numeric points, not '{point.type}'"
        elif point.writable:
            why = "a point with a scale factor cannot be writable"
        elif factor is None:
            known = ", ".join(sorted(n for n in by_name if n != point.name)[:8])
            why = f"'{name}' is not a point of this device (points: {known})"
        elif factor is point:
            why = "a point cannot be its own scale factor"
        elif factor.type not in INTEGER_TYPES:
            why = f"the scale factor point '{name}' is '{factor.type}'; it must be an integer type"
        elif factor.scale_factor is not None:
            why = f"the scale factor point '{name}' has a scale factor itself"
        elif factor.scale != 1 or factor.offset != 0:
            why = (f"the scale factor point '{name}' has a scale or offset; it must hold the "
                   f"power of ten as the device sends it")
        elif (factor.interval or interval) != (point.interval or interval):
            why = (f"the scale factor point '{name}' is read every "
                   f"{_duration(factor.interval or interval or 0)}, this point every "
                   f"{_duration(point.interval or interval or 0)}: give both the same "
                   f"interval, so that they are read in the same scan")
        if why is not None:
            issues.append(p.at("scale_factor").issue(p.sub("scale_factor"), why))


def _reporting(d: Section, profile: Profile | None, setting: Callable[[str], Any],
               points: list[Section], issues: list[ConfigIssue]) -> None:
    """Report by exception and edge aggregation (SPEC §8): the settings that span keys.

    A point's ``interval``, ``deadband``, ``deadband_pct`` and ``heartbeat`` default to the
    device's (or its profile's); each message points at the key to change.
    """
    def where(key: str) -> Section:
        """The section that gave the device-level ``key``: the device, else its profile."""
        if d.given(key) or profile is None or not profile.section.given(key):
            return d
        return profile.section

    interval = setting("interval")
    publish = d.get("publish_interval")
    aggregate = d.get("aggregate") or []
    if publish is not None and not aggregate:
        issues.append(d.key_at("publish_interval").issue(
            d.sub("publish_interval"), "publish_interval needs 'aggregate': the fields to "
                                       "publish per window, e.g. [min, max, mean, last, count]"))
    if aggregate and publish is None:
        issues.append(d.key_at("aggregate").issue(
            d.sub("aggregate"), "'aggregate' needs publish_interval: the length of a window"))
    if len(set(aggregate)) != len(aggregate):
        issues.append(d.at("aggregate").issue(d.sub("aggregate"),
                                              "an aggregate is listed twice"))
    if publish is not None:
        names = {p.get("name") for p in points}
        for p in points:
            taken = sorted(f"{p.get('name')}_{a}" for a in set(aggregate)
                           if f"{p.get('name')}_{a}" in names)
            if taken:
                issues.append(p.at("name").issue(
                    p.sub("name"), f"the aggregate field '{taken[0]}' of point "
                                   f"'{p.get('name')}' is also a point's name; rename one"))
    if setting("deadband") is not None and setting("deadband_pct") is not None:
        owner = where("deadband_pct")
        issues.append(owner.key_at("deadband_pct").issue(
            owner.sub("deadband_pct"), "give 'deadband' or 'deadband_pct', not both"))
    device_beat_reported = False
    for p in points:
        p_interval = p.get("interval") or interval
        dtype = p.get("type") or ("bool" if p.get("table") in BIT_TABLES
                                  else "uint16" if p.get("table") else "float64")
        numeric = dtype not in ("bool", "string") and not p.given("bit")
        for key in ("deadband", "deadband_pct"):
            if p.given(key) and p.get(key) is not None and not numeric:
                issues.append(p.key_at(key).issue(
                    p.sub(key), f"'{key}' applies to numeric points, not {dtype}; a {dtype} "
                                f"point is published on every change"))
        if p.given("deadband") and p.given("deadband_pct"):
            issues.append(p.key_at("deadband_pct").issue(
                p.sub("deadband_pct"), "give 'deadband' or 'deadband_pct', not both"))
        if publish is not None:
            # a profile's deadbands do not apply to a device that aggregates: not an error
            for key in ("deadband", "deadband_pct", "heartbeat"):
                if p.given(key) and any(p is own for own in d.get("points") or ()):
                    issues.append(p.key_at(key).issue(
                        p.sub(key), f"'{key}' does not apply with publish_interval: the "
                                    f"device publishes once per window"))
            if p_interval is not None and p_interval > publish:
                key, owner = ("interval", p) if p.given("interval") else (
                    "publish_interval", d)
                issues.append(owner.at(key).issue(
                    owner.sub(key), f"publish_interval {_duration(publish)} is shorter than "
                                    f"the interval {_duration(p_interval)} of point "
                                    f"'{p.get('name')}': a window would hold no reading"))
            continue
        beat = p.get("heartbeat") if p.given("heartbeat") else setting("heartbeat")
        if (beat is not None and p_interval is not None and beat < p_interval
                and (p.given("heartbeat") or not device_beat_reported)):
            device_beat_reported = device_beat_reported or not p.given("heartbeat")
            owner = p if p.given("heartbeat") else where("heartbeat")
            issues.append(owner.at("heartbeat").issue(
                owner.sub("heartbeat"), f"heartbeat {_duration(beat)} is shorter than the "
                                        f"interval {_duration(p_interval)} of point "
                                        f"'{p.get('name')}': every reading would be "
                                        f"published; lengthen it or remove it"))
    if publish is not None:
        for key in ("deadband", "deadband_pct", "heartbeat"):
            if d.given(key):
                issues.append(d.key_at(key).issue(
                    d.sub(key), f"'{key}' does not apply with publish_interval: the device "
                                f"publishes once per window"))


def _merged_points(d: Section, profile: Profile | None, issues: list[ConfigIssue],
                   ) -> list[Section]:
    """The profile's points, replaced by or extended with the device's own (by name)."""
    own = [p for p in (d.get("points") or []) if isinstance(p, Section)]
    _unique_points(own, issues)
    merged: dict[str, Section] = {}
    anonymous: list[Section] = []
    for p in profile.points if profile is not None else ():
        if not isinstance(p, Section):
            continue
        if p.get("name") is None:
            anonymous.append(p)
        else:
            merged.setdefault(p["name"], p)
    for p in own:
        if p.get("name") is None:
            anonymous.append(p)
        else:
            merged[p["name"]] = p
    return [*merged.values(), *anonymous]


# --- bridge -------------------------------------------------------------------------------


def _build_bridge(path: str, data: Section, issues: list[ConfigIssue]) -> BridgeConfig | None:
    m = data.get("mqtt")
    i = data.get("influxdb")
    if isinstance(i, Section):
        _selector_rules(i, schema.BRIDGE.fields["influxdb"], issues)  # type: ignore[index]
    if data.given("mqtt") == data.given("amqp"):
        issues.append(data.node.issue(data.path or "mqtt", "write one of 'mqtt' (a single "
                                      "broker) and 'amqp' (a RabbitMQ cluster's queue)"))
    if issues or not isinstance(i, Section):
        return None
    mqtt = build(BridgeMqttConfig, m, port=_mqtt_port(m)) if isinstance(m, Section) else None
    config = build(BridgeConfig, data, mqtt=mqtt, source=path)
    influx = config.influxdb
    # InfluxDB v1 sends user:password as HTTP Basic; a URL may carry credentials too.
    secrets.register_basic(influx.username, influx.password.reveal() if influx.password
                           else None)
    url = urlsplit(influx.url)
    secrets.register(url.password)
    if url.password is not None:
        secrets.register_basic(url.username, url.password)
    return config
