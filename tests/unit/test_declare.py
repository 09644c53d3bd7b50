"""The declaration layer: one `spec` per config key gives the Field tree the loader, the JSON
Schema and the docs use."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest

from gateway.config import schema
from gateway.core import model
from gateway.core.declare import NO_DEFAULT, spec, tree


@dataclass(frozen=True)
class _Line:
    port: str = field(metadata=spec(doc="device", required=True))
    speed: int = field(default=9600, metadata=spec(doc="bits per second", positive=True))


@dataclass(frozen=True)
class _Thing:
    SELECTOR: ClassVar[str] = "kind"
    SECTIONS: ClassVar[dict[str, str]] = {"meta": "about it"}

    name: str = field(metadata=spec(doc="its name", required=True, section="meta"))
    kind: Literal["a", "b"] = field(default="a", metadata=spec(doc="which"))
    every: float = field(default=1.0, metadata=spec(kind="duration", doc="interval"))
    line: _Line | None = field(default=None, metadata=spec(inline=True, applies_to=("b",)))
    port: int | None = field(default=None, metadata=spec(kind="port", doc="a port",
                                                         required_for=("b",)))
    values: tuple[int | float, ...] = field(default=(), metadata=spec(item_kind="number"))
    tags: dict[str, str] = field(default_factory=dict, metadata=spec(doc="tags"))
    secret: model.Secret | None = field(default=None, metadata=spec(doc="hush"))
    source: str = ""


def test_tree_takes_kinds_and_defaults_from_the_annotations() -> None:
    t = tree(_Thing)
    fields = t.fields or {}
    assert list(fields) == ["meta", "kind", "every", "speed", "port", "values", "tags",
                            "secret"]
    assert t.selector == "kind"
    meta = fields["meta"]
    assert meta.kind == "object" and meta.required and meta.description == "about it"
    assert (meta.fields or {})["name"].required
    assert fields["kind"].kind == "enum" and fields["kind"].choices == ("a", "b")
    assert fields["kind"].default == "a"
    assert fields["every"].kind == "duration" and fields["every"].default == 1.0
    # inline: the line's keys sit here, the outer 'port' wins, applies_to is passed down
    assert fields["speed"].applies_to == ("b",) and fields["speed"].default == 9600
    assert fields["port"].kind == "port" and fields["port"].required_for == ("b",)
    assert fields["values"].kind == "list" and fields["values"].items is not None
    assert fields["values"].items.kind == "number" and fields["values"].default == []
    assert fields["tags"].kind == "map" and fields["tags"].default == {}
    assert fields["secret"].secret and fields["secret"].default is NO_DEFAULT


def test_selector_rules_become_json_schema_if_then() -> None:
    doc = schema.json_schema(tree(_Thing))
    assert doc["allOf"] == [{"if": {"properties": {"kind": {"const": "b"}}},
                             "then": {"required": ["port"]}}]


CONFIG_CLASSES = [model.TlsConfig, model.MqttConfig, model.OutboxConfig, model.MetricsConfig,
                  model.SerialSettings, model.BusConfig, model.PointConfig, model.DeviceConfig,
                  model.GatewayConfig, model.BridgeMqttConfig, model.InfluxConfig,
                  model.BridgeConfig, model.ProfileInfo]


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_every_config_field_is_declared(cls: type) -> None:
    undeclared = [f.name for f in dataclasses.fields(cls)
                  if "config" not in f.metadata and f.name != "source"]
    assert undeclared == []


def test_one_default_for_the_model_and_the_yaml() -> None:
    gateway = schema.GATEWAY.fields or {}
    outbox = gateway["outbox"].fields or {}
    assert outbox["max_bytes"].default == model.OutboxConfig().max_bytes
    bridge = schema.BRIDGE.fields or {}
    mqtt = bridge["mqtt"].fields or {}
    assert mqtt["session_expiry"].default == 7 * 24 * 3600.0
    metrics = bridge["metrics"].fields or {}
    assert metrics["listen"].default == ("127.0.0.1", 9109)
    assert (gateway["metrics"].fields or {})["listen"].default == ("127.0.0.1", 9108)
