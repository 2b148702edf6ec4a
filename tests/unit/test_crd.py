"""The CRD: shape, a structural schema that admits the 20.06 profile, and CEL rules parse_profile shares."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from torchproof.catalogue import ARCHITECTURES
from torchproof.profile import InvalidSpec, parse_profile

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


def at(obj: Any, path: str) -> list[Any]:
    """The values a walk() path points to in an object."""
    nodes = [obj]
    for part in path.replace("[]", ".[]").replace("{}", ".{}").split("."):
        if not part:
            continue
        step: list[Any] = []
        for n in nodes:
            if part == "[]":
                step.extend(n if isinstance(n, list) else [])
            elif part == "{}":
                step.extend(n.values() if isinstance(n, dict) else [])
            elif isinstance(n, dict) and part in n:
                step.append(n[part])
        nodes = step
    return nodes


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


@pytest.mark.parametrize("path", sorted((ROOT / "profiles").glob("*.yaml")), ids=lambda p: p.name)
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


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Kubernetes defaulting: an absent property with a default gets it, recursively."""
    if isinstance(value, dict):
        out = dict(value)
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(sub, out[key])
        return out
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], v) for v in value]
    return value


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
    defaulted = apply_defaults(SCHEMA, minimal)
    assert defaulted["spec"]["checks"]["tensorCores"]["size"] == 4096  # defaulting did reach nested objects
    assert errors(defaulted) == []
    assert parse_profile(defaulted) == parse_profile(minimal)


# ---- CEL rules, re-stated in Python ----------------------------------------------------------------


def _cc(text: str) -> float:
    return float(text)


CEL: dict[str, Callable[[Any], bool]] = {
    "self.metadata.name.size() <= 63": lambda s: len(s["metadata"]["name"]) <= 63,
    "!has(self.maxComputeCapability) || double(self.maxComputeCapability) >= double(self.minComputeCapability)":
        lambda s: "maxComputeCapability" not in s or _cc(s["maxComputeCapability"]) >= _cc(s["minComputeCapability"]),
    "int(self.minimum.split('.')[0]) == self.branch": lambda s: int(s["minimum"].split(".")[0]) == s["branch"],
    "(has(self.enabled) && !self.enabled) || !has(self.native) || self.native || "
    "!has(self.apex) || self.apex || !has(self.bf16) || self.bf16":
        lambda s: not s["enabled"] or s["native"] or s["apex"] or s["bf16"],
    " && ".join(f"(!has(self.{c}) || !has(self.{c}.enabled) || self.{c}.enabled)" for c in ("cuda", "gpu")):
        lambda s: s["cuda"]["enabled"] and s["gpu"]["enabled"],
    "(has(self.checks) && has(self.checks.timeBudgetSeconds) ? self.checks.timeBudgetSeconds : 120) + 30 <= "
    "(has(self.validation) && has(self.validation.runtimeTimeoutSeconds) ? self.validation.runtimeTimeoutSeconds "
    ": 600)":
        lambda s: s["checks"]["timeBudgetSeconds"] + 30 <= s["validation"]["runtimeTimeoutSeconds"],
    "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 "
    ": !has(self.values) || size(self.values) == 0":
        lambda s: bool(s.get("values")) if s["operator"] in ("In", "NotIn") else not s.get("values"),
    "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')":
        lambda s: bool(s.get("key")) or s.get("operator") == "Exists",
    "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''":
        lambda s: s.get("operator") != "Exists" or not s.get("value"),
    "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')":
        lambda s: "tolerationSeconds" not in s or s.get("effect") == "NoExecute",
    "!has(self.gpuResource) || self.gpuResource == 'nvidia.com/gpu' || !has(self.gpusPerProbe) || "
    "self.gpusPerProbe == 1":
        lambda s: s["gpuResource"] == "nvidia.com/gpu" or s["gpusPerProbe"] == 1,
    "!has(self.runAsUser) || self.runAsUser != 0 || (has(self.runAsNonRoot) && !self.runAsNonRoot)":
        lambda s: s["runAsUser"] != 0 or not s["runAsNonRoot"],
    "!has(self.validation) || !has(self.validation.device) || self.validation.device != 'cpu' || "
    "has(self.nodeSelector)":
        lambda s: s["validation"]["device"] != "cpu" or "nodeSelector" in s,
}


def cel_rules() -> list[tuple[str, str]]:
    return [(path, r["rule"]) for path, sub in walk(SCHEMA) for r in sub.get("x-kubernetes-validations", [])]


def cel_violations(obj: dict[str, Any]) -> list[str]:
    """Rules an object breaks, evaluated where the CRD attaches them, after defaulting."""
    obj = apply_defaults(SCHEMA, obj)
    return [rule for path, rule in cel_rules() for node in at(obj, path) if not CEL[rule](node)]


def test_every_cel_rule_has_a_python_restatement() -> None:
    assert sorted(rule for _, rule in cel_rules()) == sorted(CEL)


def test_cel_rules_hold_for_the_sample() -> None:
    obj = copy.deepcopy(SAMPLE)
    obj["spec"]["nodeSelector"] = {"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]},
                                                        {"key": "b", "operator": "Exists"}]}
    obj["spec"]["validation"]["tolerations"] = [{"operator": "Exists"},
                                                {"key": "k", "effect": "NoExecute", "tolerationSeconds": 60}]
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


def test_breaking_cases_cover_every_rule() -> None:
    assert sorted(rule for rule in CEL if any(rule.startswith(b[0]) for b in BREAKING)) == sorted(CEL)
