"""The operator with deploy/admission-policy in force: the embedded cluster enforces the ValidatingAdmissionPolicy
on every node write of the operator's ServiceAccount, and the operator does everything it does (convergence,
revalidation, profile cleanup, the sweep at start) without one refusal."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import aiohttp
import pytest
import yaml
from torchproof_sim.store import MERGE_PATCH

from tests.support.rig import Rig
from tests.support.scenarios import exercise_everything
from tests.support.tools import render

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the kustomization")


async def test_the_operator_does_everything_under_the_node_policy(env: Rig, tmp_path: Path) -> None:
    deploy = os.path.relpath(ROOT / "deploy", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{deploy}/default"], "components": [f"{deploy}/admission-policy"]}))
    policy = [d for d in render(tmp_path) if d["apiVersion"] == "admissionregistration.k8s.io/v1"]
    assert len(policy) == 2
    await env.cluster.apply_documents(policy)
    user = await exercise_everything(env)
    assert env.cluster.emulator.store.policy_denials == []
    token = env.cluster.service_account_token(*user.split(":")[2:4])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": MERGE_PATCH}
    async with (aiohttp.ClientSession(headers=headers) as session,
                session.patch(f"{env.cluster.url}/api/v1/nodes/t4-a",
                              json={"metadata": {"labels": {"team": "ml"}}}) as response):
        assert response.status == 422, "the policy was in force all along"
    assert len(env.cluster.emulator.store.policy_denials) == 1
