"""Pods in the embedded cluster for the kubelet's tests: pinned to a node, read back, waited on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchproof_sim import EmbeddedCluster

from tests.support.polling import eventually

NS = "tp"
IMAGE = "nvcr.io/nvidia/pytorch:20.06-py3"


def pinned(node: str) -> dict[str, Any]:
    """The affinity that pins a pod to `node`, as the operator pins its validation pods."""
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}


def current(cluster: EmbeddedCluster, name: str) -> dict[str, Any] | None:
    """The pod as the store has it now (None once it is gone)."""
    return cluster.emulator.get_object("v1/pods", NS, name)


async def wait_pod(cluster: EmbeddedCluster, name: str, condition: Callable[[dict[str, Any]], Any],
                   timeout: float = 5.0) -> dict[str, Any]:
    """The pod once `condition` holds for it; polled often, so a short-lived state (Terminating) is seen."""
    found: dict[str, Any] = await eventually(lambda: (pod := current(cluster, name)) is not None and condition(pod)
                                             and pod, f"pod {name}", timeout, every=0.005)
    return found
