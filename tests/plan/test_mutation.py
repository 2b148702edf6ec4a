"""The webhook's decision on AdmissionReview JSON: which pods are steered, and the patch they get."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest
from torchproof.mutation import STEERED_ANNOTATION, parse_image, review, targets

PROFILES = targets([
    {"metadata": {"name": "pytorch-20.06"}, "spec": {"image": "nvcr.io/nvidia/pytorch:20.06-py3"}},
    {"metadata": {"name": "pinned"}, "spec": {"image": "nvcr.io/nvidia/pytorch:24.01-py3@sha256:" + "a" * 64}},
    {"metadata": {"name": "hub"}, "spec": {"image": "pytorch/pytorch:2.1.0"}},
    {"metadata": {"name": "broken"}, "spec": {}},
])
PASSED = {"key": "torchproof.dev/pytorch-20.06", "operator": "In", "values": ["passed"]}


def admission(pod: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "ml",
        "operation": operation, "userInfo": {"username": "alice"}, "object": pod}}


def pod(image: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "train", "namespace": "ml"},
            "spec": {"containers": [{"name": "main", "image": image}], **spec}}


def mutated(body: dict[str, Any]) -> dict[str, Any] | None:
    answer = review(admission(body), PROFILES)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002" and response["allowed"] is True
    if "patch" not in response:
        return None
    assert response["patchType"] == "JSONPatch"
    return jsonpatch.apply_patch(body, json.loads(base64.b64decode(response["patch"])))


def required(body: dict[str, Any]) -> list[dict[str, Any]]:
    terms = body["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    return list(terms["nodeSelectorTerms"])


def test_a_pod_of_a_profiles_image_requires_its_passed_label() -> None:
    out = mutated(pod("nvcr.io/nvidia/pytorch:20.06-py3"))
    assert out is not None
    assert required(out) == [{"matchExpressions": [PASSED]}]
    assert out["metadata"]["annotations"] == {STEERED_ANNOTATION: "pytorch-20.06"}


def test_the_requirement_is_anded_into_every_existing_term_and_other_affinity_kept() -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
    body = pod("nvcr.io/nvidia/pytorch:20.06-py3", affinity=affinity)
    body["metadata"]["annotations"] = {"team": "ml"}
    out = mutated(body)
    assert out is not None
    assert required(out) == [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}, PASSED]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}], "matchExpressions": [PASSED]},
    ]
    assert out["spec"]["affinity"]["podAntiAffinity"] == affinity["podAntiAffinity"]
    assert out["metadata"]["annotations"] == {"team": "ml", STEERED_ANNOTATION: "pytorch-20.06"}


@pytest.mark.parametrize("spec", [
    {"nodeSelector": {"torchproof.dev/pytorch-20.06": "passed"}},
    {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "torchproof.dev/pytorch-20.06", "operator": "In", "values": ["failed"]}]}]}}}},
    {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {
        "matchExpressions": [{"key": "torchproof.dev/pytorch-20.06", "operator": "Exists"}]}}]}}},
], ids=["nodeSelector", "required affinity", "preferred affinity"])
def test_a_pod_that_already_chooses_by_the_label_is_left_alone(spec: dict[str, Any]) -> None:
    assert mutated(pod("nvcr.io/nvidia/pytorch:20.06-py3", **spec)) is None


@pytest.mark.parametrize("image", [
    "nvcr.io/nvidia/pytorch:20.07-py3", "nvcr.io/nvidia/tensorflow:20.06-py3", "nvcr.io/nvidia/pytorch",
    "nvcr.io/nvidia/pytorch:24.01-py3@sha256:" + "b" * 64, "busybox",
])
def test_other_images_are_not_steered(image: str) -> None:
    assert mutated(pod(image)) is None


def test_a_pinned_profile_matches_by_digest_and_hub_images_by_their_full_name() -> None:
    out = mutated(pod("nvcr.io/nvidia/pytorch@sha256:" + "a" * 64))
    assert out is not None and required(out)[0]["matchExpressions"][0]["key"] == "torchproof.dev/pinned"
    out = mutated(pod("docker.io/pytorch/pytorch:2.1.0"))
    assert out is not None and required(out)[0]["matchExpressions"][0]["key"] == "torchproof.dev/hub"
    assert parse_image("busybox") == parse_image("docker.io/library/busybox:latest")
    assert parse_image("localhost:5000/x:1").repository == "localhost:5000/x"


def test_an_init_container_of_the_image_steers_the_pod_too() -> None:
    body = pod("busybox", initContainers=[{"name": "warm", "image": "nvcr.io/nvidia/pytorch:20.06-py3"}])
    assert mutated(body) is not None


@pytest.mark.parametrize("request_review", [
    None, [], {"request": None}, {"request": {"uid": "u", "operation": "CREATE", "kind": {"kind": "Pod"},
                                              "object": "not a pod"}},
    admission(pod("nvcr.io/nvidia/pytorch:20.06-py3"), operation="UPDATE"),
], ids=["null", "list", "no request", "object not an object", "update"])
def test_anything_else_is_allowed_unchanged(request_review: Any) -> None:
    response = review(request_review, PROFILES)["response"]
    assert response["allowed"] is True and "patch" not in response
