"""Admission of custom resources against their CRD: pruning, defaults, openAPIV3Schema and CEL rules.

The structural part is `jsonschema` (OpenAPI 3.0 schemas are closest to draft 4). CEL rules are compiled,
costed and evaluated by `celrules` on a real CEL implementation; none is skipped. A CRD is checked at
creation as kube-apiserver checks it: every rule compiles and stays within the cost budget, and every
`default` satisfies its schema and rules exactly as written (nested defaults not filled in).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from torchproof_sim.celrules import (
    STATIC_ESTIMATED_COST_LIMIT,
    STATIC_ESTIMATED_CRD_COST_LIMIT,
    Rule,
    RuleError,
    compile_rule,
    cost_message,
    schema_path,
    walk_rules,
)
from torchproof_sim.fields import Path
from torchproof_sim.store import Obj, ResourceType, invalid

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
        admission = Admission(schema, names["kind"], spec["group"])
        result.append(ResourceType(
            group=spec["group"], version=version["name"], plural=names["plural"], kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            singular=names.get("singular") or names["kind"].lower(),
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            status_subresource="status" in (version.get("subresources") or {}),
            admit=admission,
            unknown_fields=admission.unknown_fields,
            printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
            crd_name=crd["metadata"]["name"],
        ))
    return result


CRD_TYPE = ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                        "CustomResourceDefinition", False)


def check_crd(crd: Obj, old: Obj | None = None) -> Obj:
    """Reject a CRD the server would refuse, naming the field: its shape, schemas, rules and defaults."""
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
                    continue
                prefix = f"spec.versions[{i}].schema.openAPIV3Schema"
                causes.extend(rule_causes(schema, prefix))
                causes.extend(default_causes(schema, prefix))
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


def unknown_paths(value: Any, schema: Schema, at: Path = (), root: bool = False) -> Iterator[Path]:
    """The fields `prune` would drop, by path: what field validation reports."""
    if isinstance(value, dict) and (schema.get("type") == "object" or root):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        for key, item in value.items():
            if item is None or (isinstance(key, str) and key.startswith("$")) or (
                    root and key in ("apiVersion", "kind", "metadata")):
                continue
            if props is not None and key in props:
                yield from unknown_paths(item, props[key], (*at, key))
            elif isinstance(extra, dict):
                yield from unknown_paths(item, extra, (*at, key))
            elif not (preserve or extra is True or (props is None and extra is None and not root and not schema)):
                yield (*at, key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from unknown_paths(item, schema["items"], (*at, i))


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


# apiextensions-apiserver's customresource strategy (hasBlockingErr): a schema error of these kinds
# (field.ErrorTypeTypeInvalid, NotSupported, Required, TooLong, TooMany) means CEL rules are not run at all,
# lest they read a value of the wrong type; any other schema error (pattern, minimum, ...) leaves them running.
BLOCKING_VALIDATORS = frozenset({"type", "enum", "required", "maxLength", "maxItems", "maxProperties"})
NOT_CHECKED = ("<nil>", 'Invalid value: "null": some validation rules were not checked because the object was '
                        "invalid; correct the existing errors to complete validation")




def rule_causes(schema: Schema, prefix: str) -> Iterator[tuple[str, str]]:
    """Each rule compiles, its cost (times the lists and maps around it) fits, and so does their sum."""
    total = 0
    for path, node, cardinality, around, uncorrelated in _nodes(schema, ()):
        for k, entry in enumerate(node.get("x-kubernetes-validations") or ()):
            where = f"{schema_path(prefix, path)}.x-kubernetes-validations[{k}].rule"
            text = entry.get("rule") if isinstance(entry, dict) else None
            try:
                rule = compile_rule(entry, node, at_root=not path, where=_data_path(path))
            except RuleError as exc:
                yield where, f"Invalid value: {json.dumps(text)}: {exc}"
                continue
            if rule.transition and uncorrelated:
                yield where, (f"Invalid value: {json.dumps(text)}: oldSelf cannot be used on the uncorrelatable "
                              f"portion of the schema within {uncorrelated}")
            reasons = [*rule.unbounded, *([around] if cardinality is None else [])]
            cost = None if rule.cost is None or cardinality is None else rule.cost * cardinality
            if cost is None or cost > STATIC_ESTIMATED_COST_LIMIT:
                detail = f": {'; '.join(reasons)}" if reasons else ""
                yield where, cost_message("estimated rule cost", cost, STATIC_ESTIMATED_COST_LIMIT) + detail
            total += cost or 0
    if total > STATIC_ESTIMATED_CRD_COST_LIMIT:
        yield prefix, cost_message("x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 "
                                   "schema", total, STATIC_ESTIMATED_CRD_COST_LIMIT)


def _nodes(schema: Schema, path: tuple[Any, ...], cardinality: int | None = 1, around: str = "",
           uncorrelated: str = "") -> Iterator[tuple[tuple[Any, ...], Schema, int | None, str, str]]:
    """Every sub-schema with how many times a rule there may run, why that is unbounded, and the first
    list above it whose items the server cannot pair with their old values (for `oldSelf`)."""
    yield path, schema, cardinality, around, uncorrelated
    for key, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, dict):
            yield from _nodes(sub, (*path, key), cardinality, around, uncorrelated)
    for part, limit_key, kind in (("[]", "maxItems", "a list without maxItems"),
                                  ("{}", "maxProperties", "a map without maxProperties")):
        sub = schema.get("items" if part == "[]" else "additionalProperties")
        if not isinstance(sub, dict):
            continue
        limit = schema.get(limit_key)
        inner = cardinality * limit if isinstance(limit, int) and cardinality is not None else None
        why = around or ("" if inner is not None else f"it runs inside {_data_path(path)}, {kind}")
        lost = uncorrelated or ("" if part == "{}" or schema.get("x-kubernetes-list-type") == "map"
                                else _data_path(path))
        yield from _nodes(sub, (*path, part), inner, why, lost)


def _data_path(path: tuple[Any, ...]) -> str:
    """`spec.items[].name`: a rule's place in the data, for messages."""
    return (field_path(path) or "self").replace(".[]", "[]").replace(".{}", "{}")


def default_causes(schema: Schema, prefix: str) -> Iterator[tuple[str, str]]:
    """Every `default`, exactly as written, satisfies its schema and the rules at and below it."""
    for path, node in walk_rules(schema):
        if "default" not in node:
            continue
        where = f"{schema_path(prefix, path)}.default"
        value = node["default"]
        errors = [c for e in jsonschema.Draft4Validator(to_json_schema(node)).iter_errors(value) for c in _cause(e)]
        if errors:
            yield from ((where, message) for _, message in errors)
            continue
        for sub_path, sub in walk_rules(node):
            for entry in sub.get("x-kubernetes-validations") or ():
                try:
                    rule = compile_rule(entry, sub)
                except RuleError:
                    continue  # rule_causes reports it
                if rule.transition:
                    continue
                for _, item, _ in _values_at(value, _MISSING, sub_path, node, ()):
                    message = rule.evaluate(item)
                    if message is not None:
                        yield where, f"Invalid value: {json.dumps(_kind(item))}: {message}"


def _kind(value: Any) -> str:
    return "object" if isinstance(value, dict) else "array" if isinstance(value, list) else json.dumps(value)


_MISSING: Any = object()  # no old value: a create, or an item the server cannot pair with its old self


@dataclass
class Admission:
    """Prune, default and validate a custom resource; raise 422 Invalid with every failing field."""

    schema: Schema
    kind: str
    group: str
    _rules: list[tuple[tuple[Any, ...], Rule]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._validator = jsonschema.Draft4Validator(to_json_schema(self.schema))
        self._rules = [(path, compile_rule(entry, node, at_root=not path))
                       for path, node in walk_rules(self.schema)
                       for entry in node.get("x-kubernetes-validations") or ()]

    def __call__(self, obj: Obj, old: Obj | None = None) -> Obj:
        if not self.schema:
            return obj
        obj = apply_defaults(prune(obj, self.schema, root=True), self.schema)
        errors = list(self._validator.iter_errors(obj))
        causes = [c for e in errors for c in _cause(e)]
        if any(e.validator in BLOCKING_VALIDATORS for e in errors):
            unchecked = [NOT_CHECKED]
        else:
            unchecked = []
            causes.extend(self._cel_causes(obj, _MISSING if old is None else old))
        if causes:
            rt = ResourceType(self.group, "", "", self.kind, False)
            raise invalid(rt, str(obj.get("metadata", {}).get("name", "")), sorted(set(causes)) + unchecked)
        return obj

    def unknown_fields(self, body: Any) -> list[Path]:
        """Field validation: the paths of the body's fields this version's schema does not declare."""
        return list(unknown_paths(body, self.schema, root=True)) if self.schema else []

    def _cel_causes(self, obj: Obj, old: Any) -> Iterator[tuple[str, str]]:
        for path, rule in self._rules:
            for location, value, old_value in _values_at(obj, old, path, self.schema, ()):
                if rule.transition and old_value is _MISSING:
                    continue  # transition rules run on updates only, where an old value pairs with this one
                message = rule.evaluate(value, old_value)
                if message is not None:
                    yield field_path(location) + rule.field_path, message


def _values_at(value: Any, old: Any, path: tuple[Any, ...], schema: Schema,
               at: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any, Any]]:
    """The values a rule path reaches, each with its old value where the server can pair them."""
    if not path:
        yield at, value, old
        return
    head, rest = path[0], path[1:]
    if head == "[]" and isinstance(value, list):
        items = schema.get("items") or {}
        keys = schema.get("x-kubernetes-list-map-keys") if schema.get("x-kubernetes-list-type") == "map" else None
        olds = old if isinstance(old, list) and keys else []
        for i, item in enumerate(value):
            key = [item.get(k) for k in keys] if keys and isinstance(item, dict) else None
            paired = next((o for o in olds if isinstance(o, dict) and [o.get(k) for k in keys or ()] == key),
                          _MISSING)
            yield from _values_at(item, paired, rest, items, (*at, i))
    elif head == "{}" and isinstance(value, dict):
        extra = schema.get("additionalProperties") or {}
        for key, item in value.items():
            paired = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
            yield from _values_at(item, paired, rest, extra, (*at, key))
    elif isinstance(value, dict) and head in value:
        paired = old.get(head, _MISSING) if isinstance(old, dict) else _MISSING
        yield from _values_at(value[head], paired, rest, (schema.get("properties") or {}).get(head) or {},
                              (*at, head))
