"""The admin's flow with the real kubectl binary: apply the CRD and a profile, select nodes, delete."""

from __future__ import annotations

import copy
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.fleet import parse_fleet
from torchproof_sim.kubelet import SimKubelet

from tests.support.polling import eventually
from tests.support.rig import FAST, KEY, MIXED_FLEET, NAME, Rig, assert_nothing_denied
from tests.support.tools import kubectl

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


@pytest.fixture
async def bare_env() -> AsyncIterator[Rig]:
    """No CRD yet: the test installs it with kubectl, as an admin would."""
    fleet = parse_fleet({"nodes": copy.deepcopy(MIXED_FLEET)})
    async with (
        EmbeddedCluster() as cluster,
        SimKubelet(cluster.emulator, fleet, probe_seconds=0.05) as kubelet,
    ):
        yield Rig(cluster, kubelet)
        assert_nothing_denied(cluster)


async def test_admin_flow_with_kubectl(bare_env: Rig, tmp_path: Path) -> None:
    env = bare_env
    config = env.cluster.write_kubeconfig(tmp_path / "kubeconfig")
    await kubectl(config, "apply", "-k", "deploy/crd")
    async with env.operator(**FAST):
        await kubectl(config, "apply", "-f", "profiles/pytorch-20.06.yaml")
        await eventually(env.converged, what="convergence after kubectl apply")

        table = await kubectl(config, "get", "prp")
        header, row = table.splitlines()[:2]
        assert header.split()[:7] == ["NAME", "RELEASE", "PASSED", "FAILED", "INCOMPATIBLE", "ERROR", "PENDING"]
        assert row.split()[:7] == [NAME, "20.06", "3", "0", "2", "0", "0"]

        passed = await kubectl(config, "get", "nodes", "-l", f"{KEY}=passed", "-o", "name")
        assert sorted(passed.split()) == ["node/hidden-v100", "node/t4-a", "node/v100-a"]

        started = env.kubelet.stats.started
        await kubectl(config, "annotate", "node", "t4-a", "torchproof.dev/revalidate=1")
        await eventually(lambda: env.kubelet.stats.started == started + 1, what="revalidation after kubectl annotate")

        await kubectl(config, "delete", "-f", "profiles/pytorch-20.06.yaml", "--wait=true")
        await eventually(lambda: env.profile() is None, what="the profile deleted")
        labelled = await kubectl(config, "get", "nodes", "-l", KEY, "-o", "name")
        assert labelled.strip() == ""
