"""Pure builders for what torchproof creates: the probe plan, the probe ConfigMap, the validation Pod.

Shaped like dask-kubernetes' `build_*_spec()` functions: the controller only sends what these return.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torchproof import gating
from torchproof import labels as L
from torchproof.checks import REGISTRY
from torchproof.contract import PLAN_ENV, PLAN_SCHEMA, RESULT_PATH
from torchproof.profile import Profile

PROBE_MOUNT = "/opt/torchproof"
SCRATCH = "/tmp"  # an emptyDir: the only writable place when the root filesystem is read-only
# Where torch and its libraries write caches, all pointed into the scratch volume; USER because
# getpass.getuser() (torch.compile's cache names) raises KeyError for a uid without a passwd entry.
SCRATCH_ENV: tuple[tuple[str, str], ...] = (
    ("HOME", SCRATCH),
    ("TMPDIR", SCRATCH),
    ("USER", "torchproof"),
    ("XDG_CACHE_HOME", f"{SCRATCH}/.cache"),
    ("TORCH_HOME", f"{SCRATCH}/.cache/torch"),
    ("TRITON_CACHE_DIR", f"{SCRATCH}/.cache/triton"),
    ("TORCHINDUCTOR_CACHE_DIR", f"{SCRATCH}/.cache/torchinductor"),
    ("CUDA_CACHE_PATH", f"{SCRATCH}/.cache/nv/ComputeCache"),
    ("MPLCONFIGDIR", f"{SCRATCH}/.cache/matplotlib"),
)
CONFIGMAP_PREFIX = "torchproof-probe-"
# What marks a probe ConfigMap as the operator's (the cleanup of old ones selects by it).
CONFIGMAP_LABELS: Mapping[str, str] = {"app.kubernetes.io/managed-by": L.MANAGED_BY,
                                       "app.kubernetes.io/component": "probe"}
# Standard taints that GPU nodes carry; validation pods must land there anyway.
GPU_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
)


def build_plan(profile: Profile) -> dict[str, Any]:
    """The probe's instructions: which checks (each check's own payload), within which time budget."""
    c = profile.checks
    planned = ((check.name, check.plan(c)) for check in REGISTRY)
    checks = {name: payload for name, payload in planned if payload is not None}
    return {
        "schema": PLAN_SCHEMA,
        "profile": profile.name,
        "device": profile.validation.device,
        "timeBudgetSeconds": c.time_budget_seconds,
        "resultPath": RESULT_PATH,
        "checks": checks,
    }


def configmap_name(files: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return CONFIGMAP_PREFIX + digest.hexdigest()[:10]


def build_probe_configmap(namespace: str, files: Mapping[str, str]) -> dict[str, Any]:
    """Probe files, content-hashed: a new probe gets a new name, running pods keep theirs."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(files),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "torchproof-probe", **CONFIGMAP_LABELS},
        },
        "data": dict(files),
    }


def _slug(text: str, size: int) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:size].strip("-")


def pod_name(profile: str, node: str) -> str:
    """Deterministic, so a restarted operator finds its pods and never creates a second one."""
    digest = hashlib.sha256(f"{profile}\0{node}".encode()).hexdigest()[:8]
    return f"tp-{_slug(profile, 24)}-{_slug(node, 24)}-{digest}"


def pod_labels(profile: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "torchproof-probe",
        "app.kubernetes.io/instance": profile,
        "app.kubernetes.io/component": "validation",
        "app.kubernetes.io/managed-by": L.MANAGED_BY,
        L.PROFILE_LABEL: profile,
    }


def security_contexts(profile: Profile) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod, container) security contexts: Pod Security `restricted` unless the profile asks for root."""
    s = profile.validation.security
    pod = {"runAsUser": s.run_as_user, "runAsNonRoot": s.run_as_non_root,
           "seccompProfile": {"type": "RuntimeDefault"}}
    container = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                 "readOnlyRootFilesystem": s.read_only_root_filesystem}
    return pod, container


@dataclass(frozen=True)
class PodTemplate:
    """A profile's validation pod less what names its node: built once per profile spec, namespace and probe
    ConfigMap (the plan's memo keeps it), so a pass that starts a hundred pods builds the spec once. The pods
    it makes share its parts, which nobody changes: a manifest is only ever sent."""

    key: tuple[object, ...]
    profile: str
    spec: Mapping[str, Any]
    labels: Mapping[str, str]
    owner: tuple[Mapping[str, Any], ...]
    namespace: str
    validates: Mapping[str, Any]

    def pod(self, node: str, fingerprint: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name(self.profile, node),
                "namespace": self.namespace,
                "labels": self.labels,
                "annotations": {
                    L.NODE_ANNOTATION: node,
                    L.SPEC_ANNOTATION: json.dumps({**self.validates, "fingerprint": fingerprint}, sort_keys=True,
                                                  separators=(",", ":")),
                },
                "ownerReferences": list(self.owner),
            },
            "spec": {
                **self.spec,
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                            ]
                        }
                    }
                },
            },
        }


def pod_template(profile: Profile, *, namespace: str, configmap: str,
                 reuse: PodTemplate | None = None) -> PodTemplate:
    """The template of the profile's pods; `reuse` when it was built from this same profile, namespace and
    ConfigMap."""
    key = (profile, namespace, configmap)
    if reuse is not None and reuse.key == key:
        return reuse
    v = profile.validation
    gpu = v.device == "cuda"  # a CPU dry run asks for no GPU and needs no GPU node's toleration
    devices = {v.gpu_resource: str(v.gpus_per_probe)} if gpu else {}
    limits: dict[str, str] = {**v.resources.get("limits", {}), **devices}
    requests: dict[str, str] = {**v.resources.get("requests", {}), **devices}
    pod_security, container_security = security_contexts(profile)
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": v.runtime_timeout_seconds,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security,
        "tolerations": [dict(t) for t in GPU_TOLERATIONS if gpu] + [dict(t) for t in v.tolerations]
        + ([gating.toleration(profile.name)] if profile.gate else []),
        "containers": [
            {
                "name": "probe",
                "image": profile.image,
                "imagePullPolicy": profile.image_pull_policy,
                "command": ["python", f"{PROBE_MOUNT}/probe.py"],
                "workingDir": SCRATCH,
                "env": [
                    {"name": PLAN_ENV, "value": json.dumps(build_plan(profile), separators=(",", ":"))},
                    {"name": "PYTHONPATH", "value": PROBE_MOUNT},
                    {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                    *({"name": name, "value": value} for name, value in SCRATCH_ENV),
                ],
                "resources": {"limits": limits, "requests": requests},
                "terminationMessagePath": RESULT_PATH,
                "terminationMessagePolicy": "File",
                "volumeMounts": [
                    {"name": "probe", "mountPath": PROBE_MOUNT, "readOnly": True},
                    {"name": "scratch", "mountPath": SCRATCH},
                    {"name": "shm", "mountPath": "/dev/shm"},
                ],
                "securityContext": container_security,
            }
        ],
        "volumes": [
            {"name": "probe", "configMap": {"name": configmap}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": v.shm_size}},
        ],
    }
    if v.runtime_class_name:
        spec["runtimeClassName"] = v.runtime_class_name
    if v.priority_class_name:
        spec["priorityClassName"] = v.priority_class_name
    if profile.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in profile.image_pull_secrets]
    owner = {
        "apiVersion": "torchproof.dev/v1alpha1",
        "kind": "PyTorchReleaseProfile",
        "name": profile.name,
        "uid": profile.uid,
        "controller": True,
        "blockOwnerDeletion": False,
    }
    return PodTemplate(
        key=key, profile=profile.name, spec=spec, labels=pod_labels(profile.name), owner=(owner,),
        namespace=namespace,
        validates={"generation": profile.generation, "specHash": profile.spec_hash, "image": profile.image},
    )


def build_pod(
    profile: Profile,
    *,
    node: str,
    fingerprint: str,
    namespace: str,
    configmap: str,
) -> dict[str, Any]:
    """One validation pod (a pass builds its pods from one `pod_template`)."""
    return pod_template(profile, namespace=namespace, configmap=configmap).pod(node, fingerprint)
