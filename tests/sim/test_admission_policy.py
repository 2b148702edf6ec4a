"""deploy/admission-policy: a ValidatingAdmissionPolicy that lets the operator's ServiceAccount change only
torchproof's own label and annotation keys on Nodes. Its CEL runs on the embedded cluster's evaluator, by
table, and the embedded cluster enforces it over HTTP as kube-apiserver does."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError
from torchproof_sim import BackgroundCluster, run_in_thread
from torchproof_sim.admissionpolicy import Request, compile_policy, denial
from torchproof_sim.store import MERGE_PATCH, ApiError, apply_merge_patch

ROOT = Path(__file__).resolve().parents[2]
MINIMUM_KUBERNETES = "1.30.0"  # admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy is GA from 1.30
OPERATOR = "system:serviceaccount:elsewhere:torchproof"
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the kustomization")


def render_with_policy(tmp_path: Path, namespace: str | None = None) -> list[dict[str, Any]]:
    """An overlay as docs/embedded-cluster.md shows it: deploy/default plus the admission-policy component."""
    deploy = os.path.relpath(ROOT / "deploy", tmp_path)
    overlay: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                               "resources": [f"{deploy}/default"], "components": [f"{deploy}/admission-policy"]}
    if namespace:
        overlay["namespace"] = namespace
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    out = subprocess.run(["kubectl", "kustomize", str(tmp_path)], check=True, capture_output=True, text=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def without_namespace(doc: dict[str, Any]) -> dict[str, Any]:
    """kustomize (of kubectl 1.3x) does not know these kinds are cluster-scoped and gives them the overlay's
    namespace; the API server clears a cluster-scoped object's namespace, so it does not matter."""
    return {**doc, "metadata": {k: v for k, v in doc["metadata"].items() if k != "namespace"}}


def policy_documents(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["apiVersion"].startswith("admissionregistration.k8s.io/")]


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return policy_documents(render_with_policy(tmp_path_factory.mktemp("overlay")))


@pytest.mark.parametrize("version", [MINIMUM_KUBERNETES, kubernetes_validate.latest_version()])
def test_the_component_passes_the_published_schemas(documents: list[dict[str, Any]], version: str) -> None:
    assert sorted(d["kind"] for d in documents) == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    for doc in documents:
        kubernetes_validate.validate(doc, version, strict=True)


def test_before_1_30_there_is_no_v1_policy(documents: list[dict[str, Any]]) -> None:
    with pytest.raises(SchemaNotFoundError):
        kubernetes_validate.validate(documents[0], "1.29.0", strict=True)


def test_another_namespace_changes_nothing_the_policy_needs(tmp_path: Path, documents: list[dict[str, Any]]) -> None:
    """It matches the ServiceAccount `torchproof` of any namespace: an overlay's `namespace:` needs no edit."""
    moved = policy_documents(render_with_policy(tmp_path, "elsewhere"))
    assert [without_namespace(d) for d in moved] == [without_namespace(d) for d in documents]
    account = next(d for d in render_with_policy(tmp_path, "elsewhere") if d["kind"] == "ServiceAccount")
    policy = compile_policy(documents[0])
    username = f"system:serviceaccount:{account['metadata']['namespace']}:{account['metadata']['name']}"
    assert denial(policy, "b", request(username), {**node(), "spec": {"unschedulable": True}}, node()) is not None


def node(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": "gpu-0", "resourceVersion": "7",
        "labels": {"kubernetes.io/hostname": "gpu-0", "nvidia.com/gpu.product": "Tesla-T4",
                   "torchproof.dev/old": "failed", **(labels or {})},
        "annotations": {"node.alpha.kubernetes.io/ttl": "0", "result.torchproof.dev/old": "{}",
                        **(annotations or {})}},
        "spec": {"podCIDR": "10.0.0.0/24"}, "status": {"capacity": {"nvidia.com/gpu": "1"}}}


def request(username: str = OPERATOR, operation: str = "UPDATE") -> Request:
    return Request(operation, "", "v1", "nodes", "", "gpu-0", "", username,
                   ("system:serviceaccounts", "system:authenticated"))


LABELS = "torchproof may change only torchproof.dev/* labels on Nodes"
ANNOTATIONS = ("torchproof may change only torchproof.dev/*, result.torchproof.dev/* and gate.torchproof.dev/* "
               "annotations on Nodes")
SPEC = "torchproof may not change a Node's spec but its own torchproof.dev/* taints, nor finalizers or owner references"
PATCHES = [  # (case, merge patch the operator sends, the validation that refuses it or None)
    ("a verdict label, its record and the owned list", {"metadata": {
        "labels": {"torchproof.dev/pytorch-20.06": "passed"},
        "annotations": {"result.torchproof.dev/pytorch-20.06": "{}", "torchproof.dev/owned-labels": "x"}}}, None),
    ("its own label changed", {"metadata": {"labels": {"torchproof.dev/old": "passed"}}}, None),
    ("its own label and record removed", {"metadata": {"labels": {"torchproof.dev/old": None},
                                                       "annotations": {"result.torchproof.dev/old": None}}}, None),
    ("the revalidate annotation removed", {"metadata": {"annotations": {"torchproof.dev/revalidate": None}}}, None),
    ("a conditional patch changing nothing else", {"metadata": {"resourceVersion": "7"}}, None),
    ("a label of another owner added", {"metadata": {"labels": {"nvidia.com/gpu.count": "8"}}}, LABELS),
    ("a label of another owner changed", {"metadata": {"labels": {"nvidia.com/gpu.product": "A100"}}}, LABELS),
    ("a label of another owner removed", {"metadata": {"labels": {"kubernetes.io/hostname": None}}}, LABELS),
    ("a look-alike prefix", {"metadata": {"labels": {"torchproof.devx/a": "b"}}}, LABELS),
    ("a prefix in the middle", {"metadata": {"labels": {"x.torchproof.dev/a": "b"}}}, LABELS),
    ("every label dropped", {"metadata": {"labels": None}}, LABELS),
    ("an annotation of another owner added", {"metadata": {"annotations": {"team/owner": "me"}}}, ANNOTATIONS),
    ("an annotation of another owner removed",
     {"metadata": {"annotations": {"node.alpha.kubernetes.io/ttl": None}}}, ANNOTATIONS),
    ("its gating taint and claim added", {"metadata": {"annotations": {"gate.torchproof.dev/p": "t"}}, "spec": {
        "taints": [{"key": "torchproof.dev/p", "value": "unvalidated", "effect": "NoSchedule"}]}}, None),
    ("cordoning the node", {"spec": {"unschedulable": True}}, SPEC),
    ("a taint", {"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}, SPEC),
    ("the spec dropped", {"spec": None}, SPEC),
    ("a finalizer", {"metadata": {"finalizers": ["example.dev/hold"]}}, SPEC),
    ("an owner", {"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u"}]}},
     SPEC),
]


@pytest.mark.parametrize(("case", "patch", "refusal"), PATCHES, ids=[p[0] for p in PATCHES])
def test_the_operators_node_patches_by_table(documents: list[dict[str, Any]], case: str, patch: dict[str, Any],
                                             refusal: str | None) -> None:
    policy = compile_policy(documents[0])
    old = node()
    new = apply_merge_patch(copy.deepcopy(old), patch)
    message = denial(policy, "torchproof-node-marks", request(), new, old)
    expected = None if refusal is None else (
        "ValidatingAdmissionPolicy 'torchproof-node-marks' with binding 'torchproof-node-marks' denied request: "
        + refusal)
    assert message == expected


@pytest.mark.parametrize(("case", "taints", "refusal"), [
    ("its own taint added beside another owner's", [{"key": "other", "effect": "NoSchedule"},
                                                    {"key": "torchproof.dev/p", "effect": "NoSchedule"}], None),
    ("its own taint removed", [{"key": "other", "effect": "NoSchedule"}], None),
    ("another owner's taint removed", [{"key": "torchproof.dev/p", "effect": "NoSchedule"}], SPEC),
    ("another owner's taint changed", [{"key": "other", "effect": "NoExecute"},
                                       {"key": "torchproof.dev/p", "effect": "NoSchedule"}], SPEC),
])
def test_the_operators_taint_patches(documents: list[dict[str, Any]], case: str, taints: list[dict[str, Any]],
                                     refusal: str | None) -> None:
    """Gating (gating.py) replaces the taint list: only its own torchproof.dev/* taints may differ."""
    policy = compile_policy(documents[0])
    old = node()
    old["spec"]["taints"] = [{"key": "other", "effect": "NoSchedule"},
                             {"key": "torchproof.dev/p", "effect": "NoSchedule"}]
    new = copy.deepcopy(old)
    new["spec"]["taints"] = taints
    message = denial(policy, "b", request(), new, old)
    assert message == (None if refusal is None else
                       f"ValidatingAdmissionPolicy 'torchproof-node-marks' with binding 'b' denied request: {refusal}")


@pytest.mark.parametrize(("case", "username", "operation"), [
    ("the admin", "admin", "UPDATE"),
    ("another ServiceAccount", "system:serviceaccount:elsewhere:torchproof-helper", "UPDATE"),
    ("a user named like it", "torchproof", "UPDATE"),
    ("a create (RBAC gives the operator none)", OPERATOR, "CREATE"),
])
def test_others_are_not_matched(documents: list[dict[str, Any]], case: str, username: str, operation: str) -> None:
    policy = compile_policy(documents[0])
    old = node()
    new = apply_merge_patch(copy.deepcopy(old), {"metadata": {"labels": {"nvidia.com/gpu.count": "8"}}})
    assert denial(policy, "b", request(username, operation), new, old) is None


def test_a_node_with_no_labels_or_annotations_at_all(documents: list[dict[str, Any]]) -> None:
    policy = compile_policy(documents[0])
    bare = {"metadata": {"name": "gpu-0"}, "spec": {}}
    marked = {"metadata": {"name": "gpu-0", "labels": {"torchproof.dev/p": "passed"}}, "spec": {}}
    assert denial(policy, "b", request(), marked, bare) is None
    assert denial(policy, "b", request(), bare, marked) is None
    assert denial(policy, "b", request(), {**bare, "metadata": {"name": "gpu-0", "labels": {"a": "b"}}},
                  bare) is not None


# --- enforced by the embedded cluster over HTTP ------------------------------------------------------------


def patch_node(bg: BackgroundCluster, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{bg.url}/api/v1/nodes/gpu-0", data=json.dumps(body).encode(), method="PATCH",
                                     headers={"Content-Type": MERGE_PATCH, "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def enforcing(tmp_path: Path) -> Any:
    docs = render_with_policy(tmp_path)
    with run_in_thread(namespace="torchproof") as bg:
        bg.call(bg.cluster.apply_documents([d for d in docs if d["kind"] in (
            "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding")]))
        bg.call(bg.emulator.create_object("v1/nodes", node()))
        yield bg, bg.cluster.service_account_token("torchproof", "torchproof")


def test_the_embedded_cluster_refuses_a_foreign_label_from_the_operator(enforcing: Any) -> None:
    bg, token = enforcing
    status, body = patch_node(bg, token, {"metadata": {"labels": {"nvidia.com/gpu.count": "8"}}})
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["message"] == ('nodes "gpu-0" is invalid: : ValidatingAdmissionPolicy \'torchproof-node-marks\' with '
                               f"binding 'torchproof-node-marks' denied request: {LABELS}")
    stored = bg.emulator.get_object("v1/nodes", None, "gpu-0")
    assert "nvidia.com/gpu.count" not in stored["metadata"]["labels"], "nothing changed"


def test_the_embedded_cluster_admits_the_operators_own_marks_and_the_admins_anything(enforcing: Any) -> None:
    bg, token = enforcing
    assert patch_node(bg, token, {"metadata": {"labels": {"torchproof.dev/p": "passed"}}})[0] == 200
    assert patch_node(bg, bg.admin_token, {"metadata": {"labels": {"nvidia.com/gpu.count": "8"}}})[0] == 200


def test_a_policy_whose_expression_does_not_compile_is_refused() -> None:
    with run_in_thread() as bg:
        broken = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                  "metadata": {"name": "broken"}, "spec": {"validations": [{"expression": "object.metadata.("}]}}
        with pytest.raises(ApiError) as refused:
            bg.call(bg.emulator.create_object("admissionregistration.k8s.io/v1/validatingadmissionpolicies", broken))
        assert refused.value.code == 422
        assert refused.value.details["causes"][0]["field"] == "spec.validations[0].expression"
