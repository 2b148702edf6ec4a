"""Writes the operator made but has not yet seen come back through its watches.

Between a write and its watch event, the indexes still show the old world; planning on it would
create a pod twice or label a node twice. As controller-runtime's expectations do, the loop overlays
its own recent writes on what it observed until the watch confirms them (or a TTL passes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from torchproof.views import NodeView, PodView, pod_view

TTL_SECONDS = 60.0


def _merge(base: Mapping[str, str], patch: Mapping[str, str | None]) -> dict[str, str]:
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _applied(node: NodeView, patch: Mapping[str, Any]) -> bool:
    meta = patch.get("metadata") or {}
    taints = (patch.get("spec") or {}).get("taints")
    if taints is not None and [dict(t) for t in node.taints] != [dict(t) for t in taints]:
        return False
    return all(node.labels.get(k) == v for k, v in (meta.get("labels") or {}).items()) and all(
        node.annotations.get(k) == v for k, v in (meta.get("annotations") or {}).items()
    )


class Expectations:
    def __init__(self, ttl: float = TTL_SECONDS) -> None:
        self.ttl = ttl
        self.created: dict[str, tuple[float, PodView]] = {}
        self.deleted: dict[str, float] = {}
        self.patched: dict[str, tuple[float, Mapping[str, Any]]] = {}

    def pod_created(self, manifest: Mapping[str, Any], now: float) -> None:
        view = pod_view(manifest)
        self.created[view.name] = (now, view)

    def pod_deleted(self, name: str, now: float) -> None:
        self.created.pop(name, None)
        self.deleted[name] = now

    def node_patched(self, node: str, patch: Mapping[str, Any], now: float) -> None:
        """`patch`: a merge patch's labels and annotations, and `spec.taints` as written whole (gating.py).
        Patches of one node in one pass (its verdict, its gating taint) are expected together."""
        pending = self.patched.get(node)
        if pending is not None and now - pending[0] <= self.ttl:
            old, new = pending[1].get("metadata") or {}, patch.get("metadata") or {}
            meta = {part: {**(old.get(part) or {}), **(new.get(part) or {})} for part in ("labels", "annotations")}
            spec = {**(pending[1].get("spec") or {}), **(patch.get("spec") or {})}
            patch = {"metadata": meta, **({"spec": spec} if spec else {})}
        self.patched[node] = (now, patch)

    def overlay_pods(
        self, observed: Iterable[PodView], now: float, gone: Mapping[str, float] | None = None
    ) -> list[PodView]:
        """`gone`: when the watch saw each deleted pod go. A pod created and deleted (evicted, its node
        removed) between two passes is never observed; its deletion after the create settles the create."""
        pods = {pod.name: pod for pod in observed}
        gone = gone or {}
        for name, (at, view) in list(self.created.items()):
            if name in pods or gone.get(name, -1.0) > at or now - at > self.ttl:
                del self.created[name]
            else:
                pods[name] = view
        for name, at in list(self.deleted.items()):
            if name not in pods or now - at > self.ttl:
                del self.deleted[name]
            elif not pods[name].deleting:
                pods[name] = dataclasses.replace(pods[name], deleting=True)
        return list(pods.values())

    def overlay_nodes(self, observed: Iterable[NodeView], now: float) -> list[NodeView]:
        return list(self.overlay(observed if isinstance(observed, Mapping) else {n.name: n for n in observed},
                                 now)[0].values())

    def overlay(self, observed: Mapping[str, NodeView], now: float) -> tuple[Mapping[str, NodeView], set[str]]:
        """The nodes (by name) with this loop's patches not yet seen on top, and the names of those overlaid.
        Costs the patches in flight, not the fleet: `observed` itself when none is."""
        nodes: dict[str, NodeView] | None = None
        overlaid: set[str] = set()
        for name, (at, patch) in list(self.patched.items()):
            node = observed.get(name)
            if node is None or now - at > self.ttl or _applied(node, patch):
                del self.patched[name]
                continue
            meta = patch.get("metadata") or {}
            if nodes is None:
                nodes = dict(observed)
            nodes[name] = dataclasses.replace(
                node,
                labels=_merge(node.labels, meta.get("labels") or {}),
                annotations=_merge(node.annotations, meta.get("annotations") or {}),
                taints=tuple((patch.get("spec") or {}).get("taints", node.taints)),
            )
            overlaid.add(name)
        return (observed if nodes is None else nodes), overlaid
