"""The per-profile plan, driven through a tiny pure 'world' that applies plans like the shell does."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

from builders import make_node_body, make_result, profile_body, result_for, terminated
from torchproof import labels as L
from torchproof.plan import Plan, PlanInput, PlanMemo, compute_plan, validation_order
from torchproof.profile import parse_profile
from torchproof.views import NodeView, node_view, pod_view

KEY = L.label_key("pytorch-20.06")
T0 = 1_800_000_000.0


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            merge(target.setdefault(key, {}), value)
        else:
            target[key] = value


class World:
    """Nodes and pods as dicts; `step` plans and applies, as the controller would."""

    def __init__(self, nodes: list[dict[str, Any]], **spec: Any) -> None:
        self.nodes = {n["metadata"]["name"]: n for n in nodes}
        self.pods: dict[str, dict[str, Any]] = {}
        self.body = profile_body(**spec)
        self.status: dict[str, Any] = {}
        self.retry: dict[str, float] = {}
        self.now = T0
        self.revalidate = ""
        self.views: dict[str, NodeView] = {}  # unchanged nodes keep their view object, as in the informer
        self.memo = PlanMemo()

    @property
    def profile(self) -> Any:
        return parse_profile(self.body)

    def plan(self) -> Plan:
        """The plan, checked to be the same with the memo kept across passes as without one."""
        views = self.views
        self.views = {name: views[name] if name in views and node_view(n) == views[name] else node_view(n)
                      for name, n in self.nodes.items()}
        inp = PlanInput(
            profile=self.profile,
            nodes=list(self.views.values()),
            pods=[pod_view(p) for p in self.pods.values()],
            now=self.now, namespace="torchproof", configmap="cm", status=self.status,
            retry_after=self.retry, profile_revalidate=self.revalidate,
        )
        plan = compute_plan(inp)
        assert compute_plan(dataclasses.replace(inp, memo=self.memo)) == plan
        return plan

    def step(self) -> Plan:
        plan = self.plan()
        for u in plan.update:
            patch = copy.deepcopy(dict(u.patch))
            patch["metadata"].pop("resourceVersion", None)
            merge(self.nodes[u.node], patch)
        for d in plan.delete:
            self.pods.pop(d.name)
        for manifest in plan.create:
            pod = copy.deepcopy(dict(manifest))
            pod["metadata"]["creationTimestamp"] = "2027-01-15T08:00:00Z"
            pod["status"] = {"phase": "Pending"}
            self.pods[pod["metadata"]["name"]] = pod
        self.status = dict(plan.status)
        self.retry = dict(plan.retry_after)
        return plan

    def node_of(self, pod: dict[str, Any]) -> str:
        return pod["metadata"]["annotations"][L.NODE_ANNOTATION]

    def finish_all(self, message: str | None = None, **kw: Any) -> None:
        for pod in self.pods.values():
            result = message or result_for(self.nodes[self.node_of(pod)])
            pod["status"] = {"phase": "Succeeded", **terminated(result, **kw)}

    def label(self, node: str) -> str | None:
        return self.nodes[node]["metadata"].get("labels", {}).get(KEY)


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
    owned = w.nodes["t4-a"]["metadata"]["annotations"][L.OWNED_LABELS_ANNOTATION]
    assert owned == KEY
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


def test_a_label_write_that_conflicts_is_rebased_on_the_fresh_node() -> None:
    w = World(fleet()[:1])
    w.step()
    w.finish_all()
    [update] = w.plan().update
    assert update.patch["metadata"]["annotations"][L.OWNED_LABELS_ANNOTATION] == KEY
    fresh = copy.deepcopy(w.nodes["t4-a"])
    fresh["metadata"]["resourceVersion"] = "99"
    fresh["metadata"].setdefault("annotations", {})[L.OWNED_LABELS_ANNOTATION] = "torchproof.dev/other-release"
    rebased = update.rebase(node_view(fresh))
    assert rebased is not None
    meta = rebased["metadata"]
    assert meta["resourceVersion"] == "99"
    assert meta["annotations"][L.OWNED_LABELS_ANNOTATION] == f"torchproof.dev/other-release,{KEY}"
    assert meta["labels"] == {KEY: "passed"}
    assert meta["annotations"][L.result_annotation_key("pytorch-20.06")] == \
        update.patch["metadata"]["annotations"][L.result_annotation_key("pytorch-20.06")]
