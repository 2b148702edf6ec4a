"""End to end with the real operator: gating taints (`gate: true`) and the rollout circuit breaker."""

from __future__ import annotations

from typing import Any

from torchproof import labels as L
from torchproof.breaker import RESUME_ANNOTATION
from torchproof_sim.simulate import PROFILES

from tests.support.polling import eventually
from tests.support.rig import FAST, KEY, NAME, Rig, profile, rig_fixture

T4 = {"product": "Tesla T4", "count": 1, "driver": "450.51.06"}
GATE = {"key": KEY, "value": "unvalidated", "effect": "NoSchedule"}
FOREIGN = f"{KEY}=unvalidated:NoSchedule"  # the same taint, set by someone else
gated_env = rig_fixture([{"name": "t4-a", "gpu": T4}, {"name": "t4-b", "gpu": T4, "taints": [FOREIGN]}],
                             probe_seconds=1.0)
failing_env = rig_fixture([{"name": f"t4-{i}", "gpu": T4, "faults": ["ampNaN"]} for i in range(4)])


def taints(env: Rig, node: str) -> list[dict[str, Any]]:
    return list(env.node(node)["spec"].get("taints") or [])


def claimed(env: Rig, node: str) -> bool:
    return L.gate_annotation_key(NAME) in (env.node(node)["metadata"].get("annotations") or {})


async def test_a_gated_node_is_tainted_until_it_passes_and_only_torchproofs_taint_goes(gated_env: Rig) -> None:
    env = gated_env
    async with env.operator(**FAST):
        await env.apply(profile(gate=True))
        await eventually(lambda: claimed(env, "t4-a") and GATE in taints(env, "t4-a"), "t4-a gated", 10)
        pods = {p["metadata"]["annotations"][L.NODE_ANNOTATION]: p for p in env.pods()}
        assert {"key": KEY, "operator": "Exists", "effect": "NoSchedule"} in pods["t4-a"]["spec"]["tolerations"]
        assert not claimed(env, "t4-b"), "a taint torchproof did not add is not claimed"
        await eventually(env.converged, "the profile to converge", 20)
        await eventually(lambda: env.label("t4-a") == env.label("t4-b") == "passed" and not taints(env, "t4-a"),
                         "t4-a released", 10)
        assert not claimed(env, "t4-a")
        assert taints(env, "t4-b") == [GATE], "someone else's taint stays"


async def test_a_failing_canary_pauses_the_wave_until_resumed(failing_env: Rig) -> None:
    env = failing_env
    async with env.operator(**FAST) as running:
        await env.apply(profile(maxConcurrent=1))
        await eventually(lambda: env.condition("RolloutPaused").get("status") == "True", "the wave to pause", 20)
        assert env.condition("RolloutPaused")["reason"] == "FailureRatio"
        failed = [n for n in (f"t4-{i}" for i in range(4)) if env.label(n) == "failed"]
        assert len(failed) == 1
        await eventually(lambda: not env.pods(), "the canary's pod deleted", 10)
        reasons = {e.get("reason") for e in env.cluster.emulator.list_objects("v1/events")}
        assert "RolloutPausedTrue" in reasons
        metrics = running.reconciler.cfg.metrics
        assert metrics.registry.get_sample_value("torchproof_rollout_paused", {"profile": NAME}) == 1.0
        assert env.status()["rollout"]["paused"] is True
        assert not env.pods() and env.status()["counts"]["pending"] == 3, "the rest of the wave waits"
        await env.cluster.emulator.patch_object(PROFILES, None, NAME, {"metadata": {"annotations": {
            RESUME_ANNOTATION: "1"}}})
        await eventually(lambda: sum(1 for i in range(4) if env.label(f"t4-{i}") == "failed") == 2,
                         "the resumed wave to judge the next node", 20)
        await eventually(lambda: env.condition("RolloutPaused").get("status") == "True"
                         and env.status()["rollout"].get("resumed") == "1", "the next failure to pause it again", 20)


gated_failing_env = rig_fixture([{"name": "t4-a", "gpu": T4, "faults": ["ampNaN"]}])


async def test_a_failed_node_stays_gated_and_deleting_the_profile_removes_the_taint(gated_failing_env: Rig) -> None:
    env = gated_failing_env
    async with env.operator(**FAST):
        await env.apply(profile(gate=True))
        await eventually(lambda: env.label("t4-a") == "failed", "t4-a judged", 20)
        assert taints(env, "t4-a") == [GATE] and claimed(env, "t4-a")
        await env.cluster.emulator.delete_object(PROFILES, None, NAME)
        await eventually(lambda: env.profile() is None, "the profile's cleanup", 20)
        assert taints(env, "t4-a") == [] and not claimed(env, "t4-a") and env.label("t4-a") is None
