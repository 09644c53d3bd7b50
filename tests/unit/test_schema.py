"""`sensegate schema`: JSON Schema-shaped, and in step with what the loader accepts."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from gateway.commands import cli
from gateway.config import schema
from gateway.config.source import parse
from gateway.core.errors import ConfigIssue

_TYPES: dict[str, Any] = {
    "object": dict, "array": list, "string": str, "boolean": bool,
    "integer": int, "number": (int, float),
}


def _type_ok(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def conforms(value: Any, s: dict[str, Any]) -> list[str]:
    """A small validator for the JSON Schema subset `gateway.config.schema` emits."""
    errors: list[str] = []
    if "anyOf" in s and all(conforms(value, alt) for alt in s["anyOf"]):
        errors.append(f"{value!r} matches no alternative")
    if "const" in s and value != s["const"]:
        errors.append(f"{value!r} is not {s['const']!r}")
    if "enum" in s and value not in s["enum"]:
        errors.append(f"{value!r} not in enum")
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_type_ok(value, t) for t in types):
            return [f"{value!r} is not {types}"]
    if isinstance(value, str) and "pattern" in s and not re.search(s["pattern"], value):
        errors.append(f"{value!r} does not match {s['pattern']}")
    if isinstance(value, str) and len(value) > s.get("maxLength", len(value)):
        errors.append(f"{value!r} is longer than maxLength")
    if isinstance(value, list | dict) and len(value) > s.get("maxItems",
                                                             s.get("maxProperties", len(value))):
        errors.append("too many entries")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in s and value < s["minimum"]:
            errors.append(f"{value!r} < minimum")
        if "maximum" in s and value > s["maximum"]:
            errors.append(f"{value!r} > maximum")
        if "exclusiveMinimum" in s and value <= s["exclusiveMinimum"]:
            errors.append(f"{value!r} <= exclusiveMinimum")
    if isinstance(value, dict):
        props = s.get("properties", {})
        for key in s.get("required", []):
            if key not in value:
                errors.append(f"missing {key}")
        for key, item in value.items():
            if key in props:
                errors.extend(conforms(item, props[key]))
            elif s.get("additionalProperties") is False:
                errors.append(f"unknown key {key}")
            elif isinstance(s.get("additionalProperties"), dict):
                errors.extend(conforms(item, s["additionalProperties"]))
        for rule in s.get("allOf", []):
            if not conforms(value, rule["if"]):
                errors.extend(conforms(value, rule["then"]))
    if isinstance(value, list) and "items" in s:
        for item in value:
            errors.extend(conforms(item, s["items"]))
    return errors


def _walk(s: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, s)]
    for key, sub in s.get("properties", {}).items():
        out.extend(_walk(sub, f"{path}.{key}"))
    if isinstance(s.get("items"), dict):
        out.extend(_walk(s["items"], f"{path}[]"))
    for alt in s.get("anyOf", []):
        out.extend(_walk(alt, path))
    return out


def _fields(f: schema.Field, path: str = "") -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    if f.kind == "object":
        out[path] = set(f.fields or {})
        for key, child in (f.fields or {}).items():
            out.update(_fields(child, f"{path}.{key}"))
    elif f.kind == "list" and f.items is not None:
        out.update(_fields(f.items, f"{path}[]"))
    return out


DOCUMENTS = [
    pytest.param(schema.gateway_json_schema, schema.GATEWAY, id="gateway"),
    pytest.param(schema.bridge_json_schema, schema.BRIDGE, id="bridge"),
    pytest.param(schema.profile_json_schema, schema.PROFILE, id="profile"),
]


@pytest.mark.parametrize(("make", "root"), DOCUMENTS)
def test_schema_is_json_schema_shaped(make: Any, root: schema.Field) -> None:
    doc = json.loads(json.dumps(make()))
    assert doc["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert doc["type"] == "object" and doc["title"]
    allowed = {"$schema", "title", "type", "properties", "required", "additionalProperties",
               "items", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum", "anyOf",
               "allOf", "description", "default", "maxLength", "maxItems", "maxProperties"}
    for path, sub in _walk(doc):
        assert set(sub) <= allowed, path
        if "pattern" in sub:
            re.compile(sub["pattern"])
        if sub.get("type") == "object" and "properties" in sub:
            assert sub["additionalProperties"] is False, path
            assert set(sub.get("required", [])) <= set(sub["properties"]), path
        if "default" in sub and "anyOf" not in sub and "enum" not in sub:
            assert not conforms(sub["default"], sub), path


@pytest.mark.parametrize(("make", "root"), DOCUMENTS)
def test_property_names_match_the_loader(make: Any, root: schema.Field) -> None:
    from_schema = {path: set(sub["properties"]) for path, sub in _walk(make())
                   if "properties" in sub}
    assert from_schema == _fields(root)


def _plain(text: str) -> Any:
    # No substitution: an editor sees the ${VAR} references as written.
    issues: list[ConfigIssue] = []
    node = parse(text.replace("${", "$${"), "x.yaml", {}, issues)
    assert not issues and node is not None
    return node.plain()


@pytest.mark.parametrize(("text", "valid"), [
    pytest.param("gateway: {id: g}\nmqtt: {host: b}\ndevices: []\n", True, id="minimal"),
    pytest.param("gateway: {id: g}\nmqtt: {host: b, port: '${PORT}'}\ndevices: []\n", True,
                 id="env-reference-in-an-integer"),
    pytest.param("gateway: {id: g}\nmqtt: {host: b, hots: c}\ndevices: []\n", False,
                 id="unknown-key"),
    pytest.param("gateway: {id: 'a b'}\nmqtt: {host: b}\ndevices: []\n", False,
                 id="bad-id"),
    pytest.param("gateway: {id: g}\nmqtt: {host: b}\ndevices:\n"
                 "  - {name: d, driver: modbus-tcp, points: []}\n", False,
                 id="tcp-device-without-host"),
    pytest.param("gateway: {id: g, tags: {site: " + "x" * 1025 + "}}\nmqtt: {host: b}\n"
                 "devices: []\n", False, id="long-tag-value"),
    pytest.param("gateway: {id: g}\nmqtt: {host: " + "x" * 1025 + "}\ndevices: []\n", False,
                 id="long-host"),
    pytest.param("gateway: {id: g}\nmqtt: {host: b}\ndevices:\n"
                 "  - {name: d, driver: modbus-tcp, host: h, interval: 2 weeks}\n", False,
                 id="bad-duration"),
    pytest.param("gateway: {id: g}\nmqtt: {host: b}\ndevices:\n"
                 "  - {name: d, driver: modbus-tcp, host: h, interval: 500ms,\n"
                 "     points: [{name: p, table: holding, address: 0, byte_order: MSW-LE}]}\n",
                 True, id="alias-and-duration"),
])
def test_schema_agrees_with_the_loader(text: str, valid: bool) -> None:
    errors = conforms(_plain(text), schema.gateway_json_schema())
    assert (not errors) == valid, errors


def test_cli_prints_the_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema.gateway_json_schema()
    assert cli.main(["schema", "--bridge"]) == 0
    assert json.loads(capsys.readouterr().out) == schema.bridge_json_schema()
