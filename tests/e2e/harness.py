"""Helpers for end-to-end tests: the embedded cluster, the simulated fleet, waiting on conditions."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torchproof import labels as L
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.kubelet import SimKubelet
from torchproof_sim.simulate import PROFILES, install_operator_identity

ROOT = Path(__file__).resolve().parents[2]
PROFILE = yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text())
NAME = PROFILE["metadata"]["name"]
KEY = L.label_key(NAME)
FAST = {"batch_window": 0.02, "status_interval": 0.2}

MIXED_FLEET: list[dict[str, Any]] = [
    {"name": "t4-a", "gpu": {"product": "Tesla T4", "count": 4, "driver": "418.87.01"}},
    {"name": "v100-a", "gpu": {"product": "Tesla V100-SXM2-16GB", "count": 8, "driver": "450.51.06"}},
    {"name": "k80-a", "gpu": {"product": "Tesla K80", "count": 4, "driver": "450.51.06"}},
    {"name": "rtx-a", "gpu": {"product": "GeForce RTX 2080 Ti", "count": 1, "driver": "440.100"}},
    {"name": "hidden-v100", "gfd": False,
     "gpu": {"product": "Tesla V100-SXM2-16GB", "count": 1, "driver": "450.51.06"}},
    {"name": "cpu-1", "labels": {"team": "web"}},
]


def profile(**spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(PROFILE)
    body["spec"].update(spec)
    return body


@dataclass
class Env:
    cluster: EmbeddedCluster
    kubelet: SimKubelet

    def node(self, name: str) -> dict[str, Any]:
        obj = self.cluster.emulator.get_object("v1/nodes", None, name)
        assert obj is not None, name
        return obj

    def label(self, node: str, key: str = KEY) -> str | None:
        return (self.node(node)["metadata"].get("labels") or {}).get(key)

    def profile(self, name: str = NAME) -> dict[str, Any] | None:
        return self.cluster.emulator.get_object(PROFILES, None, name)

    def status(self, name: str = NAME) -> dict[str, Any]:
        return (self.profile(name) or {}).get("status") or {}

    def condition(self, type_: str, name: str = NAME) -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == type_), {})

    def pods(self) -> list[dict[str, Any]]:
        return self.cluster.emulator.list_objects("v1/pods", "torchproof")

    def converged(self, name: str = NAME) -> bool:
        status = self.status(name)
        counts = status.get("counts") or {}
        meta = (self.profile(name) or {}).get("metadata") or {}
        return bool(
            status.get("observedGeneration") == meta.get("generation")
            and "pending" in counts and counts["pending"] == counts.get("waiting", 0)
            and self.condition("Ready", name)
        )

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.cluster.emulator.create_object(PROFILES, copy.deepcopy(body))

    async def operator_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig with the operator's ServiceAccount token (deploy/rbac installed), for `torchproof run`
        as a process, where a pod would find its ServiceAccount's token."""
        _, token = await install_operator_identity(self.cluster)
        return self.cluster.write_kubeconfig(path, token)


def assert_nothing_denied(cluster: EmbeddedCluster) -> None:
    """No request was refused: the operator's RBAC covered every call it made (and the admin's too)."""
    denied = [f"{c.user} {c.verb} {c.resource}{'.' + c.group if c.group else ''} in {c.namespace or 'the cluster'}"
              for c in cluster.access.denials()]
    assert not denied, f"refused requests: {denied}"
