"""What the real API server does to every pod it admits: defaulting, the ServiceAccount admission plugin (the
`default` account in each namespace) and DefaultTolerationSeconds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from torchproof.podspec import build_pod
from torchproof.profile import parse_profile
from torchproof_sim import EmbeddedCluster
from torchproof_sim.podadmission import default_pod
from torchproof_sim.store import ApiError

NS = "tp"
ROOT = Path(__file__).resolve().parents[2]
NOT_READY = {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300}
UNREACHABLE = {**NOT_READY, "key": "node.kubernetes.io/unreachable"}


@pytest.fixture
async def cluster() -> AsyncIterator[EmbeddedCluster]:
    async with EmbeddedCluster(namespace=NS) as running:
        yield running


def bare(name: str = "p", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS},
            "spec": {"containers": [{"name": "c", "image": "nvcr.io/nvidia/pytorch:20.06-py3"}], **spec}}


async def test_a_bare_pod_is_stored_with_the_servers_defaults(cluster: EmbeddedCluster) -> None:
    body = bare(volumes=[{"name": "v", "configMap": {"name": "cm"}}])
    body["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    spec = (await cluster.emulator.create_object("v1/pods", body))["spec"]
    assert {k: spec[k] for k in ("restartPolicy", "dnsPolicy", "schedulerName", "terminationGracePeriodSeconds",
                                 "enableServiceLinks", "serviceAccountName", "serviceAccount", "securityContext",
                                 "priority")} == {
        "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
        "terminationGracePeriodSeconds": 30, "enableServiceLinks": True, "serviceAccountName": "default",
        "serviceAccount": "default", "securityContext": {}, "priority": 0}
    container = spec["containers"][0]
    assert (container["terminationMessagePath"], container["terminationMessagePolicy"]) == (
        "/dev/termination-log", "File")
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["resources"]["requests"] == {"nvidia.com/gpu": "1"}, "requests default to limits"
    assert spec["volumes"][0]["configMap"]["defaultMode"] == 420
    assert spec["tolerations"] == [NOT_READY, UNREACHABLE]


@pytest.mark.parametrize(("image", "policy"), [
    ("busybox", "Always"), ("busybox:latest", "Always"), ("nvcr.io/nvidia/pytorch:20.06-py3", "IfNotPresent"),
    ("registry:5000/img", "Always"), ("registry:5000/img:1", "IfNotPresent"), ("img@sha256:abc", "IfNotPresent"),
])
def test_image_pull_policy_defaults_by_tag(image: str, policy: str) -> None:
    pod = default_pod({"metadata": {}, "spec": {"containers": [{"name": "c", "image": image}]}})
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == policy


@pytest.mark.parametrize(("case", "tolerations", "added"), [
    ("none", [], [NOT_READY, UNREACHABLE]),
    ("its own not-ready", [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                            "tolerationSeconds": 10}], [UNREACHABLE]),
    ("every NoExecute taint", [{"operator": "Exists", "effect": "NoExecute"}], []),
    ("everything", [{"operator": "Exists"}], []),
    ("NoSchedule only", [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoSchedule"}],
     [NOT_READY, UNREACHABLE]),
])
def test_default_toleration_seconds_adds_only_what_the_pod_lacks(case: str, tolerations: list[dict[str, Any]],
                                                                 added: list[dict[str, Any]]) -> None:
    pod = default_pod({"metadata": {}, "spec": {"containers": [], "tolerations": tolerations}})
    assert pod["spec"]["tolerations"] == tolerations + added


async def test_what_a_pod_sets_is_kept(cluster: EmbeddedCluster) -> None:
    """The operator's own pod: restartPolicy Never, no service links, its termination log, its tolerations."""
    profile = parse_profile(yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text()))
    manifest = build_pod(profile, node="gpu-0", fingerprint="f", namespace=NS, configmap="probe")
    stored = (await cluster.emulator.create_object("v1/pods", manifest))["spec"]
    for key in ("restartPolicy", "enableServiceLinks", "automountServiceAccountToken", "activeDeadlineSeconds",
                "securityContext", "affinity"):
        assert stored[key] == manifest["spec"][key], key
    container, given = stored["containers"][0], manifest["spec"]["containers"][0]
    for key in ("terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy", "resources"):
        assert container[key] == given[key], key
    assert stored["tolerations"][:len(manifest["spec"]["tolerations"])] == manifest["spec"]["tolerations"]
    assert stored["serviceAccountName"] == "default"


async def test_every_namespace_has_its_default_service_account(cluster: EmbeddedCluster) -> None:
    await cluster.emulator.create_object("v1/namespaces", {"metadata": {"name": "later"}})
    for namespace in ("default", "kube-system", NS, "later"):
        assert cluster.emulator.get_object("v1/serviceaccounts", namespace, "default") is not None, namespace


@pytest.mark.parametrize(("case", "account", "delete_default", "message"), [
    ("a named account that does not exist", "probe-runner", False,
     'pods "p" is forbidden: error looking up service account tp/probe-runner: serviceaccount "probe-runner" '
     "not found"),
    ("the default account deleted", None, True,
     'pods "p" is forbidden: error looking up service account tp/default: serviceaccount "default" not found'),
])
async def test_a_pod_naming_a_missing_service_account_is_refused(cluster: EmbeddedCluster, case: str,
                                                                 account: str | None, delete_default: bool,
                                                                 message: str) -> None:
    if delete_default:
        await cluster.emulator.delete_object("v1/serviceaccounts", NS, "default")
    body = bare(**({"serviceAccountName": account} if account else {}))
    with pytest.raises(ApiError) as refused:
        await cluster.emulator.create_object("v1/pods", body)
    assert (refused.value.code, refused.value.reason, refused.value.message) == (403, "Forbidden", message)
    assert cluster.emulator.get_object("v1/pods", NS, "p") is None


async def test_a_pod_naming_an_account_that_exists_is_admitted(cluster: EmbeddedCluster) -> None:
    await cluster.emulator.create_object("v1/serviceaccounts", {"metadata": {"name": "runner", "namespace": NS}})
    created = await cluster.emulator.create_object("v1/pods", bare(serviceAccount="runner"))
    assert (created["spec"]["serviceAccountName"], created["spec"]["serviceAccount"]) == ("runner", "runner")
