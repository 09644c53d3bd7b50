"""The config declaration layer: each config field is declared once, on its model dataclass.

A field of a config dataclass in `gateway.core.model` is written
``field(default=..., metadata=spec(...))``: its Python type and default are the dataclass's
own, and the metadata adds what the YAML needs (help text, limits, a pattern, aliases,
which drivers it applies to). `tree(cls)` turns a
declared dataclass into a `Field` tree, from which `gateway.config.schema` validates the YAML,
applies the defaults and prints the JSON Schema, `gateway.config.load` builds the dataclass,
and docs/gen_config_reference.py writes docs/config-reference.md.

The kind of a field follows from its annotation (``str``, ``int``, ``float``, ``bool``, a
``Literal`` of choices, ``bytes`` for an escaped string, ``dict[str, str]`` for tags, a
nested dataclass for a mapping, ``tuple[X, ...]`` for a list); ``spec(kind=...)`` names the
YAML spellings the annotation cannot say (``duration``, ``size``, ``listen``, ``port``,
``regex``, ``number``). Pure: no I/O, no YAML.

Hand-written on purpose (no pydantic): measured in docs/config-reference.md, pydantic 2 adds
about 12 MiB RSS and 160 ms of import to a gateway whose whole budget is 36 MB.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from gateway.core.secrets import Secret

NO_DEFAULT: Any = object()

# Bounds every config obeys unless a declaration says otherwise (issue: an 85 KB file of
# aliases took 62 s and 1.6 GB, a 50 MB tag value was "valid").
MAX_STRING = 1024  # characters of any string value (a tag, a name, a host)
MAX_ITEMS = 1000  # entries of any list or map


@dataclass(frozen=True, slots=True)
class Field:
    """One config key: kind, help, default, limits; an object's keys; a list's item.

    ``kind`` is one of the validators of `gateway.config.schema` (str, int, float, bool,
    number, duration, size, enum, listen, port, regex, escaped, map, list, object).

    Written through `spec()` on a model dataclass; `tree()` fills in what the annotation
    says (kind, choices, default, nested fields).
    """

    kind: str = ""
    description: str = ""
    default: Any = NO_DEFAULT
    required: bool = False
    choices: tuple[Any, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    noun: str = ""  # enum and pattern messages: "'flaot32' is not a data type"
    pattern: str | None = None
    pattern_hint: str = ""
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False  # strictly more than 0
    fields: Mapping[str, Field] | None = None  # object
    items: Field | None = None  # list
    secret: bool = False  # never quoted in a message
    # With the enclosing object's `selector` (e.g. ``driver``): the values it applies to
    # (empty: all) and the values that require it.
    applies_to: tuple[str, ...] = ()
    required_for: tuple[str, ...] = ()
    selector: str = ""  # object: the key whose value decides applies_to / required_for
    default_note: str = ""  # a computed default, described for the docs and editors
    computed: bool = False  # absent in the YAML: the loader computes it (see default_note)
    section: str = ""  # the YAML sub-mapping this key is written in (e.g. ``gateway:``)
    inline: bool = False  # a nested dataclass whose keys are written at this level
    yaml: bool = True  # False: not read from the YAML (e.g. the file name)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # object: its keys' defaults here
    item_kind: str = ""  # list: the kind of its items, when the annotation cannot say
    suggest: Callable[[str], str | None] | None = None  # enum: what a bad value likely means
    choice_names: Mapping[str, str] = field(default_factory=dict)  # enum: what each one means
    max_items: int = MAX_ITEMS  # list or map: most entries
    max_length: int = MAX_STRING  # string: most characters


def spec(*, doc: str = "", **kw: Any) -> dict[str, Field]:
    """The metadata of a dataclass field declaring one config key (see `Field`)::

        port: int = field(default=502, metadata=spec(doc="TCP port", minimum=1))
    """
    return {"config": Field(description=doc, **kw)}


def sections(cls: type) -> Mapping[str, str]:
    """``{name: help}`` of the YAML sub-mappings a class groups some of its keys in."""
    return typing.cast("Mapping[str, str]", getattr(cls, "SECTIONS", {}))


@functools.cache
def declared(cls: type) -> tuple[tuple[str, Field, Any], ...]:
    """(attribute, declaration, annotation) of each declared field of ``cls``, in order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("config")
        if isinstance(meta, Field):
            out.append((f.name, meta, hints[f.name]))
    return tuple(out)


def strip_none(annotation: Any) -> Any:
    """``X | None`` -> ``X`` (an optional key's type)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        return Union[tuple(args)]  # noqa: UP007 - built at run time
    return annotation


def _kind(annotation: Any, given: str) -> tuple[str, dict[str, Any]]:
    """The kind (and extra attributes) an annotation stands for."""
    extra: dict[str, Any] = {}
    ann = strip_none(annotation)
    origin = get_origin(ann)
    if origin is Literal:
        extra["choices"] = get_args(ann)
        return given or "enum", extra
    if ann is Secret:
        extra["secret"] = True
        return given or "str", extra
    if given:
        return given, extra
    if dataclasses.is_dataclass(ann):
        return "object", extra
    if origin is tuple:
        return "list", extra
    if origin is dict:
        return "map", extra
    simple = {str: "str", int: "int", float: "float", bool: "bool", bytes: "escaped"}
    if ann in simple:
        return simple[ann], extra
    raise TypeError(f"no config kind for {annotation!r}; give spec(kind=...)")


def _yaml_default(f: dataclasses.Field[Any], decl: Field, kind: str) -> Any:
    if decl.computed or decl.required:
        return NO_DEFAULT
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    elif f.default is not dataclasses.MISSING:
        value = f.default
    else:
        return NO_DEFAULT
    if value is None:
        return NO_DEFAULT
    if dataclasses.is_dataclass(value):
        return {}
    if isinstance(value, tuple) and kind == "list":
        return list(value)
    return value


def tree(cls: type, description: str = "", **kw: Any) -> Field:
    """The object `Field` of a declared dataclass: its YAML keys, in declaration order.

    Keys of a `section` are gathered in one sub-object at the place of the section's first
    key; the keys of an `inline` dataclass are merged in (the outer class's keys win).
    """
    cached = _TREES.get(cls)
    if cached is None:
        cached = _build_tree(cls)
        _TREES[cls] = cached
    if description or kw:
        return dataclasses.replace(cached, description=description or cached.description,
                                   **kw)
    return cached


_TREES: dict[type, Field] = {}


def _build_tree(cls: type) -> Field:
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    fields: dict[str, Field] = {}
    grouped: dict[str, dict[str, Field]] = {}
    own = {name for name, decl, _ in declared(cls) if decl.yaml and not decl.inline}
    for name, decl, annotation in declared(cls):
        if not decl.yaml:
            continue
        full = complete(by_name[name], decl, annotation)
        if decl.inline:
            for key, sub in (full.fields or {}).items():
                if key not in own:
                    fields[key] = dataclasses.replace(
                        sub, applies_to=sub.applies_to or decl.applies_to)
            continue
        if decl.section:
            if decl.section not in grouped:
                grouped[decl.section] = {}
                fields[decl.section] = Field("object")  # placeholder, keeps the order
            grouped[decl.section][name] = full
            continue
        fields[name] = full
    for section, keys in grouped.items():
        fields[section] = Field("object", sections(cls).get(section, ""), fields=keys,
                                required=any(k.required for k in keys.values()))
    return Field("object", _summary(cls), fields=fields, selector=getattr(cls, "SELECTOR", ""))


def _summary(cls: type) -> str:
    """The first line of a class's docstring as the docs use it: 'one sensor or meter'."""
    lines = (cls.__doc__ or "").strip().splitlines()
    if not lines:
        return ""
    text = lines[0].rstrip(".")
    return text[:1].lower() + text[1:]


def complete(f: dataclasses.Field[Any], decl: Field, annotation: Any) -> Field:
    """A declaration with what the annotation and the dataclass default say filled in."""
    kind, extra = _kind(annotation, decl.kind)
    ann = strip_none(annotation)
    if kind == "object" and dataclasses.is_dataclass(ann):
        sub = tree(typing.cast("type", ann))
        children = dict(sub.fields or {})
        for key, value in decl.defaults.items():
            children[key] = dataclasses.replace(children[key], default=value)
        extra.update(fields=children, selector=sub.selector)
    elif kind == "list":
        (item,) = get_args(ann)[:1]
        if dataclasses.is_dataclass(item):
            extra["items"] = tree(typing.cast("type", item))
        else:
            item_kind, item_extra = _kind(item, decl.item_kind)
            extra["items"] = Field(item_kind, **item_extra)
    if decl.choices:
        extra.pop("choices", None)
    default = _yaml_default(f, decl, kind)
    return dataclasses.replace(decl, kind=kind, default=default, **extra)
