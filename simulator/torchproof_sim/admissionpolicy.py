"""ValidatingAdmissionPolicies as kube-apiserver enforces them, for the embedded cluster: each binding's policy
is matched by its resource rules and match conditions and its validations are evaluated, on the CEL that
`celrules` uses, against `object`, `oldObject`, `request` and `variables`; a false validation of a `Deny`
binding refuses the write with the server's 422. Pure: the store hands in the objects.

Checked as the server checks them: every expression compiles (cel-rust's parser and the functions it knows,
with the Kubernetes string and list libraries), else the policy is refused at creation. Not done: the
Kubernetes type check (an expression comparing values of different types compiles here), cost limits,
`paramKind`/`paramRef`, `messageExpression`, `auditAnnotations`, `matchResources` of bindings, namespace and
object selectors, `Warn`/`Audit` actions (only `Deny` refuses), DELETE and CONNECT requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cel

from torchproof_sim.celrules import KUBERNETES_FUNCTIONS

Obj = dict[str, Any]
_CEL_ERRORS = (RuntimeError, TypeError, KeyError, ValueError, IndexError, OverflowError)


class PolicyError(ValueError):
    """An expression that does not compile: (field path, message)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Expression:
    text: str
    program: cel.Program
    message: str = ""


@dataclass(frozen=True)
class Policy:
    name: str
    rules: tuple[Mapping[str, Any], ...]
    conditions: tuple[tuple[str, Expression], ...]
    variables: tuple[tuple[str, Expression], ...]
    validations: tuple[Expression, ...]
    fail_closed: bool


def _compile(entry: Any, field: str) -> Expression:
    text = entry.get("expression") if isinstance(entry, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise PolicyError(f"{field}.expression", "Required value")
    try:
        program = cel.compile(text)
    except ValueError as exc:
        raise PolicyError(f"{field}.expression", f'Invalid value: "{text}": compilation failed: {exc}') from None
    return Expression(text, program, str(entry.get("message") or ""))


def compile_policy(obj: Obj) -> Policy:
    """The policy, compiled; PolicyError names the first expression the server would refuse."""
    spec = obj.get("spec") or {}
    rules = tuple((spec.get("matchConstraints") or {}).get("resourceRules") or ())
    conditions = tuple((str(c.get("name", "")), _compile(c, f"spec.matchConditions[{i}]"))
                       for i, c in enumerate(spec.get("matchConditions") or ()))
    variables = tuple((str(v.get("name", "")), _compile(v, f"spec.variables[{i}]"))
                      for i, v in enumerate(spec.get("variables") or ()))
    validations = tuple(_compile(v, f"spec.validations[{i}]") for i, v in enumerate(spec.get("validations") or ()))
    return Policy(str(obj["metadata"]["name"]), rules, conditions, variables, validations,
                  spec.get("failurePolicy", "Fail") != "Ignore")


@dataclass(frozen=True)
class Request:
    """What the policy sees as `request` (the admission request's attributes)."""

    operation: str  # CREATE, UPDATE
    group: str
    version: str
    resource: str
    subresource: str
    name: str
    namespace: str
    username: str
    groups: tuple[str, ...]

    def as_cel(self) -> Obj:
        return {"operation": self.operation, "name": self.name, "namespace": self.namespace,
                "resource": {"group": self.group, "version": self.version, "resource": self.resource},
                "subResource": self.subresource,
                "userInfo": {"username": self.username, "groups": list(self.groups)}}


def _listed(values: Iterable[Any], wanted: str) -> bool:
    values = list(values)
    return "*" in values or wanted in values


def matches(policy: Policy, request: Request) -> bool:
    """Its resource rules name the request's group, version, resource (and subresource) and operation."""
    resource = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    return any(_listed(r.get("apiGroups") or (), request.group) and _listed(r.get("apiVersions") or (), request.version)
               and _listed(r.get("operations") or (), request.operation)
               and _listed(r.get("resources") or (), resource) for r in policy.rules)


def denial(policy: Policy, binding: str, request: Request, obj: Obj | None, old: Obj | None) -> str | None:
    """The refusal's message when the policy denies the request, else None (not matched, or allowed)."""
    if not matches(policy, request):
        return None
    env: dict[str, Any] = {"object": obj, "oldObject": old, "request": request.as_cel()}
    prefix = f"ValidatingAdmissionPolicy '{policy.name}' with binding '{binding}' denied request: "
    try:
        for _, condition in policy.conditions:
            if _run(condition, env) is not True:
                return None
        values: dict[str, Any] = {}
        env["variables"] = values
        for name, variable in policy.variables:
            values[name] = _run(variable, env)
    except _CEL_ERRORS as exc:
        return prefix + f"expression evaluation failed: {exc}" if policy.fail_closed else None
    for validation in policy.validations:
        try:
            result = _run(validation, env)
        except _CEL_ERRORS as exc:
            if policy.fail_closed:
                return prefix + f"expression '{validation.text}' resulted in error: {exc}"
            continue
        if result is not True:
            return prefix + (validation.message or f"failed expression: {validation.text}")
    return None


def _run(expression: Expression, env: Mapping[str, Any]) -> Any:
    return expression.program.execute(cel.Context(variables=dict(env), functions=KUBERNETES_FUNCTIONS))
