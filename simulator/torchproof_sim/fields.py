"""Server-side field validation (`fieldValidation=Ignore|Warn|Strict`): which fields of a body are unknown.

A real API server decodes every write strictly and, by the request's directive, drops unknown and duplicate
fields silently (`Ignore`), drops them with a `Warning` header (`Warn`, the server's default) or refuses the
request with 400 BadRequest (`Strict`, kubectl's default). For custom resources the CRD's schema says what
is known (`schema.Admission.unknown_fields`); for built-in types the published OpenAPI schemas that
`kubernetes-validate` ships do, when it is installed (a development dependency): without it, built-in types
accept every field. Pure: no I/O but reading those schemas once.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path as FilePath
from typing import Any

IGNORE, WARN, STRICT = "Ignore", "Warn", "Strict"
DIRECTIVES = (IGNORE, WARN, STRICT)
SCHEMA_VERSION = "v1.32.0"  # the published schemas of built-in types used for unknown fields
Schema = dict[str, Any]
Path = tuple[str | int, ...]  # keys and list indexes from the object's root
UnknownFields = Callable[[Any], list[Path]]  # a (partial) object → the paths of its unknown fields

# group/version/kind → the definition's name in the published schemas
BUILTIN_DEFINITIONS = {
    ("", "v1", "Node"): "io.k8s.api.core.v1.Node",
    ("", "v1", "Pod"): "io.k8s.api.core.v1.Pod",
    ("", "v1", "ConfigMap"): "io.k8s.api.core.v1.ConfigMap",
    ("", "v1", "Event"): "io.k8s.api.core.v1.Event",
    ("", "v1", "Namespace"): "io.k8s.api.core.v1.Namespace",
    ("", "v1", "Secret"): "io.k8s.api.core.v1.Secret",
    ("", "v1", "ServiceAccount"): "io.k8s.api.core.v1.ServiceAccount",
    ("events.k8s.io", "v1", "Event"): "io.k8s.api.events.v1.Event",
    ("coordination.k8s.io", "v1", "Lease"): "io.k8s.api.coordination.v1.Lease",
    ("rbac.authorization.k8s.io", "v1", "Role"): "io.k8s.api.rbac.v1.Role",
    ("rbac.authorization.k8s.io", "v1", "RoleBinding"): "io.k8s.api.rbac.v1.RoleBinding",
    ("rbac.authorization.k8s.io", "v1", "ClusterRole"): "io.k8s.api.rbac.v1.ClusterRole",
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"): "io.k8s.api.rbac.v1.ClusterRoleBinding",
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy"):
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicy",
    ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding"):
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyBinding",
    ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration"):
        "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration",
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition"):
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
}


def directive(value: str | None, default: str) -> str:
    """The request's `fieldValidation`, or the server's default; ValueError names a bad one."""
    if value is None or value == "":
        return default
    if value not in DIRECTIVES:
        raise ValueError(f'fieldValidation: Unsupported value: "{value}": supported values: '
                         f'"{IGNORE}", "{WARN}", "{STRICT}"')
    return value


def strict_message(kind: str, version: str, problems: list[str]) -> str:
    """The server's words for a Strict refusal (400 BadRequest)."""
    return f'{kind} in version "{version}" cannot be handled as a {kind}: strict decoding error: ' + ", ".join(problems)


def dotted(path: Path) -> str:
    """`("spec", "containers", 0, "foo")` → `spec.containers[0].foo`, as the server names a field."""
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def unknown(path: Path) -> str:
    return f'unknown field "{dotted(path)}"'


def remove(body: Any, paths: list[Path]) -> None:
    """Drop these fields from a body the request owns (what decoding into a typed object does to them)."""
    for path in paths:
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]


def decode_noting_duplicates(body: bytes) -> tuple[Any, list[str]]:
    """`json.loads`, and the keys some object of the body gives twice (the last one wins, as in json)."""
    found: list[str] = []

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    found.append(f'duplicate field "{key}"')
                seen.add(key)
        return result

    return json.loads(body, object_pairs_hook=build), found


# --- built-in types ---------------------------------------------------------------------------------------


@functools.cache
def _definitions() -> dict[str, Schema] | None:
    try:
        import kubernetes_validate  # optional: a development dependency
    except ImportError:
        return None
    root = FilePath(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"{SCHEMA_VERSION}-local-strict"
    try:
        document = json.loads((root / "_definitions.json").read_text())
    except (OSError, ValueError):
        return None
    definitions: dict[str, Schema] = document["$defs"]
    return definitions


def builtin_unknown_fields(group: str, version: str, kind: str) -> UnknownFields | None:
    """The unknown-field finder of a built-in type, or None when its schema is not at hand."""
    definitions = _definitions()
    name = BUILTIN_DEFINITIONS.get((group, version, kind))
    if definitions is None or name is None or name not in definitions:
        return None
    schema = definitions[name]

    def find(value: Any) -> list[Path]:
        return list(_walk(value, schema, definitions, ()))

    return find


def _resolve(schema: Schema, definitions: dict[str, Schema]) -> Schema:
    while "$ref" in schema:
        schema = definitions.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
    return schema


def _walk(value: Any, schema: Schema, definitions: dict[str, Schema], at: Path) -> Iterator[Path]:
    schema = _resolve(schema, definitions)
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is None and not isinstance(extra, dict) and extra is not False:
            return  # free-form (RawExtension, JSONSchemaProps' `default`, …)
        for key, item in value.items():
            if item is None or (isinstance(key, str) and key.startswith("$")):
                continue  # a merge patch's deletion; a strategic merge patch's directive
            if props is not None and key in props:
                yield from _walk(item, props[key], definitions, (*at, key))
            elif isinstance(extra, dict):
                yield from _walk(item, extra, definitions, (*at, key))
            else:
                yield (*at, key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from _walk(item, schema["items"], definitions, (*at, i))


class FieldCheck:
    """One write's field validation: its directive, the duplicates its body had, and the warnings it earns."""

    def __init__(self, directive: str = IGNORE, duplicates: list[str] | None = None) -> None:
        self.directive = directive
        self.duplicates = list(duplicates or ())
        self.warnings: list[str] = []

    def check(self, kind: str, version: str, body: Any, find: UnknownFields | None) -> None:
        """Refuse (Strict: ValueError) the body's duplicate and unknown fields, or drop the unknown ones from it,
        noting them as warnings (Warn) or not (Ignore)."""
        paths = find(body) if find is not None else []
        problems = [*self.duplicates, *(unknown(p) for p in paths)]
        if problems and self.directive == STRICT:
            raise ValueError(strict_message(kind, version, problems))
        remove(body, paths)
        if self.directive == WARN:
            self.warnings.extend(problems)
