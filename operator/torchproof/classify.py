"""Each selected node classified once per pass: judged from its finished pod, waiting on its pod, current on
its record, pre-checked incompatible, skipped, or a candidate for a new pod (schedule.py picks among those)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from torchproof import history as H
from torchproof import labels as L
from torchproof.breaker import Rollout
from torchproof.compat import CompatResult
from torchproof.contract import NodeRecord, iso
from torchproof.plantypes import CreateBackoff, DeletePod, EventSpec, Idle, NodeFailure, NodeUpdate, PlanInput
from torchproof.reasons import Reason
from torchproof.recordsums import FAILING
from torchproof.result import UntrustedResult
from torchproof.text import clean_tree
from torchproof.verdict import Evaluation, evaluate_pod, static_evaluation
from torchproof.views import NodeView, PodView, parse_record, raw_record

IMAGE_PULL_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
PENDING_RETRY_SECONDS = 300.0


def _image_pull_blocked(inp: PlanInput) -> bool:
    pull = inp.status.get("imagePull") or {}
    return bool(
        pull.get("state") == "Failing"
        and pull.get("image") == inp.profile.image
        and pull.get("specHash") == inp.profile.spec_hash
    )


def _record(inp: PlanInput, node: NodeView, evaluation: Evaluation, token: str,
            previous: NodeRecord | None) -> NodeRecord:
    """The verdict's record with its text cleaned (text.py), but what identifies the verdict verbatim: a
    later pass compares it with the live values. It carries the node's performance history on."""
    return NodeRecord(
        verdict=evaluation.verdict,
        at=inp.now,
        generation=inp.profile.generation,
        spec_hash=inp.profile.spec_hash,
        fingerprint=node.fingerprint,
        revalidate=token,
        image=inp.profile.image,
        reasons=tuple(clean_tree([str(r) for r in evaluation.reasons])),
        findings=tuple(clean_tree([str(r) for r in evaluation.findings])),
        known_issues=tuple(clean_tree([issue.id for issue in evaluation.known_issues])),
        numbers=clean_tree(dict(evaluation.numbers)),
        history=H.extended(previous),
    )


class Classifier:
    """Accumulates one plan's decisions; each node is classified exactly once."""

    rollout: Rollout  # the breaker (breaker.py), set by compute_plan before any node is judged
    medians: Mapping[str, float]  # each GPU product's median key number over the selected nodes' records, too

    def __init__(self, inp: PlanInput) -> None:
        self.inp = inp
        self.records: dict[str, NodeRecord] = {}  # written by this pass
        self._static: dict[tuple[tuple[str, str], ...], CompatResult] = {}
        self.create: list[Mapping[str, Any]] = []
        self.delete: list[DeletePod] = []
        self.update: list[NodeUpdate] = []
        self.events: list[EventSpec] = []
        self.labels: dict[str, str | None] = {}
        self.state: dict[str, str] = {}
        self.waiting_reason: dict[str, str] = {}
        self.retry_after = {n: t for n, t in inp.retry_after.items() if t > inp.now}
        self.wakes: list[float] = list(self.retry_after.values())
        self.blocked = _image_pull_blocked(inp)
        self.pull_failure: dict[str, Any] | None = None
        self.candidates: list[NodeView] = []
        self.retrying: list[NodeView] = []  # refused before, backoff over: they had a slot, so they go first
        self.refused_nodes: list[str] = []  # waiting on a refused create, retried or not
        self.backoff = {n: b for n, b in inp.create_backoff.items() if b.spec_hash == inp.profile.spec_hash}
        self.failures: list[NodeFailure] = []
        self.running = 0
        self.context = (inp.profile, inp.profile_revalidate, self.blocked)
        self.memo: dict[str, Idle] = {}  # the last pass's records of the nodes classified again, views unchanged
        self.idle: dict[str, Idle] = {}
        self.settled: set[str] = set()  # without a pod, in a state only a change of its view (or time) changes
        self.expires: dict[str, float] = {}  # settled on a record that revalidateAfter ends then

    def token(self, node: NodeView) -> str:
        return f"{self.inp.profile_revalidate}/{node.annotations.get(L.REVALIDATE_ANNOTATION, '')}"

    def holds(self, node: NodeView, evaluation: Evaluation) -> bool:
        """The breaker holds a passed node's flip to failed: the label and the finished pod stay."""
        if evaluation.verdict not in FAILING or node.labels.get(L.label_key(self.inp.profile.name)) != "passed":
            return False
        if not self.rollout.hold_flip():
            return False
        self.state[node.name] = "waiting"
        self.waiting_reason[node.name] = f"RolloutPaused: its {evaluation.verdict} verdict is held"
        return True

    def label(self, node: NodeView, evaluation: Evaluation) -> None:
        before = raw_record(node, self.inp.profile.name)
        if evaluation.verdict == "passed":
            found = H.regression(H.key_number(evaluation.numbers), before, H.product(node, evaluation.numbers),
                                 self.medians)
            if found is not None:
                evaluation = dataclasses.replace(evaluation, findings=(*evaluation.findings, found))
        record = _record(self.inp, node, evaluation, self.token(node), before)
        self.records[node.name] = record
        patch = L.verdict_patch(self.inp.profile.name, node.labels, node.annotations, evaluation.verdict, record)
        previous = node.labels.get(L.label_key(self.inp.profile.name))
        self.update.append(NodeUpdate(node.name, patch, evaluation.verdict, previous, evaluation))
        self.labels[node.name] = evaluation.verdict
        self.state[node.name] = evaluation.verdict
        if self.inp.profile.revalidate_after_seconds is not None:
            self.wakes.append(self.inp.now + self.inp.profile.revalidate_after_seconds)

    def migrate(self, nodes: Iterable[NodeView]) -> None:
        """Drop the legacy owned-labels list from the nodes this pass does not patch, once nothing needs it
        (labels.py): a validated node may not be written again for a long time."""
        patched = {u.node for u in self.update}
        for node in nodes:
            if L.LEGACY_OWNED_ANNOTATION in node.annotations and node.name not in patched:
                patch = L.migration_patch(node.labels, node.annotations)
                if patch is not None:
                    self.update.append(NodeUpdate(node.name, patch, None, None))

    def static(self, node: NodeView) -> CompatResult:
        """The pre-check, once per set of GPU labels: a fleet has few hardware kinds and many nodes."""
        found = self._static.get(node.gpu_labels)
        if found is None:
            found = self._static[node.gpu_labels] = static_evaluation(self.inp.profile, node.labels)
        return found

    def known(self, node: NodeView) -> Idle:
        """What the node has on record for this spec and token, from the memo while its view is unchanged."""
        hit = self.memo.get(node.name)
        if hit is None or hit.view is not node:
            record = parse_record(node, self.inp.profile.name)
            matches = record is not None and (
                record.spec_hash == self.inp.profile.spec_hash
                and record.fingerprint == node.fingerprint
                and record.revalidate == self.token(node)
            )
            hit = Idle(node, record.at if record is not None and matches else None, self.static(node))
        self.idle[node.name] = hit
        return hit

    def current(self, idle: Idle) -> bool:
        """The record stands (see `known`) and is younger than revalidateAfter."""
        if idle.recorded_at is None:
            return False
        after = self.inp.profile.revalidate_after_seconds
        if after is None:
            return True
        if self.inp.now >= idle.recorded_at + after:
            return False
        self.wakes.append(idle.recorded_at + after)
        return True

    def pod_safely(self, node: NodeView, pod: PodView) -> None:
        """`with_pod`; an exception while judging the pod (parsing, evaluating, rendering its record)
        becomes the node's own `error` verdict, so that one result never stops the pass for the others."""
        updates, deletes = len(self.update), len(self.delete)
        try:
            self.with_pod(node, pod)
        except Exception as exc:
            del self.update[updates:], self.delete[deletes:]
            if isinstance(exc, UntrustedResult):
                reason = Reason("UntrustedResult", str(exc)[:300])
            else:
                reason = Reason("EvaluationFailed", f"{type(exc).__name__}: {exc}"[:300])
            self.label(node, Evaluation("error", (reason,)))
            self.delete.append(DeletePod(pod.name, node.name, "Completed" if pod.finished else "EvaluationFailed"))
            self.failures.append(NodeFailure(node.name, pod.name, str(reason)))

    def with_pod(self, node: NodeView, pod: PodView) -> None:
        p = self.inp.profile
        self.backoff.pop(node.name, None)  # a pod exists: its create went through
        if pod.deleting:
            self.terminating(node, pod)
            return
        stale = pod.spec_hash != p.spec_hash or pod.fingerprint != node.fingerprint
        if stale:
            self.delete.append(DeletePod(pod.name, node.name, "Stale"))
            self.state[node.name] = "pending"
            return
        if pod.finished:
            evaluation = evaluate_pod(p, pod, node.labels)
            if self.holds(node, evaluation):
                return
            self.label(node, evaluation)
            self.delete.append(DeletePod(pod.name, node.name, "Completed"))
            return
        if pod.waiting_reason in IMAGE_PULL_ERRORS:
            self.pull_failure = {
                "state": "Failing",
                "image": pod.image or p.image,
                "generation": p.generation,
                "specHash": p.spec_hash,
                "reason": pod.waiting_reason,
                "message": (pod.waiting_message or pod.waiting_reason or "")[:300],
                "since": iso(self.inp.now),
            }
            self.delete.append(DeletePod(pod.name, node.name, "ImagePullFailed"))
            self.state[node.name] = "waiting"
            self.waiting_reason[node.name] = "ImagePullFailed"
            return
        if pod.phase == "Pending" and pod.unschedulable is not None and pod.created is not None:
            deadline = pod.created + p.validation.pending_timeout_seconds
            if deadline <= self.inp.now:
                self.delete.append(DeletePod(pod.name, node.name, "PendingTimeout"))
                self.retry_after[node.name] = self.inp.now + PENDING_RETRY_SECONDS
                self.wakes.append(self.retry_after[node.name])
                self.state[node.name] = "waiting"
                self.waiting_reason[node.name] = f"PendingTimeout: {pod.unschedulable}"[:200]
                return
            self.wakes.append(deadline)
            self.running += 1
            self.state[node.name] = "waiting"
            self.waiting_reason[node.name] = f"Unschedulable: {pod.unschedulable}"[:200]
            return
        if self.lost(node, pod):
            return
        self.running += 1
        self.state[node.name] = "running"

    def lost(self, node: NodeView, pod: PodView) -> bool:
        """A pod past its runtime timeout plus the grace is lost: the kubelet that enforces its
        activeDeadlineSeconds is gone. Delete it and record `error` (ProbeLost), freeing the slot. A pod
        never started counts from its creation, with the pending timeout on top."""
        v, grace = self.inp.profile.validation, self.inp.lost_grace
        if pod.started is not None:
            since, limit = pod.started, float(v.runtime_timeout_seconds)
        elif pod.created is not None:
            since, limit = pod.created, float(v.pending_timeout_seconds + v.runtime_timeout_seconds)
        else:
            return False
        if self.inp.now < since + limit + grace:
            self.wakes.append(since + limit + grace)
            return False
        self.label(node, Evaluation("error", (Reason(
            "ProbeLost",
            f"pod {pod.name} ran {self.inp.now - since:.0f}s without finishing, past its {limit:.0f}s deadline "
            f"and a {grace:.0f}s grace: the node's kubelet does not enforce it",
        ),)))
        self.delete.append(DeletePod(pod.name, node.name, "ProbeLost"))
        return True

    def terminating(self, node: NodeView, pod: PodView) -> None:
        """A pod being deleted holds its slot until it is gone, but only for the grace past its deletion
        time: one stuck Terminating (its kubelet is gone) frees the slot. Its node gets no new pod while it
        exists (the name is the same: the create would be refused), so it waits, or shows its record."""
        until = None if pod.deleted_at is None else pod.deleted_at + self.inp.lost_grace
        if until is None or self.inp.now < until:
            if until is not None:
                self.wakes.append(until)
            self.running += 1
            self.state[node.name] = "running"
            return
        if self.current(self.known(node)):
            self.state[node.name] = node.labels[L.label_key(self.inp.profile.name)]
            return
        self.state[node.name] = "waiting"
        self.waiting_reason[node.name] = f"PodTerminating: {pod.name} is still being deleted since {iso(until)}"

    def without_pod(self, node: NodeView) -> None:
        idle = self.known(node)
        if self.current(idle):
            self.state[node.name] = node.labels[L.label_key(self.inp.profile.name)]
            self.settled.add(node.name)
            after = self.inp.profile.revalidate_after_seconds
            if after is not None and idle.recorded_at is not None:
                self.expires[node.name] = idle.recorded_at + after
            return
        static = idle.static
        if static.verdict == "incompatible":
            self.label(node, Evaluation("incompatible", static.reasons))
        elif not node.ready or node.unschedulable:
            self.state[node.name] = "skipped"
            self.waiting_reason[node.name] = "NodeNotReady" if not node.ready else "NodeCordoned"
            self.settled.add(node.name)
        elif self.blocked:
            self.state[node.name] = "waiting"
            self.waiting_reason[node.name] = "ImagePullFailed"
        elif node.name in self.retry_after:
            self.state[node.name] = "waiting"
            self.waiting_reason[node.name] = "PendingTimeout"
        elif node.name in self.backoff:
            self.refused(node, self.backoff[node.name])
        else:
            self.state[node.name] = "pending"
            self.candidates.append(node)
            self.settled.add(node.name)

    def refused(self, node: NodeView, backoff: CreateBackoff) -> None:
        """A node whose create was refused keeps its slot while it backs off: a refusal is mostly
        namespace-wide (admission, quota), and the next candidates would only be refused in turn."""
        self.running += 1
        self.state[node.name] = "waiting"
        self.waiting_reason[node.name] = backoff.reason[:200]
        self.refused_nodes.append(node.name)
        if backoff.retry_at > self.inp.now:
            self.wakes.append(backoff.retry_at)
        else:
            self.retrying.append(node)
