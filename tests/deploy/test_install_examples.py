"""docs/install.md keeps up with the code: a troubleshooting row for every reason code the operator can write
(and none for a code it cannot), and the examples it points at pass the published Kubernetes schemas and ask
for the labels torchproof really writes."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from torchproof import labels as L
from torchproof.podspec import build_pod
from torchproof.profile import parse_profile

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "docs" / "install.md"
EXAMPLES = ROOT / "examples"
MINIMUM_KUBERNETES = "1.28.0"
PROFILE = yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text())
PASSED = {L.label_key(PROFILE["metadata"]["name"]): "passed"}

# How the operator names a reason: a Reason or an error Evaluation with a literal code, a check's code for its
# `error` status, and the waiting reasons (`waiting_reason[node] = "Code..."`, the refused create's "Code: ...").
REASON_PATTERNS = (
    r'Reason\(\s*"([A-Z]\w+)"',
    r'_error\(\s*"([A-Z]\w+)"',
    r'\berror_code(?:: str)? = "([A-Z]\w+)"',
    r'\breason = f"([A-Z]\w+): ',
)
WAITING_PATTERN = r'waiting_reason\[[^\]]+\] = (.+)'


def emitted_codes() -> set[str]:
    codes: set[str] = set()
    for path in (ROOT / "operator" / "torchproof").rglob("*.py"):
        text = path.read_text()
        for pattern in REASON_PATTERNS:
            codes |= {code for match in re.finditer(pattern, text) for code in match.groups()}
        for match in re.finditer(WAITING_PATTERN, text):
            codes |= set(re.findall(r'f?"([A-Z][A-Za-z]+)', match.group(1)))
    return codes


def troubleshooting_rows() -> dict[str, list[str]]:
    section = INSTALL.read_text().split("## Troubleshooting", 1)[1]
    rows = {}
    for line in section.splitlines():
        if match := re.match(r"\| `([A-Za-z0-9]+)` \|(.*)\|$", line):
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split(" | ")]
    return rows


def test_the_code_names_the_reasons_the_scan_expects() -> None:
    """The scan itself finds what it must: verdict, static, error and waiting reasons alike."""
    assert {"DriverTooOld", "AmpNotFinite", "OOMKilled", "ProbeLost", "CudaUnavailable", "CheckError",
            "NodeCordoned", "NodeNotReady", "Unschedulable", "PendingTimeout", "CreateRefused",
            "PodTerminating", "ImagePullFailed"} <= emitted_codes()


def test_every_reason_code_has_a_troubleshooting_row_and_every_row_a_code() -> None:
    rows, codes = troubleshooting_rows(), emitted_codes()
    assert sorted(codes - rows.keys()) == [], "reason codes without a row in docs/install.md"
    assert sorted(rows.keys() - codes) == [], "rows in docs/install.md for codes the operator never writes"
    empty = [code for code, cells in rows.items() if len(cells) != 2 or not all(cells)]
    assert empty == [], "rows without a meaning and an action"


def test_readme_links_the_install_guide() -> None:
    assert "(docs/install.md)" in (ROOT / "README.md").read_text()


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return doc


@pytest.mark.parametrize("name", ["training-job.yaml", "training-affinity.yaml"])
@pytest.mark.parametrize("version", [MINIMUM_KUBERNETES, kubernetes_validate.latest_version()])
def test_the_training_examples_pass_the_published_schemas(name: str, version: str) -> None:
    kubernetes_validate.validate(load(name), version, strict=True)


@pytest.mark.parametrize("version", [MINIMUM_KUBERNETES, kubernetes_validate.latest_version()])
def test_the_pytorchjob_templates_pass_the_pod_template_schema(version: str) -> None:
    """PyTorchJob is Kubeflow's CRD (no published schema); its replica templates are core PodTemplateSpecs."""
    job = load("pytorchjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert set(specs) == {"Master", "Worker"}
    for role, spec in specs.items():
        template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": role.lower()},
                    "template": spec["template"]}
        kubernetes_validate.validate(template, version, strict=True)
        assert spec["template"]["spec"]["nodeSelector"] == PASSED


def test_the_training_examples_ask_for_the_label_torchproof_writes() -> None:
    job = load("training-job.yaml")["spec"]["template"]["spec"]
    assert job["nodeSelector"] == PASSED
    terms = load("training-affinity.yaml")["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    keys = {(e["key"], e["operator"], tuple(e["values"])) for term in terms for e in term["matchExpressions"]}
    shipped = {yaml.safe_load(p.read_text())["metadata"]["name"] for p in (ROOT / "profiles").glob("pytorch-*.yaml")}
    profiles = {"pytorch-20.06", "pytorch-24.10"}  # the two releases the example's comment names
    assert profiles <= shipped
    assert keys == {(L.label_key(name), "In", ("passed",)) for name in profiles}


def merge(base: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as `kubectl patch --type merge` applies it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def test_the_tainted_gpu_patch_makes_a_valid_profile_whose_pods_tolerate_the_taint() -> None:
    patch = load("profile-patch-tainted-gpus.yaml")
    stored = merge(PROFILE, {"metadata": {"uid": "0b1c", "generation": 1}})  # as the API server returns it
    profile = parse_profile(merge(stored, patch))
    pod = build_pod(profile, node="gpu-1", fingerprint="f", namespace="torchproof", configmap="cm")
    kubernetes_validate.validate(pod, MINIMUM_KUBERNETES, strict=True)
    assert patch["spec"]["validation"]["tolerations"][0] in pod["spec"]["tolerations"]
    assert pod["spec"]["runtimeClassName"] == "nvidia"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the kustomization")
def test_the_overlay_example_moves_everything_to_its_namespace_with_its_image() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(EXAMPLES / "overlay")], check=True, capture_output=True,
                         text=True)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    namespaced = [d for d in docs if d["kind"] not in
                  ("Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition")]
    assert namespaced and {d["metadata"]["namespace"] for d in namespaced} == {"gpu-validation"}
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"] == ["gpu-validation"]
    (deployment,) = (d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/torchproof:0.1.0"
    for doc in docs:
        kubernetes_validate.validate(doc, MINIMUM_KUBERNETES, strict=True)
