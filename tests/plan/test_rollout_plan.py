"""Gating taints, the rollout circuit breaker and performance history, through `compute_plan`."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
from torchproof import gating
from torchproof import labels as L
from torchproof.breaker import RESUME_ANNOTATION, Rollout
from torchproof.cleanup import describe, plan_cleanup
from torchproof.contract import NodeRecord, iso
from torchproof.plan import Plan, PlanInput, compute_plan
from torchproof.profile import parse_profile
from torchproof.recordsums import RecordSums
from torchproof.sweep import plan_removal
from torchproof.views import node_view

from tests.support.builders import make_node_body, make_result, profile_body, result_for
from tests.support.planworld import KEY, World

GATE = {"key": KEY, "value": "unvalidated", "effect": "NoSchedule"}


class Gated(World):
    """A World whose passes also apply the gating writes, as the controller does."""

    def step(self) -> Plan:
        plan = super().step()
        for g in plan.gates:
            node = self.nodes[g.node]
            annotations = node["metadata"].setdefault("annotations", {})
            for key, value in g.claim["metadata"]["annotations"].items():
                if value is None:
                    annotations.pop(key, None)
                else:
                    annotations[key] = value
            if g.ops:
                self.nodes[g.node] = jsonpatch.apply_patch(node, [dict(op) for op in g.ops])
        return plan

    def taints(self, node: str) -> list[dict[str, Any]]:
        return list(self.nodes[node].get("spec", {}).get("taints") or [])

    def record(self, node: str) -> NodeRecord:
        record = NodeRecord.from_annotation(self.nodes[node]["metadata"]["annotations"][L.result_annotation_key(
            "pytorch-20.06")])
        assert record is not None
        return record


def failing(node: dict[str, Any]) -> str:
    return make_result(lambda d: (d["gpu"].update(driver=node["metadata"]["labels"][
        "nvidia.com/cuda.driver-version.full"]), d["checks"]["amp"]["native"].update(finite=False)))


def with_tflops(node: dict[str, Any], fp16: float) -> str:
    import json
    doc = json.loads(result_for(node))
    doc["checks"]["tensorCores"].update(fp16=fp16, fp16Speedup=round(fp16 / doc["checks"]["tensorCores"]["fp32"], 2))
    return json.dumps(doc)


def test_gate_taints_a_new_node_until_it_passes_and_the_pod_tolerates_it() -> None:
    w = Gated([make_node_body("t4-a")], gate=True)
    plan = w.step()
    assert w.taints("t4-a") == [GATE]
    assert L.gate_annotation_key("pytorch-20.06") in w.nodes["t4-a"]["metadata"]["annotations"]
    assert gating.toleration("pytorch-20.06") in plan.create[0]["spec"]["tolerations"]
    w.finish_all()
    w.step()
    assert w.label("t4-a") == "passed"
    assert w.taints("t4-a") == []
    assert L.gate_annotation_key("pytorch-20.06") not in w.nodes["t4-a"]["metadata"]["annotations"]


def test_a_failed_node_keeps_its_gate_and_an_incompatible_one_gets_none() -> None:
    w = Gated([make_node_body("t4-a"), make_node_body("k80-a", "Tesla K80")], gate=True)
    w.step()
    assert w.taints("k80-a") == [] and w.label("k80-a") == "incompatible"
    w.finish_all(failing(w.nodes["t4-a"]))
    w.step()
    assert w.label("t4-a") == "failed" and w.taints("t4-a") == [GATE]


def test_a_taint_with_the_key_that_torchproof_did_not_add_is_left_alone() -> None:
    node = make_node_body("t4-a")
    node["spec"]["taints"] = [dict(GATE), {"key": "other", "effect": "NoSchedule"}]
    w = Gated([node], gate=True)
    w.step()
    w.finish_all()
    w.step()
    assert w.label("t4-a") == "passed"
    assert w.taints("t4-a") == [GATE, {"key": "other", "effect": "NoSchedule"}]
    assert not w.step().gates


def test_the_taint_patch_tests_the_list_it_read_and_keeps_other_taints() -> None:
    node = make_node_body("t4-a")
    node["spec"]["taints"] = [{"key": "other", "effect": "NoSchedule"}]
    w = Gated([node], gate=True)
    plan = w.plan()
    ops = [dict(op) for op in plan.gates[0].ops]
    assert ops[0] == {"op": "test", "path": "/spec/taints", "value": [{"key": "other", "effect": "NoSchedule"}]}
    assert ops[1]["value"] == [{"key": "other", "effect": "NoSchedule"}, GATE]


def test_gate_off_releases_the_taints_torchproof_added() -> None:
    w = Gated([make_node_body("t4-a")], gate=True)
    w.step()
    assert w.taints("t4-a") == [GATE]
    w.body["spec"]["gate"] = False
    w.step()
    assert w.taints("t4-a") == []


def test_the_breaker_limits_gating_taints_within_the_window() -> None:
    nodes = [make_node_body(f"t4-{i}") for i in range(10)]
    w = Gated(nodes, gate=True, rollout={"maxTaintPercent": 20, "window": "1h"})
    w.step()
    assert sum(1 for n in w.nodes if w.taints(n)) == 2
    w.step()
    assert sum(1 for n in w.nodes if w.taints(n)) == 2, "no more within the window"
    w.now += 3601
    w.step()
    assert sum(1 for n in w.nodes if w.taints(n)) == 4


def test_the_canary_pauses_the_wave_when_too_many_of_it_fail_and_a_resume_goes_on() -> None:
    nodes = [make_node_body(f"t4-{i}") for i in range(6)]
    w = Gated(nodes, maxConcurrent=1)
    w.step()
    for pod in w.pods.values():
        pod["status"] = {"phase": "Succeeded", "containerStatuses": [{"name": "probe", "state": {
            "terminated": {"exitCode": 0, "reason": "Completed", "message": failing(w.nodes[w.node_of(pod)])}}}]}
    plan = w.step()
    assert not plan.create, "the wave waits"
    paused = next(c for c in plan.status["conditions"] if c["type"] == "RolloutPaused")
    assert (paused["status"], paused["reason"]) == ("True", "FailureRatio")
    assert plan.status["rollout"]["paused"] is True
    assert {n["reason"] for n in plan.status["waitingNodes"]} == {"RolloutPaused: FailureRatio"}
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Waiting", "a paused wave waits on a resume, nothing else"
    assert any(e.reason == "RolloutPausedTrue" and e.type == "Warning" for e in plan.events)
    assert not w.step().create, "the pause holds"
    w.body["metadata"].setdefault("annotations", {})[RESUME_ANNOTATION] = "1"
    plan = compute_plan(PlanInput(
        profile=w.profile, nodes=[node_view(n) for n in w.nodes.values()], pods=[], now=w.now,
        namespace="torchproof", configmap="cm", status=w.status, profile_resume="1",
    ))
    assert len(plan.create) == 1
    assert plan.status["rollout"]["resumed"] == "1"
    assert any(e.reason == "RolloutPausedFalse" for e in plan.events)


def test_a_healthy_wave_is_not_paused() -> None:
    w = Gated([make_node_body(f"t4-{i}") for i in range(4)])
    for _ in range(3):
        w.step()
        w.finish_all()
    w.step()
    assert all(w.label(n) == "passed" for n in w.nodes)
    assert w.status["rollout"]["paused"] is False


def test_the_breaker_holds_passed_to_failed_flips_beyond_its_share() -> None:
    nodes = [make_node_body(f"t4-{i}") for i in range(5)]
    w = Gated(nodes, rollout={"maxFlipPercent": 20, "maxFailurePercent": 100})
    w.step()
    w.finish_all()
    w.step()
    assert all(w.label(n) == "passed" for n in w.nodes)
    w.revalidate = "again"
    w.step()
    for pod in w.pods.values():
        pod["status"] = {"phase": "Succeeded", "containerStatuses": [{"name": "probe", "state": {
            "terminated": {"exitCode": 0, "reason": "Completed", "message": failing(w.nodes[w.node_of(pod)])}}}]}
    plan = w.step()
    labels = [w.label(n) for n in sorted(w.nodes)]
    assert labels.count("failed") == 1 and labels.count("passed") == 4, labels
    assert plan.status["rollout"]["reason"] == "TooManyFlips"
    assert len(w.pods) == 4, "the held pods stay, with their results"
    waiting = {n["node"]: n["reason"] for n in plan.status["waitingNodes"]}
    assert sum(1 for r in waiting.values() if r.startswith("RolloutPaused")) == 4


def test_history_is_bounded_and_a_regression_is_a_finding_with_numbers() -> None:
    w = Gated([make_node_body("t4-a")], revalidateAfter="60s")
    for fp16 in (52.1, 51.9, 52.3, 52.0, 52.2, 51.8):
        w.step()
        for pod in w.pods.values():
            pod["status"] = {"phase": "Succeeded", "containerStatuses": [{"name": "probe", "state": {
                "terminated": {"exitCode": 0, "reason": "Completed",
                               "message": with_tflops(w.nodes["t4-a"], fp16)}}}]}
        w.step()
        w.now += 61
    record = w.record("t4-a")
    assert len(record.history) == 4, "five validations in all: the record's own and four before it"
    assert record.history[-1] == {"at": iso(w.now - 122), "verdict": "passed", "fp16Tflops": 52.2}  # the one before
    assert record.numbers["tflops"]["fp16"] == 51.8
    assert not any(f.startswith("PerformanceRegression") for f in record.findings)
    w.step()
    for pod in w.pods.values():
        pod["status"] = {"phase": "Succeeded", "containerStatuses": [{"name": "probe", "state": {
            "terminated": {"exitCode": 0, "reason": "Completed", "message": with_tflops(w.nodes["t4-a"], 30.0)}}}]}
    plan = w.step()
    record = w.record("t4-a")
    assert record.verdict == "passed"
    finding = next(f for f in record.findings if f.startswith("PerformanceRegression"))
    assert "30 TFLOP/s" in finding and "42% below the node's previous 51.8" in finding
    row = plan.status["performance"][0]
    assert (row["gpu"], row["nodes"], row["median"], row["regressions"]) == ("Tesla T4", 1, 30.0, 1)


def test_status_shows_median_and_spread_per_gpu_product() -> None:
    nodes = [make_node_body(f"t4-{i}") for i in range(3)]
    w = Gated(nodes)
    w.step()
    for pod, fp16 in zip(sorted(w.pods.values(), key=lambda p: w.node_of(p)), (50.0, 52.0, 54.0), strict=True):
        pod["status"] = {"phase": "Succeeded", "containerStatuses": [{"name": "probe", "state": {
            "terminated": {"exitCode": 0, "reason": "Completed",
                           "message": with_tflops(w.nodes[w.node_of(pod)], fp16)}}}]}
    plan = w.step()
    assert plan.status["performance"] == [{"gpu": "Tesla T4", "metric": "fp16Tflops", "nodes": 3, "median": 52.0,
                                           "min": 50.0, "max": 54.0, "spreadPercent": 7.7, "regressions": 0}]
    assert plan.status["performanceSummary"] == "Tesla T4 52 ±7.7%"


def test_a_product_median_flags_a_node_without_its_own_history() -> None:
    nodes = [make_node_body(f"t4-{i}") for i in range(3)]
    w = Gated(nodes)
    w.step()
    w.finish_all()
    w.step()
    slow = copy.deepcopy(make_node_body("t4-new"))
    w.nodes["t4-new"] = slow
    w.step()
    pod = next(p for p in w.pods.values() if w.node_of(p) == "t4-new")
    pod["status"] = {"phase": "Succeeded", "containerStatuses": [{"name": "probe", "state": {
        "terminated": {"exitCode": 0, "reason": "Completed", "message": with_tflops(slow, 20.0)}}}]}
    w.step()
    finding = next(f for f in w.record("t4-new").findings if f.startswith("PerformanceRegression"))
    assert "below the Tesla T4 median 52.1" in finding


def test_a_deleted_profiles_gating_taint_is_removed_before_its_claim_and_a_foreign_one_kept() -> None:
    w = Gated([make_node_body("t4-a"), make_node_body("t4-b")], gate=True, rollout={"maxTaintPercent": 100})
    w.step()
    assert w.taints("t4-a") == w.taints("t4-b") == [GATE]
    foreign = w.nodes["t4-b"]
    foreign["metadata"]["annotations"].pop(L.gate_annotation_key("pytorch-20.06"))
    removal = plan_removal([node_view(n) for n in w.nodes.values()], [], {"pytorch-20.06"})
    (gate,) = removal.gates
    assert (gate.node, gate.profile, gate.add) == ("t4-a", "pytorch-20.06", False)
    assert [dict(op) for op in gate.ops][-1] == {"op": "replace", "path": "/spec/taints", "value": []}
    assert gate.claim == {"metadata": {"annotations": {L.gate_annotation_key("pytorch-20.06"): None}}}
    plan = plan_cleanup(list(w.nodes.values()), [], [], [])
    assert describe(plan, "torchproof")[0] == "node t4-a: remove the gating taint torchproof.dev/pytorch-20.06"


def test_a_long_resume_token_is_kept_as_the_status_can_hold_it_and_honoured_once() -> None:
    token = "r" * 300
    first = Rollout.read(parse_profile(profile_body()), RecordSums(), {"paused": True}, token, 100.0)
    status = first.status()
    assert status["resumed"] == "r" * 256 and status["paused"] is False
    again = Rollout.read(parse_profile(profile_body()), RecordSums(), status, token, 200.0)
    assert again.resumed_at == 100.0, "the same token does not resume again"
