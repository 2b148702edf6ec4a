"""The operator in a namespace that enforces Pod Security `restricted` (the shipped namespace's labels), and
the cleanup of probe ConfigMaps that earlier probe versions left."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from torchproof.podspec import CONFIGMAP_LABELS, CONFIGMAP_PREFIX
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.fleet import parse_fleet
from torchproof_sim.kubelet import SimKubelet
from torchproof_sim.simulate import CRD_PATH

from tests.support.polling import eventually
from tests.support.rig import FAST, MIXED_FLEET, Rig, profile

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = yaml.safe_load((ROOT / "deploy" / "manager" / "namespace.yaml").read_text())
NS = NAMESPACE["metadata"]["name"]


@pytest.fixture
async def restricted() -> AsyncIterator[Rig]:
    fleet = parse_fleet({"nodes": copy.deepcopy(MIXED_FLEET)})
    async with (
        EmbeddedCluster(crd_paths=[CRD_PATH], namespace=NS, namespace_labels=NAMESPACE["metadata"]["labels"]) as c,
        SimKubelet(c.emulator, fleet, probe_seconds=0.05) as kubelet,
    ):
        yield Rig(c, kubelet)


async def test_validation_pods_are_admitted_under_restricted_and_the_fleet_converges(restricted: Rig) -> None:
    env = restricted
    async with env.operator(**FAST) as running:
        await env.apply(profile())
        await eventually(env.converged, "the profile to converge", 20.0)
        assert {n: env.label(n) for n in ("t4-a", "v100-a", "hidden-v100")} == dict.fromkeys(
            ("t4-a", "v100-a", "hidden-v100"), "passed")
        assert running.api.writes.get("create pod", 0) >= 3  # each one admitted, or no node would have passed


def probe_configmap(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "labels": dict(CONFIGMAP_LABELS)}, "data": {"probe.py": ""}}


def configmaps(env: Rig) -> set[str]:
    return {c["metadata"]["name"] for c in env.cluster.emulator.list_objects("v1/configmaps", NS)}


async def test_old_probe_configmaps_go_once_no_pod_uses_them(env: Rig) -> None:
    emulator = env.cluster.emulator
    unused, held = f"{CONFIGMAP_PREFIX}0000000001", f"{CONFIGMAP_PREFIX}0000000002"
    for name in (unused, held):
        await emulator.create_object("v1/configmaps", probe_configmap(name))
    await emulator.create_object("v1/configmaps", {"metadata": {"name": "team-settings", "namespace": NS}})
    holder = {"metadata": {"name": "holder", "namespace": NS},  # pinned to no node: it stays Pending
              "spec": {"containers": [{"name": "c", "image": "img"}],
                       "volumes": [{"name": "probe", "configMap": {"name": held}}]}}
    await emulator.create_object("v1/pods", holder)
    async with env.operator(resync_seconds=0.5, **FAST) as running:
        await env.apply(profile())
        await eventually(env.converged, "the profile to converge", 20.0)
        current = running.reconciler.configmap_name
        await eventually(lambda: unused not in configmaps(env), "the unused old ConfigMap to go", 10.0)
        assert configmaps(env) == {current, held, "team-settings"}
        await emulator.delete_object("v1/pods", NS, "holder")
        await eventually(lambda: configmaps(env) == {current, "team-settings"}, "the held one to go too", 10.0)
