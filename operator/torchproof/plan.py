"""The per-profile plan: from the observed state (nodes, validation pods, earlier verdicts) to actions.

A verdict stays current while the profile's spec hash (what is validated: image, components,
requirements, checks), the node's fingerprint (GPU product, driver, boot, kernel) and the revalidate
tokens are unchanged and it is younger than revalidateAfter. Pods and records carry the spec hash rather
than trusting the generation alone, so that a torn read of the profile never labels with a stale spec.

Level-triggered and idempotent: the same state always gives the same plan, a plan applied twice does
no harm, and everything it needs survives a restart in the cluster itself (node labels and result
annotations, pod annotations, the profile's status). The only in-memory inputs are the per-node retry
time after a pending timeout and the per-node backoff after a refused create, which a restart may
forget (the node is simply tried again). Judging one node's pod never raises out of the plan: it
becomes that node's `error` verdict, listed in `failures` for the shell to log (the core does not log).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torchproof import labels as L
from torchproof.compat import CompatResult
from torchproof.contract import NodeRecord, iso
from torchproof.podspec import build_pod
from torchproof.profile import Profile
from torchproof.reasons import Reason
from torchproof.result import UntrustedResult
from torchproof.text import clean_text, clean_tree
from torchproof.verdict import Evaluation, evaluate_pod, static_evaluation
from torchproof.views import NodeView, PodView, parse_record

IMAGE_PULL_ERRORS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
PENDING_RETRY_SECONDS = 300.0
MAX_FAILING_NODES = 20
CONDITION_TYPES = ("Ready", "Progressing", "Degraded")
COVERING = frozenset({"running", *L.VERDICTS})  # a node in these states shows what its hardware kind does
LOST_GRACE_SECONDS = 60.0  # past a pod's deadline (or its deletion) before the operator stops waiting on it
CREATE_BACKOFF_BASE = 1.0  # the first wait after a refused create, doubling per refusal ...
CREATE_BACKOFF_MAX = 300.0  # ... up to this
CREATE_BACKOFF_JITTER = (0.8, 1.2)  # each wait is scaled within these bounds, so refused nodes drift apart
AFTER_LABEL = frozenset({"Completed", "ProbeLost", "EvaluationFailed"})  # deletions that wait for the label


@dataclass(frozen=True)
class DeletePod:
    name: str
    node: str
    reason: str

    @property
    def after_label(self) -> bool:
        """The pod carries the node's verdict: it goes only once that label landed, else a later pass judges it."""
        return self.reason in AFTER_LABEL


@dataclass(frozen=True)
class CreateBackoff:
    """A node whose validation pod the API server refused (403 from Pod Security admission, a missing
    ServiceAccount, a quota): no create for it before `retry_at`. Reset when a pod for the node exists
    (a create went through) or the validated spec changes."""

    spec_hash: str
    attempts: int
    retry_at: float
    reason: str


def refused_create(
    previous: CreateBackoff | None, spec_hash: str, node: str, status: int, message: str, now: float,
    base: float = CREATE_BACKOFF_BASE, cap: float = CREATE_BACKOFF_MAX,
) -> CreateBackoff:
    """The backoff after one more refusal: base doubling to cap, with a jitter drawn from the node and the
    attempt (deterministic, so the plan stays a function of its input)."""
    attempts = previous.attempts + 1 if previous is not None and previous.spec_hash == spec_hash else 1
    delay = min(cap, base * 2.0 ** min(attempts - 1, 32))
    low, high = CREATE_BACKOFF_JITTER
    draw = zlib.crc32(f"{node}\0{attempts}".encode()) / 2**32
    reason = f"CreateRefused: {status} {message}"[:300]
    return CreateBackoff(spec_hash, attempts, now + delay * (low + (high - low) * draw), reason)


@dataclass(frozen=True)
class NodeFailure:
    """Judging a node's pod raised; the node got `error` with this reason. The shell logs it once."""

    node: str
    pod: str
    reason: str


@dataclass(frozen=True)
class NodeUpdate:
    node: str
    patch: Mapping[str, Any]
    verdict: L.Verdict | None
    previous: str | None
    evaluation: Evaluation | None = None


@dataclass(frozen=True)
class EventSpec:
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Idle:
    """A node without a pod, as its view alone decides: when its standing record was written (None: no
    record stands for this spec, node and token) and the pre-check of its GPU labels."""

    view: NodeView
    recorded_at: float | None
    static: CompatResult


@dataclass
class PlanMemo:
    """What each node without a pod had on record, kept between passes of one profile.

    A cache only: a plan is the same with it or without it. An entry is reused while the node's view is
    the same object (the informer replaces a view when its node changes) and the profile's spec and
    revalidate token are unchanged; a pass then reads one dict entry per unchanged node, not its record.
    """

    context: tuple[object, ...] = ()
    idle: dict[str, Idle] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # the selected nodes in `validation_order`


@dataclass(frozen=True)
class PlanInput:
    profile: Profile
    nodes: Sequence[NodeView]
    pods: Sequence[PodView]
    now: float
    namespace: str
    configmap: str
    status: Mapping[str, Any] = field(default_factory=dict)
    retry_after: Mapping[str, float] = field(default_factory=dict)
    profile_revalidate: str = ""
    memo: PlanMemo | None = None
    create_backoff: Mapping[str, CreateBackoff] = field(default_factory=dict)
    lost_grace: float = LOST_GRACE_SECONDS


@dataclass(frozen=True)
class Plan:
    create: tuple[Mapping[str, Any], ...]
    delete: tuple[DeletePod, ...]
    update: tuple[NodeUpdate, ...]
    events: tuple[EventSpec, ...]
    status: Mapping[str, Any]
    retry_after: Mapping[str, float]
    wake_at: float | None
    create_backoff: Mapping[str, CreateBackoff] = field(default_factory=dict)
    failures: tuple[NodeFailure, ...] = ()


def selects(profile: Profile, node: NodeView) -> bool:
    if profile.node_selector is not None:
        return profile.node_selector.matches(node.labels)
    return node.labels.get("nvidia.com/gpu.present") == "true" or node.gpus > 0


def validation_order(profile: str, node: str) -> tuple[int, str]:
    """Each profile walks the fleet in its own fixed order: in one shared order, profiles would all run pods
    on the same few nodes at the same moment. Every pass walks its nodes in this order, so candidates, and
    labels written in one pass (the pre-check's), follow it."""
    return zlib.crc32(f"{profile}\0{node}".encode()), node


def _image_pull_blocked(inp: PlanInput) -> bool:
    pull = inp.status.get("imagePull") or {}
    return bool(
        pull.get("state") == "Failing"
        and pull.get("image") == inp.profile.image
        and pull.get("specHash") == inp.profile.spec_hash
    )


def _record(inp: PlanInput, node: NodeView, evaluation: Evaluation, token: str) -> NodeRecord:
    """The verdict's record with its text cleaned (text.py), but what identifies the verdict verbatim: a
    later pass compares it with the live values."""
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
    )


class _Builder:
    """Accumulates one plan; each node is classified exactly once."""

    def __init__(self, inp: PlanInput) -> None:
        self.inp = inp
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
        self.context = (inp.profile.name, inp.profile.spec_hash, inp.profile_revalidate)
        memo = inp.memo
        self.memo = memo.idle if memo is not None and memo.context == self.context else {}
        self.idle: dict[str, Idle] = {}

    def token(self, node: NodeView) -> str:
        return f"{self.inp.profile_revalidate}/{node.annotations.get(L.REVALIDATE_ANNOTATION, '')}"

    def label(self, node: NodeView, evaluation: Evaluation) -> None:
        record = _record(self.inp, node, evaluation, self.token(node))
        patch = L.verdict_patch(self.inp.profile.name, node.labels, node.annotations, evaluation.verdict, record)
        previous = node.labels.get(L.label_key(self.inp.profile.name))
        self.update.append(NodeUpdate(node.name, patch, evaluation.verdict, previous, evaluation))
        self.labels[node.name] = evaluation.verdict
        self.state[node.name] = evaluation.verdict
        if self.inp.profile.revalidate_after_seconds is not None:
            self.wakes.append(self.inp.now + self.inp.profile.revalidate_after_seconds)

    def migrate(self) -> None:
        """Drop the legacy owned-labels list from the nodes this pass does not patch, once nothing needs it
        (labels.py): a validated node may not be written again for a long time."""
        patched = {u.node for u in self.update}
        for node in self.inp.nodes:
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
            self.label(node, evaluate_pod(p, pod, node.labels))
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
            return
        static = idle.static
        if static.verdict == "incompatible":
            self.label(node, Evaluation("incompatible", static.reasons))
        elif not node.ready or node.unschedulable:
            self.state[node.name] = "skipped"
            self.waiting_reason[node.name] = "NodeNotReady" if not node.ready else "NodeCordoned"
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

    def schedule(self, matched: Mapping[str, NodeView]) -> None:
        """Fill free slots: one node of each hardware kind first, so the fleet's picture appears early."""
        if self.blocked or self.pull_failure is not None:
            return
        self.running -= len(self.retrying)  # their slots are the first to fill
        slots = max(0, self.inp.profile.max_concurrent - self.running)
        if not slots or not (self.candidates or self.retrying):
            return
        wanted = {node.kind for node in self.candidates}
        covered: set[tuple[str, str]] = set()
        for name, node in matched.items():
            if node.kind in wanted and self.state.get(name) in COVERING:
                covered.add(node.kind)
                if len(covered) == len(wanted):
                    break
        first: list[NodeView] = []
        rest: list[NodeView] = []
        for node in self.candidates:
            if node.kind in covered:
                rest.append(node)
            else:
                covered.add(node.kind)
                first.append(node)
        for node in (self.retrying + first + rest)[:slots]:
            self.create.append(build_pod(
                self.inp.profile, node=node.name, fingerprint=node.fingerprint,
                namespace=self.inp.namespace, configmap=self.inp.configmap,
            ))
            if node.name not in self.backoff:  # a refused node stays waiting until its pod exists
                self.state[node.name] = "running"
            self.running += 1


def compute_plan(inp: PlanInput) -> Plan:
    b = _Builder(inp)
    p = inp.profile
    key = L.label_key(p.name)
    matched = {node.name: node for node in inp.nodes if selects(p, node)}
    pods = {pod.node: pod for pod in inp.pods}
    for pod in inp.pods:
        if pod.node not in matched and not pod.deleting:
            b.delete.append(DeletePod(pod.name, pod.node, "NodeNotSelected"))
    for node in inp.nodes:
        if node.name in matched:
            continue
        patch = L.removal_patch(p.name, node.labels, node.annotations)
        if patch is not None:
            b.update.append(NodeUpdate(node.name, patch, None, node.labels.get(key)))
    steady = p.revalidate_after_seconds is None
    for name in _ordered(inp, matched):
        node = matched[name]
        found = pods.get(name)
        if found is not None:
            b.pod_safely(node, found)
            continue
        hit = b.memo.get(name)
        if steady and hit is not None and hit.view is node and hit.recorded_at is not None:
            b.idle[name] = hit  # the common case on a validated fleet, without the calls of without_pod
            b.state[name] = node.labels[key]
        else:
            b.without_pod(node)
    b.schedule(matched)
    b.migrate()
    if inp.memo is not None:
        inp.memo.context, inp.memo.idle = b.context, b.idle
    status = _status(inp, b, matched)
    b.events.extend(_events(inp, b, status))
    return Plan(
        create=tuple(b.create),
        delete=tuple(b.delete),
        update=tuple(b.update),
        events=tuple(EventSpec(e.type, e.reason, clean_text(e.message)) for e in b.events),
        status=clean_tree(status),
        retry_after=b.retry_after,
        wake_at=min(b.wakes) if b.wakes else None,
        create_backoff={n: backoff for n, backoff in b.backoff.items() if n in matched},
        failures=tuple(b.failures),
    )


def _ordered(inp: PlanInput, matched: Mapping[str, NodeView]) -> list[str]:
    """The selected nodes in the profile's order; sorted again only when the selection changed."""
    memo = inp.memo
    if memo is not None and len(memo.order) == len(matched) and matched.keys() == set(memo.order):
        return memo.order
    order = sorted(matched, key=lambda n: validation_order(inp.profile.name, n))
    if memo is not None:
        memo.order = order
    return order


def _verdicts(inp: PlanInput, b: _Builder, matched: Mapping[str, NodeView]) -> dict[str, str | None]:
    """Each selected node's label once this plan is applied."""
    key = L.label_key(inp.profile.name)
    fresh = b.labels
    return {name: fresh[name] if name in fresh else node.labels.get(key) for name, node in matched.items()}


def _failing(
    inp: PlanInput, b: _Builder, matched: Mapping[str, NodeView], verdicts: Mapping[str, str | None]
) -> list[dict[str, Any]]:
    fresh = {u.node: u.evaluation for u in b.update if u.evaluation is not None}
    failing = sorted(name for name, verdict in verdicts.items() if verdict in ("failed", "error", "incompatible"))
    out: list[dict[str, Any]] = []
    for name in failing[:MAX_FAILING_NODES]:
        evaluation = fresh.get(name)
        if evaluation is not None:
            reasons = [str(r) for r in evaluation.reasons]
        else:
            record = NodeRecord.from_annotation(
                matched[name].annotations.get(L.result_annotation_key(inp.profile.name), "{}")
            )
            reasons = [r[:200] for r in record.reasons[:4]] if record is not None else []
        out.append({"node": name, "verdict": verdicts[name], "reasons": reasons[:4]})
    return out


def _counts(b: _Builder, matched: Mapping[str, NodeView], verdicts: Mapping[str, str | None]) -> dict[str, int]:
    by_verdict = Counter(verdicts.values())
    states = Counter(b.state.values())
    counts: dict[str, int] = {verdict: by_verdict[verdict] for verdict in L.VERDICTS}
    counts["pending"] = states["pending"] + states["waiting"] + states["running"]
    counts.update(running=states["running"], waiting=states["waiting"], skipped=states["skipped"])
    counts["total"] = len(matched)
    return counts


def _condition(
    previous: Mapping[str, Mapping[str, Any]], now: float, generation: int,
    type_: str, status: bool, reason: str, message: str,
) -> dict[str, Any]:
    value = "True" if status else "False"
    old = previous.get(type_) or {}
    changed = old.get("status") != value
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message[:1000],
        "observedGeneration": generation,
        "lastTransitionTime": iso(now) if changed or "lastTransitionTime" not in old else old["lastTransitionTime"],
    }


def invalid_spec_status(
    previous: Mapping[str, Any], meta: Mapping[str, Any], message: str, now: float
) -> dict[str, Any]:
    """Status for a spec the schema let through but the operator cannot use: say why, change nothing else."""
    generation = int(meta.get("generation") or 1)
    old = {str(c.get("type")): c for c in previous.get("conditions") or [] if isinstance(c, Mapping)}
    return {
        **{k: v for k, v in previous.items() if k in ("counts", "failingNodes")},
        "observedGeneration": generation,
        "conditions": [
            _condition(old, now, generation, "Ready", False, "InvalidSpec", message),
            _condition(old, now, generation, "Progressing", False, "InvalidSpec",
                       "fix the spec; nothing is validated from it"),
            _condition(old, now, generation, "Degraded", True, "InvalidSpec", message),
        ],
    }


def pass_failed_status(
    previous: Mapping[str, Any], generation: int, message: str, now: float
) -> dict[str, Any]:
    """The last status with Degraded=True (PassFailed) saying why planning passes fail: the rest is what
    the last pass that worked computed, since nothing newer is known."""
    old = {str(c.get("type")): c for c in previous.get("conditions") or [] if isinstance(c, Mapping)}
    degraded = _condition(old, now, generation, "Degraded", True, "PassFailed", message)
    return {
        **previous,
        "conditions": [degraded if t == "Degraded" else dict(old[t]) for t in CONDITION_TYPES
                       if t == "Degraded" or t in old],
    }


def _status(inp: PlanInput, b: _Builder, matched: Mapping[str, NodeView]) -> dict[str, Any]:
    labelled = _verdicts(inp, b, matched)
    counts = _counts(b, matched, labelled)
    pull = b.pull_failure or (inp.status.get("imagePull") if b.blocked else None)
    previous = {str(c.get("type")): c for c in inp.status.get("conditions") or [] if isinstance(c, Mapping)}
    gen = inp.profile.generation
    converged = counts["pending"] == 0
    verdicts = ", ".join(f"{counts[v]} {v}" for v in L.VERDICTS)
    if pull:
        ready = (False, "ImagePullFailed", f"cannot pull {inp.profile.image}: {pull.get('message', '')}")
    elif converged:
        skipped = f"; {counts['skipped']} not ready or cordoned" if counts["skipped"] else ""
        ready = (True, "Converged", f"{verdicts}{skipped}")
    elif counts["pending"] == counts["waiting"]:
        # waitingNodes lists the skipped nodes too: the message counts every node it lists
        skipped = f" and {counts['skipped']} not ready or cordoned" if counts["skipped"] else ""
        ready = (False, "Waiting",
                 f"{counts['waiting']} of {counts['total']} nodes waiting{skipped} (see waitingNodes)")
    else:
        ready = (False, "Validating", f"{counts['pending']} of {counts['total']} nodes awaiting a verdict")
    if pull:
        progressing = (False, "Blocked", "waiting for the image or the spec to change")
    elif converged:
        progressing = (False, "Converged", verdicts)
    elif counts["pending"] == counts["waiting"]:
        progressing = (False, "Waiting", "nothing can run now: pods unschedulable or retrying later")
    else:
        progressing = (True, "Validating", f"{counts['running']} pods running, {counts['pending']} nodes pending")
    refused = sorted(b.refused_nodes)
    if pull:
        degraded = (True, "ImagePullFailed", str(pull.get("message", "")))
    elif refused:
        degraded = (True, "PodCreateRefused", f"{len(refused)} node(s) get no validation pod; {refused[0]}: "
                                              f"{b.backoff[refused[0]].reason}")
    else:
        degraded = (False, "AsExpected", "")
    conditions = [
        _condition(previous, inp.now, gen, t, *spec)
        for t, spec in zip(CONDITION_TYPES, (ready, progressing, degraded), strict=True)
    ]
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "conditions": conditions,
        "counts": counts,
        "failingNodes": _failing(inp, b, matched, labelled),
        "waitingNodes": [
            {"node": node, "reason": reason}
            for node, reason in sorted(b.waiting_reason.items())[:MAX_FAILING_NODES]
        ],
        "imagePull": dict(pull) if pull else None,
    }
    return status


def _events(inp: PlanInput, b: _Builder, status: Mapping[str, Any]) -> Iterable[EventSpec]:
    """Events per transition, never per loop: verdict changes and condition changes."""
    newly = [u for u in b.update if u.verdict is not None and u.verdict != u.previous]
    for u in newly:
        if u.verdict != "passed" and u.evaluation is not None:
            reasons = "; ".join(str(r) for r in u.evaluation.reasons[:3])
            yield EventSpec("Warning", "NodeValidated", f"node {u.node} {u.verdict}: {reasons}"[:1000])
    passed = sum(1 for u in newly if u.verdict == "passed")
    if passed:
        yield EventSpec("Normal", "NodesPassed", f"{passed} node(s) passed validation")
    previous = {c.get("type"): c.get("status") for c in inp.status.get("conditions") or [] if isinstance(c, Mapping)}
    for cond in status["conditions"]:
        if previous.get(cond["type"]) != cond["status"] and (cond["type"] != "Degraded" or cond["status"] == "True"):
            kind = "Warning" if cond["type"] == "Degraded" or cond["reason"] == "ImagePullFailed" else "Normal"
            yield EventSpec(kind, f"{cond['type']}{cond['status']}", f"{cond['reason']}: {cond['message']}"[:1000])
