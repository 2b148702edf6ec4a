"""Each simulated fault, end to end: the verdict and reason it must produce, and nothing else."""

from __future__ import annotations

import json
import time

import pytest
from torchproof import labels as L
from torchproof_sim.simulate import PROFILES

from tests.support.polling import eventually
from tests.support.rig import FAST, NAME, Rig, profile

T4 = {"product": "Tesla T4", "count": 1, "driver": "450.51.06"}
FAULTS = {
    "oomKilled": ("error", "OOMKilled"),
    "timeout": ("error", "DeadlineExceeded"),
    "crash": ("error", "ProbeCrashed"),
    "garbageResult": ("error", "UntrustedResult"),
    "ampNaN": ("failed", "AmpNotFinite"),
    "slowTensorCores": ("failed", "TensorCoresSlow"),
    "crashAfterResult": ("error", "ProbeExited"),
}
FLEET = [{"name": f"node-{fault.lower()}", "gpu": T4, "faults": [fault]} for fault in FAULTS] + [
    {"name": "node-ok", "gpu": T4},
    {"name": "node-pending", "gpu": T4, "faults": ["pending"]},
]


@pytest.fixture
def fleet_nodes() -> list[dict]:
    return FLEET


def reasons(env: Rig, node: str) -> list[str]:
    raw = env.node(node)["metadata"]["annotations"][L.result_annotation_key(NAME)]
    return json.loads(raw)["reasons"]


async def test_each_fault_gives_its_verdict_and_reason(fault_env: Rig) -> None:
    env = fault_env
    async with env.operator(**FAST):
        await env.apply(profile())
        await eventually(env.converged, what="the fault fleet to settle")
        assert env.label("node-ok") == "passed"
        for fault, (verdict, code) in FAULTS.items():
            node = f"node-{fault.lower()}"
            assert env.label(node) == verdict, node
            assert reasons(env, node)[0].startswith(code), (node, reasons(env, node))


async def test_pending_pods_keep_the_previous_label_and_time_out_without_a_verdict(fault_env: Rig) -> None:
    env = fault_env
    await env.cluster.emulator.patch_object(
        "v1/nodes", None, "node-pending", {"metadata": {
            "labels": {L.label_key(NAME): "passed"},
            "annotations": {L.LEGACY_OWNED_ANNOTATION: L.label_key(NAME)}}})
    async with env.operator(**FAST) as op:
        await env.apply(profile(validation={**profile()["spec"]["validation"], "pendingTimeoutSeconds": 30}))

        def waiting(reason: str) -> bool:
            return any(w["node"] == "node-pending" and w["reason"].startswith(reason)
                       for w in env.status().get("waitingNodes") or [])

        await eventually(lambda: waiting("Unschedulable"), what="the pending pod reported")
        op.reconciler.cfg.clock = lambda: time.time() + 31
        op.reconciler.poke()
        await eventually(lambda: waiting("PendingTimeout"), what="the pending timeout")
        assert env.label("node-pending") == "passed"
        await eventually(lambda: not [p for p in env.pods() if "node-pending" in p["metadata"]["name"]],
                         what="the pending pod deleted")
        assert env.condition("Ready")["reason"] == "Waiting"


async def test_image_pull_failure_opens_the_circuit_without_a_pod_storm(fault_env: Rig) -> None:
    env = fault_env
    async with env.operator(**FAST):
        await env.apply(profile(image="nvcr.io/nvidia/pytorch:99.99-py3", maxConcurrent=2))
        await eventually(lambda: env.condition("Degraded").get("reason") == "ImagePullFailed", what="Degraded")
        assert env.status()["imagePull"]["image"] == "nvcr.io/nvidia/pytorch:99.99-py3"
        await eventually(lambda: not env.pods(), what="the failing pods deleted")
        started = env.kubelet.stats.started
        assert started <= 2
        await env.cluster.emulator.patch_object(PROFILES, None, NAME, {"metadata": {"annotations": {"poke": "1"}}})
        await eventually(lambda: env.condition("Progressing").get("reason") == "Blocked", what="blocked")
        assert env.kubelet.stats.started == started
        assert all(env.label(n["name"]) is None for n in FLEET)
        events = [e for e in env.cluster.emulator.list_objects("v1/events") if e.get("reason") == "DegradedTrue"]
        assert len(events) == 1
        await env.cluster.emulator.patch_object(
            PROFILES, None, NAME, {"spec": {"image": "nvcr.io/nvidia/pytorch:20.06-py3", "maxConcurrent": 10}})
        await eventually(lambda: env.label("node-ok") == "passed", what="recovery after the image is fixed")
        await eventually(lambda: env.condition("Degraded").get("status") == "False", what="Degraded cleared")
