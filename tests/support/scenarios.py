"""Scenarios more than one test runs: everything the operator does, as its ServiceAccount, end to end."""

from __future__ import annotations

import asyncio

from torchproof import labels as L
from torchproof.election import Elector, Timings
from torchproof.kube import KubeApi, load_configuration
from torchproof.podspec import CONFIGMAP_LABELS, CONFIGMAP_PREFIX
from torchproof_sim.emulator import ApiFaults
from torchproof_sim.simulate import NAMESPACE, PROFILES, install_operator_identity

from tests.support.polling import eventually
from tests.support.rig import FAST, NAME, Rig, profile


async def lead_once(env: Rig) -> None:
    """What `torchproof run --leader-elect` does with its Lease: create it, renew it, release it on the way out."""
    _, token = await install_operator_identity(env.cluster)
    api = KubeApi(load_configuration(server=env.cluster.url, token=token))
    elector = Elector(api, NAMESPACE, "torchproof-operator", "torchproof-0", Timings(2, 1.5, 0.25))
    try:
        assert await elector.acquire(asyncio.Event())
        assert await elector.try_acquire_or_renew(1.0)
        await elector.release()
    finally:
        await api.close()


async def exercise_everything(env: Rig) -> str:
    """Lead (the Lease), clean up an earlier probe ConfigMap, converge a mixed fleet (pods, the probe ConfigMap,
    labels, status, events) with faults injected on patches, revalidate a node, delete a profile
    mid-validation (cleanup) and another while the operator is down (the sweep at start). Returns the
    operator's user."""
    await lead_once(env)
    old_probe = {"metadata": {"name": f"{CONFIGMAP_PREFIX}0000000000", "namespace": NAMESPACE,
                              "labels": dict(CONFIGMAP_LABELS)}, "data": {"probe.py": "# an earlier probe"}}
    await env.cluster.emulator.create_object("v1/configmaps", old_probe)  # left by an earlier operator version
    async with env.operator(**FAST) as op:
        old_name = old_probe["metadata"]["name"]
        await eventually(lambda: env.cluster.emulator.get_object("v1/configmaps", NAMESPACE, old_name) is None,
                         what="the earlier probe ConfigMap cleaned up")
        env.cluster.emulator.faults = ApiFaults(seed=7, rate_409=0.5, verbs=frozenset({"patch"}))
        await env.apply(profile())
        await eventually(env.converged, timeout=30, what="convergence through faulty patches")
        env.cluster.emulator.faults = None
        started = env.kubelet.stats.started
        await env.cluster.emulator.patch_object(
            "v1/nodes", None, "t4-a", {"metadata": {"annotations": {L.REVALIDATE_ANNOTATION: "now"}}})
        await eventually(lambda: env.kubelet.stats.started == started + 1, what="revalidation of t4-a")
        await env.apply(profile(maxConcurrent=1, gate=True) | {"metadata": {"name": "second"}})  # taints too
        await eventually(lambda: env.label("t4-a", "torchproof.dev/second"), what="a label of the second profile")
        added = op.reconciler.cfg.metrics.registry.get_sample_value(
            "torchproof_gating_taints_total", {"profile": "second", "action": "add"})
        assert added, "the second profile gated nodes"
        await env.cluster.emulator.delete_object(PROFILES, None, "second")
        await eventually(lambda: env.profile("second") is None and env.label("t4-a", "torchproof.dev/second") is None,
                         what="the second profile cleaned up")
        gated = [n["metadata"]["name"] for n in env.cluster.emulator.list_objects("v1/nodes")
                 if any(t.get("key") == "torchproof.dev/second" for t in n["spec"].get("taints") or [])]
        assert gated == [], "the gating taints went with the profile"
        await env.apply(profile(maxConcurrent=1) | {"metadata": {"name": "third"}})
        await eventually(lambda: env.label("t4-a", "torchproof.dev/third"), what="a label of the third profile")
    await env.cluster.emulator.patch_object(PROFILES, None, "third", {"metadata": {"finalizers": None}})
    await env.cluster.emulator.delete_object(PROFILES, None, "third")
    async with env.operator(**FAST):
        await eventually(lambda: env.label("t4-a", "torchproof.dev/third") is None, what="the sweep at start")
        await env.cluster.emulator.delete_object(PROFILES, None, NAME)
        await eventually(lambda: env.profile() is None, what="the first profile deleted")
    return op.user
