"""The hostile suite's rig: the embedded cluster, a small fleet, the real operator, and node snapshots."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.fleet import parse_fleet
from torchproof_sim.kubelet import SimKubelet
from torchproof_sim.simulate import CRD_PATH, PROFILES, RunningOperator, embedded_operator, settled, wait_for

ROOT = Path(__file__).resolve().parents[2]
PROFILE = yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text())
NAME = PROFILE["metadata"]["name"]
SETTINGS: dict[str, Any] = {"batch_window": 0.02, "status_interval": 0.2, "error_backoff": 0.2}
T4 = {"product": "Tesla T4", "count": 1, "driver": "450.51.06"}
FOREIGN = {"team": "ml", "torchproof.dev/other": "keep"}
FLEET = [{"name": "t4-a", "gpu": T4, "labels": FOREIGN}, {"name": "t4-b", "gpu": T4, "labels": FOREIGN},
         {"name": "cpu-1", "labels": FOREIGN}]


def profile(name: str = NAME, **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(PROFILE)
    body["metadata"]["name"] = name
    body["spec"].update(spec)
    return body


@dataclass
class Rig:
    cluster: EmbeddedCluster
    kubelet: SimKubelet

    def profile(self, name: str) -> dict[str, Any] | None:
        return self.cluster.emulator.get_object(PROFILES, None, name)

    def profiles(self) -> list[dict[str, Any]]:
        return self.cluster.emulator.list_objects(PROFILES)

    def node(self, name: str) -> dict[str, Any]:
        obj = self.cluster.emulator.get_object("v1/nodes", None, name)
        assert obj is not None, name
        return obj

    def node_snapshot(self) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
        """Each node's labels and annotations."""
        return {n["metadata"]["name"]: (dict(n["metadata"].get("labels") or {}),
                                        dict(n["metadata"].get("annotations") or {}))
                for n in self.cluster.emulator.list_objects("v1/nodes")}

    async def apply(self, body: Mapping[str, Any]) -> None:
        await self.cluster.emulator.create_object(PROFILES, copy.deepcopy(dict(body)))

    @contextlib.asynccontextmanager
    async def operator(self) -> AsyncIterator[RunningOperator]:
        async with embedded_operator(self.cluster, **SETTINGS) as op:
            yield op

    async def wait_converged(self, name: str) -> None:
        def done() -> bool:
            body = self.profile(name)
            pods = self.cluster.emulator.list_objects("v1/pods")
            return body is not None and settled(body) and not pods
        await wait_for(done, what=f"{name} to converge")


@contextlib.asynccontextmanager
async def rig(nodes: list[dict[str, Any]] | None = None) -> AsyncIterator[Rig]:
    fleet = parse_fleet({"nodes": copy.deepcopy(nodes or FLEET)})
    async with (
        EmbeddedCluster(crd_paths=[CRD_PATH]) as cluster,
        SimKubelet(cluster.emulator, fleet, probe_seconds=0.05) as kubelet,
    ):
        yield Rig(cluster, kubelet)
