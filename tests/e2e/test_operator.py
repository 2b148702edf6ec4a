"""End to end: profile apply → pods on matching nodes → labels → status, and every change after it."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
from torchproof import labels as L
from torchproof_sim.fleet import parse_fleet
from torchproof_sim.simulate import PROFILES

from tests.support.polling import eventually
from tests.support.rig import FAST, NAME, Rig, profile

EXPECTED = {
    "t4-a": "passed",          # datacenter board on the 418 forward-compatible branch
    "v100-a": "passed",
    "k80-a": "incompatible",   # compute capability 3.7 < 6.0, decided from GFD labels
    "rtx-a": "incompatible",   # 440 driver on a consumer board
    "hidden-v100": "passed",   # no GFD labels: the probe decided
}


def record_of(env: Rig, node: str) -> dict[str, Any]:
    return json.loads(env.node(node)["metadata"]["annotations"][L.result_annotation_key(NAME)])


async def converge(env: Rig, timeout: float = 20.0) -> None:
    await eventually(env.converged, "the profile to converge", timeout)


async def test_profile_apply_labels_matching_nodes_and_reports_status(env: Rig) -> None:
    async with env.operator(**FAST):
        await env.apply(profile())
        await converge(env)
        assert {n: env.label(n) for n in EXPECTED} == EXPECTED
        assert env.label("cpu-1") is None
        pinned = {node for (_, node) in env.kubelet.stats.max_live}
        assert pinned == {"t4-a", "v100-a", "hidden-v100"}
        await eventually(lambda: not env.pods(), what="validation pods deleted")
        status = env.status()
        want = {"passed": 3, "incompatible": 2, "failed": 0, "error": 0, "pending": 0, "total": 5}
        assert {k: status["counts"][k] for k in want} == want
        assert env.condition("Ready")["status"] == "True"
        assert env.condition("Ready")["observedGeneration"] == 1
        record = json.loads(env.node("rtx-a")["metadata"]["annotations"][L.result_annotation_key(NAME)])
        assert record["reasons"][0].startswith("DriverTooOld")
        t4 = json.loads(env.node("t4-a")["metadata"]["annotations"][L.result_annotation_key(NAME)])
        assert t4["verdict"] == "passed" and any(i.startswith("turing-") for i in t4["knownIssues"])
        assert L.owns(NAME, env.node("t4-a")["metadata"]["annotations"])
        assert L.LEGACY_OWNED_ANNOTATION not in env.node("t4-a")["metadata"]["annotations"]
        assert not L.owns(NAME, env.node("cpu-1")["metadata"].get("annotations") or {})
        reasons = {e.get("reason") for e in env.cluster.emulator.list_objects("v1/events")}
        assert "NodesPassed" in reasons and "NodeValidated" in reasons


async def test_a_node_added_later_is_validated(env: Rig) -> None:
    async with env.operator(**FAST):
        await env.apply(profile())
        await converge(env)
        new = parse_fleet({"nodes": [{"name": "t4-new", "gpu": {"product": "Tesla T4", "count": 1,
                                                                "driver": "450.51.06"}}]}).nodes[0]
        await env.kubelet.add_node(new)
        await eventually(lambda: env.label("t4-new") == "passed", what="the new node's label")
        await eventually(lambda: env.status()["counts"]["total"] == 6 and env.converged(), what="status with 6 nodes")


async def test_a_driver_change_revalidates_the_node(env: Rig) -> None:
    async with env.operator(**FAST):
        await env.apply(profile())
        await converge(env)
        started = env.kubelet.stats.started
        await env.kubelet.set_driver("v100-a", "460.32.03")
        await eventually(lambda: env.kubelet.stats.started == started + 1, what="a new validation pod")
        await eventually(lambda: record_of(env, "v100-a")["numbers"]["driver"] == "460.32.03", what="the new record")
        assert env.label("v100-a") == "passed"
        await env.kubelet.set_driver("t4-a", "410.48")
        await eventually(lambda: env.label("t4-a") == "incompatible", what="T4 on a 410 driver")


async def test_a_profile_edit_revalidates_every_node(env: Rig) -> None:
    async with env.operator(**FAST):
        await env.apply(profile())
        await converge(env)
        tc = {**env.profile()["spec"]["checks"]["tensorCores"], "minSpeedup": 50}
        await env.cluster.emulator.patch_object(PROFILES, None, NAME, {"spec": {"checks": {"tensorCores": tc}}})
        await eventually(lambda: env.label("v100-a") == "failed", what="the stricter profile to fail the V100")
        await converge(env)
        assert env.condition("Ready")["observedGeneration"] == 2
        assert env.status()["failingNodes"][0]["reasons"][0].startswith("TensorCoresSlow")
        assert env.label("k80-a") == "incompatible"


async def test_revalidate_annotation_on_a_node(env: Rig) -> None:
    async with env.operator(**FAST):
        await env.apply(profile())
        await converge(env)
        started = env.kubelet.stats.started
        await env.cluster.emulator.patch_object(
            "v1/nodes", None, "t4-a", {"metadata": {"annotations": {L.REVALIDATE_ANNOTATION: "now"}}})
        await eventually(lambda: env.kubelet.stats.started == started + 1, what="revalidation of t4-a")
        await converge(env)
        assert env.kubelet.stats.started == started + 1


async def test_profile_deletion_removes_exactly_its_labels_records_and_pods(env: Rig) -> None:
    await env.cluster.emulator.patch_object(
        "v1/nodes", None, "t4-a", {"metadata": {"labels": {"torchproof.dev/other": "keep", "team": "ml"}}})
    async with env.operator(**FAST):
        await env.apply(profile())
        await converge(env)
        await env.apply(profile(maxConcurrent=1) | {"metadata": {"name": "second"}})
        await eventually(lambda: env.pods(), what="a running pod of the second profile")
        await env.cluster.emulator.delete_object(PROFILES, None, "second")
        await eventually(lambda: env.profile("second") is None, what="the finalizer to be released")
        # Deleted right after its creation, the profile may go before kopf added its finalizer: then the sweep,
        # not the deletion handler, removes its marks, soon after.
        await eventually(lambda: not env.pods() and not any(
            "torchproof.dev/second" in env.node(n)["metadata"].get("labels", {}) for n in EXPECTED),
            what="the second profile's pods and labels gone")
        for node in ("t4-a", "v100-a", "k80-a", "rtx-a", "hidden-v100"):
            meta = env.node(node)["metadata"]
            assert "torchproof.dev/second" not in meta.get("labels", {})
            assert L.result_annotation_key("second") not in meta.get("annotations", {})
            assert L.owns(NAME, meta["annotations"])
        assert env.label("t4-a", "torchproof.dev/other") == "keep"
        assert env.label("t4-a", "team") == "ml"
        assert env.label("t4-a") == "passed"
        await env.cluster.emulator.delete_object(PROFILES, None, NAME)
        await eventually(lambda: env.profile() is None, what="the first profile gone")
        for node in EXPECTED:
            meta = env.node(node)["metadata"]
            ours = [k for k in meta.get("labels", {}) if k.startswith("torchproof.dev/") and not k.endswith("/other")]
            assert ours == []
            assert L.LEGACY_OWNED_ANNOTATION not in meta.get("annotations", {})


async def test_a_profile_deleted_and_created_again_under_its_name_is_validated_again(env: Rig) -> None:
    async with env.operator(**FAST):
        await env.apply(profile())
        await converge(env)
        started = env.kubelet.stats.started
        await env.cluster.emulator.delete_object(PROFILES, None, NAME)
        await eventually(lambda: env.profile() is None and all(env.label(n) is None for n in EXPECTED),
                         what="the profile and its labels gone")
        await env.apply(profile())
        await converge(env)
        assert {n: env.label(n) for n in EXPECTED} == EXPECTED
        assert env.kubelet.stats.started > started


async def test_a_profile_deleted_while_the_operator_is_down_is_swept_at_start(env: Rig) -> None:
    async with env.operator(**FAST):
        await env.apply(profile())
        await converge(env)
        await env.apply(profile(maxConcurrent=1) | {"metadata": {"name": "second"}})
        await eventually(lambda: any(env.label(n, "torchproof.dev/second") for n in EXPECTED),
                         what="a label of the second profile")
    # With the operator down, an admin removes the finalizer by hand and deletes the profile.
    await env.cluster.emulator.patch_object(PROFILES, None, "second", {"metadata": {"finalizers": None}})
    await env.cluster.emulator.delete_object(PROFILES, None, "second")
    assert env.profile("second") is None
    async with env.operator(**FAST):
        def swept() -> bool:
            return all("torchproof.dev/second" not in env.node(n)["metadata"].get("labels", {})
                       and L.result_annotation_key("second") not in env.node(n)["metadata"].get("annotations", {})
                       for n in EXPECTED) and not any("second" in p["metadata"]["name"] for p in env.pods())
        await eventually(swept, what="the deleted profile's labels, records and pods swept")
        assert {n: env.label(n) for n in EXPECTED} == EXPECTED
        assert all(L.owns(NAME, env.node(n)["metadata"]["annotations"]) for n in EXPECTED)


async def test_operator_restart_mid_validation_creates_no_duplicate_pods(env: Rig) -> None:
    env.kubelet.probe_seconds = 0.6
    async with env.operator(**FAST):
        await env.apply(profile(maxConcurrent=2))
        await eventually(lambda: len(env.pods()) == 2, what="two running validation pods")
    for _ in range(2):
        async with env.operator(**FAST):
            await eventually(lambda: env.kubelet.stats.started >= 3, timeout=10, what="progress after restart")
    async with env.operator(**FAST):
        await converge(env)
    assert {n: env.label(n) for n in EXPECTED} == EXPECTED
    assert max(env.kubelet.stats.max_live.values()) == 1
    assert env.kubelet.stats.started == 3


async def test_invalid_spec_sets_a_condition_and_labels_nothing(env: Rig) -> None:
    validation = {**profile()["spec"]["validation"],
                  "resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "1"}}}
    async with env.operator(**FAST):
        await env.apply(profile(validation=validation))
        await eventually(lambda: env.condition("Ready").get("reason") == "InvalidSpec", what="InvalidSpec")
        assert "spec.validation.resources" in env.condition("Ready")["message"]
        assert env.condition("Degraded")["status"] == "True"
        assert env.pods() == [] and env.kubelet.stats.started == 0
        assert all(env.label(n) is None for n in EXPECTED)


@pytest.mark.parametrize("field,value", [
    ("imagePullPolicy", "Sometimes"),
    ("maxConcurrent", -1),
    ("release", "twenty"),
])
async def test_schema_invalid_profiles_are_refused(env: Rig, field: str, value: Any) -> None:
    from torchproof_sim.store import ApiError

    with pytest.raises(ApiError) as refused:
        await env.apply(profile(**{field: value}))
    assert refused.value.code == 422
    assert f"spec.{field}" in refused.value.message
    assert env.profile() is None


async def test_status_writes_keep_their_interval_and_the_configmap_is_created_once(env: Rig) -> None:
    env.kubelet.probe_seconds = 0.4  # three probed nodes one at a time: a run long enough for several writes
    store = env.cluster.emulator.store
    writes: list[float] = []

    def on_profile(event: dict[str, Any], before: dict[str, Any] | None) -> None:
        if event["type"] == "MODIFIED" and event["object"].get("status") != (before or {}).get("status"):
            writes.append(time.monotonic())

    stop = store.subscribe(store.resolve(PROFILES), on_profile)
    try:
        async with env.operator(batch_window=0.02, status_interval=0.5):
            await env.apply(profile(maxConcurrent=1))
            await converge(env)
    finally:
        stop()
    assert len(writes) >= 3
    assert min(b - a for a, b in itertools.pairwise(writes)) >= 0.5
    assert env.kubelet.stats.started >= 3, "several passes created pods"
    assert env.cluster.emulator.request_counts()["byResource"].get("create configmaps") == 1
