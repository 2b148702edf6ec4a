"""The CRD: generated from the models, its shape, a structural schema that admits the 20.06 profile, and its CEL
rules run by the embedded cluster's CEL beside the cross-field checks of parse_profile."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from torchproof import crdgen
from torchproof.catalogue import ARCHITECTURES
from torchproof.profile import InvalidSpec, parse_profile
from torchproof_sim.celrules import Rule, compile_rule, walk_rules
from torchproof_sim.schema import apply_defaults

ROOT = Path(__file__).resolve().parents[2]
CRD: dict[str, Any] = yaml.safe_load((ROOT / "crds" / "pytorchreleaseprofiles.yaml").read_text())
VERSION: dict[str, Any] = CRD["spec"]["versions"][0]
SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]
SAMPLE: dict[str, Any] = yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text())


def to_json_schema(node: Any) -> Any:
    """Kubernetes' OpenAPI subset → JSON Schema: drop x-kubernetes-* keys, and reject unknown fields as
    `kubectl apply` (field validation Strict) does instead of pruning them."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    if node.get("format") == "int64":
        del out["format"]
    return out


VALIDATOR = jsonschema.Draft7Validator(to_json_schema(SCHEMA))


def errors(obj: Any) -> list[str]:
    return ["/".join(map(str, e.absolute_path)) + ": " + e.message for e in VALIDATOR.iter_errors(obj)]


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every sub-schema with its path (``spec.checks.amp``; ``[]`` for list items, ``{}`` for map values)."""
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{key}" if path else key)
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


# ---- generated from the models ------------------------------------------------------------------------


@pytest.mark.parametrize("path", crdgen.targets(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_committed_crd_is_what_the_models_generate(path: Path) -> None:
    assert path.read_text(encoding="utf-8") == crdgen.crd_text(), "run `make crd` and commit the result"


def test_the_generator_writes_both_files(tmp_path: Path) -> None:
    for path in crdgen.targets(tmp_path):
        path.parent.mkdir(parents=True)
    assert crdgen.main([str(tmp_path)]) == 0
    assert [p.read_text(encoding="utf-8") for p in crdgen.targets(tmp_path)] == [crdgen.crd_text()] * 2
    assert yaml.safe_load(crdgen.crd_text()) == crdgen.crd()


# ---- names, columns, status -----------------------------------------------------------------------


def test_crd_names_and_scope() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["metadata"]["name"] == "pytorchreleaseprofiles.torchproof.dev"
    spec = CRD["spec"]
    assert (spec["group"], spec["scope"]) == ("torchproof.dev", "Cluster")
    assert spec["names"] == {
        "kind": "PyTorchReleaseProfile",
        "listKind": "PyTorchReleaseProfileList",
        "plural": "pytorchreleaseprofiles",
        "singular": "pytorchreleaseprofile",
        "shortNames": ["prp"],
        "categories": ["torchproof"],
    }
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [("v1alpha1", True, True)]
    assert VERSION["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = {c["name"]: (c["jsonPath"], c.get("priority", 0)) for c in VERSION["additionalPrinterColumns"]}
    assert columns == {
        "Release": (".spec.release", 0),
        "Image": (".spec.image", 1),
        "Passed": (".status.counts.passed", 0),
        "Failed": (".status.counts.failed", 0),
        "Incompatible": (".status.counts.incompatible", 0),
        "Error": (".status.counts.error", 0),
        "Pending": (".status.counts.pending", 0),
        "Ready": ('.status.conditions[?(@.type=="Ready")].status', 0),
        "Age": (".metadata.creationTimestamp", 0),
    }


def test_a_full_status_validates_and_failing_nodes_are_capped() -> None:
    status = {
        "observedGeneration": 3,
        "conditions": [{"type": "Ready", "status": "True", "reason": "AllNodesProven", "message": "",
                        "observedGeneration": 3, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "counts": dict.fromkeys(
            ("passed", "failed", "incompatible", "error", "pending", "running", "waiting", "skipped", "total"), 0
        ),
        "failingNodes": [{"node": "gpu-1", "verdict": "incompatible", "reasons": ["DriverTooOld: 410 < 450"]}],
        "waitingNodes": [{"node": "gpu-2", "reason": "ImagePullFailed"}],
        "imagePull": {"state": "Failing", "image": "nvcr.io/nvidia/pytorch:20.06-py3", "generation": 3,
                      "reason": "ErrImagePull", "message": "not found", "since": "2026-01-01T00:00:00Z"},
    }
    assert errors({**SAMPLE, "status": status}) == []
    status["failingNodes"] = status["failingNodes"] * 21
    assert any("failingNodes" in e for e in errors({**SAMPLE, "status": status}))
    status["failingNodes"] = []
    status["conditions"][0]["status"] = "Yes"
    assert any("conditions/0/status" in e for e in errors({**SAMPLE, "status": status}))


def test_conditions_are_a_map_keyed_by_type() -> None:
    conditions = SCHEMA["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


# ---- the schema is structural and bounded -------------------------------------------------------------


def test_spec_schema_is_fully_typed_and_bounded() -> None:
    for path, sub in walk(SCHEMA["properties"]["spec"], "spec"):
        assert "x-kubernetes-preserve-unknown-fields" not in sub, path
        assert "type" in sub, path
        if sub["type"] == "string":
            assert "maxLength" in sub or "enum" in sub, path
        if sub["type"] == "array":
            assert "maxItems" in sub and "x-kubernetes-list-type" in sub, path
        if sub["type"] == "object":
            assert "properties" in sub or "additionalProperties" in sub, path


def test_architecture_enums_are_the_catalogues() -> None:
    enums = [sub["enum"] for path, sub in walk(SCHEMA) if path.endswith("architectures[]")]
    assert len(enums) == 2 and all(e == list(ARCHITECTURES) for e in enums)


# ---- the sample and bad profiles ----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((ROOT / "profiles").glob("pytorch-*.yaml")), ids=lambda p: p.name)
def test_every_shipped_profile_validates_and_parses(path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    assert errors(obj) == []
    assert cel_violations(obj) == []
    assert parse_profile(obj).name == path.stem


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda s: s.pop("image"), "spec: 'image' is a required property"),
        (lambda s: s.update(imagePullPolicy="Sometimes"), "spec/imagePullPolicy"),
        (lambda s: s.update(maxConcurrent=-1), "spec/maxConcurrent"),
        (lambda s: s.update(release="2006"), "spec/release"),
        (lambda s: s["checks"]["amp"].update(steps=101), "spec/checks/amp/steps"),
        (lambda s: s["checks"]["tensorCores"].update(size=100000), "spec/checks/tensorCores/size"),
        (lambda s: s["requirements"].update(architectures=["Ada Lovelace"]), "spec/requirements/architectures/0"),
        (lambda s: s["knownIssues"][0].update(severity="high"), "spec/knownIssues/0/severity"),
        (lambda s: s["knownIssues"][0].update(precisions=["int8"]), "spec/knownIssues/0/precisions/0"),
        (lambda s: s["validation"].update(gpusPerProbe=9), "spec/validation/gpusPerProbe"),
        (lambda s: s["validation"]["resources"]["limits"].update(memory="lots"),
         "spec/validation/resources/limits/memory"),
        (lambda s: s.update(revalidateAfter="7d"), "spec/revalidateAfter"),
        (lambda s: s["validation"].update(gpuResource="amd.com/gpu"), "spec/validation/gpuResource"),
        (lambda s: s["validation"].update(runtimeClassName="Nvidia"), "spec/validation/runtimeClassName"),
        (lambda s: s["validation"].update(shmSize="1 GiB"), "spec/validation/shmSize"),
        (lambda s: s["validation"].update(securityContext={"runAsUser": -1}),
         "spec/validation/securityContext/runAsUser"),
        (lambda s: s["validation"].update(securityContext={"privileged": True}),
         "spec/validation/securityContext: Additional properties"),
        (lambda s: s["validation"]["resources"]["limits"].update({"ephemeral-storage": "10 G"}),
         "spec/validation/resources/limits/ephemeral-storage"),
        (lambda s: s.update(imageTag="20.06"), "spec: Additional properties"),
    ],
)
def test_schema_and_parser_both_reject(edit: Callable[[dict[str, Any]], Any], where: str) -> None:
    obj = copy.deepcopy(SAMPLE)
    edit(obj["spec"])
    assert any(e.startswith(where) for e in errors(obj)), errors(obj)
    with pytest.raises(InvalidSpec):
        parse_profile(obj)


# ---- defaults: the CRD's and parse_profile's are the same ---------------------------------------------


def defaulted(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server stores it: every absent property with a default gets it."""
    out: dict[str, Any] = apply_defaults(copy.deepcopy(obj), SCHEMA)
    return out


def test_crd_defaults_equal_parser_defaults() -> None:
    minimal = {
        "apiVersion": "torchproof.dev/v1alpha1",
        "kind": "PyTorchReleaseProfile",
        "metadata": {"name": "p"},
        "spec": {
            "release": "20.06",
            "image": "nvcr.io/nvidia/pytorch:20.06-py3",
            "requirements": {"driver": {"minimum": "450"}, "minComputeCapability": "6.0"},
            "knownIssues": [{"id": "a", "summary": "s"}],
        },
    }
    full = defaulted(minimal)
    assert full["spec"]["checks"]["tensorCores"]["size"] == 4096  # defaulting did reach nested objects
    assert errors(full) == []
    assert parse_profile(full) == parse_profile(minimal)


# ---- CEL rules, evaluated as the API server evaluates them ---------------------------------------------

RULES: list[tuple[tuple[Any, ...], Rule]] = [
    (path, compile_rule(entry, node, at_root=not path))
    for path, node in walk_rules(SCHEMA) for entry in node.get("x-kubernetes-validations") or ()
]


def values_at(value: Any, path: tuple[Any, ...]) -> list[Any]:
    """The values a rule's data path (`"[]"` for list items, `"{}"` for map values) reaches in an object."""
    if not path:
        return [value]
    head, rest = path[0], path[1:]
    if head == "[]":
        return [v for item in (value if isinstance(value, list) else []) for v in values_at(item, rest)]
    if head == "{}":
        return [v for item in (value.values() if isinstance(value, dict) else []) for v in values_at(item, rest)]
    return values_at(value[head], rest) if isinstance(value, dict) and head in value else []


def cel_violations(obj: dict[str, Any]) -> list[str]:
    """The rules an object breaks, each evaluated by CEL where the CRD attaches it, after defaulting."""
    full = defaulted(obj)
    return [rule.text for path, rule in RULES for node in values_at(full, path) if rule.evaluate(node) is not None]


def test_every_rule_of_the_crd_compiles_and_none_is_skipped() -> None:
    texts = [r["rule"] for _, node in walk(SCHEMA) for r in node.get("x-kubernetes-validations", [])]
    assert len(texts) == 13
    assert sorted(rule.text for _, rule in RULES) == sorted(texts)


def test_cel_rules_hold_for_the_sample() -> None:
    obj = copy.deepcopy(SAMPLE)
    obj["spec"]["nodeSelector"] = {"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]},
                                                        {"key": "b", "operator": "Exists"}]}
    obj["spec"]["validation"]["tolerations"] = [{"operator": "Exists"},
                                                {"key": "k", "effect": "NoExecute", "tolerationSeconds": 60}]
    assert cel_violations(obj) == []
    parse_profile(obj)


# Each rule's edge that it must still admit, next to the case it refuses below.
ACCEPTING: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("self.metadata.name.size() <= 63", lambda o: o["metadata"].update(name="p" * 63)),
    ("!has(self.maxComputeCapability)", lambda o: o["spec"]["requirements"].update(maxComputeCapability="6.0")),
    ("int(self.minimum.split('.')[0])",
     lambda o: o["spec"]["requirements"]["driver"]["datacenterBranches"][0].update(minimum="418")),
    ("(has(self.enabled)", lambda o: o["spec"]["checks"].update(amp={"native": False, "apex": False})),
    ("(has(self.enabled)",
     lambda o: o["spec"]["checks"].update(amp={"enabled": False, "native": False, "apex": False, "bf16": False})),
    ("(!has(self.cuda)", lambda o: o["spec"]["checks"].update(
        {c: {"enabled": False} for c in ("environment", "amp", "tensorCores", "channelsLast", "conv3d", "multiGpu")})),
    ("(has(self.checks)", lambda o: o["spec"]["checks"].update(timeBudgetSeconds=570)),
    ("self.operator in",
     lambda o: o["spec"].update(nodeSelector={"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]})),
    ("(has(self.key)", lambda o: o["spec"]["validation"].update(tolerations=[{"operator": "Exists"}])),
    ("!has(self.operator)",
     lambda o: o["spec"]["validation"].update(tolerations=[{"key": "k", "operator": "Equal", "value": "x"}])),
    ("!has(self.tolerationSeconds)", lambda o: o["spec"]["validation"].update(
        tolerations=[{"key": "k", "effect": "NoExecute", "tolerationSeconds": 1}])),
    ("!has(self.gpuResource)",
     lambda o: o["spec"]["validation"].update(gpuResource="nvidia.com/mig-1g.5gb", gpusPerProbe=1)),
    ("!has(self.runAsUser)", lambda o: o["spec"]["validation"].update(
        securityContext={"runAsUser": 0, "runAsNonRoot": False})),
    ("!has(self.validation)", lambda o: (o["spec"]["validation"].update(device="cpu"),
                                         o["spec"].update(nodeSelector={"matchLabels": {"kind": "worker"}}))),
]


@pytest.mark.parametrize(("rule", "edit"), ACCEPTING, ids=[a[0] for a in ACCEPTING])
def test_each_cel_rule_and_the_parser_accept_its_edge(rule: str, edit: Callable[[dict[str, Any]], Any]) -> None:
    obj = copy.deepcopy(SAMPLE)
    edit(obj)
    assert errors(obj) == []
    assert cel_violations(obj) == []
    parse_profile(obj)


BREAKING: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("self.metadata.name.size() <= 63", lambda o: o["metadata"].update(name="p" * 64), "metadata.name"),
    ("!has(self.maxComputeCapability)", lambda o: o["spec"]["requirements"].update(maxComputeCapability="5.2"),
     "spec.requirements.maxComputeCapability"),
    ("int(self.minimum.split('.')[0])",
     lambda o: o["spec"]["requirements"]["driver"]["datacenterBranches"][0].update(minimum="410.48"),
     "spec.requirements.driver.datacenterBranches[0].minimum"),
    ("(has(self.enabled)",
     lambda o: o["spec"]["checks"].update(amp={"native": False, "apex": False, "bf16": False}), "spec.checks.amp"),
    ("(!has(self.cuda)", lambda o: o["spec"]["checks"].update(gpu={"enabled": False}), "spec.checks"),
    ("(has(self.checks)", lambda o: o["spec"]["checks"].update(timeBudgetSeconds=571),
     "spec.checks.timeBudgetSeconds"),
    ("self.operator in",
     lambda o: o["spec"].update(nodeSelector={"matchExpressions": [{"key": "a", "operator": "In"}]}),
     "spec.nodeSelector.matchExpressions[0].values"),
    ("(has(self.key)", lambda o: o["spec"]["validation"].update(tolerations=[{"value": "x"}]),
     "spec.validation.tolerations[0].operator"),
    ("!has(self.operator)",
     lambda o: o["spec"]["validation"].update(tolerations=[{"key": "k", "operator": "Exists", "value": "x"}]),
     "spec.validation.tolerations[0].value"),
    ("!has(self.tolerationSeconds)",
     lambda o: o["spec"]["validation"].update(tolerations=[{"key": "k", "tolerationSeconds": 1}]),
     "spec.validation.tolerations[0].tolerationSeconds"),
    ("!has(self.gpuResource)",
     lambda o: o["spec"]["validation"].update(gpuResource="nvidia.com/mig-1g.5gb", gpusPerProbe=2),
     "spec.validation.gpusPerProbe"),
    ("!has(self.runAsUser)", lambda o: o["spec"]["validation"].update(securityContext={"runAsUser": 0}),
     "spec.validation.securityContext.runAsUser"),
    ("!has(self.validation)",
     lambda o: (o["spec"]["validation"].update(device="cpu"), o["spec"].pop("nodeSelector", None)),
     "spec.nodeSelector"),
]


@pytest.mark.parametrize(("rule", "edit", "field"), BREAKING, ids=[b[0] for b in BREAKING])
def test_each_cel_rule_and_the_parser_reject_its_case(
    rule: str, edit: Callable[[dict[str, Any]], Any], field: str
) -> None:
    obj = copy.deepcopy(SAMPLE)
    edit(obj)
    assert errors(obj) == []  # only CEL, not the schema, catches it
    broken = cel_violations(obj)
    assert len(broken) == 1 and broken[0].startswith(rule)
    with pytest.raises(InvalidSpec) as caught:
        parse_profile(obj)
    assert caught.value.field == field


@pytest.mark.parametrize("cases", [[b[0] for b in BREAKING], [a[0] for a in ACCEPTING]], ids=["refused", "admitted"])
def test_the_cases_cover_every_rule(cases: list[str]) -> None:
    texts = sorted(rule.text for _, rule in RULES)
    assert sorted(text for text in texts if any(text.startswith(case) for case in cases)) == texts


# ---- parse_profile enforces what the generated schema states --------------------------------------------


def out_of_bounds(schema: dict[str, Any]) -> Iterator[tuple[str, Any, str]]:
    """(spec path, a value the schema refuses, what parse_profile says) for each bounded field reachable
    through objects alone."""
    for path, sub in walk(schema["properties"]["spec"], "spec"):
        if "[]" in path or "{}" in path:
            continue
        if "maximum" in sub:
            yield path, sub["maximum"] + 1, "outside"
        if "minimum" in sub:
            yield path, sub["minimum"] - 1, "outside"
        if "maxLength" in sub:
            yield path, "a" * (sub["maxLength"] + 1), "longer than"
        if "enum" in sub and sub["type"] == "string":
            yield path, "Nonesuch"[:sub.get("maxLength", 8)], "is not one of"  # within maxLength: the enum refuses it
        if "maxItems" in sub:
            yield path, [{}] * (sub["maxItems"] + 1), "at most"


BOUNDS = list(out_of_bounds(SCHEMA))


def test_bounds_are_found() -> None:
    assert len(BOUNDS) > 40


@pytest.mark.parametrize(("path", "value", "message"), BOUNDS, ids=[f"{p}={str(v)[:12]}" for p, v, _ in BOUNDS])
def test_parse_profile_refuses_what_the_schema_refuses(path: str, value: Any, message: str) -> None:
    obj = copy.deepcopy(SAMPLE)
    *parents, last = path.split(".")
    node = obj
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    assert errors(obj) != []
    with pytest.raises(InvalidSpec) as caught:
        parse_profile(obj)
    assert (caught.value.field, message in caught.value.message) == (path, True), caught.value


REQUIRED = [f"{path}.{key}" for path, sub in walk(SCHEMA["properties"]["spec"], "spec")
            if "[]" not in path and "{}" not in path for key in sub.get("required", [])]


@pytest.mark.parametrize("path", REQUIRED)
def test_parse_profile_requires_what_the_schema_requires(path: str) -> None:
    obj = copy.deepcopy(SAMPLE)
    *parents, last = path.split(".")
    node = obj
    for part in parents:
        node = node[part]
    del node[last]
    assert any("required" in e for e in errors(obj))
    with pytest.raises(InvalidSpec) as caught:
        parse_profile(obj)
    assert (caught.value.field, caught.value.message) == (path, "required")
