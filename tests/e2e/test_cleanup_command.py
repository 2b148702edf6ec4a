"""`torchproof cleanup` as the administrator, with the operator gone: every torchproof mark leaves the nodes,
the validation pods and probe ConfigMaps go, a profile stuck on its finalizer is deleted, and nothing else
changes; it refuses while an operator pod runs."""

from __future__ import annotations

import asyncio
import copy
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from torchproof import labels as L
from torchproof.cleanup import FINALIZER, OPERATOR_LABELS
from torchproof.controller import POD_SELECTOR
from torchproof.podspec import CONFIGMAP_PREFIX
from torchproof_sim.simulate import NAMESPACE

from tests.support.polling import eventually
from tests.support.rig import FAST, KEY, NAME, ROOT, Rig, profile

HAND_MADE = "torchproof.dev/hand-made"  # in torchproof's domain, but set by a person: not torchproof's to remove


async def cleanup(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "torchproof.cli", "cleanup", *args, env={**os.environ, "KUBERNETES_SERVICE_HOST": ""},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def marks(env: Rig) -> dict[str, dict[str, str]]:
    """Every torchproof key on every node (labels and annotations)."""
    out = {}
    for node in env.cluster.emulator.list_objects("v1/nodes"):
        meta = node["metadata"]
        keys = {**(meta.get("labels") or {}), **(meta.get("annotations") or {})}
        out[meta["name"]] = {k: v for k, v in keys.items() if L.DOMAIN in k}
    return out


async def leave_marks(env: Rig) -> None:
    """A converged profile, then the operator gone with a validation pod left behind and the profile deleted:
    it hangs on the operator's finalizer. t4-a also carries an earlier release's owned-labels list."""
    await env.cluster.emulator.patch_object("v1/nodes", None, "t4-a", {"metadata": {
        "labels": {HAND_MADE: "yes"}, "annotations": {L.REVALIDATE_ANNOTATION: "2026-01-01"}}})
    async with env.operator(**FAST):
        await env.apply(profile())
        await eventually(env.converged, timeout=60, what="convergence")
    await env.cluster.emulator.patch_object("v1/nodes", None, "t4-a", {"metadata": {
        "annotations": {L.LEGACY_OWNED_ANNOTATION: KEY}}})
    await env.cluster.emulator.create_object("v1/pods", {"metadata": {
        "name": f"torchproof-{NAME}-left", "namespace": NAMESPACE,
        "labels": {**POD_SELECTOR, L.PROFILE_LABEL: NAME}}, "spec": {"containers": [{"name": "probe", "image": "x"}]}})
    await env.cluster.emulator.delete_object("torchproof.dev/v1alpha1/pytorchreleaseprofiles", None, NAME)
    stuck = env.profile()
    assert stuck is not None and stuck["metadata"].get("deletionTimestamp")
    assert FINALIZER in stuck["metadata"]["finalizers"]


def probe_configmaps(env: Rig) -> list[str]:
    return [cm["metadata"]["name"] for cm in env.cluster.emulator.list_objects("v1/configmaps", NAMESPACE)
            if cm["metadata"]["name"].startswith(CONFIGMAP_PREFIX)]


async def test_cleanup_removes_every_mark_and_releases_the_stuck_profile(env: Rig, tmp_path: Path) -> None:
    config = env.cluster.write_kubeconfig(tmp_path / "admin.kubeconfig")
    await leave_marks(env)
    before = marks(env)
    assert before["t4-a"][KEY] == "passed" and env.pods() and probe_configmaps(env)

    code, out, err = await cleanup(f"--kubeconfig={config}", "--dry-run")
    assert (code, err) == (0, ""), err
    lines = out.splitlines()
    assert (f"would change node t4-a: remove labels {KEY}; remove annotations {L.result_annotation_key(NAME)}, "
            f"{L.LEGACY_OWNED_ANNOTATION}") in lines
    assert f"would change pod {NAMESPACE}/torchproof-{NAME}-left: delete" in lines
    assert f"would change profile {NAME}: remove finalizer {FINALIZER} (being deleted)" in lines
    assert lines[-1].startswith("would clean up 5 node(s)") and lines[-1].endswith("(dry run: nothing changed)")
    assert marks(env) == before and env.pods() and env.profile() is not None
    assert before["cpu-1"] == {}  # no GPU: never selected, never marked

    code, out, err = await cleanup(f"--kubeconfig={config}")
    assert (code, err) == (0, ""), err
    assert out.splitlines()[-1].startswith("cleaned up 5 node(s), 1 pod(s), 1 configmap(s), 1 finalizer(s)")
    await eventually(lambda: not env.pods(), what="the validation pod deleted")
    assert marks(env) == {name: {} for name in before} | {
        "t4-a": {HAND_MADE: "yes", L.REVALIDATE_ANNOTATION: "2026-01-01"}}
    assert env.node("cpu-1")["metadata"]["labels"]["team"] == "web"
    assert probe_configmaps(env) == [] and env.profile() is None

    code, out, err = await cleanup(f"--kubeconfig={config}")
    assert (code, out, err) == (0, "nothing to clean up\n", "")


async def test_cleanup_refuses_while_an_operator_runs(env: Rig, tmp_path: Path) -> None:
    config = env.cluster.write_kubeconfig(tmp_path / "admin.kubeconfig")
    await leave_marks(env)
    await env.cluster.emulator.create_object("v1/pods", {
        "metadata": {"name": "torchproof-6d4f-x", "namespace": NAMESPACE, "labels": dict(OPERATOR_LABELS)},
        "spec": {"containers": [{"name": "operator", "image": "torchproof"}]}})
    before = marks(env)

    code, out, err = await cleanup(f"--kubeconfig={config}")
    assert (code, out) == (1, "")
    assert err == (f"torchproof cleanup: an operator is running in {NAMESPACE} (pod torchproof-6d4f-x): delete the "
                   f"profiles while it runs, or stop it first (kubectl -n {NAMESPACE} scale deployment torchproof "
                   "--replicas=0); --force skips this check\n")
    assert marks(env) == before and env.profile() is not None

    code, out, err = await cleanup(f"--kubeconfig={config}", "--force")
    assert (code, err) == (0, ""), err
    assert all(not any(k.startswith(L.RESULT_ANNOTATION_PREFIX) for k in m) for m in marks(env).values())


async def test_cleanup_without_a_cluster_says_so_in_one_line(tmp_path: Path) -> None:
    code, out, err = await cleanup(f"--kubeconfig={tmp_path / 'nowhere'}")
    assert (code, out) == (2, "")
    assert err == ("torchproof cleanup: no cluster to read: not in a cluster (KUBERNETES_SERVICE_HOST is not set) "
                   f"and no usable kubeconfig at {tmp_path / 'nowhere'} (Invalid kube-config file. No configuration "
                   "found.)\n")


def test_the_operator_labels_are_the_deployments() -> None:
    deployment: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "manager" / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["metadata"]["labels"] == dict(OPERATOR_LABELS)
    assert copy.deepcopy(deployment["spec"]["selector"]["matchLabels"]) == dict(OPERATOR_LABELS)
