"""The plan harness: a tiny pure world of Nodes and pods as dicts that plans and applies each plan as the
controller does, checking on every pass that the memo kept across passes, and the memo told which nodes changed,
give the same plan as none."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from torchproof import labels as L
from torchproof.plan import Plan, PlanInput, PlanMemo, compute_plan, refused_create
from torchproof.profile import parse_profile
from torchproof.views import NodeView, node_view, pod_view

from tests.support.builders import profile_body, result_for, terminated

KEY = L.label_key("pytorch-20.06")
T0 = 1_800_000_000.0


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """An RFC 7386 merge patch applied in place: tests hold a node's dicts across passes, as they would a live
    object (the embedded cluster's `apply_merge_patch` returns new dicts along the patched path instead)."""
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
        self.backoff: dict[str, Any] = {}
        self.refuse: tuple[int, str] | None = None  # (status, message) the API server answers creates with

    @property
    def profile(self) -> Any:
        return parse_profile(self.body)

    def plan(self) -> Plan:
        """The plan, checked to be the same with the memo kept across passes as without one, and with the memo
    told which nodes changed (as the controller does from the node informer's events)."""
        views = self.views
        self.views = {name: views[name] if name in views and node_view(n) == views[name] else node_view(n)
                      for name, n in self.nodes.items()}
        inp = PlanInput(
            profile=self.profile,
            nodes=list(self.views.values()),
            pods=[pod_view(p) for p in self.pods.values()],
            now=self.now, namespace="torchproof", configmap="cm", status=self.status,
            retry_after=self.retry, profile_revalidate=self.revalidate, create_backoff=self.backoff,
        )
        plan = compute_plan(inp)
        remembered = compute_plan(dataclasses.replace(inp, memo=self.memo))
        assert remembered == plan
        changed = {name for name, view in self.views.items() if views.get(name) is not view} | (
            views.keys() - self.views.keys())
        incremental = compute_plan(dataclasses.replace(inp, nodes=self.views, memo=self.memo, changed=changed))
        assert incremental == plan, "told which nodes changed, the plan is the same"
        assert remembered.memo.entries == incremental.memo.entries
        assert remembered.memo.tally == incremental.memo.tally
        assert incremental.memo.tally == plan.memo.tally, "the sums kept per node equal the sums over every node"
        self.memo = incremental.memo
        return plan

    def step(self) -> Plan:
        plan = self.plan()
        for u in plan.update:
            patch = copy.deepcopy(dict(u.patch))
            patch["metadata"].pop("resourceVersion", None)
            merge(self.nodes[u.node], patch)
        for d in plan.delete:
            self.pods.pop(d.name)
        self.backoff = dict(plan.create_backoff)
        for manifest in plan.create:
            if self.refuse is not None:
                node = self.node_of(dict(manifest))
                self.backoff[node] = refused_create(
                    plan.create_backoff.get(node), self.profile.spec_hash, node, *self.refuse, self.now)
                continue
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
