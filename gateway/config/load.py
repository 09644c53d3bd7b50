"""Config loading: YAML file -> validated, defaulted `gateway.core.model` objects.

`gateway.config.schema` checks each field on its own (type, range, enum, pattern) and applies the
plain defaults; this module adds what spans several fields: per-driver requirements,
computed defaults (MQTT port and client id, TCP port 502, measurement), unique names,
serial ports used twice, Modbus units used twice on a bus, register ranges, serial-line
patterns against their points, and device profiles. Every issue of the file (and of the
profiles it uses) is collected and raised at once as a `ConfigError`.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from gateway.config import schema
from gateway.config.profiles import Profile, ProfileLoader
from gateway.config.schema import Section
from gateway.config.source import Node, describe
from gateway.core.errors import ConfigError, ConfigIssue
from gateway.core.model import (
    BIT_TABLES,
    MAX_READ_REGISTERS,
    MODBUS_DRIVERS,
    TYPE_REGISTERS,
    BridgeConfig,
    BridgeMqttConfig,
    BusConfig,
    DeviceConfig,
    FleetConfig,
    GatewayConfig,
    InfluxConfig,
    MetricsConfig,
    MqttConfig,
    OutboxConfig,
    PointConfig,
    Secret,
    SerialSettings,
    TlsConfig,
)
from gateway.core.signing import parse_public_key

RESERVED_TAGS = ("gateway", "device")
TCP_DRIVERS = ("modbus-tcp", "modbus-rtu-over-tcp")
DEFAULT_MODBUS_TCP_PORT = 502
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


def _load(path: str, kind: schema.Field, env: Mapping[str, str] | None,
          build: Callable[[Any, Mapping[str, str], list[ConfigIssue]], _Config]) -> _Config:
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
    if issues:
        raise ConfigError(_dedupe(issues))


def _read(
    path: str, root: schema.Field, env: Mapping[str, str], issues: list[ConfigIssue],
) -> Section | None:
    from gateway.config import source as yamlsrc

    node = yamlsrc.load(path, env, issues)
    if node is None:
        if not issues:
            issues.append(ConfigIssue(path, 1, 1, "", "the file is empty"))
        return None
    data = schema.validate(node, root, "", issues)
    return data if isinstance(data, Section) else None


def _where(first: Node, here: Node) -> str:
    """'line 12', or 'FILE:12' when the first one is in another file (a profile)."""
    if first.file != here.file:
        return f"{first.file}:{first.line}"
    return f"line {first.line}"


def _check_tags(section: Section, issues: list[ConfigIssue]) -> dict[str, str]:
    tags: dict[str, str] = section.get("tags") or {}
    tags_node = section.node.get("tags")
    for name in RESERVED_TAGS:
        if name in tags and tags_node is not None:
            key = tags_node.key_node(name) or tags_node
            issues.append(key.issue(f"{section.sub('tags')}.{name}",
                                    f"tag '{name}' is reserved: sensegate adds it to every "
                                    "reading"))
    return tags


def _secret(section: Section, key: str) -> Secret | None:
    value = section.get(key)
    return Secret(value) if value is not None else None


def _tls(section: Section) -> TlsConfig | None:
    tls = section.get("tls")
    if not isinstance(tls, Section):
        return None
    return TlsConfig(ca_file=tls.get("ca_file"), cert_file=tls.get("cert_file"),
                     key_file=tls.get("key_file"), insecure=tls.get("insecure", False))


def _metrics(section: Section) -> MetricsConfig | None:
    metrics = section.get("metrics")
    if not isinstance(metrics, Section) or not metrics.ok("listen"):
        return None
    host, port = metrics["listen"]
    return MetricsConfig(host=host, port=port)


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

_MODBUS_ONLY_POINT_KEYS = ("table", "address", "byte_order", "bit", "length")


def _point(
    p: Section, driver: str, device_order: str | None, max_registers: int,
    issues: list[ConfigIssue],
) -> PointConfig | None:
    """Check one point for ``driver``; the PointConfig, or None when it cannot be built."""
    start = len(issues)
    modbus = driver in MODBUS_DRIVERS
    table = p.get("table")
    address = p.get("address")
    dtype = p.get("type")
    bit = p.get("bit")
    length = p.get("length")
    if not modbus:
        for key in _MODBUS_ONLY_POINT_KEYS:
            if p.given(key):
                issues.append(p.key_at(key).issue(
                    p.sub(key), f"'{key}' does not apply to {driver} points"))
        if dtype is None and not p.given("type"):
            dtype = "float64"
        return _make_point(p, dtype, None, None, "ABCD", None, None, issues, start)

    for key in ("table", "address"):
        if not p.given(key):
            issues.append(p.node.issue(p.path, f"missing required key '{key}' for a modbus "
                                               "point"))
    if dtype is None and not p.given("type") and table is not None:
        dtype = "bool" if table in BIT_TABLES else "uint16"
    if table in BIT_TABLES and dtype is not None and dtype != "bool":
        issues.append(p.at("type").issue(p.sub("type"), f"'{dtype}' is not possible for a "
                                                        f"{table} point: {table}s are bool"))
        dtype = None
    if p.given("bit") and bit is not None:
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
    if table in BIT_TABLES and p.given("byte_order"):
        issues.append(p.key_at("byte_order").issue(
            p.sub("byte_order"), f"'byte_order' does not apply to {table} points"))
    order = p.get("byte_order") or device_order or "ABCD"
    if len(issues) == start and table is not None and dtype is not None:
        count = 1 if table in BIT_TABLES else (
            length or 1 if dtype == "string" else TYPE_REGISTERS[dtype])
        if table not in BIT_TABLES and count > max_registers:
            issues.append(p.at("length" if dtype == "string" else "type").issue(
                p.sub("length" if dtype == "string" else "type"),
                f"a point of {count} registers does not fit in one request "
                f"(max_registers {max_registers})"))
        if address is not None and address + count > ADDRESS_SPACE:
            issues.append(p.at("address").issue(
                p.sub("address"), f"the point's {count} registers from {address} run past the "
                                  f"last address 65535"))
    return _make_point(p, dtype, table, address, order, bit, length, issues, start)


_INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-(1 << 15), (1 << 15) - 1), "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1), "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1), "uint64": (0, (1 << 64) - 1),
}


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
    limits = _INTEGER_RANGES.get(dtype)
    if limits is None:  # float32, float64
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
    if len(issues) != start or name is None or dtype is None:
        return None
    return PointConfig(
        name=name, type=dtype, table=table, address=address,  # type: ignore[arg-type]
        byte_order=order, scale=p.get("scale", 1.0),  # type: ignore[arg-type]
        offset=p.get("offset", 0.0), unit=p.get("unit"), bit=bit, length=length,
        invalid_values=invalid,
    )


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
        mqtt = self._mqtt(data.get("mqtt"), gw_id)
        outbox = data.get("outbox")
        buses = self._buses(data.get("buses") or [])
        profile_dirs = gw.get("profile_dirs") or [] if isinstance(gw, Section) else []
        base = os.path.dirname(self.path)
        dirs = [d if os.path.isabs(d) else os.path.join(base, d) for d in profile_dirs]
        loader = ProfileLoader([*dirs, os.path.join(base, "profiles")], self.env)
        devices = self._devices(data.get("devices") or [], buses, loader)
        fleet = self._fleet(data.get("fleet"), base)
        if self.issues or not isinstance(gw, Section) or mqtt is None:
            return None
        return GatewayConfig(
            id=gw_id,  # type: ignore[arg-type]
            mqtt=mqtt,
            devices=tuple(devices),
            buses=tuple(buses.values()),
            tags=tags,
            state_dir=gw.get("state_dir"),
            outbox=OutboxConfig(max_bytes=outbox.get("max_bytes"),
                                max_message_bytes=outbox.get("max_message_bytes"),
                                commit_interval=outbox.get("commit_interval")),
            metrics=_metrics(data),
            source=self.path,
            status_interval=gw.get("status_interval"),
            fleet=fleet,
        )

    def _fleet(self, f: Any, base: str) -> FleetConfig:
        if not isinstance(f, Section):
            return FleetConfig()
        key = None
        text = f.get("public_key")
        if text is not None:
            key = self._public_key(f, text, base)
        return FleetConfig(public_key=key, probation=f.get("probation"),
                           max_age=f.get("max_age"), keep=f.get("keep"))

    def _public_key(self, f: Section, text: str, base: str) -> bytes | None:
        """The key inline (base64) or from a file (relative paths: to the config's dir)."""
        node = f.at("public_key")
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
        self.issues.append(node.issue(f.sub("public_key"), reason))
        return None

    def _mqtt(self, m: Any, gw_id: str | None) -> MqttConfig | None:
        if not isinstance(m, Section):
            return None
        tls = _tls(m)
        port = m.get("port") or (8883 if tls is not None else 1883)
        return MqttConfig(
            host=m.get("host"), port=port,
            client_id=m.get("client_id") or f"sensegate-{gw_id}",
            username=m.get("username"), password=_secret(m, "password"), tls=tls,
            qos=m.get("qos"), topic_prefix=m.get("topic_prefix"),
            format=m.get("format"), keepalive=m.get("keepalive"),
        )

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
            buses[name] = BusConfig(
                name=name,
                serial=SerialSettings(port=port, baudrate=b.get("baudrate"),
                                      parity=b.get("parity"), stopbits=b.get("stopbits"),
                                      bytesize=b.get("bytesize")),
                frame_gap=b.get("frame_gap"), turnaround=b.get("turnaround"),
            )
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
        for key, f in (schema.DEVICE.fields or {}).items():
            if f.drivers and driver not in f.drivers and d.given(key):
                issues.append(d.key_at(key).issue(
                    d.sub(key), f"'{key}' does not apply to driver '{driver}'"))

        # Profile: device-level defaults and points the device may override or extend.
        profile: Profile | None = None
        if d.ok("profile"):
            profile = loader.load(d["profile"], d.at("profile"), d.sub("profile"), issues)
            if profile is not None and profile.is_serial != (driver == "serial-line"):
                kind = "serial-line" if profile.is_serial else "modbus"
                issues.append(d.at("profile").issue(
                    d.sub("profile"), f"profile '{d['profile']}' is a {kind} profile; it "
                                      f"cannot be used by a {driver} device"))
                profile = None

        def setting(key: str, default: Any = None) -> Any:
            if d.given(key) or profile is None or not profile.section.given(key):
                return d.get(key, default)
            return profile.section.get(key, default)

        # Driver requirements.
        host = d.get("host")
        port = d.get("port")
        bus = d.get("bus")
        unit = d.get("unit")
        serial: SerialSettings | None = None
        if driver in TCP_DRIVERS:
            if not d.given("host"):
                issues.append(d.node.issue(d.path, f"missing required key 'host' for driver "
                                                   f"'{driver}'"))
            if isinstance(port, str):
                issues.append(d.at("port").issue(d.sub("port"), f"{describe(d.at('port'))} "
                                                                "is not a TCP port"))
            port = port if isinstance(port, int) else DEFAULT_MODBUS_TCP_PORT
        if driver == "modbus-rtu":
            if not d.given("bus"):
                issues.append(d.node.issue(d.path, "missing required key 'bus' for driver "
                                                   "'modbus-rtu'"))
            elif bus is not None and bus not in buses:
                here = d.at("bus")
                hint = schema._did_you_mean(bus, buses) or (
                    "; add it under buses" if not buses else
                    "; buses are " + ", ".join(f"'{b}'" for b in buses))
                issues.append(here.issue(d.sub("bus"), f"bus {describe(here)} is not "
                                                       f"defined{hint}"))
        if driver in ("modbus-rtu", "modbus-rtu-over-tcp") and unit is not None and not (
                1 <= unit <= 247):
            issues.append(d.at("unit").issue(d.sub("unit"), f"{describe(d.at('unit'))} is out "
                                                            f"of range 1..247 for {driver}"))
        pattern = setting("pattern")
        if driver == "serial-line":
            if not d.given("port"):
                issues.append(d.node.issue(d.path, "missing required key 'port' for driver "
                                                   "'serial-line'"))
            elif isinstance(port, int):
                issues.append(d.at("port").issue(d.sub("port"), f"{describe(d.at('port'))} is "
                                                                "not a serial device path"))
            elif port is not None:
                self._claim_port(port, f"device '{name}'", d.at("port"), d.sub("port"))
                serial = SerialSettings(port=port, baudrate=d.get("baudrate"),
                                        parity=d.get("parity"), stopbits=d.get("stopbits"),
                                        bytesize=d.get("bytesize"))
            # A profile that failed to load has been reported; its pattern is unknown.
            if pattern is None and not d.given("pattern") and not d.given("profile"):
                issues.append(d.node.issue(d.path, "missing required key 'pattern' for driver "
                                                   "'serial-line'"))

        # Points: the profile's, replaced by or extended with the device's own.
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
        point_sections = [*merged.values(), *anonymous]
        if not point_sections and not d.given("points") and len(issues) == start:
            issues.append(d.node.issue(d.path, "no points: list them under 'points' or name a "
                                               "'profile'"))
        max_registers = setting("max_registers", MAX_READ_REGISTERS)
        order = setting("byte_order")
        points = [_point(p, driver, order, max_registers, issues) for p in point_sections]
        if driver == "serial-line" and pattern is not None:
            where = d if d.given("pattern") or profile is None else profile.section
            _pattern_matches_points(where, pattern, [p for p in points if p is not None],
                                    point_sections, issues)

        if len(issues) != start or name is None:
            return None
        request = setting("request")
        return DeviceConfig(
            name=name, driver=driver, points=tuple(p for p in points if p is not None),
            interval=setting("interval"), timeout=setting("timeout"),
            retries=setting("retries"),
            measurement=d.get("measurement") or name,
            tags=tags,
            unit=unit if unit is not None else 1,
            host=host, port=port if driver in TCP_DRIVERS else None,
            bus=bus, serial=serial,
            request=request,  # bytes: escapes read by the schema
            pattern=pattern,
            max_gap=setting("max_gap", 10), max_registers=max_registers,
            profile=d.get("profile"),
        )


# --- bridge -------------------------------------------------------------------------------


def _build_bridge(path: str, data: Section, issues: list[ConfigIssue]) -> BridgeConfig | None:
    m = data.get("mqtt")
    i = data.get("influxdb")
    if isinstance(i, Section):
        api = i.get("api")
        needed = ("org", "bucket") if api == "v2" else ("database",) if api == "v1" else ()
        for key in needed:
            if not i.given(key):
                issues.append(i.node.issue(i.path, f"missing required key '{key}' for "
                                                   f"api '{api}'"))
        other = ("database", "retention_policy", "create_database") if api == "v2" else (
            "org", "bucket", "token") if api == "v1" else ()
        for key in other:
            if i.given(key):
                issues.append(i.key_at(key).issue(i.sub(key), f"'{key}' does not apply to "
                                                              f"api '{api}'"))
    if issues or not isinstance(m, Section) or not isinstance(i, Section):
        return None
    tls = _tls(m)
    mqtt = BridgeMqttConfig(
        host=m.get("host"), port=m.get("port") or (8883 if tls is not None else 1883),
        client_id=m.get("client_id"), subscribe=m.get("subscribe"),
        shared_group=m.get("shared_group"), username=m.get("username"),
        password=_secret(m, "password"), tls=tls, qos=m.get("qos"),
        keepalive=m.get("keepalive"), session_expiry=m.get("session_expiry"),
        receive_maximum=m.get("receive_maximum"),
    )
    influx = InfluxConfig(
        url=i.get("url"), api=i.get("api"), org=i.get("org"), bucket=i.get("bucket"),
        token=_secret(i, "token"), database=i.get("database"),
        retention_policy=i.get("retention_policy"), username=i.get("username"),
        password=_secret(i, "password"), create_database=i.get("create_database"),
        batch_size=i.get("batch_size"),
        flush_interval=i.get("flush_interval"), timeout=i.get("timeout"),
    )
    return BridgeConfig(mqtt=mqtt, influxdb=influx, state_dir=data.get("state_dir"),
                        metrics=_metrics(data), source=path)
