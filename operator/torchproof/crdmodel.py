"""Typed models that are the CRD's schema, in the manner of kubebuilder's markers.

A model is a frozen dataclass; each wire field is declared once with `prop()`: its JSON name, bounds,
pattern, enum, default and description. `schema_of` writes the openAPIV3Schema from that declaration and
`decode_object` reads a JSON value into the model against the same declaration, so no bound or default is
written twice. CEL rules travel with their model (`validations`): the API server evaluates them, the
operator does not. Fields declared without `prop()` are not on the wire; `decode_object` takes them
from its caller.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, Union, get_args, get_origin

Schema = dict[str, Any]
_KEY: Final = "torchproof.crd"
_RULES: Final = "__crd_rules__"


class InvalidSpec(Exception):
    """A profile the operator cannot act on; ``field`` is the path of the first bad value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Rule:
    """One `x-kubernetes-validations` entry; `message` is also what the operator's own check says."""

    rule: str
    message: str
    field_path: str | None = None

    def to_schema(self) -> Schema:
        out: Schema = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            out["fieldPath"] = self.field_path
        return out


@dataclass(frozen=True)
class Items:
    """Constraints on each string of a list or each value of a map."""

    max_length: int | None = None
    pattern: str | None = None
    enum: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Prop:
    name: str | None = None
    description: str | None = None
    fmt: str | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_items: int | None = None
    max_properties: int | None = None
    list_type: str | None = None
    map_keys: tuple[str, ...] | None = None
    items: Items | None = None
    server_default: bool = False
    wire: Any = None
    convert: Callable[[Any], Any] | None = None


def prop(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **settings: Any) -> Any:
    """A wire field. ``server_default`` gives an object field the CRD default ``{}``; a scalar default is
    the CRD's default. ``wire`` is the JSON shape when it differs from the typed attribute, and ``convert``
    turns the decoded wire value into the attribute (a ValueError names the field; a converter of a string
    enforces the field's ``pattern`` itself, with its own message)."""
    return dataclasses.field(default=default, default_factory=factory, metadata={_KEY: Prop(**settings)})


def validations(*rules: Rule) -> Callable[[type[Any]], type[Any]]:
    """Attach CEL rules to a model's object schema."""

    def mark(cls: type[Any]) -> type[Any]:
        setattr(cls, _RULES, rules)
        return cls

    return mark


def rules_of(cls: type[Any]) -> tuple[Rule, ...]:
    return tuple(cls.__dict__.get(_RULES, ()))


def wire_name(f: dataclasses.Field[Any]) -> str:
    p = f.metadata[_KEY]
    assert isinstance(p, Prop)
    if p.name is not None:
        return p.name
    head, *rest = f.name.split("_")
    return head + "".join(part.capitalize() for part in rest)


_WireField = tuple[str, dataclasses.Field[Any], Prop, Any]
_WIRE_FIELDS: dict[type[Any], tuple[_WireField, ...]] = {}


def _wire_fields(cls: type[Any]) -> tuple[_WireField, ...]:
    """(JSON name, field, declaration, wire type) of each wire field; resolved once per model."""
    known = _WIRE_FIELDS.get(cls)
    if known is None:
        hints = typing.get_type_hints(cls)
        known = _WIRE_FIELDS[cls] = tuple(
            (wire_name(f), f, f.metadata[_KEY], f.metadata[_KEY].wire or hints[f.name])
            for f in dataclasses.fields(cls) if _KEY in f.metadata
        )
    return known


def _optional(hint: Any) -> tuple[Any, bool]:
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(args) < len(get_args(hint)):
            return args[0], True
    return hint, False


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _is_parsed(hint: Any) -> bool:
    """A class read from a string by its ``parse`` classmethod (a version, say) is a string on the wire."""
    return isinstance(hint, type) and callable(getattr(hint, "parse", None))


# ---- the schema -----------------------------------------------------------------------------------


def schema_of(hint: Any, p: Prop | Items = Prop(), default: Any = dataclasses.MISSING) -> Schema:
    """The structural schema of a type, with the constraints declared on its field."""
    hint, _ = _optional(hint)
    out: Schema = {}
    if isinstance(p, Prop) and p.description:
        out["description"] = p.description
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint) and not _is_parsed(hint):
        out.update(_object_schema(typing.cast(type[Any], hint)))
        if isinstance(p, Prop) and p.server_default:
            out["default"] = {}
        return out
    if origin in (tuple, frozenset):
        assert isinstance(p, Prop)
        out["type"] = "array"
        _put(out, maxItems=p.max_items, **{"x-kubernetes-list-type": p.list_type})
        if p.map_keys:
            out["x-kubernetes-list-map-keys"] = list(p.map_keys)
        out["items"] = schema_of(get_args(hint)[0], p.items or Items())
        return out
    if origin in (Mapping, dict):
        assert isinstance(p, Prop)
        out["type"] = "object"
        _put(out, maxProperties=p.max_properties)
        out["additionalProperties"] = schema_of(get_args(hint)[1], p.items or Items())
        return out
    out["type"] = _SCALARS[hint] if hint in _SCALARS else "string" if _is_parsed(hint) else _fail(hint)
    if isinstance(p, Prop):
        _put(out, format=p.fmt)
    _put(out, enum=list(p.enum) if p.enum is not None else None, pattern=p.pattern)
    if isinstance(p, Prop):
        _put(out, minLength=p.min_length)
    _put(out, maxLength=p.max_length)
    if isinstance(p, Prop):
        _put(out, minimum=p.minimum, maximum=p.maximum)
    if default is not dataclasses.MISSING and default is not None:
        out["default"] = default
    return out


_SCALARS: Final = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _fail(hint: Any) -> str:
    raise TypeError(f"no schema for {hint!r}")


def _put(out: Schema, **values: Any) -> None:
    out.update({k: v for k, v in values.items() if v is not None})


def _object_schema(cls: type[Any]) -> Schema:
    out: Schema = {"type": "object"}
    required = [name for name, f, p, hint in _wire_fields(cls)
                if not _has_default(f) and not p.server_default and not _optional(hint)[1]]
    if required:
        out["required"] = required
    if rules_of(cls):
        out["x-kubernetes-validations"] = [r.to_schema() for r in rules_of(cls)]
    out["properties"] = {name: schema_of(hint, p, f.default) for name, f, p, hint in _wire_fields(cls)}
    return out


# ---- decoding: each (type, declaration) is compiled once into a function of (value, path) ------------

Decoder = Callable[[Any, str], Any]


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def decode_object(cls: type[Any], value: Any, path: str, given: Mapping[str, Any] | None = None) -> Any:
    """A JSON object → ``cls``, checked against the declaration of each field; ``given`` supplies the
    fields that are not on the wire."""
    return _object_decoder(cls)(value, path, given or {})


_ObjectDecoder = Callable[[Any, str, Mapping[str, Any]], Any]
_OBJECT_DECODERS: dict[type[Any], _ObjectDecoder] = {}


def _object_decoder(cls: type[Any]) -> _ObjectDecoder:
    known_decoder = _OBJECT_DECODERS.get(cls)
    if known_decoder is None:
        known_decoder = _OBJECT_DECODERS[cls] = _compile_object(cls)
    return known_decoder


def _compile_object(cls: type[Any]) -> _ObjectDecoder:
    wire = _wire_fields(cls)
    known = [name for name, *_ in wire]
    listed = ", ".join(known)
    # (JSON name, attribute, decoder, converter, what an absent value becomes: _REQUIRED, _DEFAULT or a JSON value)
    plan = []
    for name, f, p, hint in wire:
        absent: Any = ({} if p.server_default else _DEFAULT if _has_default(f) else
                       None if _optional(hint)[1] else _REQUIRED)
        plan.append((name, f.name, _decoder(hint, p), p.convert, absent))

    def run(value: Any, path: str, given: Mapping[str, Any]) -> Any:
        if not isinstance(value, Mapping):
            raise InvalidSpec(path, f"must be an object, not {_kind(value)}")
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise InvalidSpec(f"{path}.{unknown[0]}", f"unknown field (known: {listed})")
        kwargs = dict(given)
        for name, attr, decoder, convert, absent in plan:
            raw = value.get(name)
            if raw is None:
                if absent is _DEFAULT:
                    continue
                if absent is _REQUIRED:
                    raise InvalidSpec(f"{path}.{name}", "required")
                if absent is None:
                    kwargs[attr] = None
                    continue
                raw = absent
            where = f"{path}.{name}"
            decoded = decoder(raw, where)
            if convert is not None:
                try:
                    decoded = convert(decoded)
                except ValueError as exc:
                    raise InvalidSpec(where, str(exc)) from None
            kwargs[attr] = decoded
        return cls(**kwargs)

    return run


_REQUIRED: Final = object()
_DEFAULT: Final = object()


@cache
def _decoder(hint: Any, p: Prop | Items) -> Decoder:
    hint, _ = _optional(hint)
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint) and not _is_parsed(hint):
        obj = _object_decoder(typing.cast(type[Any], hint))
        return lambda value, path: obj(value, path, {})
    if origin in (tuple, frozenset):
        assert isinstance(p, Prop)
        return _list_decoder(origin, get_args(hint)[0], p)
    if origin in (Mapping, dict):
        assert isinstance(p, Prop)
        return _map_decoder(get_args(hint)[1], p)
    if hint is bool:
        return _decode_bool
    if hint is int or hint is float:
        assert isinstance(p, Prop)
        return _number_decoder(hint, p)
    if hint is str or _is_parsed(hint):
        return _string_decoder(hint, p)
    raise TypeError(f"cannot decode {hint!r}")


def _decode_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidSpec(path, f"must be true or false, not {_kind(value)}")
    return value


def _list_decoder(origin: Any, item: Any, p: Prop) -> Decoder:
    decode_item = _decoder(item, p.items or Items())
    keys = [(key, next(f.name for name, f, *_ in _wire_fields(item) if name == key)) for key in p.map_keys or ()]
    is_set = p.list_type == "set"

    def run(value: Any, path: str) -> Any:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise InvalidSpec(path, f"must be a list, not {_kind(value)}")
        if p.max_items is not None and len(value) > p.max_items:
            raise InvalidSpec(path, f"has {len(value)} items, at most {p.max_items} allowed")
        out: list[Any] = []
        for i, raw in enumerate(value):
            where = f"{path}[{i}]"
            decoded = decode_item(raw, where)
            if is_set and decoded in out:
                raise InvalidSpec(where, f"{decoded!r} is listed twice")
            for key, attr in keys:
                mine = getattr(decoded, attr)
                if any(getattr(o, attr) == mine for o in out):
                    raise InvalidSpec(f"{where}.{key}", f"{mine!r} is listed twice")
            out.append(decoded)
        return origin(out)

    return run


def _map_decoder(item: Any, p: Prop) -> Decoder:
    decode_value = _decoder(item, p.items or Items())

    def run(value: Any, path: str) -> Any:
        if not isinstance(value, Mapping):
            raise InvalidSpec(path, f"must be an object, not {_kind(value)}")
        if p.max_properties is not None and len(value) > p.max_properties:
            raise InvalidSpec(path, f"has {len(value)} entries, at most {p.max_properties} allowed")
        return types.MappingProxyType({k: decode_value(v, f"{path}.{k}") for k, v in value.items()})

    return run


def _number_decoder(hint: type[Any], p: Prop) -> Decoder:
    wide = 2**63 if p.fmt == "int64" else math.inf
    lo = -wide if p.minimum is None else p.minimum
    hi = wide - 1 if p.maximum is None else p.maximum
    span = f"{'' if p.minimum is None else p.minimum}..{'' if p.maximum is None else p.maximum}"

    def run(value: Any, path: str) -> Any:
        if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidSpec(path, f"must be an integer, not {_kind(value)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidSpec(path, f"must be a number, not {_kind(value)}")
        if not math.isfinite(value) or not lo <= value <= hi:
            raise InvalidSpec(path, f"{value} is outside {span}")
        return hint(value)

    return run


def schema_pattern(pattern: str) -> re.Pattern[str]:
    """A schema `pattern` as the API server reads it (Go's regexp): `\\d` and `\\w` are ASCII only, and a final
    `$` is the end of the text — Python's would also take a trailing newline ("168h\\n") or an Arabic-Indic
    digit, values a real server refuses."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + "\\Z"
    return re.compile(pattern, re.ASCII)


def _string_decoder(hint: Any, p: Prop | Items) -> Decoder:
    converted = isinstance(p, Prop) and p.convert is not None
    pattern = schema_pattern(p.pattern) if p.pattern is not None and not converted else None

    def run(value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise InvalidSpec(path, f"must be a string, not {_kind(value)}")
        if p.max_length is not None and len(value) > p.max_length:
            raise InvalidSpec(path, f"longer than {p.max_length} characters")
        if p.enum is not None and value not in p.enum:
            raise InvalidSpec(path, f"{value!r} is not one of {', '.join(p.enum)}")
        if pattern is not None and not pattern.search(value):
            raise InvalidSpec(path, f"{value!r} does not match {pattern.pattern}")
        if hint is str:
            return value
        try:
            return hint.parse(value)
        except ValueError as exc:
            raise InvalidSpec(path, str(exc)) from None

    return run
