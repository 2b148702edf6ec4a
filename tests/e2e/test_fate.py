"""The operator watches its own pods' fate, and one node or one pass never stalls the fleet: a pass that
raises, a pod whose judging raises, creates the API server refuses, a pod whose kubelet died."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from torchproof import controller, verdict
from torchproof import labels as L
from torchproof.kube import KubeError
from torchproof.plan import validation_order
from torchproof.result import ProbeResult
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.fleet import parse_fleet
from torchproof_sim.store import ApiError

from tests.support.polling import eventually
from tests.support.rig import FAST, NAME, Rig, profile

T4 = {"product": "Tesla T4", "count": 1, "driver": "450.51.06"}
V100 = {"product": "Tesla V100-SXM2-16GB", "count": 1, "driver": "450.51.06"}
PAIR = [{"name": "node-a", "gpu": T4}, {"name": "node-b", "gpu": T4}]


def sample(op: Any, metric: str, **labels: str) -> float:
    return op.reconciler.cfg.metrics.registry.get_sample_value(metric, {"profile": NAME, **labels}) or 0.0


def events(env: Rig, reason: str) -> list[dict[str, Any]]:
    return [e for e in env.cluster.emulator.list_objects("v1/events") if e.get("reason") == reason]


def reasons(env: Rig, node: str) -> list[str]:
    raw = env.node(node)["metadata"]["annotations"][L.result_annotation_key(NAME)]
    return list(json.loads(raw)["reasons"])


@pytest.mark.parametrize("fleet_nodes", [PAIR])
async def test_a_failing_pass_shows_degraded_once_backs_off_and_recovers(
    fault_env: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = fault_env
    broken = True
    real = controller.compute_plan

    def compute_plan(inp: Any) -> Any:
        if broken:
            raise RuntimeError("planner bug")
        return real(inp)

    monkeypatch.setattr(controller, "compute_plan", compute_plan)
    async with env.operator(**FAST, error_backoff=0.05) as op:
        await env.apply(profile())
        await eventually(lambda: env.condition("Degraded").get("reason") == "PassFailed", what="Degraded=True")
        assert env.condition("Degraded")["status"] == "True"
        assert env.condition("Degraded")["message"] == "RuntimeError: planner bug"
        await eventually(lambda: sample(op, "torchproof_pass_failures_total") >= 4, what="passes retried")
        assert sample(op, "torchproof_pass_failing") == 1.0
        assert len(events(env, "DegradedTrue")) == 1, "one Event per transition, not per pass"
        assert env.label("node-a") is None
        broken = False
        await eventually(lambda: env.label("node-a") == env.label("node-b") == "passed", what="recovery")
        await eventually(lambda: env.condition("Degraded").get("status") == "False", what="Degraded=False")
        assert len(events(env, "DegradedTrue")) == 1
        assert sample(op, "torchproof_pass_failing") == 0.0


@pytest.mark.parametrize("fleet_nodes", [[*PAIR, {"name": "node-v100", "gpu": V100}]])
async def test_a_pod_whose_judging_raises_gives_only_its_node_error_logged_once(
    fault_env: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = fault_env
    real = verdict.judge

    def judge(*args: Any, **kwargs: Any) -> Any:
        result = next(a for a in args if isinstance(a, ProbeResult))
        if any((d.name or "").startswith("Tesla V100") for d in result.gpu.devices):
            raise ZeroDivisionError("float division by zero")
        return real(*args, **kwargs)

    monkeypatch.setattr(verdict, "judge", judge)
    caplog.set_level(logging.WARNING, logger="torchproof")
    async with env.operator(**FAST) as op:
        await env.apply(profile())
        await eventually(env.converged, what="the fleet to settle")
        assert (env.label("node-a"), env.label("node-b"), env.label("node-v100")) == ("passed", "passed", "error")
        assert reasons(env, "node-v100") == ["EvaluationFailed: ZeroDivisionError: float division by zero"]
        await eventually(lambda: not env.pods(), what="every finished pod deleted")
        op.reconciler.poke()
        await eventually(lambda: env.condition("Ready").get("status") == "True", what="Ready")
        assert sample(op, "torchproof_evaluation_failures_total") == 1
        logged = [r for r in caplog.records if "judging pod" in r.getMessage()]
        assert len(logged) == 1 and "node-v100" in logged[0].getMessage()


def refuse_pod_creates(cluster: EmbeddedCluster, message: str) -> tuple[list[tuple[float, str]], Callable[[], None]]:
    """Pod creates answer 403, as Pod Security admission does, until the returned function is called;
    each refused attempt is recorded with its time and pod name."""
    store = cluster.emulator.store
    pods = store.resolve("v1/pods")
    attempts: list[tuple[float, str]] = []

    def admit(obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        if old is None:  # a create; status writes of existing pods pass
            attempts.append((time.monotonic(), obj["metadata"]["name"]))
            raise ApiError(403, "Forbidden", message)
        return obj

    store.register(dataclasses.replace(pods, admit=admit))
    return attempts, lambda: store.register(pods)


FORBIDDEN = 'pods "x" is forbidden: violates PodSecurity "restricted:latest": privileged'
BASE, CAP = 0.1, 1.0


@pytest.mark.parametrize("fleet_nodes", [PAIR])
async def test_refused_creates_wait_with_the_reason_back_off_exponentially_then_validate(fault_env: Rig) -> None:
    env = fault_env
    attempts, allow = refuse_pod_creates(env.cluster, FORBIDDEN)
    async with env.operator(**FAST, create_backoff_base=BASE, create_backoff_max=CAP) as op:
        await env.apply(profile(maxConcurrent=1))
        await eventually(lambda: len(attempts) >= 7, what="seven refused creates")
        times = [t for t, _ in attempts[:7]]
        assert len({name for _, name in attempts}) == 1, "the refused node keeps its slot; no other is tried"
        for i, gap in enumerate(b - a for a, b in itertools.pairwise(times)):
            assert gap >= min(CAP, BASE * 2**i) * 0.8 - 0.05, (i, times)
        waiting = {w["node"]: w["reason"] for w in env.status().get("waitingNodes") or []}
        assert list(waiting.values()) == [f"CreateRefused: 403 {FORBIDDEN}"], waiting
        assert env.status()["counts"]["running"] == 0
        assert env.condition("Degraded")["status"] == "True"
        assert env.condition("Degraded")["reason"] == "PodCreateRefused"
        assert env.condition("Progressing")["message"].startswith("0 pods running"), "not \"1 pods running\""
        assert len(events(env, "DegradedTrue")) == 1
        # The server refused the seventh before the operator counted it: wait for the count, not the refusal.
        await eventually(lambda: sample(op, "torchproof_pod_create_refusals_total", code="403") >= 7,
                         what="seven refusals counted")
        allow()
        await eventually(lambda: env.label("node-a") == env.label("node-b") == "passed", what="validated")
        await eventually(lambda: env.condition("Degraded").get("status") == "False", what="Degraded=False")
        assert not env.status().get("waitingNodes")


REFUSALS = {403: True, 404: True, 422: True, 409: False, 429: False, 500: False, 503: False, 0: False}


@pytest.mark.parametrize("status", REFUSALS)
def test_which_create_failures_are_refusals(status: int) -> None:
    assert controller.refuses(KubeError("create pod", status, "x")) is REFUSALS[status]


FIRST, LOST = sorted(["node-a", "node-b"], key=lambda n: validation_order(NAME, n))
LOST_FLEET = [{"name": FIRST, "gpu": T4}, {"name": LOST, "gpu": T4, "faults": ["kubeletLost"]}]
GRACE = 1.0


@pytest.mark.parametrize("fleet_nodes", [LOST_FLEET])
async def test_a_pod_whose_kubelet_died_is_deleted_its_node_error_and_its_slot_reused(fault_env: Rig) -> None:
    env = fault_env
    async with env.operator(**FAST, lost_grace=GRACE) as op:
        await env.apply(profile(maxConcurrent=1))

        def lost_pods() -> list[dict[str, Any]]:
            return [p for p in env.pods() if p["metadata"]["annotations"][L.NODE_ANNOTATION] == LOST]

        await eventually(lambda: env.label(FIRST) == "passed"
                         and any((p.get("status") or {}).get("phase") == "Running" for p in lost_pods()),
                         what="the first node passed and the lost node's pod running")
        await eventually(lambda: env.status()["counts"]["running"] == 1, what="the lost pod holding the only slot")
        runtime = profile()["spec"]["validation"]["runtimeTimeoutSeconds"]
        op.reconciler.cfg.clock = lambda: time.time() + runtime + GRACE + 5
        op.reconciler.poke()
        # Deleted gracefully, the pod stays Terminating: no kubelet is left to stop it, as on a real cluster.
        await eventually(lambda: env.label(LOST) == "error" and all(
            p["metadata"].get("deletionTimestamp") for p in lost_pods()), what="the lost pod deleted")
        assert reasons(env, LOST)[0].startswith("ProbeLost: ")
        grace = lost_pods()[0]["metadata"]["deletionGracePeriodSeconds"]
        op.reconciler.cfg.clock = lambda: time.time() + grace + GRACE + 1  # past its deletion time and the grace
        late = parse_fleet({"nodes": [{"name": "node-late", "gpu": T4}]}).nodes[0]
        await env.kubelet.add_node(late)
        await eventually(lambda: env.label("node-late") == "passed", what="the freed slot used by another node")
        assert len(lost_pods()) == 1, "no new pod for the lost node: its error record is current"
        assert env.kubelet.stats.max_live[(NAME, LOST)] == 1
