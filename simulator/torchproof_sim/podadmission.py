"""What a real API server does to every pod by default: defaulting, ServiceAccount and DefaultTolerationSeconds
admission, and how long a delete waits for the kubelet (graceful deletion). Pure functions over plain dicts.

The defaults are `k8s.io/kubernetes/pkg/apis/core/v1/defaults.go`'s for the fields a pod like the operator's
meets; the admission plugins are `serviceaccount` and `defaulttolerationseconds`, both on by default.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]

DEFAULT_GRACE_SECONDS = 30
DEFAULT_TOLERATION_SECONDS = 300
NOT_READY, UNREACHABLE = "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"
POD_DEFAULTS: dict[str, Any] = {
    "restartPolicy": "Always",
    "dnsPolicy": "ClusterFirst",
    "schedulerName": "default-scheduler",
    "terminationGracePeriodSeconds": DEFAULT_GRACE_SECONDS,
    "enableServiceLinks": True,
    "priority": 0,
    "preemptionPolicy": "PreemptLowerPriority",
}
CONTAINER_DEFAULTS: dict[str, Any] = {
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
}


def _image_pull_policy(image: str) -> str:
    """`Always` for `:latest` or no tag, else `IfNotPresent` (a digest counts as a tag)."""
    name = image.rsplit("/", 1)[-1]
    if "@" in name:
        return "IfNotPresent"
    tag = name.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _container(container: Any) -> Any:
    if not isinstance(container, dict):
        return container
    result = {**CONTAINER_DEFAULTS, **container}
    if isinstance(result.get("image"), str) and "imagePullPolicy" not in result:
        result["imagePullPolicy"] = _image_pull_policy(result["image"])
    resources = result.get("resources")
    if isinstance(resources, dict) and isinstance(resources.get("limits"), dict):
        requests = resources.get("requests")
        given: dict[str, Any] = requests if isinstance(requests, dict) else {}
        result["resources"] = {**resources, "requests": {**resources["limits"], **given}}
    if isinstance(result.get("ports"), list):
        result["ports"] = [{"protocol": "TCP", **p} if isinstance(p, dict) else p for p in result["ports"]]
    return result


def _volume(volume: Any) -> Any:
    if isinstance(volume, dict):
        for source in ("configMap", "secret"):
            if isinstance(volume.get(source), dict) and "defaultMode" not in volume[source]:
                return {**volume, source: {**volume[source], "defaultMode": 420}}
    return volume


def _tolerates(tolerations: list[Any], key: str) -> bool:
    """Does any toleration already cover `key` with NoExecute? (an empty key or effect covers it.)"""
    return any(isinstance(t, dict) and t.get("key", "") in ("", key) and t.get("effect", "") in ("", "NoExecute")
               for t in tolerations)


def default_pod(pod: Obj) -> Obj:
    """The pod as stored: defaulted fields, `serviceAccountName`, and the not-ready/unreachable tolerations."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return pod
    spec = {**POD_DEFAULTS, "securityContext": {}, **spec}
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = spec["serviceAccount"] = account
    for key in ("containers", "initContainers"):
        if isinstance(spec.get(key), list):
            spec[key] = [_container(c) for c in spec[key]]
    if isinstance(spec.get("volumes"), list):
        spec["volumes"] = [_volume(v) for v in spec["volumes"]]
    tolerations = list(spec.get("tolerations") or [])
    for key in (NOT_READY, UNREACHABLE):
        if not _tolerates(tolerations, key):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS})
    spec["tolerations"] = tolerations
    return {**pod, "spec": spec}


def service_account_refusal(pod: Obj, accounts: set[str]) -> str | None:
    """The ServiceAccount admission plugin's refusal of a pod whose account does not exist, else None."""
    account = str((pod.get("spec") or {}).get("serviceAccountName") or "default")
    if account in accounts:
        return None
    meta = pod["metadata"]
    return (f'pods "{meta["name"]}" is forbidden: error looking up service account '
            f'{meta["namespace"]}/{account}: serviceaccount "{account}" not found')


def grace_period(pod: Obj, requested: Any) -> int:
    """Seconds a delete leaves the kubelet (the pod strategy's CheckGracefulDelete): `gracePeriodSeconds`
    as asked, else the pod's `terminationGracePeriodSeconds`; 0 (at once) for a pod on no node or already
    finished; a negative one is 1."""
    spec = pod.get("spec") or {}
    if not spec.get("nodeName") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    value = requested if requested is not None else spec.get("terminationGracePeriodSeconds", 0)
    try:
        period = int(value)
    except (TypeError, ValueError):
        return 0
    return 1 if period < 0 else period
