"""The real operator (kopf + the kubernetes client over HTTP) against the embedded cluster, which enforces
RBAC: the operator runs as the ServiceAccount of deploy/rbac (`embedded_operator`), and a test in which any
request was refused (401, 403) fails at teardown."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from harness import MIXED_FLEET, Env, assert_nothing_denied
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.fleet import parse_fleet
from torchproof_sim.kubelet import SimKubelet
from torchproof_sim.simulate import CRD_PATH


def make_env_fixture(nodes: list[dict[str, Any]], probe_seconds: float = 0.05) -> Any:
    @pytest.fixture
    async def env() -> AsyncIterator[Env]:
        fleet = parse_fleet({"nodes": copy.deepcopy(nodes)})
        async with (
            EmbeddedCluster(crd_paths=[CRD_PATH]) as cluster,
            SimKubelet(cluster.emulator, fleet, probe_seconds=probe_seconds) as kubelet,
        ):
            yield Env(cluster, kubelet)
            assert_nothing_denied(cluster)

    return env


env = make_env_fixture(MIXED_FLEET)


@pytest.fixture
async def fault_env(fleet_nodes: list[dict[str, Any]]) -> AsyncIterator[Env]:
    fleet = parse_fleet({"nodes": copy.deepcopy(fleet_nodes)})
    async with (
        EmbeddedCluster(crd_paths=[CRD_PATH]) as cluster,
        SimKubelet(cluster.emulator, fleet, probe_seconds=0.05) as kubelet,
    ):
        yield Env(cluster, kubelet)
        assert_nothing_denied(cluster)
