"""`torchproof cleanup`: remove every mark torchproof left, with the operator gone.

For uninstalling when profiles cannot be deleted the normal way (docs/install.md, "Uninstall"): the operator
is already gone, so its deletion handler never runs and each deleted profile hangs on its finalizer. This
removes what that handler would have, for every profile at once: from nodes, the labels torchproof owns,
the result records and the legacy owned-labels annotation (`sweep.plan_removal`); the validation pods and probe
ConfigMaps in the operator's namespace; and, last, the finalizer of each profile already being deleted, so
its deletion completes. The revalidate annotation is left: an administrator sets it, not torchproof.

It runs as the administrator (their kubeconfig), not as the operator's ServiceAccount, and refuses while an
operator pod runs: two writers would undo each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torchproof import labels as L
from torchproof.kube import KubeApi, KubeError
from torchproof.podspec import CONFIGMAP_LABELS, CONFIGMAP_PREFIX
from torchproof.sweep import Removal, plan_removal
from torchproof.views import node_view, pod_view

FINALIZER = f"{L.DOMAIN}/cleanup"  # the operator's (kopf's persistence.finalizer, set in controller.py)
# The operator Deployment's pod labels (deploy/manager/deployment.yaml).
OPERATOR_LABELS: Mapping[str, str] = {"app.kubernetes.io/name": "torchproof",
                                      "app.kubernetes.io/component": "operator"}


class CleanupRefused(Exception):
    """Cleaning up now would fight a running operator; the message says what to stop."""


@dataclass(frozen=True)
class Cleanup:
    removal: Removal  # node patches and validation pods
    configmaps: tuple[str, ...]
    finalizers: tuple[str, ...]  # profiles being deleted whose finalizer is released

    @property
    def empty(self) -> bool:
        return not (self.removal.patches or self.removal.pods or self.configmaps or self.finalizers)


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def plan_cleanup(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    configmaps: Iterable[Mapping[str, Any]],
    profiles: Iterable[Mapping[str, Any]],
) -> Cleanup:
    """Everything to remove: every profile's marks (existing, deleted or never seen), the validation pods,
    the probe ConfigMaps, and the finalizers of profiles being deleted."""
    node_views = [node_view(n) for n in nodes]
    pod_views = [pod_view(p) for p in pods]
    profiles = list(profiles)
    every = ({p for n in node_views for p in L.profiles_on(n.annotations)} | {p.profile for p in pod_views}
             | {_name(p) for p in profiles})
    ours = [_name(cm) for cm in configmaps if _name(cm).startswith(CONFIGMAP_PREFIX)
            and all(((cm.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in CONFIGMAP_LABELS.items())]
    releasing = [_name(p) for p in profiles if (p.get("metadata") or {}).get("deletionTimestamp")
                 and FINALIZER in ((p.get("metadata") or {}).get("finalizers") or [])]
    return Cleanup(plan_removal(node_views, pod_views, every), tuple(sorted(ours)), tuple(sorted(releasing)))


def without_finalizer(profile: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that drops torchproof's finalizer and keeps any other; the resourceVersion makes a
    concurrent change of the list a conflict, not a lost entry."""
    meta = profile.get("metadata") or {}
    rest = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
    return {"metadata": {"finalizers": rest or None, "resourceVersion": meta.get("resourceVersion")}}


def running_operators(pods: Iterable[Mapping[str, Any]]) -> list[str]:
    """Operator pods that may still write: not finished and not being deleted."""
    return sorted(_name(p) for p in pods if ((p.get("status") or {}).get("phase") in ("Pending", "Running", None))
                  and not (p.get("metadata") or {}).get("deletionTimestamp"))


def describe_patch(node: str, patch: Mapping[str, Any]) -> str:
    """`node N: remove labels ...; remove annotations ...; set annotation k=v`."""
    meta = patch.get("metadata") or {}
    parts = []
    for kind in ("labels", "annotations"):
        removed = sorted(k for k, v in (meta.get(kind) or {}).items() if v is None)
        if removed:
            parts.append(f"remove {kind} {', '.join(removed)}")
    parts += [f"set annotation {k}={v}" for k, v in sorted((meta.get("annotations") or {}).items()) if v is not None]
    return f"node {node}: " + "; ".join(parts)


def describe(plan: Cleanup, namespace: str) -> list[str]:
    """One line per change, in the order they are made."""
    lines = [describe_patch(node, patch) for node, patch in plan.removal.patches]
    lines += [f"pod {namespace}/{name}: delete" for name in plan.removal.pods]
    lines += [f"configmap {namespace}/{name}: delete" for name in plan.configmaps]
    lines += [f"profile {name}: remove finalizer {FINALIZER} (being deleted)" for name in plan.finalizers]
    return lines


def summary(plan: Cleanup, dry_run: bool) -> str:
    if plan.empty:
        return "nothing to clean up"
    counts = (f"{len(plan.removal.patches)} node(s), {len(plan.removal.pods)} pod(s), "
              f"{len(plan.configmaps)} configmap(s), {len(plan.finalizers)} finalizer(s)")
    return f"would clean up {counts} (dry run: nothing changed)" if dry_run else f"cleaned up {counts}"


def selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def only(names: Sequence[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")



async def execute(api: KubeApi, namespace: str, *, dry_run: bool, force: bool) -> tuple[list[str], str]:
    """Read, plan and (unless `dry_run`) apply the cleanup; the lines describing each change and a summary.
    `CleanupRefused` while an operator pod runs (unless `force`), `KubeError` when a call fails."""
    from torchproof.controller import POD_SELECTOR

    operators = running_operators(await api.list_pods(namespace, selector(OPERATOR_LABELS)))
    if operators and not force:
        raise CleanupRefused(
            f"an operator is running in {namespace} (pod {only(operators)}): delete the profiles while it runs, "
            f"or stop it first (kubectl -n {namespace} scale deployment torchproof --replicas=0); --force skips "
            "this check")
    nodes = await api.list_nodes()
    pods = await api.list_pods(namespace, selector(POD_SELECTOR))
    configmaps = await api.list_configmaps(namespace, selector(CONFIGMAP_LABELS))
    profiles = await api.list_profiles()
    plan = plan_cleanup(nodes, pods, configmaps, profiles)
    if not dry_run:
        for node, patch in plan.removal.patches:
            await api.patch_node(node, patch)
        for name in plan.removal.pods:
            await api.delete_pod(namespace, name)
        for name in plan.configmaps:
            await api.delete_configmap(namespace, name)
        by_name = {_name(p): p for p in profiles}
        for name in plan.finalizers:
            await _release(api, by_name[name])
    return describe(plan, namespace), summary(plan, dry_run)


async def _release(api: KubeApi, profile: Mapping[str, Any]) -> None:
    try:
        await api.patch_profile(_name(profile), without_finalizer(profile))
    except KubeError as exc:
        if exc.status != 404:  # deleted meanwhile: nothing to release
            raise
