"""Validation and JSON Schema of the config language.

The keys themselves are declared once, on the dataclasses of `gateway.core.model`
(`gateway.core.declare.setting`); `tree()` turns them into the `Field` roots below. This
module checks a YAML node tree against them (type, range, enum, pattern, defaults:
`validate`, used by `config.load` and `config.profiles`) and prints them as JSON Schema
(`sensegate schema`, `gateway_json_schema`, `bridge_json_schema`). Rules that span several
fields (duplicate names, register ranges, profiles) live in `gateway.config.load`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from gateway.config.source import MAPPING, SCALAR, SEQUENCE, Node, describe
from gateway.config.syntax import ENV_FILE, looks_like_env_file
from gateway.core import model, secrets
from gateway.core.declare import NO_DEFAULT, Field, tree
from gateway.core.errors import ConfigIssue
from gateway.core.units import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

INVALID: Any = object()  # a value that produced an issue; cross-field checks skip it
_ABSENT: Any = object()  # a key neither given nor defaulted


# --- the roots, derived from the declarations in gateway.core.model -----------------------

POINT = tree(model.PointConfig)
BUS = tree(model.BusConfig)
DEVICE = tree(model.DeviceConfig)
GATEWAY = tree(model.GatewayConfig)
BRIDGE = tree(model.BridgeConfig)

# Device-level settings a profile may provide; the device's own value wins.
PROFILE_DEFAULTS: tuple[str, ...] = (
    "interval", "timeout", "retries", "byte_order", "max_gap", "max_registers", "request",
    "pattern", "deadband", "deadband_pct", "heartbeat",
    "pause", "pause_after_connect", "one_request_per_point", "close_after_scan",
    "turnaround_delay", "retry_exceptions", "retry_wait", "addressing",
)

_DEVICE_FIELDS = DEVICE.fields or {}
PROFILE = Field("object", "a register map for one sensor model (<profile dir>/<name>.yaml)",
                fields={
    **(tree(model.ProfileInfo).fields or {}),
    **{key: _DEVICE_FIELDS[key] for key in PROFILE_DEFAULTS},
    "points": replace(_DEVICE_FIELDS["points"], description="the sensor's points",
                      required=True),
})


# --- validation ---------------------------------------------------------------------------


class Section:
    """A validated mapping: converted values (defaults applied) plus where each came from.

    ``values`` holds what the YAML gave (converted, or INVALID); a key it did not give reads
    as its declared default, made when asked for (a fresh copy of a list or mapping, a
    Section of an object's defaults), so 2,000 points do not each hold a dict of a dozen
    defaults through the whole load.
    """

    __slots__ = ("fields", "node", "path", "values")

    def __init__(self, node: Node, path: str, values: dict[str, Any],
                 fields: Mapping[str, Field] | None = None) -> None:
        self.node = node
        self.path = path
        self.values = values
        self.fields = fields  # the object's declarations, for the defaults

    def _value(self, key: str) -> Any:
        """The key's value, its default, or _ABSENT."""
        value = self.values.get(key, _ABSENT)
        if value is _ABSENT and self.fields is not None:
            child = self.fields.get(key)
            if child is not None and child.default is not NO_DEFAULT:
                return _default(child, self.node, self.sub(key))
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._value(key)
        return default if value is INVALID or value is _ABSENT else value

    def __getitem__(self, key: str) -> Any:
        value = self._value(key)
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def given(self, key: str) -> bool:
        """Whether the YAML wrote this key (whatever its value)."""
        return key in self.node.value

    def ok(self, key: str) -> bool:
        """Whether the key holds a valid value (given or defaulted)."""
        value = self._value(key)
        return value is not INVALID and value is not _ABSENT and value is not None

    def at(self, key: str) -> Node:
        """The node to point at for ``key``: its value, else the mapping itself."""
        return self.node.get(key) or self.node

    def key_at(self, key: str) -> Node:
        return self.node.key_node(key) or self.node

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key


def did_you_mean(word: str, options: Any) -> str:
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
    if f.secret:
        secrets.register(text)
    if len(text) > f.max_length:
        issues.append(node.issue(path, f"{_too_long(node, text, f)}"))
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


def _alias_key(text: str) -> str:
    """How an alias is looked up: case, '_' and spaces do not matter ('Word Swap')."""
    return re.sub(r"[\s_]+", "-", text.strip().lower())


def _check_enum(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    value = node.value
    if node.kind == SCALAR and value in f.choices:
        return value
    text = _scalar_text(node) if node.kind == SCALAR else None
    if text is not None:
        alias = f.aliases.get(_alias_key(text))
        if alias is not None:
            return alias
        if text.upper() in f.choices and f.aliases:
            return text.upper()  # lenient case for the aliased enums (byte order, parity)
    if text is None and node.kind != SCALAR:
        issues.append(_type_issue(node, path, f))
        return INVALID
    issues.append(node.issue(path, f"{describe(node)} is not {f.noun or 'allowed'}"
                                   f"{_enum_hint(text or '', f)}"))
    return INVALID


def _enum_hint(text: str, f: Field) -> str:
    """'; did you mean X?', by meaning when the field knows how (a byte order), else by
    spelling; then the choices, with what each means when the field says."""
    meant = f.suggest(text) if f.suggest is not None else None
    if meant is not None:
        name = f.choice_names.get(meant)
        hint = f"; did you mean '{meant}'{f' ({name})' if name else ''}?"
    else:
        hint = did_you_mean(text, [*f.choices, *f.aliases])
    if f.choice_names:
        legend = ", ".join(f"{c} {n}" for c, n in f.choice_names.items())
        return f"{hint}{' ' if hint else '; '}known: {legend}"
    return hint or "; expected one of " + ", ".join(str(c) for c in f.choices)


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
    if len(node.value) > f.max_length:
        issues.append(node.issue(path, _too_long(node, node.value, f)))
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
    if not _count_ok(node, path, f, issues):
        return INVALID
    out: dict[str, str] = {}
    for key, key_node in node.value.items():
        vnode = key_node.node
        text = _scalar_text(vnode) if vnode.kind == SCALAR else None
        if text is None:
            issues.append(vnode.issue(f"{path}.{key}", f"expected a string, got "
                                                       f"{describe(vnode)}"))
            continue
        if len(key) > f.max_length:
            issues.append(key_node.issue(path, _too_long(key_node, key, f)))
            continue
        if len(text) > f.max_length:
            issues.append(vnode.issue(f"{path}.{key}", _too_long(vnode, text, f)))
            continue
        out[key] = text
    return out


def _too_long(node: Node, text: str, f: Field) -> str:
    what = "the value" if node.env or f.secret else f"the value '{text[:20]}...'"
    return f"{what} has {len(text):,} characters; at most {f.max_length:,} are allowed"


def _count_ok(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> bool:
    count = len(node.value)
    if count <= f.max_items:
        return True
    issues.append(node.issue(path, f"{count:,} entries; at most {f.max_items:,} are allowed"))
    return False


def _check_list(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    if node.kind != SEQUENCE:
        issues.append(_type_issue(node, path, f))
        return INVALID
    if not _count_ok(node, path, f, issues):
        return INVALID
    item = f.items or Field("str")
    return [validate(child, item, f"{path}[{i}]", issues) for i, child in enumerate(node.value)]


def _not_a_mapping_file(node: Node) -> str:
    """Why a whole file is not a config, without quoting it: the file may be anything a
    wrong ``-c`` or a symlinked profile points at (an EnvironmentFile full of passwords)."""
    text = node.text if node.kind == SCALAR and isinstance(node.text, str) else ""
    if looks_like_env_file(text):
        return ENV_FILE
    held = "a list" if node.kind == SEQUENCE else "a single value"
    return (f"the file holds {held} where 'key: value' lines were expected; its content is "
            "not shown")


def _check_object(node: Node, path: str, f: Field, issues: list[ConfigIssue]) -> Any:
    if node.kind != MAPPING:
        if not path:
            issues.append(node.issue(path, _not_a_mapping_file(node)))
        else:
            issues.append(_type_issue(node, path, f))
        return INVALID
    fields = f.fields or {}
    values: dict[str, Any] = {}
    pairs = node.value
    for key, key_node in pairs.items():
        value_node = key_node.node
        child = fields.get(key)
        sub = f"{path}.{key}" if path else key
        if child is None:
            issues.append(key_node.issue(sub, f"unknown key '{key}'{did_you_mean(key, fields)}"))
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
        if child.required and key not in values and key not in pairs:
            issues.append(node.issue(path, f"missing required key '{key}'"))
            values[key] = INVALID
    return Section(node, path, values, fields)  # the other keys read as their defaults


def _default(f: Field, node: Node, path: str) -> Any:
    """A fresh default value; an absent object gets a Section of its fields' defaults."""
    if f.kind == "object":
        return Section(node, path, {}, f.fields or {})
    default = f.default
    if f.kind == "listen" and not isinstance(default, tuple):
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
    if f.kind == "listen" and isinstance(f.default, tuple):
        return f"{f.default[0]}:{f.default[1]}"
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
        rules = _selector_rules(f)
        if rules:
            doc["allOf"] = rules
    elif f.kind == "list":
        doc = {"type": "array", "items": json_schema(f.items or Field("str")),
               "maxItems": f.max_items}
    elif f.kind == "map":
        doc = {"type": "object", "maxProperties": f.max_items,
               "additionalProperties": {"type": ["string", "number", "boolean"],
                                        "maxLength": f.max_length}}
    elif f.kind == "enum":
        spellings = [*f.aliases, *(a.upper() for a in f.aliases)]
        doc = {"enum": list(dict.fromkeys([*f.choices, *spellings]))}
    elif f.kind in ("str", "regex", "escaped"):
        doc = {"type": "string", "maxLength": f.max_length}
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
    if f.applies_to:
        description = f"{description} [{', '.join(f.applies_to)}]"
    if description:
        doc["description"] = description
    if f.default is not NO_DEFAULT and f.kind not in ("object",):
        doc["default"] = _json_default(f)
    return doc


def _selector_rules(f: Field) -> list[dict[str, Any]]:
    """``if driver is X then KEY is required``, from the fields' ``required_for``."""
    fields = f.fields or {}
    selector = fields.get(f.selector)
    if selector is None:
        return []
    rules = []
    for value in selector.choices:
        needed = [k for k, c in fields.items() if value in c.required_for]
        if needed:
            rules.append({"if": {"properties": {f.selector: {"const": value}}},
                          "then": {"required": needed}})
    return rules


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
    """The JSON Schema of a device profile (gateway/config/sensor_profiles/*.yaml)."""
    return _document(PROFILE, "sensegate device profile")
