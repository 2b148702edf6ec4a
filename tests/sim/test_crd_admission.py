"""CRD creation in the embedded cluster refuses what kube-apiserver refuses; admission runs every rule.

Issue 8, section 0: the shipped CRD was accepted here and refused by a real server (an unbounded
`string()` in a rule, a default that breaks its own rule). Each class of refusal has a small CRD below.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from torchproof_sim.celrules import (
    STATIC_ESTIMATED_COST_LIMIT,
    STATIC_ESTIMATED_CRD_COST_LIMIT,
    compile_rule,
    walk_rules,
)
from torchproof_sim.schema import check_crd, resource_types_of_crd
from torchproof_sim.store import CRD_KEY, ApiError, Store

ROOT = Path(__file__).resolve().parents[2]
CRD: dict[str, Any] = yaml.safe_load((ROOT / "crds" / "pytorchreleaseprofiles.yaml").read_text())
BEFORE: dict[str, Any] = yaml.safe_load((Path(__file__).parent / "crd_before_issue8.yaml").read_text())
SAMPLE: dict[str, Any] = yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text())
ROOT_SCHEMA = "spec.versions[0].schema.openAPIV3Schema"
SPEC = f"{ROOT_SCHEMA}.properties[spec]"
BUDGET = "Forbidden: estimated rule cost exceeds budget by factor of"
GPU_CHECKS = ("cuda", "amp", "tensorCores", "channelsLast", "conv3d", "multiGpu")


def causes(crd: dict[str, Any]) -> list[tuple[str, str]]:
    """The (field, message) pairs of the 422 a CRD create gets; [] when it is accepted."""
    try:
        check_crd(crd)
    except ApiError as exc:
        assert (exc.code, exc.reason) == (422, "Invalid")
        return [(c["field"], c["message"]) for c in exc.details["causes"]]
    return []


def thing_crd(props: dict[str, Any], rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A one-version CRD whose spec has these properties and rules."""
    spec: dict[str, Any] = {"type": "object", "properties": props}
    if rules:
        spec["x-kubernetes-validations"] = rules
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.dev"},
        "spec": {"group": "example.dev", "scope": "Cluster", "names": {"plural": "things", "kind": "Thing"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": spec}}}}]},
    }


def rule(text: str, message: str = "") -> list[dict[str, Any]]:
    return [{"rule": text, **({"message": message} if message else {})}]


STR8 = {"type": "string", "maxLength": 8}
INT = {"type": "integer"}


# ---- the shipped CRD, before and after --------------------------------------------------------------


def test_the_crd_before_issue_8_is_refused_for_both_reasons_a_real_server_gave() -> None:
    found = causes(BEFORE)
    branch = f"{SPEC}.properties[requirements].properties[driver].properties[datacenterBranches].items"
    assert any(field == f"{branch}.x-kubernetes-validations[0].rule" and message.startswith(BUDGET)
               and "string() has no size bound" in message for field, message in found), found
    assert any(field == f"{SPEC}.properties[checks].properties[amp].default"
               and "no such key" in message for field, message in found), found


def test_the_fixed_crd_is_accepted() -> None:
    assert causes(CRD) == []


def test_every_rule_of_the_fixed_crd_fits_the_budget_with_room() -> None:
    schema = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    costs = [compile_rule(e, node, at_root=not path).cost
             for path, node in walk_rules(schema) for e in node.get("x-kubernetes-validations", ())]
    assert len(costs) == 13 and all(c is not None and c < STATIC_ESTIMATED_COST_LIMIT // 10 for c in costs), costs


# ---- each class of refusal ----------------------------------------------------------------------------


REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("default {} breaks its rule (nested defaults not filled in)",
     thing_crd({"a": {"type": "object", "default": {}, "properties": {"on": {"type": "boolean", "default": True}},
                      "x-kubernetes-validations": rule("self.on")}}),
     f"{SPEC}.properties[a].default", "no such key: on"),
    ("default value breaks its rule",
     thing_crd({"n": {"type": "integer", "default": 5, "x-kubernetes-validations": rule("self < 3", "below 3")}}),
     f"{SPEC}.properties[n].default", "below 3"),
    ("default breaks a rule below it",
     thing_crd({"a": {"type": "object", "default": {"n": 5}, "properties": {
         "n": {"type": "integer", "x-kubernetes-validations": rule("self < 3", "n below 3")}}}}),
     f"{SPEC}.properties[a].default", "n below 3"),
    ("default breaks the schema's minimum",
     thing_crd({"n": {"type": "integer", "minimum": 10, "default": 5}}),
     f"{SPEC}.properties[n].default", "less than the minimum of 10"),
    ("default of the wrong type", thing_crd({"s": {**STR8, "default": 7}}),
     f"{SPEC}.properties[s].default", "must be of type string"),
    ("rule that does not parse", thing_crd({"a": STR8}, rule("self.a >")),
     f"{SPEC}.x-kubernetes-validations[0].rule", "compilation failed"),
    ("rule calling an unknown function", thing_crd({"a": STR8}, rule("self.a.quantityValue() > 0")),
     f"{SPEC}.x-kubernetes-validations[0].rule", "undeclared reference to 'quantityValue'"),
    ("rule naming an undeclared field", thing_crd({"a": STR8}, rule("self.missing == 1")),
     f"{SPEC}.x-kubernetes-validations[0].rule", "undefined field 'missing'"),
    ("rule naming an unknown variable", thing_crd({"a": STR8}, rule("other == 1")),
     f"{SPEC}.x-kubernetes-validations[0].rule", "undeclared reference to 'other'"),
    ("empty rule", thing_crd({"a": STR8}, rule("  ")),
     f"{SPEC}.x-kubernetes-validations[0].rule", "Required value"),
    ("string without maxLength", thing_crd({"a": {"type": "string"}}, rule("self.a.startsWith('x')")),
     f"{SPEC}.x-kubernetes-validations[0].rule", "spec.a is a string without maxLength"),
    ("enum string without maxLength", thing_crd({"a": {"type": "string", "enum": ["x"]}}, rule("self.a == 'x'")),
     f"{SPEC}.x-kubernetes-validations[0].rule", "spec.a is a string without maxLength"),
    ("string() of a number", thing_crd({"a": STR8, "b": INT}, rule("self.a.startsWith(string(self.b))")),
     f"{SPEC}.x-kubernetes-validations[0].rule", "the result of string() has no size bound"),
    ("list without maxItems", thing_crd({"l": {"type": "array", "items": INT}}, rule("self.l.all(x, x > 0)")),
     f"{SPEC}.x-kubernetes-validations[0].rule", "spec.l is a list without maxItems"),
    ("map without maxProperties", thing_crd({"m": {"type": "object", "additionalProperties": STR8}},
                                            rule("self.m.all(k, self.m[k].size() > 0)")),
     f"{SPEC}.x-kubernetes-validations[0].rule", "spec.m is a map without maxProperties"),
    ("rule inside a list without maxItems",
     thing_crd({"l": {"type": "array", "items": {"type": "object", "properties": {"v": INT},
                                                 "x-kubernetes-validations": rule("self.v > 0")}}}),
     f"{SPEC}.properties[l].items.x-kubernetes-validations[0].rule", "it runs inside spec.l, a list without maxItems"),
    ("bounded but quadratic",
     thing_crd({"l": {"type": "array", "maxItems": 1000, "items": {"type": "string", "maxLength": 1000}}},
               rule("self.l.all(x, self.l.all(y, x != y || x == y))")),
     f"{SPEC}.x-kubernetes-validations[0].rule", f"{BUDGET} more than 100x"),
    ("oldSelf inside an atomic list",
     thing_crd({"l": {"type": "array", "maxItems": 4, "items": {"type": "object", "properties": {"v": INT},
                                                                "x-kubernetes-validations": rule("self == oldSelf")}}}),
     f"{SPEC}.properties[l].items.x-kubernetes-validations[0].rule",
     "oldSelf cannot be used on the uncorrelatable portion of the schema within spec.l"),
]


@pytest.mark.parametrize(("case", "crd", "field", "text"), REFUSED, ids=[r[0] for r in REFUSED])
def test_crd_creation_refuses_with_the_field_path(case: str, crd: dict[str, Any], field: str, text: str) -> None:
    found = causes(crd)
    assert any(f == field and text in m for f, m in found), found


def test_the_sum_of_rule_costs_has_its_own_limit() -> None:
    items = {"type": "array", "maxItems": 100, "items": {"type": "string", "maxLength": 100}}
    text = "self.l.all(x, x.size() > 0)"
    cost = compile_rule({"rule": text}, {"type": "object", "properties": {"l": items}}).cost
    assert cost is not None and cost < STATIC_ESTIMATED_COST_LIMIT
    many = [{"rule": text}] * (STATIC_ESTIMATED_CRD_COST_LIMIT // cost + 1)
    found = causes(thing_crd({"l": items}, many))
    assert [f for f, _ in found] == [ROOT_SCHEMA], found
    assert "estimated rule cost total for entire OpenAPIv3 schema exceeds budget" in found[0][1]


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("bounded string rule", thing_crd({"a": STR8}, rule("self.a.startsWith('x')"))),
    ("default {} with has() guards",
     thing_crd({"a": {"type": "object", "default": {}, "properties": {"on": {"type": "boolean", "default": True}},
                      "x-kubernetes-validations": rule("!has(self.on) || self.on")}})),
    ("number compared as a number", thing_crd({"a": STR8, "b": INT}, rule("int(self.a.split('.')[0]) == self.b"))),
    ("macro over a bounded list",
     thing_crd({"l": {"type": "array", "maxItems": 16, "items": STR8}}, rule("self.l.all(x, x.matches('^[a-z]+$'))"))),
    ("oldSelf in a map list",
     thing_crd({"l": {"type": "array", "maxItems": 4, "x-kubernetes-list-type": "map",
                      "x-kubernetes-list-map-keys": ["k"], "items": {
                          "type": "object", "required": ["k"], "properties": {"k": STR8, "v": INT},
                          "x-kubernetes-validations": rule("self.v >= oldSelf.v")}}})),
    ("Kubernetes string library",
     thing_crd({"a": STR8}, rule("self.a.lowerAscii().trim().indexOf('x') < self.a.upperAscii().size()"))),
]


@pytest.mark.parametrize(("case", "crd"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_crd_creation_accepts_what_the_server_accepts(case: str, crd: dict[str, Any]) -> None:
    assert causes(crd) == []


def test_a_refused_crd_is_not_served() -> None:
    store = Store()
    with pytest.raises(ApiError) as caught:
        store.create(store.resolve(CRD_KEY), None, BEFORE)
    assert caught.value.code == 422
    with pytest.raises(ApiError) as missing:
        store.lookup("torchproof.dev", "v1alpha1", "pytorchreleaseprofiles")
    assert missing.value.code == 404


# ---- admission: every rule runs, as Kubernetes runs it --------------------------------------------


def _served(crd: dict[str, Any]) -> tuple[Store, Any]:
    store = Store()
    store.create(store.resolve(CRD_KEY), None, crd)
    group, version = crd["spec"]["group"], crd["spec"]["versions"][0]["name"]
    return store, store.lookup(group, version, crd["spec"]["names"]["plural"])


def _thing(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.dev/v1", "kind": "Thing", "metadata": {"name": name}, "spec": spec}


def test_transition_rules_run_on_updates_only() -> None:
    store, rt = _served(thing_crd({"size": INT}, rule("self.size >= oldSelf.size", "size must not shrink")))
    store.create(rt, None, _thing("t", size=5))  # a create has no old self: the rule does not run
    with pytest.raises(ApiError) as caught:
        store.replace(rt, None, "t", {**store.get(rt, None, "t"), "spec": {"size": 3}})
    assert caught.value.details["causes"] == [{"reason": "FieldValueInvalid", "message": "size must not shrink",
                                               "field": "spec"}]
    assert store.replace(rt, None, "t", {**store.get(rt, None, "t"), "spec": {"size": 7}})["spec"] == {"size": 7}


def test_a_number_field_is_a_double_even_when_written_as_an_integer() -> None:
    store, rt = _served(thing_crd({"ratio": {"type": "number"}}, rule("type(self.ratio) == double")))
    assert store.create(rt, None, _thing("t", ratio=2))["spec"] == {"ratio": 2}


def test_a_rule_that_errors_refuses_with_the_error_and_its_message() -> None:
    store, rt = _served(thing_crd({"a": INT, "b": INT}, rule("self.a < self.b", "a must be below b")))
    with pytest.raises(ApiError) as caught:
        store.create(rt, None, _thing("t", a=1))
    assert caught.value.details["causes"][0]["message"] == "no such key: b evaluating rule: a must be below b"


LIBRARY: list[tuple[str, dict[str, Any], bool]] = [
    ("self.s.split('.')[1] == 'b'", {"s": "a.b.c"}, True),
    ("self.s.split('.').size() == 3", {"s": "a.b.c"}, True),
    ("int(self.s.split('.')[0]) == 418", {"s": "418.40.04"}, True),
    ("self.s.lowerAscii() == 'abc'", {"s": "AbC"}, True),
    ("self.s.upperAscii() == 'ABC'", {"s": "AbC"}, True),
    ("self.s.trim() == 'a'", {"s": "  a "}, True),
    ("self.s.indexOf('c') == 2 && self.s.lastIndexOf('a') == 3", {"s": "abca"}, True),
    ("self.s.substring(1, 3) == 'bc' && self.s.charAt(0) == 'a'", {"s": "abcd"}, True),
    ("self.s.replace('a', 'x') == 'xbcx'", {"s": "abca"}, True),
    ("self.l.join('-') == 'a-b'", {"l": ["a", "b"]}, True),
    ("self.n.isSorted() && self.n.sum() == 6 && self.n.min() == 1 && self.n.max() == 3", {"n": [1, 2, 3]}, True),
    ("self.s.find('[0-9]+') == '42' && self.s.findAll('[a-z]').size() == 2", {"s": "a42b"}, True),
    ("self.s.matches('^[a-z]+$')", {"s": "abc1"}, False),
    ("has(self.s) && self.s.startsWith('ab') && self.s.endsWith('c') && self.s.contains('b')", {"s": "abc"}, True),
    ("double(self.s) >= 7.5 && size(self.s) == 3", {"s": "7.5"}, True),
]


@pytest.mark.parametrize(("text", "value", "holds"), LIBRARY, ids=[t for t, _, _ in LIBRARY])
def test_kubernetes_library_functions_evaluate_as_kubernetes_does(text: str, value: dict[str, Any],
                                                                  holds: bool) -> None:
    schema = {"type": "object", "properties": {
        "s": {"type": "string", "maxLength": 16}, "l": {"type": "array", "maxItems": 4, "items": STR8},
        "n": {"type": "array", "maxItems": 4, "items": INT}}}
    assert (compile_rule({"rule": text, "message": "no"}, schema).evaluate(value) is None) is holds


# ---- section 9 and the shipped profiles, through the real CRD -------------------------------------


def _profile_store() -> tuple[Store, Any]:
    return _served(copy.deepcopy(CRD))


@pytest.mark.parametrize("path", sorted((ROOT / "profiles").glob("pytorch-*.yaml")), ids=lambda p: p.name)
def test_every_shipped_profile_is_admitted(path: Path) -> None:
    store, rt = _profile_store()
    assert store.create(rt, None, yaml.safe_load(path.read_text()))["metadata"]["name"] == path.stem


SECTION_9: list[tuple[str, Any, str, str]] = [
    ("all GPU checks off", lambda s: s["checks"].update({c: {"enabled": False} for c in GPU_CHECKS}),
     "spec.checks", "checks.cuda and checks.gpu cannot be disabled"),
    ("every check off", lambda s: s["checks"].update(
        {c: {"enabled": False} for c in (*GPU_CHECKS, "environment", "gpu")}), "spec.checks", "cannot be disabled"),
    ("cuda off", lambda s: s["checks"].update(cuda={"enabled": False}), "spec.checks", "cannot be disabled"),
    ("gpu off", lambda s: s["checks"].update(gpu={"enabled": False}), "spec.checks", "cannot be disabled"),
    ("budget equals the timeout", lambda s: (s["checks"].update(timeBudgetSeconds=600),
                                             s["validation"].update(runtimeTimeoutSeconds=600)),
     "spec.checks.timeBudgetSeconds", "must not exceed validation.runtimeTimeoutSeconds"),
    ("budget within 30 s of the timeout", lambda s: s["checks"].update(timeBudgetSeconds=571),
     "spec.checks.timeBudgetSeconds", "plus 30s"),
    ("default budget over a short timeout", lambda s: (s.pop("checks"), s["validation"].update(
        runtimeTimeoutSeconds=149)), "spec.checks.timeBudgetSeconds", "plus 30s"),
]


@pytest.mark.parametrize(("case", "edit", "field", "text"), SECTION_9, ids=[c[0] for c in SECTION_9])
def test_profiles_that_cannot_validate_anything_are_refused(case: str, edit: Any, field: str, text: str) -> None:
    store, rt = _profile_store()
    body = copy.deepcopy(SAMPLE)
    edit(body["spec"])
    with pytest.raises(ApiError) as caught:
        store.create(rt, None, body)
    assert caught.value.code == 422
    assert [(c["field"], text in c["message"]) for c in caught.value.details["causes"]] == [(field, True)]


def test_admitting_a_profile_stays_cheap() -> None:
    admit = resource_types_of_crd(CRD)[0].admit
    assert admit is not None
    start = time.perf_counter()
    for _ in range(300):
        admit(copy.deepcopy(SAMPLE), None)
    assert time.perf_counter() - start < 3.0  # measured about 0.3 s on the CI machine (docs/embedded-cluster.md)


NOT_CHECKED = ("<nil>", 'Invalid value: "null": some validation rules were not checked because the object was '
                        "invalid; correct the existing errors to complete validation")
LOW_HIGH = ("spec", "low must not exceed high")
CEL_WITH_SCHEMA_ERRORS = [  # (case, spec, causes): a real server runs the rules unless a schema error blocks them
    ("a pattern error: rules still run", {"size": 1, "code": "A1", "low": 5, "high": 1},
     [LOW_HIGH, ("spec.code", 'Invalid value: "A1": \'A1\' does not match \'^[a-z]+$\'')]),
    ("a minimum error: rules still run", {"size": 0, "low": 5, "high": 1},
     [LOW_HIGH, ("spec.size", "Invalid value: 0: 0 is less than the minimum of 1")]),
    ("a maximum error alone", {"size": 11}, [("spec.size", "Invalid value: 11: 11 is greater than the maximum of 10")]),
    ("a type error blocks them", {"size": "1", "low": 5, "high": 1},
     [("spec.size", 'Invalid value: "1": spec.size in body must be of type integer'), NOT_CHECKED]),
    ("an enum error blocks them", {"size": 1, "colour": "green", "low": 5, "high": 1},
     [("spec.colour", 'Unsupported value: "green": supported values: "red", "blue"'), NOT_CHECKED]),
    ("a missing required field blocks them", {"low": 5, "high": 1}, [("spec.size", "Required value"), NOT_CHECKED]),
    ("too long blocks them", {"size": 1, "code": "abcdefghij", "low": 5, "high": 1},
     [("spec.code", 'Invalid value: "abcdefghij": \'abcdefghij\' is too long'), NOT_CHECKED]),
    ("too many blocks them", {"size": 1, "tags": ["a", "b", "c"], "low": 5, "high": 1},
     [("spec.tags", 'Invalid value: ["a", "b", "c"]: [\'a\', \'b\', \'c\'] is too long'), NOT_CHECKED]),
]


@pytest.mark.parametrize(("case", "spec", "expected"), CEL_WITH_SCHEMA_ERRORS,
                         ids=[c[0] for c in CEL_WITH_SCHEMA_ERRORS])
def test_cel_rules_run_beside_schema_errors_unless_one_blocks_them(case: str, spec: dict[str, Any],
                                                                   expected: list[tuple[str, str]]) -> None:
    from gadgets import GADGET_CRD

    admit = resource_types_of_crd(GADGET_CRD)[0].admit
    assert admit is not None
    with pytest.raises(ApiError) as refused:
        admit({"apiVersion": "example.torchproof.dev/v1", "kind": "Gadget", "metadata": {"name": "g"},
               "spec": spec}, None)
    assert [(c["field"], c["message"]) for c in refused.value.details["causes"]] == expected


def test_a_cpu_dry_run_is_admitted_with_a_node_selector_and_refused_without() -> None:
    store, rt = _profile_store()
    example = yaml.safe_load((ROOT / "examples" / "profile-cpu-dryrun.yaml").read_text())
    assert store.create(rt, None, copy.deepcopy(example))["spec"]["validation"]["device"] == "cpu"
    body = copy.deepcopy(example)
    body["metadata"]["name"] = "no-selector"
    del body["spec"]["nodeSelector"]
    with pytest.raises(ApiError) as caught:
        store.create(rt, None, body)
    assert caught.value.code == 422
    assert [(c["field"], "needs a nodeSelector" in c["message"]) for c in caught.value.details["causes"]] == [
        ("spec.nodeSelector", True)]
    gpu = copy.deepcopy(SAMPLE)
    assert store.create(rt, None, gpu)["spec"]["validation"]["device"] == "cuda"  # the default, no selector
