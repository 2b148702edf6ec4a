"""Removing profiles' marks: their labels, records, owned-labels entries and validation pods.

The deletion handler removes one profile's marks (`plan_removal`), but only when it runs: a profile
deleted before its finalizer was added, or while the operator was down with the finalizer removed by
hand, leaves marks that no profile owns. Like Node Feature Discovery's garbage collector, a sweep
(`plan_sweep`) compares what is on the nodes with the profiles that exist. The nodes must be read before
the profiles are listed: a mark then always belongs to a profile that existed before the list, so one
missing from it was deleted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torchproof import labels as L
from torchproof.views import NodeView, PodView


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
        if mine and (patch := L.removal_patch(mine, node.labels, node.annotations, node.resource_version)):
            patches.append((node.name, patch))
    return Removal(tuple(patches), tuple(sorted(pod.name for pod in pods if pod.profile in gone)))


def plan_sweep(nodes: Iterable[NodeView], pods: Iterable[PodView], existing: Collection[str]) -> Removal:
    """What profiles missing from `existing` left behind."""
    nodes, pods = list(nodes), list(pods)
    marked = {profile for node in nodes for profile in L.profiles_on(node.annotations)}
    return plan_removal(nodes, pods, (marked | {pod.profile for pod in pods}) - set(existing))
