"""Pod Security admission in the embedded cluster: each check of `baseline` and `restricted` in the server's
wording, and the 403 a pod create gets in a namespace that enforces a level, over HTTP."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from torchproof.podspec import build_pod
from torchproof.profile import parse_profile
from torchproof_sim import run_in_thread
from torchproof_sim.podsecurity import ENFORCE_LABEL, VERSION_LABEL, enforced, forbidden_message, violations

ROOT = Path(__file__).resolve().parents[2]
PROFILE: dict[str, Any] = yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text())
NAMESPACE_LABELS: dict[str, str] = yaml.safe_load((ROOT / "deploy" / "manager" / "namespace.yaml").read_text())[
    "metadata"]["labels"]

# A pod that passes `restricted`: what every case below breaks in one way.
GOOD: dict[str, Any] = {
    "metadata": {"name": "x"},
    "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "probe", "image": "img",
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }],
        "volumes": [{"name": "probe", "configMap": {"name": "cm"}}, {"name": "scratch", "emptyDir": {}}],
    },
}


def edited(edit: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    pod = copy.deepcopy(GOOD)
    edit(pod["spec"])
    return pod


def container(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["containers"][0]["securityContext"]  # type: ignore[no-any-return]


def second_container(spec: dict[str, Any]) -> None:
    spec["containers"].append({"name": "side", "image": "img"})


# (edit, the violation at baseline or None, the violation at restricted)
CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str | None, str]] = [
    ("hostNetwork", lambda s: s.update(hostNetwork=True, hostPID=True),
     "host namespaces (hostNetwork=true, hostPID=true)", "host namespaces (hostNetwork=true, hostPID=true)"),
    ("hostIPC", lambda s: s.update(hostIPC=True), "host namespaces (hostIPC=true)", "host namespaces (hostIPC=true)"),
    ("privileged", lambda s: container(s).update(privileged=True),
     'privileged (container "probe" must not set securityContext.privileged=true)',
     'privileged (container "probe" must not set securityContext.privileged=true)'),
    ("capability beyond baseline", lambda s: container(s)["capabilities"].update(add=["SYS_ADMIN"]),
     'non-default capabilities (container "probe" must not include "SYS_ADMIN" in securityContext.capabilities.add)',
     'unrestricted capabilities (container "probe" must not include "SYS_ADMIN" in '
     "securityContext.capabilities.add)"),
    ("capability baseline allows", lambda s: container(s)["capabilities"].update(add=["CHOWN"]), None,
     'unrestricted capabilities (container "probe" must not include "CHOWN" in securityContext.capabilities.add)'),
    ("no drop ALL", lambda s: container(s).pop("capabilities"), None,
     'unrestricted capabilities (container "probe" must set securityContext.capabilities.drop=["ALL"])'),
    ("hostPath", lambda s: s["volumes"].append({"name": "root", "hostPath": {"path": "/"}}),
     'hostPath volumes (volume "root")', 'restricted volume types (volume "root" uses restricted volume type '
     '"hostPath")'),
    ("nfs", lambda s: s["volumes"].append({"name": "data", "nfs": {"server": "s", "path": "/"}}), None,
     'restricted volume types (volume "data" uses restricted volume type "nfs")'),
    ("hostPort", lambda s: s["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 8080}]),
     'hostPort (container "probe" uses hostPort 8080)', 'hostPort (container "probe" uses hostPort 8080)'),
    ("procMount", lambda s: container(s).update(procMount="Unmasked"),
     'procMount (container "probe" must not set securityContext.procMount to "Unmasked")',
     'procMount (container "probe" must not set securityContext.procMount to "Unmasked")'),
    ("seccomp Unconfined", lambda s: s["securityContext"].update(seccompProfile={"type": "Unconfined"}),
     'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")',
     'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")'),
    ("no seccomp", lambda s: s["securityContext"].pop("seccompProfile"), None,
     'seccompProfile (pod or container "probe" must set securityContext.seccompProfile.type to "RuntimeDefault" '
     'or "Localhost")'),
    ("sysctl", lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"},
                                                              {"name": "kernel.shm_rmid_forced", "value": "1"}]),
     "forbidden sysctls (kernel.msgmax)", "forbidden sysctls (kernel.msgmax)"),
    ("allowPrivilegeEscalation unset", lambda s: container(s).pop("allowPrivilegeEscalation"), None,
     'allowPrivilegeEscalation != false (container "probe" must set securityContext.allowPrivilegeEscalation=false)'),
    ("runAsNonRoot false", lambda s: s["securityContext"].update(runAsNonRoot=False), None,
     "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)"),
    ("runAsNonRoot unset", lambda s: s["securityContext"].pop("runAsNonRoot"), None,
     'runAsNonRoot != true (pod or container "probe" must set securityContext.runAsNonRoot=true)'),
    ("container runAsNonRoot false", lambda s: container(s).update(runAsNonRoot=False), None,
     'runAsNonRoot != true (container "probe" must not set securityContext.runAsNonRoot=false)'),
    ("runAsUser 0", lambda s: s["securityContext"].update(runAsUser=0), None,
     "runAsUser=0 (pod must not set runAsUser=0)"),
    ("container runAsUser 0", lambda s: container(s).update(runAsUser=0), None,
     'runAsUser=0 (container "probe" must not set runAsUser=0)'),
]


@pytest.mark.parametrize(("edit", "baseline", "restricted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_check_refuses_its_case_in_the_servers_words(
    edit: Callable[[dict[str, Any]], Any], baseline: str | None, restricted: str
) -> None:
    pod = edited(edit)
    assert violations(pod, "restricted") == [restricted]
    assert violations(pod, "baseline") == ([baseline] if baseline else [])
    assert violations(pod, "privileged") == []


def test_the_good_pod_passes_every_level() -> None:
    assert [violations(GOOD, level) for level in ("privileged", "baseline", "restricted")] == [[], [], []]


def test_container_level_settings_count_as_the_pods() -> None:
    def per_container(spec: dict[str, Any]) -> None:
        pod_level = spec.pop("securityContext")
        container(spec).update(pod_level)

    assert violations(edited(per_container), "restricted") == []


def test_several_containers_are_named_together_in_the_servers_order() -> None:
    pod = edited(second_container)
    assert violations(pod, "restricted") == [
        'allowPrivilegeEscalation != false (container "side" must set securityContext.allowPrivilegeEscalation=false)',
        'unrestricted capabilities (container "side" must set securityContext.capabilities.drop=["ALL"])',
    ]
    bare = {"metadata": {"name": "bare"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}],
                                                    "initContainers": [{"name": "init"}]}}
    assert violations(bare, "restricted") == [
        'allowPrivilegeEscalation != false (containers "init", "a", "b" must set '
        "securityContext.allowPrivilegeEscalation=false)",
        'unrestricted capabilities (containers "init", "a", "b" must set securityContext.capabilities.drop=["ALL"])',
        'runAsNonRoot != true (pod or containers "init", "a", "b" must set securityContext.runAsNonRoot=true)',
        'seccompProfile (pod or containers "init", "a", "b" must set securityContext.seccompProfile.type to '
        '"RuntimeDefault" or "Localhost")',
    ]


@pytest.mark.parametrize(("labels", "policy"), [
    ({}, None),
    ({ENFORCE_LABEL: "baseline"}, ("baseline", "latest")),
    ({ENFORCE_LABEL: "restricted", VERSION_LABEL: "v1.28"}, ("restricted", "v1.28")),
    ({ENFORCE_LABEL: "strict"}, ("restricted", "latest")),  # not a level: the server enforces restricted
])
def test_the_enforced_level_comes_from_the_namespace_labels(
    labels: dict[str, str], policy: tuple[str, str] | None
) -> None:
    assert enforced(labels) == policy


def test_the_message_has_the_servers_shape() -> None:
    pod = edited(lambda s: (s["securityContext"].update(runAsUser=0), container(s).pop("allowPrivilegeEscalation")))
    assert forbidden_message(pod, {ENFORCE_LABEL: "restricted"}) == (
        'pods "x" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false '
        '(container "probe" must set securityContext.allowPrivilegeEscalation=false), runAsUser=0 (pod must not '
        "set runAsUser=0)"
    )
    assert forbidden_message(pod, {ENFORCE_LABEL: "privileged"}) is None
    assert forbidden_message(GOOD, {ENFORCE_LABEL: "restricted"}) is None


# ---- validation pods, the shipped namespace, and the API ------------------------------------------------


def validation_pod(**validation: Any) -> dict[str, Any]:
    body = copy.deepcopy(PROFILE)
    body["metadata"]["uid"] = "uid-1"
    body["spec"]["validation"].update(validation)
    return build_pod(parse_profile(body), node="gpu-1", fingerprint="fp", namespace="torchproof", configmap="cm")


ROOT_OVERRIDE = {"securityContext": {"runAsUser": 0, "runAsNonRoot": False, "readOnlyRootFilesystem": False}}


def test_the_shipped_namespace_enforces_restricted_and_the_operator_and_its_pods_pass_it() -> None:
    assert enforced(NAMESPACE_LABELS) == ("restricted", "v1.28")
    assert NAMESPACE_LABELS["pod-security.kubernetes.io/warn"] == "restricted"
    deployment = yaml.safe_load((ROOT / "deploy" / "manager" / "deployment.yaml").read_text())
    operator_pod = {"metadata": {"name": "torchproof"}, "spec": deployment["spec"]["template"]["spec"]}
    assert violations(operator_pod, "restricted") == []
    assert violations(validation_pod(), "restricted") == []
    assert violations(validation_pod(runtimeClassName="nvidia", gpuResource="nvidia.com/mig-1g.5gb"),
                      "restricted") == []


def test_a_profile_that_asks_for_root_needs_baseline() -> None:
    pod = validation_pod(**ROOT_OVERRIDE)
    assert violations(pod, "restricted") == [
        "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)",
        "runAsUser=0 (pod must not set runAsUser=0)",
    ]
    assert violations(pod, "baseline") == []


@pytest.fixture
def core() -> Iterator[kubernetes.client.CoreV1Api]:
    with run_in_thread(namespace="torchproof", namespace_labels=NAMESPACE_LABELS) as cluster:
        config = kubernetes.client.Configuration(host=cluster.url, api_key={"authorization": cluster.admin_token},
                                                 api_key_prefix={"authorization": "Bearer"})
        with kubernetes.client.ApiClient(config) as client:
            yield kubernetes.client.CoreV1Api(client)


def test_the_api_admits_validation_pods_and_refuses_root_with_403(core: kubernetes.client.CoreV1Api) -> None:
    admitted = core.create_namespaced_pod("torchproof", validation_pod())
    assert admitted.metadata.name.startswith("tp-pytorch-20-06-gpu-1-")
    root = validation_pod(**ROOT_OVERRIDE)
    root["metadata"]["name"] = "tp-root"
    with pytest.raises(kubernetes.client.ApiException) as caught:
        core.create_namespaced_pod("torchproof", root)
    assert caught.value.status == 403
    status = json.loads(caught.value.body)
    assert (status["reason"], status["details"]) == ("Forbidden", {"name": "tp-root", "kind": "pods"})
    assert status["message"] == (
        'pods "tp-root" is forbidden: violates PodSecurity "restricted:v1.28": runAsNonRoot != true (pod must not '
        'set securityContext.runAsNonRoot=false), runAsUser=0 (pod must not set runAsUser=0)'
    )
    assert [p.metadata.name for p in core.list_namespaced_pod("torchproof").items] == [admitted.metadata.name]
    # a namespace at baseline admits it, and one without the label admits anything, as a real server does
    core.create_namespace({"metadata": {"name": "gpu-root", "labels": {ENFORCE_LABEL: "baseline"}}})
    for namespace in ("gpu-root", "default"):
        root["metadata"]["namespace"] = namespace
        assert core.create_namespaced_pod(namespace, root).metadata.name == "tp-root"
