"""`torchproof cleanup`'s plan: what it removes and what it leaves, the legacy owned-labels list included."""

from __future__ import annotations

from typing import Any

import pytest
from torchproof import cleanup
from torchproof import labels as L
from torchproof.podspec import CONFIGMAP_LABELS, CONFIGMAP_PREFIX


def node(name: str, labels: dict[str, str], annotations: dict[str, str], rv: str = "1") -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations, "resourceVersion": rv}}


def marked(name: str, *profiles: str, rv: str = "1") -> dict[str, Any]:
    labels = {L.label_key(p): "passed" for p in profiles} | {"team": "ml"}
    annotations = {L.result_annotation_key(p): "{}" for p in profiles}
    annotations[L.LEGACY_OWNED_ANNOTATION] = ",".join(sorted(L.label_key(p) for p in profiles))
    return node(name, labels, annotations, rv)


def configmap(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def prp(name: str, *, deleting: bool, finalizers: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "finalizers": finalizers, "resourceVersion": "7"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


def test_every_profiles_marks_go_and_only_torchproofs_configmaps_and_stuck_finalizers() -> None:
    plan = cleanup.plan_cleanup(
        nodes=[marked("a", "p", "gone"), node("b", {"team": "ml"}, {})],
        pods=[],
        configmaps=[configmap(f"{CONFIGMAP_PREFIX}abc", dict(CONFIGMAP_LABELS)),
                    configmap(f"{CONFIGMAP_PREFIX}mine", {"app": "someone-else"}), configmap("other", {})],
        profiles=[prp("p", deleting=True, finalizers=[cleanup.FINALIZER, "other/keep"]),
                  prp("q", deleting=False, finalizers=[cleanup.FINALIZER]),
                  prp("r", deleting=True, finalizers=["other/keep"])],
    )
    ((name, patch),) = plan.removal.patches
    assert name == "a" and patch["metadata"]["labels"] == {L.label_key("gone"): None, L.label_key("p"): None}
    assert patch["metadata"]["annotations"] == {L.LEGACY_OWNED_ANNOTATION: None, L.result_annotation_key("p"): None,
                                                L.result_annotation_key("gone"): None}
    assert plan.configmaps == (f"{CONFIGMAP_PREFIX}abc",)
    assert plan.finalizers == ("p",)
    assert cleanup.without_finalizer(prp("p", deleting=True, finalizers=[cleanup.FINALIZER, "other/keep"])) == {
        "metadata": {"finalizers": ["other/keep"], "resourceVersion": "7"}}
    assert cleanup.without_finalizer(prp("p", deleting=True, finalizers=[cleanup.FINALIZER])) == {
        "metadata": {"finalizers": None, "resourceVersion": "7"}}


@pytest.mark.parametrize(("status", "running"), [
    ({"phase": "Running"}, True), ({"phase": "Pending"}, True), ({}, True),
    ({"phase": "Succeeded"}, False), ({"phase": "Failed"}, False),
])
def test_an_operator_pod_counts_as_running_until_it_finishes(status: dict[str, str], running: bool) -> None:
    pod = {"metadata": {"name": "op"}, "status": status}
    assert cleanup.running_operators([pod]) == (["op"] if running else [])
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert cleanup.running_operators([pod]) == []


def test_cleanup_removes_the_legacy_list_and_the_labels_it_alone_claims() -> None:
    legacy = node("a", {L.label_key("old"): "passed", L.label_key("p"): "failed", "team": "ml"},
                  {L.LEGACY_OWNED_ANNOTATION: f"{L.label_key('old')},{L.label_key('p')}",
                   L.result_annotation_key("p"): "{}"})
    ((name, patch),) = cleanup.plan_cleanup([legacy], [], [], []).removal.patches
    assert name == "a" and patch == {"metadata": {
        "labels": {L.label_key("old"): None, L.label_key("p"): None},
        "annotations": {L.LEGACY_OWNED_ANNOTATION: None, L.result_annotation_key("p"): None},
    }}
    assert "resourceVersion" not in patch["metadata"]
