"""What profiles that no longer exist left behind: their labels, records and validation pods.

The deletion handler cleans up after a profile, but only when it runs: a profile deleted before its
finalizer was added, or while the operator was down with the finalizer removed by hand, leaves marks
that no profile owns. Like Node Feature Discovery's garbage collector, a sweep compares what is on the
nodes with the profiles that exist. The nodes must be read before the profiles are listed: a mark then
always belongs to a profile that existed before the list, so one missing from it was deleted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torchproof import labels as L
from torchproof.views import NodeView, PodView


@dataclass(frozen=True)
class Sweep:
    patches: tuple[tuple[str, Mapping[str, Any]], ...]
    pods: tuple[str, ...]


def plan_sweep(nodes: Iterable[NodeView], pods: Iterable[PodView], profiles: Collection[str]) -> Sweep:
    patches = []
    for node in nodes:
        orphans = L.profiles_on(node.annotations) - set(profiles)
        if orphans and (patch := L.removal_patch(orphans, node.labels, node.annotations, node.resource_version)):
            patches.append((node.name, patch))
    return Sweep(tuple(patches), tuple(sorted(pod.name for pod in pods if pod.profile not in profiles)))
