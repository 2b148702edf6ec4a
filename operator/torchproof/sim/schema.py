"""Admission of custom resources against their CRD: pruning, defaults, openAPIV3Schema and simple CEL.

The structural part is `jsonschema` (OpenAPI 3.0 schemas are closest to draft 4). The CEL part is a
small interpreter for the rules CRDs usually carry — field access, `has()`, `size()`, the conversions
`string()`, `double()` and `int()`, comparisons, boolean logic, arithmetic, string methods. A rule it
cannot parse or evaluate (other functions, macros, `oldSelf` transition rules) is skipped, never
failed: the real API server remains the judge.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema

from torchproof.sim.store import Obj, ResourceType, invalid

Schema = dict[str, Any]


def resource_types_of_crd(crd: Obj) -> list[ResourceType]:
    """One served ResourceType per served version of the CRD, with its admission hook."""
    spec = crd["spec"]
    names = spec["names"]
    result = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
        result.append(ResourceType(
            group=spec["group"], version=version["name"], plural=names["plural"], kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            singular=names.get("singular") or names["kind"].lower(),
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            status_subresource="status" in (version.get("subresources") or {}),
            admit=Admission(schema, names["kind"], spec["group"]),
            printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
            crd_name=crd["metadata"]["name"],
        ))
    return result


CRD_TYPE = ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                        "CustomResourceDefinition", False)


def check_crd(crd: Obj) -> Obj:
    """Reject a CRD the server could not serve, naming the field; compile its schemas."""
    name = str(crd.get("metadata", {}).get("name", ""))
    spec = crd.get("spec")
    causes: list[tuple[str, str]] = []
    if not isinstance(spec, dict):
        raise invalid(CRD_TYPE, name, [("spec", "Required value")])
    names: dict[str, Any] = spec["names"] if isinstance(spec.get("names"), dict) else {}
    for path, value in (("spec.group", spec.get("group")), ("spec.names.plural", names.get("plural")),
                        ("spec.names.kind", names.get("kind"))):
        if not isinstance(value, str) or not value:
            causes.append((path, "Required value"))
    if not causes and name != f"{names['plural']}.{spec['group']}":
        causes.append(("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
    if spec.get("scope", "Namespaced") not in ("Namespaced", "Cluster"):
        causes.append(("spec.scope", f'Unsupported value: "{spec.get("scope")}": supported values: '
                                     f'"Cluster", "Namespaced"'))
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        causes.append(("spec.versions", "Required value: must have exactly one version marked as storage"))
    else:
        for i, version in enumerate(versions):
            if not isinstance(version, dict) or not isinstance(version.get("name"), str):
                causes.append((f"spec.versions[{i}].name", "Required value"))
                continue
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if schema is not None:
                try:
                    jsonschema.Draft4Validator.check_schema(to_json_schema(schema))
                except jsonschema.SchemaError as exc:
                    causes.append((f"spec.versions[{i}].schema.openAPIV3Schema", exc.message))
        if sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
            causes.append(("spec.versions", "Invalid value: must have exactly one version marked as storage"))
    if causes:
        raise invalid(CRD_TYPE, name, causes)
    return crd


def to_json_schema(schema: Any) -> Any:
    """OpenAPI 3.0 → JSON Schema draft 4: `nullable`, `x-kubernetes-int-or-string`."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    result = {k: to_json_schema(v) for k, v in schema.items()
              if not k.startswith("x-kubernetes-") and k not in ("nullable", "default", "example")}
    if isinstance(result.get("properties"), dict):
        result["properties"] = {k: to_json_schema(v) for k, v in schema["properties"].items()}
    if schema.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
        result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and isinstance(result.get("type"), str):
        result["type"] = [result["type"], "null"]
        if "enum" in result:
            result["enum"] = [*result["enum"], None]
    return result


def prune(value: Any, schema: Schema, root: bool = False) -> Any:
    """Drop fields the schema does not declare, as a structural-schema API server does."""
    if isinstance(value, dict) and (schema.get("type") == "object" or root):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            props = schema.get("properties") or {}
            return {k: prune(v, props[k]) if k in props else v for k, v in value.items()}
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        result = {}
        for key, item in value.items():
            if root and key in ("apiVersion", "kind", "metadata"):
                result[key] = item
            elif props is not None and key in props:
                result[key] = prune(item, props[key])
            elif isinstance(extra, dict):
                result[key] = prune(item, extra)
            elif extra is True or (props is None and extra is None and not root and not schema):
                result[key] = item
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(v, schema["items"]) for v in value]
    return value


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Fill in `default:` of absent properties, recursively, as the API server does on every write."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value.keys() - props.keys():
                value[key] = apply_defaults(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


def field_path(parts: Any) -> str:
    """deque(['spec', 'checks', 0, 'x']) → `spec.checks[0].x`."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _cause(error: jsonschema.ValidationError) -> list[tuple[str, str]]:
    path = field_path(error.absolute_path)
    shown = json.dumps(error.instance)
    expected: Any = error.validator_value
    if error.validator == "required":
        present = error.instance if isinstance(error.instance, dict) else {}
        return [(field_path([*error.absolute_path, key]), "Required value")
                for key in expected if key not in present]
    if error.validator == "enum":
        allowed = ", ".join(json.dumps(v) for v in expected)
        return [(path, f"Unsupported value: {shown}: supported values: {allowed}")]
    if error.validator == "type":
        return [(path, f"Invalid value: {shown}: {path} in body must be of type {expected}")]
    return [(path, f"Invalid value: {shown}: {error.message}")]


@dataclass
class Admission:
    """Prune, default and validate a custom resource; raise 422 Invalid with every failing field."""

    schema: Schema
    kind: str
    group: str

    def __post_init__(self) -> None:
        self._validator = jsonschema.Draft4Validator(to_json_schema(self.schema))
        self._rules = list(_collect_rules(self.schema, ()))

    def __call__(self, obj: Obj) -> Obj:
        if not self.schema:
            return obj
        obj = apply_defaults(prune(obj, self.schema, root=True), self.schema)
        causes = [c for e in self._validator.iter_errors(obj) for c in _cause(e)]
        if not causes:
            causes = list(self._cel_causes(obj))
        if causes:
            rt = ResourceType(self.group, "", "", self.kind, False)
            raise invalid(rt, str(obj.get("metadata", {}).get("name", "")), sorted(set(causes)))
        return obj

    def _cel_causes(self, obj: Obj) -> Iterator[tuple[str, str]]:
        for path, rule in self._rules:
            for location, value in _values_at(obj, path, ()):
                message = rule.check(value)
                if message is not None:
                    yield field_path(location) + rule.field_path, message


@dataclass
class _Rule:
    text: str
    message: str
    field_path: str
    program: Callable[[Any], Any] | None

    def check(self, value: Any) -> str | None:
        """None when the rule holds or cannot be evaluated here; else the failure message."""
        if self.program is None:
            return None
        try:
            result = self.program(value)
        except _Unsupported:
            return None
        except _CelError:
            result = False
        if result is True:
            return None
        return self.message


def _collect_rules(schema: Schema, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], _Rule]]:
    for entry in schema.get("x-kubernetes-validations") or ():
        text = str(entry.get("rule", ""))
        program = None if "oldSelf" in text else _compile_or_none(text)
        message = entry.get("message") or f"Invalid value: failed rule: {text}"
        yield path, _Rule(text, message, str(entry.get("fieldPath", "")), program)
    for key, sub in (schema.get("properties") or {}).items():
        yield from _collect_rules(sub, (*path, key))
    if isinstance(schema.get("items"), dict):
        yield from _collect_rules(schema["items"], (*path, "[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _collect_rules(schema["additionalProperties"], (*path, "{}"))


def _values_at(value: Any, path: tuple[Any, ...],
               at: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if not path:
        yield at, value
        return
    head, rest = path[0], path[1:]
    if head == "[]" and isinstance(value, list):
        for i, item in enumerate(value):
            yield from _values_at(item, rest, (*at, i))
    elif head == "{}" and isinstance(value, dict):
        for key, item in value.items():
            yield from _values_at(item, rest, (*at, key))
    elif isinstance(value, dict) and head in value:
        yield from _values_at(value[head], rest, (*at, head))


# --- a small CEL interpreter -------------------------------------------------------------------------


class _Unsupported(Exception):
    """The rule uses CEL this interpreter does not know: skip it."""


class _CelError(Exception):
    """A CEL runtime error (no such key, no matching overload): the rule fails."""


_TOKEN = re.compile(r"""\s*(?:(?P<num>\d+\.\d+|\d+)|(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|"""
                    r"""(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>\|\||&&|==|!=|<=|>=|[-+*/%<>!?:.,()\[\]]))""")
Program = Callable[[Any], Any]


def _compile_or_none(text: str) -> Program | None:
    try:
        return _Parser(text).parse()
    except _Unsupported:
        return None


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos, text = 0, text.strip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise _Unsupported(text[pos:])
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            pos = match.end()
        self.i = 0

    def parse(self) -> Program:
        program = self.expr()
        if self.i != len(self.tokens):
            raise _Unsupported(self.tokens[self.i][1])
        return program

    def peek(self) -> str:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else ""

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.tokens) or (expected is not None and self.tokens[self.i][1] != expected):
            raise _Unsupported(expected or "end")
        self.i += 1
        return self.tokens[self.i - 1]

    def expr(self) -> Program:
        cond = self.binary(0)
        if self.peek() != "?":
            return cond
        self.take("?")
        then = self.expr()
        self.take(":")
        other = self.expr()
        return lambda s: then(s) if _truth(cond(s)) else other(s)

    LEVELS: tuple[tuple[str, ...], ...] = (("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">=", "in"),
                                           ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Program:
        if level == len(self.LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in self.LEVELS[level]:
            op = self.take()[1]
            left = _binary(op, left, self.binary(level + 1))
        return left

    def unary(self) -> Program:
        if self.peek() == "!":
            self.take()
            inner = self.unary()
            return lambda s: not _truth(inner(s))
        if self.peek() == "-":
            self.take()
            operand = self.unary()
            return lambda s: -_number(operand(s))
        return self.member(self.primary())

    def member(self, target: Program) -> Program:
        return self.selection(target)[0]

    def selection(self, target: Program) -> tuple[Program, tuple[Program, str] | None]:
        """The member chain, and its last plain field selection as (owner, name) for `has()`."""
        last: tuple[Program, str] | None = None
        while self.peek() in (".", "["):
            last = None
            if self.take()[1] == "[":
                index = self.expr()
                self.take("]")
                target = _index(target, index)
                continue
            name = self.take()[1]
            if self.peek() == "(":
                target = _method(name, target, self.args())
            else:
                last = (target, name)
                target = _field(target, name)
        return target, last

    def args(self) -> list[Program]:
        self.take("(")
        args: list[Program] = []
        while self.peek() != ")":
            args.append(self.expr())
            if self.peek() == ",":
                self.take(",")
        self.take(")")
        return args

    def primary(self) -> Program:
        kind, text = self.take()
        if kind == "num":
            number = float(text) if "." in text else int(text)
            return lambda s: number
        if kind == "str":
            string = text[1:-1].encode().decode("unicode_escape")
            return lambda s: string
        if text == "(":
            inner = self.expr()
            self.take(")")
            return inner
        if text == "[":
            items: list[Program] = []
            while self.peek() != "]":
                items.append(self.expr())
                if self.peek() == ",":
                    self.take(",")
            self.take("]")
            return lambda s: [item(s) for item in items]
        constants = {"true": True, "false": False, "null": None}
        if text in constants:
            constant = constants[text]
            return lambda s: constant
        if text == "self":
            return lambda s: s
        if text == "has":
            return self.has()
        if text == "size" and self.peek() == "(":
            (arg,) = self.args() or [lambda s: None]
            return lambda s: _size(arg(s))
        if text in _CONVERSIONS and self.peek() == "(":
            args = self.args()
            if len(args) != 1:
                raise _Unsupported(f"{text}() with {len(args)} arguments")
            convert, (value,) = _CONVERSIONS[text], args
            return lambda s: convert(value(s))
        raise _Unsupported(text)

    def has(self) -> Program:
        self.take("(")
        _, last = self.selection(self.primary())
        self.take(")")
        if last is None:
            raise _Unsupported("has() needs a field selection")
        owner, name = last
        return lambda s: _has(owner(s), name)


def _truth(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _CelError(f"no matching overload: expected bool, got {type(value).__name__}")
    return value


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _CelError("no matching overload for '-'")
    return -value


def _size(value: Any) -> int:
    if isinstance(value, str | list | dict):
        return len(value)
    raise _CelError("no matching overload for size()")


def _to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise _CelError(f"no matching overload for string({type(value).__name__})")


def _to_double(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _CelError(f"no matching overload for double({type(value).__name__})")
    try:
        return float(value)
    except ValueError:
        raise _CelError(f"double() cannot convert {value!r}") from None


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _CelError(f"no matching overload for int({type(value).__name__})")
    try:
        return int(value)
    except (ValueError, OverflowError):
        raise _CelError(f"int() cannot convert {value!r}") from None


_CONVERSIONS: dict[str, Callable[[Any], Any]] = {"string": _to_string, "double": _to_double, "int": _to_int}


def _has(owner: Any, name: str) -> bool:
    if not isinstance(owner, dict):
        raise _CelError("has() on a non-object")
    return name in owner


def _field(target: Program, name: str) -> Program:
    def get(s: Any) -> Any:
        value = target(s)
        if not isinstance(value, dict) or name not in value:
            raise _CelError(f"no such key: {name}")
        return value[name]

    return get


def _index(target: Program, index: Program) -> Program:
    def get(s: Any) -> Any:
        value, key = target(s), index(s)
        try:
            return value[key]
        except (KeyError, IndexError, TypeError):
            raise _CelError(f"no such key: {key}") from None

    return get


_METHODS: dict[str, Callable[..., Any]] = {
    "size": lambda v: _size(v),
    "startsWith": lambda v, p: v.startswith(p),
    "endsWith": lambda v, p: v.endswith(p),
    "contains": lambda v, p: p in v,
    "matches": lambda v, p: re.search(p, v) is not None,
    "lowerAscii": lambda v: v.lower(),
    "upperAscii": lambda v: v.upper(),
}


def _method(name: str, target: Program, args: list[Program]) -> Program:
    if name not in _METHODS:
        raise _Unsupported(name)
    method = _METHODS[name]

    def call(s: Any) -> Any:
        try:
            return method(target(s), *(a(s) for a in args))
        except (AttributeError, TypeError):
            raise _CelError(f"no matching overload for {name}()") from None

    return call


def _binary(op: str, left: Program, right: Program) -> Program:
    if op in ("||", "&&"):
        stop = op == "||"

        def logic(s: Any) -> bool:
            try:
                if _truth(left(s)) is stop:
                    return stop
            except _CelError:
                if _truth(right(s)) is stop:
                    return stop
                raise
            return _truth(right(s))

        return logic
    operations: dict[str, Callable[[Any, Any], Any]] = {
        "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
        "in": lambda a, b: a in b, "+": lambda a, b: a + b, "-": lambda a, b: a - b,
        "*": lambda a, b: a * b, "/": lambda a, b: a // b if isinstance(a, int) and isinstance(b, int)
        else a / b, "%": lambda a, b: a % b,
    }
    operation = operations[op]

    def apply(s: Any) -> Any:
        a, b = left(s), right(s)
        if op not in ("==", "!=", "in") and (type(a) is bool) != (type(b) is bool):
            raise _CelError(f"no matching overload for {op!r}")
        try:
            return operation(a, b)
        except (TypeError, ZeroDivisionError):
            raise _CelError(f"no matching overload for {op!r}") from None

    return apply
