"""Which probe ConfigMaps of earlier probe versions may go: the operator's, not the current one, used by no
pod that may still start (sweep.stale_configmaps)."""

from __future__ import annotations

from typing import Any

import pytest
from torchproof.podspec import CONFIGMAP_LABELS, build_probe_configmap
from torchproof.sweep import configmaps_used, stale_configmaps

CURRENT = build_probe_configmap("torchproof", {"probe.py": "new"})["metadata"]["name"]
OLD = build_probe_configmap("torchproof", {"probe.py": "old"})["metadata"]["name"]


def cm(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": dict(CONFIGMAP_LABELS) if labels is None else labels}}


def pod(spec: dict[str, Any], phase: str = "Pending") -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": spec, "status": {"phase": phase}}


def volume_pod(name: str, phase: str = "Pending") -> dict[str, Any]:
    return pod({"volumes": [{"name": "probe", "configMap": {"name": name}}], "containers": [{"name": "c"}]}, phase)


def test_an_old_probe_configmap_no_pod_uses_is_stale_and_the_current_one_never() -> None:
    assert stale_configmaps([cm(CURRENT), cm(OLD)], [], CURRENT) == (OLD,)
    assert stale_configmaps([cm(CURRENT)], [], CURRENT) == ()


# (what, the pods, whether OLD stays)
CASES: list[tuple[str, list[dict[str, Any]], bool]] = [
    ("a pending pod mounts it", [volume_pod(OLD)], True),
    ("a running pod mounts it", [volume_pod(OLD, "Running")], True),
    ("a pod without status mounts it", [{"spec": {"volumes": [{"name": "v", "configMap": {"name": OLD}}]}}], True),
    ("a projected volume", [pod({"volumes": [{"name": "v", "projected": {"sources": [
        {"secret": {"name": "s"}}, {"configMap": {"name": OLD}}]}}]})], True),
    ("envFrom", [pod({"containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": OLD}}]}]})], True),
    ("an init container's env", [pod({"initContainers": [{"name": "i", "env": [
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": OLD, "key": "k"}}}]}]})], True),
    ("a succeeded pod mounted it", [volume_pod(OLD, "Succeeded")], False),
    ("a failed pod mounted it", [volume_pod(OLD, "Failed")], False),
    ("pods mount other ConfigMaps", [volume_pod(CURRENT), volume_pod("something-else")], False),
    ("a pod with nothing", [pod({})], False),
]


@pytest.mark.parametrize(("pods", "kept"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_configmap_a_pod_may_still_need_is_kept(pods: list[dict[str, Any]], kept: bool) -> None:
    assert stale_configmaps([cm(CURRENT), cm(OLD)], pods, CURRENT) == (() if kept else (OLD,))


# ConfigMaps that are not the operator's old probe ConfigMaps, whatever their name or labels suggest
NOT_OURS: list[tuple[str, dict[str, Any]]] = [
    ("no labels", cm(OLD, {})),
    ("another manager", cm(OLD, {**CONFIGMAP_LABELS, "app.kubernetes.io/managed-by": "helm"})),
    ("another component", cm(OLD, {**CONFIGMAP_LABELS, "app.kubernetes.io/component": "config"})),
    ("another name", cm("kube-root-ca.crt")),
    ("no metadata", {}),
]


@pytest.mark.parametrize("configmap", [c[1] for c in NOT_OURS], ids=[c[0] for c in NOT_OURS])
def test_only_the_operators_probe_configmaps_are_touched(configmap: dict[str, Any]) -> None:
    assert stale_configmaps([configmap], [], CURRENT) == ()


def test_configmaps_used_ignores_references_without_a_name() -> None:
    spec = {"volumes": [{"name": "a", "configMap": {}}, {"name": "b", "emptyDir": {}}],
            "containers": [{"name": "c", "env": [{"name": "X", "value": "1"}],
                            "envFrom": [{"secretRef": {"name": "s"}}]}]}
    assert configmaps_used(pod(spec)) == set()
