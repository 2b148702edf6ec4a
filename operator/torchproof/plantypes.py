"""The plan's input and output, and the values its parts hand each other (see plan.py)."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torchproof import labels as L
from torchproof.compat import CompatResult
from torchproof.gating import GateUpdate
from torchproof.podspec import PodTemplate
from torchproof.profile import Profile
from torchproof.recordsums import Marks, RecordSums
from torchproof.verdict import Evaluation
from torchproof.views import NodeView, PodView

LOST_GRACE_SECONDS = 60.0  # past a pod's deadline (or its deletion) before the operator stops waiting on it
AFTER_LABEL = frozenset({"Completed", "ProbeLost", "EvaluationFailed"})  # deletions that wait for the label
COVERING = frozenset({"running", *L.VERDICTS})  # a node in these states shows what its hardware kind does
FAILING = frozenset({"failed", "error", "incompatible"})  # the verdicts listed in failingNodes


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


@dataclass(frozen=True)
class Entry:
    """One node as a pass classified it, and so what it adds to the `Tally`.

    `stable`: the next pass reuses the entry as it is while the node's view is the same object — a node
    without a pod whose record stands, or that is skipped, or a candidate waiting for a slot, or one not
    selected and carrying nothing of the profile. Any other node (a pod, a write in flight, a retry or a
    backoff) is classified again on every pass.
    """

    view: NodeView
    order: tuple[int, str]  # schedule.validation_order
    selected: bool
    stable: bool
    state: str | None = None
    verdict: str | None = None  # its label once the plan is applied
    waiting: str | None = None  # its waitingNodes reason
    candidate: bool = False
    idle: Idle | None = None
    expires: float | None = None  # its record is current until then (revalidateAfter)
    marks: Marks | None = None  # a selected node's record once the plan is applied, and its claim


@dataclass
class Tally:
    """The sums over every node's entry that the status and the slots need, kept as entries come and go, so
    that a pass adds and removes only the nodes it classifies again. Copied at the start of each pass: the
    one in a memo is never changed."""

    selected: int = 0
    states: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str | None] = field(default_factory=Counter)
    waiting: dict[str, str] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    covering: Counter[tuple[str, str]] = field(default_factory=Counter)  # hardware kinds with a COVERING node
    candidate_kinds: Counter[tuple[str, str]] = field(default_factory=Counter)
    candidates: list[tuple[int, str]] = field(default_factory=list)  # their `order`, sorted
    expiries: list[tuple[float, str]] = field(default_factory=list)  # the entries' `expires`, sorted
    sums: RecordSums = field(default_factory=RecordSums)  # the entries' `marks`

    def copy(self) -> Tally:
        return Tally(self.selected, Counter(self.states), Counter(self.verdicts), dict(self.waiting),
                     set(self.failing), Counter(self.covering), Counter(self.candidate_kinds), list(self.candidates),
                     list(self.expiries), self.sums.copy())

    def expired(self, now: float) -> list[str]:
        """The nodes whose record revalidateAfter has ended by `now`."""
        return [name for _, name in self.expiries[:bisect.bisect_right(self.expiries, now, key=lambda e: e[0])]]

    def add(self, entry: Entry) -> None:
        if not entry.selected:
            return
        name, kind = entry.view.name, entry.view.kind
        self.selected += 1
        self.states[entry.state or ""] += 1
        self.verdicts[entry.verdict] += 1
        if entry.verdict in FAILING:
            self.failing.add(name)
        if entry.waiting is not None:
            self.waiting[name] = entry.waiting
        if entry.state in COVERING:
            self.covering[kind] += 1
        if entry.candidate:
            bisect.insort(self.candidates, entry.order)
            self.candidate_kinds[kind] += 1
        if entry.expires is not None:
            bisect.insort(self.expiries, (entry.expires, name))
        if entry.marks is not None:
            self.sums.add(entry.marks)

    def remove(self, entry: Entry) -> None:
        if not entry.selected:
            return
        name, kind = entry.view.name, entry.view.kind
        self.selected -= 1
        _less(self.states, entry.state or "")
        _less(self.verdicts, entry.verdict)
        self.failing.discard(name)
        self.waiting.pop(name, None)
        if entry.state in COVERING:
            _less(self.covering, kind)
        if entry.candidate:
            del self.candidates[bisect.bisect_left(self.candidates, entry.order)]
            _less(self.candidate_kinds, kind)
        if entry.expires is not None:
            del self.expiries[bisect.bisect_left(self.expiries, (entry.expires, name))]
        if entry.marks is not None:
            self.sums.remove(entry.marks)


def _less(counter: Counter[Any], key: object) -> None:
    counter[key] -= 1
    if not counter[key]:
        del counter[key]


@dataclass(frozen=True)
class PlanMemo:
    """What the last pass of a profile made of each node, handed to the next: a plan's input
    (`PlanInput.memo`) and its output (`Plan.memo`), never changed in place.

    A cache only: a plan is the same with it or without it. It holds while the profile, its revalidate
    token and whether its image pull is blocked are unchanged; a pass then classifies again only the nodes
    whose view changed (`PlanInput.changed`, else those whose view is not the entry's object), those with a
    pod, a retry or a create backoff, and the `unstable` ones: a validated fleet costs nothing per node.
    """

    context: tuple[object, ...] = ()
    entries: Mapping[str, Entry] = field(default_factory=dict)
    tally: Tally = field(default_factory=Tally)
    unstable: frozenset[str] = frozenset()
    pods: PodTemplate | None = None  # the profile's pod template, rebuilt only when its key differs


@dataclass(frozen=True)
class PlanInput:
    profile: Profile
    nodes: Sequence[NodeView] | Mapping[str, NodeView]  # a mapping: by name
    pods: Sequence[PodView]
    now: float
    namespace: str
    configmap: str
    status: Mapping[str, Any] = field(default_factory=dict)
    retry_after: Mapping[str, float] = field(default_factory=dict)
    profile_revalidate: str = ""
    profile_resume: str = ""  # the profile's resume-rollout annotation (breaker.py)
    memo: PlanMemo | None = None
    changed: Collection[str] | None = None  # the nodes whose views may differ from the memo's; None: any
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
    gates: tuple[GateUpdate, ...] = ()  # gating taints to add or remove (gating.py)
    waiting: Mapping[str, str] = field(default_factory=dict)  # node -> why it waits (all, unlike the status)
    memo: PlanMemo = field(default_factory=PlanMemo, compare=False)  # for the next pass's input
