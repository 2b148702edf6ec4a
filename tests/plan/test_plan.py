"""The per-profile plan, driven through a tiny pure 'world' that applies plans like the shell does."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from typing import Any

import pytest
from torchproof import labels as L
from torchproof import plan as planning
from torchproof import verdict as judging
from torchproof.plan import (
    Plan,
    PlanInput,
    compute_plan,
    pass_failed_status,
    refused_create,
    validation_order,
)
from torchproof.plan import iso as plan_iso
from torchproof.result import ProbeResult, UntrustedResult
from torchproof.views import node_view, pod_view

from tests.support.builders import make_node_body, make_result, terminated
from tests.support.planworld import KEY, T0, World


def fleet() -> list[dict[str, Any]]:
    return [
        make_node_body("t4-a", "Tesla T4", "418.87.01"),
        make_node_body("t4-b", "Tesla T4", "418.87.01"),
        make_node_body("v100-a", "Tesla V100-SXM2-16GB", "450.51.06"),
        make_node_body("k80-a", "Tesla K80", "450.51.06"),
        make_node_body("rtx-a", "GeForce RTX 2080 Ti", "440.100"),
        make_node_body("cpu-1", None),
    ]


def test_pods_only_for_matching_gpu_nodes_and_static_incompatible_labelled_without_pods() -> None:
    w = World(fleet())
    plan = w.step()
    pinned = {w.node_of(p) for p in w.pods.values()}
    assert pinned == {"t4-a", "t4-b", "v100-a"}
    assert w.label("k80-a") == "incompatible" and w.label("rtx-a") == "incompatible"
    assert w.label("cpu-1") is None and "cpu-1" not in pinned
    record = json.loads(w.nodes["rtx-a"]["metadata"]["annotations"][L.result_annotation_key("pytorch-20.06")])
    assert record["reasons"][0].startswith("DriverTooOld: 440.100 < 450")
    assert plan.status["counts"]["incompatible"] == 2


def test_full_cycle_converges_labels_records_and_deletes_pods() -> None:
    w = World(fleet())
    w.step()
    w.finish_all()
    plan = w.step()
    assert {w.label(n) for n in ("t4-a", "t4-b", "v100-a")} == {"passed"}
    assert w.pods == {}
    counts = plan.status["counts"]
    assert (counts["passed"], counts["incompatible"], counts["pending"], counts["total"]) == (3, 2, 0, 5)
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["reason"] == "Converged"
    annotations = w.nodes["t4-a"]["metadata"]["annotations"]
    assert L.result_annotation_key("pytorch-20.06") in annotations and L.LEGACY_OWNED_ANNOTATION not in annotations
    assert L.owns("pytorch-20.06", annotations)
    again = w.step()
    assert (again.create, again.delete, again.update, again.events) == ((), (), (), ())


def test_max_concurrent_covers_each_hardware_kind_first() -> None:
    nodes = [make_node_body(f"t4-{i}", "Tesla T4", "450.51.06") for i in range(6)]
    nodes += [make_node_body("v100-z", "Tesla V100-SXM2-16GB", "450.51.06")]
    w = World(nodes, maxConcurrent=2)
    plan = w.step()
    chosen = sorted(w.node_of(p) for p in w.pods.values())
    assert len(chosen) == 2 and chosen[0].startswith("t4-") and chosen[1] == "v100-z"
    assert plan.status["counts"]["running"] == 2
    assert len(w.step().create) == 0


def test_each_profile_walks_the_fleet_in_its_own_fixed_order() -> None:
    names = [f"node-{i:02d}" for i in range(40)]
    a = sorted(names, key=lambda n: validation_order("pytorch-20.06", n))
    b = sorted(names, key=lambda n: validation_order("pytorch-20.06-b", n))
    assert a == sorted(names, key=lambda n: validation_order("pytorch-20.06", n))
    assert a[:5] != b[:5] and a != names


def test_not_ready_and_cordoned_nodes_are_skipped_and_reported() -> None:
    w = World([
        make_node_body("sick", "Tesla T4", ready=False),
        make_node_body("cordoned", "Tesla T4", unschedulable=True),
    ])
    plan = w.step()
    assert plan.create == ()
    assert plan.status["counts"]["skipped"] == 2
    assert {n["node"]: n["reason"] for n in plan.status["waitingNodes"]} == {
        "sick": "NodeNotReady", "cordoned": "NodeCordoned",
    }


def test_the_ready_message_counts_every_node_that_waiting_nodes_lists() -> None:
    w = World([
        make_node_body("sick", "Tesla T4", ready=False),
        make_node_body("cordoned", "Tesla T4", unschedulable=True),
        make_node_body("t4-pending", "Tesla T4"),
    ])
    w.step()
    (pod,) = w.pods.values()
    pod["status"] = {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}
    plan = w.step()
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Waiting")
    assert ready["message"] == "1 of 3 nodes waiting and 2 not ready or cordoned (see waitingNodes)"
    counts = plan.status["counts"]
    assert len(plan.status["waitingNodes"]) == counts["waiting"] + counts["skipped"] == 3


def test_failed_node_gets_failed_label_reason_and_a_warning_event() -> None:
    w = World([make_node_body("t4-a")])
    w.step()
    w.finish_all(make_result(lambda d: d["checks"]["amp"]["native"].update(finite=False)))
    plan = w.step()
    assert w.label("t4-a") == "failed"
    assert plan.status["failingNodes"][0]["reasons"][0].startswith("AmpNotFinite")
    assert any(e.type == "Warning" and "t4-a failed" in e.message for e in plan.events)


def edit_spec(w: World, steps: int = 9) -> None:
    """A spec edit that changes what is validated: a new generation and a new spec hash."""
    w.body["metadata"]["generation"] += 1
    w.body["spec"]["checks"]["amp"]["steps"] = steps


def test_revalidation_on_spec_fingerprint_annotation_and_age() -> None:
    w = World([make_node_body("t4-a")], revalidateAfter="1h")
    w.step()
    w.finish_all()
    plan = w.step()
    assert w.label("t4-a") == "passed" and plan.create == ()
    assert plan.wake_at == T0 + 3600

    w.body["metadata"]["generation"] = 2
    w.body["spec"]["maxConcurrent"] = 5
    assert w.plan().create == (), "a scheduling knob alone does not re-run probes"
    edit_spec(w)
    assert len(w.plan().create) == 1
    w.body["spec"]["checks"]["amp"]["steps"] = 8

    w.nodes["t4-a"]["status"]["nodeInfo"]["bootID"] = "rebooted"
    assert len(w.plan().create) == 1

    w2 = World([make_node_body("t4-a")])
    w2.step()
    w2.finish_all()
    w2.step()
    w2.nodes["t4-a"]["metadata"]["annotations"][L.REVALIDATE_ANNOTATION] = "please"
    assert len(w2.plan().create) == 1
    w2.nodes["t4-a"]["metadata"]["annotations"].pop(L.REVALIDATE_ANNOTATION)
    w2.revalidate = "profile-wide"
    assert len(w2.plan().create) == 1
    w2.revalidate = ""
    w2.now = T0 + 169 * 3600
    assert len(w2.plan().create) == 1


def test_driver_change_keeps_old_label_until_new_verdict() -> None:
    w = World([make_node_body("t4-a", "Tesla T4", "450.51.06")])
    w.step()
    w.finish_all()
    w.step()
    upgraded = make_node_body("t4-a", "Tesla T4", "460.32.03")
    upgraded["metadata"]["labels"][KEY] = "passed"
    upgraded["metadata"]["annotations"] = dict(w.nodes["t4-a"]["metadata"]["annotations"])
    w.nodes["t4-a"] = upgraded
    plan = w.step()
    assert len(plan.create) == 1 and w.label("t4-a") == "passed"
    assert plan.status["counts"]["pending"] == 1


def test_a_running_pod_for_an_old_spec_is_replaced() -> None:
    w = World([make_node_body("t4-a")])
    w.step()
    edit_spec(w)
    plan = w.step()
    assert [d.reason for d in plan.delete] == ["Stale"]
    assert plan.create == ()
    assert len(w.step().create) == 1


def test_image_pull_failure_opens_the_circuit_until_the_spec_changes() -> None:
    w = World([make_node_body(f"t4-{i}") for i in range(3)], maxConcurrent=1)
    w.step()
    for pod in w.pods.values():
        pod["status"] = {"phase": "Pending", "containerStatuses": [
            {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "manifest unknown"}}}]}
    plan = w.step()
    assert [d.reason for d in plan.delete] == ["ImagePullFailed"] and plan.create == ()
    assert plan.status["imagePull"]["state"] == "Failing"
    degraded = next(c for c in plan.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "ImagePullFailed"
    assert any(e.type == "Warning" for e in plan.events)
    for _ in range(3):
        assert w.step().create == ()
    assert all(w.label(n) is None for n in w.nodes)
    w.body["metadata"]["generation"] = 2
    w.body["metadata"].setdefault("annotations", {})["note"] = "metadata edits do not reset the circuit"
    assert w.step().create == ()
    w.body["spec"]["image"] = "nvcr.io/nvidia/pytorch:20.06-py3-fixed"
    assert len(w.step().create) == 1


def test_pending_past_timeout_keeps_the_label_and_retries_later() -> None:
    w = World([make_node_body("t4-a")])
    w.nodes["t4-a"]["metadata"].setdefault("labels", {})[KEY] = "passed"
    w.step()
    pod = next(iter(w.pods.values()))
    pod["status"] = {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu"}]}
    created = pod_view(pod).created
    assert created is not None
    w.now = created
    plan = w.step()
    assert plan.delete == () and plan.status["counts"]["waiting"] == 1
    assert plan.wake_at == w.now + 300
    w.now += 301
    plan = w.step()
    assert [d.reason for d in plan.delete] == ["PendingTimeout"]
    assert w.label("t4-a") == "passed"
    assert plan.update == ()
    plan = w.step()
    assert plan.create == () and plan.wake_at is not None and plan.wake_at > w.now
    w.now = plan.wake_at
    assert len(w.step().create) == 1


def test_unselected_node_loses_only_its_owned_label() -> None:
    w = World([make_node_body("t4-a")])
    w.step()
    w.finish_all()
    w.step()
    w.nodes["t4-a"]["metadata"]["labels"]["team"] = "vision"
    w.nodes["t4-a"]["metadata"]["labels"]["torchproof.dev/handmade"] = "yes"
    w.body["spec"]["nodeSelector"] = {"matchLabels": {"pool": "training"}}
    plan = w.step()
    labels = w.nodes["t4-a"]["metadata"]["labels"]
    assert KEY not in labels
    assert labels["team"] == "vision" and labels["torchproof.dev/handmade"] == "yes"
    assert L.result_annotation_key("pytorch-20.06") not in w.nodes["t4-a"]["metadata"]["annotations"]
    assert plan.status["counts"]["total"] == 0


def test_a_label_torchproof_does_not_own_is_never_removed() -> None:
    body = make_node_body("t4-a")
    body["metadata"]["labels"][KEY] = "passed"
    w = World([body], nodeSelector={"matchLabels": {"pool": "training"}})
    plan = w.step()
    assert plan.update == ()
    assert w.label("t4-a") == "passed"


def test_events_only_on_transitions_and_condition_times_kept() -> None:
    w = World([make_node_body("t4-a"), make_node_body("t4-b")], maxConcurrent=1)
    first = w.step()
    t_ready = next(c for c in first.status["conditions"] if c["type"] == "Ready")["lastTransitionTime"]
    w.now += 10
    second = w.step()
    assert second.events == ()
    assert next(c for c in second.status["conditions"] if c["type"] == "Ready")["lastTransitionTime"] == t_ready


def test_status_counts_equal_the_node_labels() -> None:
    w = World(fleet())
    for _ in range(3):
        w.step()
        w.finish_all()
    plan = w.step()
    labels = [w.label(n) for n in w.nodes if n != "cpu-1"]
    for verdict in L.VERDICTS:
        assert plan.status["counts"][verdict] == labels.count(verdict)


def test_a_label_write_touches_only_the_profiles_own_keys_and_carries_no_resource_version() -> None:
    w = World(fleet()[:1])
    w.nodes["t4-a"]["metadata"]["resourceVersion"] = "99"
    w.nodes["t4-a"]["metadata"].setdefault("labels", {})["torchproof.dev/other-release"] = "failed"
    w.nodes["t4-a"]["metadata"].setdefault("annotations", {})["result.torchproof.dev/other-release"] = "{}"
    w.step()
    w.finish_all()
    [update] = w.plan().update
    meta = update.patch["metadata"]
    assert set(meta) == {"labels", "annotations"}
    assert meta["labels"] == {KEY: "passed"}
    assert set(meta["annotations"]) == {L.result_annotation_key("pytorch-20.06")}


def test_a_node_with_the_legacy_list_is_migrated_on_first_touch_and_keeps_its_labels() -> None:
    """A node labelled by an earlier release: its label is owned through the shared list only. The first
    pass that sees the node record in place drops the list, and the label stays owned through the record."""
    w = World(fleet()[:1])
    for _ in range(2):
        w.step()
        w.finish_all()
    meta = w.nodes["t4-a"]["metadata"]
    meta["annotations"][L.LEGACY_OWNED_ANNOTATION] = f"{KEY},torchproof.dev/elsewhere"
    meta["labels"]["torchproof.dev/elsewhere"] = "passed"
    assert w.step().update == (), "the list holds the only claim on the other label: it stays"
    meta["annotations"]["result.torchproof.dev/elsewhere"] = "{}"
    [migration] = w.step().update
    assert migration.patch == {"metadata": {"annotations": {L.LEGACY_OWNED_ANNOTATION: None}}}
    assert migration.verdict is None and migration.evaluation is None
    assert L.LEGACY_OWNED_ANNOTATION not in meta["annotations"]
    assert (meta["labels"][KEY], meta["labels"]["torchproof.dev/elsewhere"]) == ("passed", "passed")
    assert L.owns("pytorch-20.06", meta["annotations"]) and L.owns("elsewhere", meta["annotations"])
    assert w.step().update == ()


# -- one node's result never stops the others ------------------------------------------------------------

BAD_UUID = "GPU-bad"


def _bad(result: Any) -> bool:
    return any(d.uuid == BAD_UUID for d in result.gpu.devices)


def _judge_raising(exc: Exception) -> Any:
    real = judging.judge

    def judge(*args: Any, **kwargs: Any) -> Any:
        if any(isinstance(a, ProbeResult) and _bad(a) for a in args):
            raise exc
        return real(*args, **kwargs)

    return judge


def _numbers_unrenderable(result: ProbeResult, *args: Any) -> dict[str, Any]:
    numbers = REAL_KEY_NUMBERS(result, *args)
    return {**numbers, "gpu": object()} if _bad(result) else numbers


def _parser_raising(text: Any) -> Any:
    if BAD_UUID in str(text):
        raise IndexError("list index out of range")
    return REAL_PARSE(text)


REAL_KEY_NUMBERS = judging._key_numbers
REAL_PARSE = judging.parse_result
EVALUATION_FAILURES = {  # what raises while one pod is judged → the reason its node gets
    "parser bug": (("parse_result", _parser_raising), "EvaluationFailed: IndexError: list index out of range"),
    "untrusted result raised late": (("judge", _judge_raising(UntrustedResult("result.gpu: not trusted"))),
                                     "UntrustedResult: result.gpu: not trusted"),
    "evaluation overflows": (("judge", _judge_raising(OverflowError("int too large to convert to float"))),
                             "EvaluationFailed: OverflowError: int too large to convert to float"),
    "record does not render": (("_key_numbers", _numbers_unrenderable), "EvaluationFailed: TypeError: "),
}


@pytest.mark.parametrize("case", EVALUATION_FAILURES, ids=list(EVALUATION_FAILURES))
def test_a_pod_whose_judging_raises_gives_its_node_error_and_the_others_their_labels(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (attribute, replacement), reason = EVALUATION_FAILURES[case]
    monkeypatch.setattr(judging, attribute, replacement)
    w = World([make_node_body("t4-a"), make_node_body("t4-bad"), make_node_body("t4-c")])
    w.step()
    w.finish_all()
    bad = next(p for p in w.pods.values() if w.node_of(p) == "t4-bad")
    bad["status"] = {"phase": "Succeeded", **terminated(make_result(
        lambda d: d["gpu"]["devices"][0].update(uuid=BAD_UUID)))}
    plan = w.step()
    assert (w.label("t4-a"), w.label("t4-c"), w.label("t4-bad")) == ("passed", "passed", "error")
    record = json.loads(w.nodes["t4-bad"]["metadata"]["annotations"][L.result_annotation_key("pytorch-20.06")])
    assert record["reasons"][0].startswith(reason), record["reasons"]
    assert [(f.node, f.reason.split(":")[0]) for f in plan.failures] == [("t4-bad", reason.split(":")[0])]
    assert {d.node: d.reason for d in plan.delete} == {"t4-a": "Completed", "t4-bad": "Completed",
                                                       "t4-c": "Completed"}
    assert w.pods == {}
    assert plan.status["counts"]["error"] == 1 and plan.status["counts"]["passed"] == 2
    again = w.step()
    assert (again.failures, again.update, again.create) == ((), (), ()), "recorded once, so reported once"


def test_a_running_pod_whose_handling_raises_is_labelled_error_and_deleted_after_its_label(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    w = World([make_node_body("t4-a")])
    w.step()

    def lost(*_: Any) -> bool:
        raise KeyError("startTime")

    monkeypatch.setattr("torchproof.classify.Classifier.lost", lost)
    plan = w.step()
    assert [(d.reason, d.after_label) for d in plan.delete] == [("EvaluationFailed", True)]
    assert w.label("t4-a") == "error"


def test_the_last_status_with_degraded_pass_failed_keeps_the_other_conditions_and_times() -> None:
    w = World([make_node_body("t4-a")])
    previous = w.step().status
    failed = pass_failed_status(previous, 1, "RuntimeError: boom", T0 + 5)
    conditions = {c["type"]: c for c in failed["conditions"]}
    assert [c["type"] for c in failed["conditions"]] == ["Ready", "Progressing", "Degraded"]
    assert conditions["Degraded"]["status"] == "True" and conditions["Degraded"]["reason"] == "PassFailed"
    assert conditions["Degraded"]["message"] == "RuntimeError: boom"
    assert conditions["Ready"] == next(c for c in previous["conditions"] if c["type"] == "Ready")
    assert failed["counts"] == previous["counts"]
    again = pass_failed_status(failed, 1, "RuntimeError: boom", T0 + 50)
    assert again["conditions"][2]["lastTransitionTime"] == conditions["Degraded"]["lastTransitionTime"]
    w.status = failed
    w.now = T0 + 60
    recovered = {c["type"]: c for c in w.step().status["conditions"]}
    assert recovered["Degraded"]["status"] == "False"
    assert pass_failed_status({}, 3, "x", T0)["conditions"][0]["type"] == "Degraded"


# -- the operator watches its own pods' fate -------------------------------------------------------------

def _degraded(plan: Plan) -> dict[str, Any]:
    return next(c for c in plan.status["conditions"] if c["type"] == "Degraded")


def test_a_refused_create_waits_with_the_reason_backs_off_exponentially_and_holds_its_slot() -> None:
    w = World([make_node_body("t4-a"), make_node_body("t4-b")], maxConcurrent=1)
    w.refuse = (403, 'pods "x" is forbidden: violates PodSecurity "restricted:latest"')
    first = w.step()
    [node] = [w.node_of(dict(m)) for m in first.create]
    attempts = [w.now]
    events: list[str] = []
    for _ in range(12):
        plan = w.step()
        assert [w.node_of(dict(m)) for m in plan.create] in ([], [node]), "the other node never gets the slot"
        events += [e.reason for e in plan.events]
        if plan.create:
            attempts.append(w.now)
            continue
        waiting = {n["node"]: n["reason"] for n in plan.status["waitingNodes"]}
        assert waiting == {node: 'CreateRefused: 403 pods "x" is forbidden: violates PodSecurity "restricted:latest"'}
        assert plan.status["counts"]["running"] == 0 and plan.status["counts"]["waiting"] == 1
        assert _degraded(plan)["status"] == "True" and _degraded(plan)["reason"] == "PodCreateRefused"
        assert plan.wake_at == w.backoff[node].retry_at
        w.now = plan.wake_at
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(gaps) == 6
    for i, gap in enumerate(gaps):
        assert 0.8 * 2**i <= gap <= 1.2 * 2**i, gaps
    assert events.count("DegradedTrue") == 1, events
    w.refuse = None
    w.now = w.backoff[node].retry_at
    plan = w.step()
    assert [w.node_of(dict(m)) for m in plan.create] == [node]
    assert w.step().create_backoff == {}, "a pod exists: the create went through"
    assert _degraded(w.step())["status"] == "False"


def test_create_backoff_is_capped_and_reset_by_a_spec_change() -> None:
    backoff = None
    for _ in range(20):
        backoff = refused_create(backoff, "h1", "n", 403, "quota", 0.0)
    assert backoff is not None and backoff.attempts == 20 and 240 <= backoff.retry_at <= 360
    assert refused_create(backoff, "h2", "n", 403, "quota", 0.0).attempts == 1
    w = World([make_node_body("t4-a")])
    w.refuse = (403, "exceeded quota")
    w.step()
    assert w.step().create == ()
    edit_spec(w)
    assert len(w.plan().create) == 1, "a new spec is tried at once"


LOST = {  # (pod status, how old it is) → lost?
    "running within its deadline": ({"phase": "Running"}, 600 + 60 - 1, False),
    "running past deadline and grace": ({"phase": "Running"}, 600 + 60, True),
    "never started, within pending and runtime": ({"phase": "Pending"}, 300 + 600 + 60 - 1, False),
    "never started, past pending and runtime": ({"phase": "Pending"}, 300 + 600 + 60, True),
}


@pytest.mark.parametrize("case", LOST, ids=list(LOST))
def test_a_pod_past_its_deadline_and_grace_is_lost_deleted_and_its_slot_freed(case: str) -> None:
    status, age, lost = LOST[case]
    w = World([make_node_body("t4-a"), make_node_body("t4-b")], maxConcurrent=1)
    [manifest] = w.step().create
    node = w.node_of(dict(manifest))
    other = "t4-b" if node == "t4-a" else "t4-a"
    pod = w.pods[manifest["metadata"]["name"]]
    pod["status"] = {**status, **({"startTime": plan_iso(T0)} if status["phase"] == "Running" else {})}
    w.now = T0 + age
    plan = w.step()
    if not lost:
        assert (plan.delete, plan.create, plan.update) == ((), (), ())
        assert plan.wake_at == T0 + age + 1
        return
    assert [(d.node, d.reason) for d in plan.delete] == [(node, "ProbeLost")]
    assert [w.node_of(dict(m)) for m in plan.create] == [other], "the slot goes to another node"
    assert w.label(node) == "error"
    record = json.loads(w.nodes[node]["metadata"]["annotations"][L.result_annotation_key("pytorch-20.06")])
    assert record["reasons"][0].startswith("ProbeLost: ")
    assert w.step().create == (), "the lost node has a current record: no new pod until it is revalidated"


TERMINATING = {  # (seconds since the deletionTimestamp, node has a current record) → slot held, state
    "just deleted": (10, False, True, "running"),
    "stuck past the grace, no record": (61, False, False, "waiting"),
    "stuck past the grace, recorded": (61, True, False, "error"),
}


@pytest.mark.parametrize("case", TERMINATING, ids=list(TERMINATING))
def test_a_pod_stuck_terminating_frees_its_slot_after_the_grace(case: str) -> None:
    since, recorded, held, state = TERMINATING[case]
    w = World([make_node_body("t4-a"), make_node_body("t4-b")], maxConcurrent=1)
    [manifest] = w.step().create
    node = w.node_of(dict(manifest))
    if recorded:
        w.now = T0 + 2000  # past deadline and grace: lost, labelled error; the deletion then sticks
        w.pods[manifest["metadata"]["name"]]["status"] = {"phase": "Running", "startTime": plan_iso(T0)}
        lost = w.plan()
        w.step()
        w.pods[manifest["metadata"]["name"]] = lost_pod = copy.deepcopy(dict(manifest))
        lost_pod["status"] = {"phase": "Running"}
        for name in [n for n in w.pods if w.node_of(w.pods[n]) != node]:
            del w.pods[name]
        assert [d.reason for d in lost.delete] == ["ProbeLost"]
    pod = w.pods[manifest["metadata"]["name"]]
    pod["metadata"]["deletionTimestamp"] = plan_iso(w.now)
    w.now += since
    plan = w.step()
    assert bool(plan.create) is not held
    assert plan.status["counts"]["running"] == (1 if held else len(plan.create))
    waiting = {n["node"]: n["reason"] for n in plan.status["waitingNodes"]}
    if state == "waiting":
        assert waiting[node].startswith("PodTerminating: ")
    else:
        assert node not in waiting
    assert all(d.node != node for d in plan.delete), "already being deleted"
    if state == "error":
        assert w.label(node) == "error" and plan.status["counts"]["error"] == 1


def test_the_memo_is_an_input_and_an_output_never_changed_in_place() -> None:
    w = World(fleet())
    for _ in range(3):
        w.step()
        w.finish_all()
    w.step()
    nodes = [node_view(n) for n in w.nodes.values()]
    inp = PlanInput(profile=w.profile, nodes=nodes, pods=[], now=w.now, namespace="torchproof", configmap="cm",
                    status=w.status)
    first = compute_plan(inp)
    memo = first.memo
    assert memo.entries and memo.tally.selected, "a validated fleet leaves its nodes in the memo"
    assert not memo.unstable, "every node validated and without a pod: none to look at again"
    before = (memo.context, dict(memo.entries), memo.tally.copy(), memo.unstable)
    second = compute_plan(dataclasses.replace(inp, memo=memo))
    assert second == first
    assert (memo.context, dict(memo.entries), memo.tally, memo.unstable) == before
    assert second.memo is not memo and second.memo.tally is not memo.tally
    assert all(second.memo.entries[name] is entry for name, entry in memo.entries.items()), "unchanged: reused"
    with pytest.raises(dataclasses.FrozenInstanceError):
        memo.unstable = frozenset()  # type: ignore[misc]


def test_a_pass_classifies_only_the_nodes_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a validated fleet, a pass told that no node changed looks at none; told of one, at that one."""
    w = World(fleet())
    for _ in range(3):
        w.step()
        w.finish_all()
    w.step()
    looked: list[str] = []
    selects = planning.selects
    monkeypatch.setattr(planning, "selects", lambda p, node: looked.append(node.name) or selects(p, node))
    inp = PlanInput(profile=w.profile, nodes=w.views, pods=[], now=w.now, namespace="torchproof", configmap="cm",
                    status=w.status, memo=w.memo, changed=set())
    assert compute_plan(inp) == compute_plan(dataclasses.replace(inp, memo=None))
    looked.clear()
    compute_plan(inp)
    assert looked == []
    compute_plan(dataclasses.replace(inp, changed={"t4-a"}))
    assert looked == ["t4-a"]
