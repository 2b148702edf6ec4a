"""Removing profiles' marks: their labels, records, the legacy owned-labels list and validation pods.

The deletion handler removes one profile's marks (`plan_removal`), but only when it runs: a profile
deleted before its finalizer was added, or while the operator was down with the finalizer removed by
hand, leaves marks that no profile owns. Like Node Feature Discovery's garbage collector, a sweep
(`plan_sweep`) compares what is on the nodes with the profiles that exist. The nodes must be read before
the profiles are listed: a mark then always belongs to a profile that existed before the list, so one
missing from it was deleted.

Probe ConfigMaps are content-hashed (`podspec.configmap_name`), so each probe version leaves one behind;
`stale_configmaps` picks those no pod needs any more.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torchproof import labels as L
from torchproof.podspec import CONFIGMAP_LABELS, CONFIGMAP_PREFIX
from torchproof.views import NodeView, PodView

FINISHED_PHASES = ("Succeeded", "Failed")  # such a pod's containers never start again


@dataclass(frozen=True)
class Removal:
    patches: tuple[tuple[str, Mapping[str, Any]], ...]
    pods: tuple[str, ...]


def plan_removal(nodes: Iterable[NodeView], pods: Iterable[PodView], profiles: Collection[str]) -> Removal:
    """Node patches and pod deletions that remove exactly these profiles' marks."""
    gone = set(profiles)
    patches = []
    for node in nodes:
        mine = L.profiles_on(node.annotations) & gone
        if mine and (patch := L.removal_patch(mine, node.labels, node.annotations)):
            patches.append((node.name, patch))
    return Removal(tuple(patches), tuple(sorted(pod.name for pod in pods if pod.profile in gone)))


def plan_sweep(nodes: Iterable[NodeView], pods: Iterable[PodView], existing: Collection[str]) -> Removal:
    """What profiles missing from `existing` left behind."""
    nodes, pods = list(nodes), list(pods)
    marked = {profile for node in nodes for profile in L.profiles_on(node.annotations)}
    return plan_removal(nodes, pods, (marked | {pod.profile for pod in pods}) - set(existing))


def configmaps_used(pod: Mapping[str, Any]) -> set[str]:
    """ConfigMaps a pod that may still start its containers needs: volumes (plain and projected), envFrom and
    env references. A finished pod needs none."""
    if ((pod.get("status") or {}).get("phase")) in FINISHED_PHASES:
        return set()
    spec = pod.get("spec") or {}
    refs: list[Any] = []
    for volume in spec.get("volumes") or []:
        refs.append(volume.get("configMap"))
        refs += [source.get("configMap") for source in (volume.get("projected") or {}).get("sources") or []]
    for container in (*(spec.get("initContainers") or []), *(spec.get("containers") or [])):
        refs += [ref.get("configMapRef") for ref in container.get("envFrom") or []]
        refs += [(var.get("valueFrom") or {}).get("configMapKeyRef") for var in container.get("env") or []]
    return {str(ref["name"]) for ref in refs if isinstance(ref, Mapping) and ref.get("name")}


def stale_configmaps(
    configmaps: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]], current: str
) -> tuple[str, ...]:
    """Probe ConfigMaps to delete: the operator's (its labels and name prefix), not the current probe's, and
    used by no pod. A pod whose ConfigMap is gone before it starts cannot mount it, so `pods` must be listed
    after `configmaps`: a pod created in between is then seen."""
    used = set().union(*(configmaps_used(pod) for pod in pods))
    out = []
    for cm in configmaps:
        meta = cm.get("metadata") or {}
        name, labels = str(meta.get("name", "")), meta.get("labels") or {}
        ours = name.startswith(CONFIGMAP_PREFIX) and all(labels.get(k) == v for k, v in CONFIGMAP_LABELS.items())
        if ours and name != current and name not in used:
            out.append(name)
    return tuple(sorted(out))
