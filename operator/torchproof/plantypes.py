"""The plan's input and output, and the values its parts hand each other (see plan.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torchproof import labels as L
from torchproof.compat import CompatResult
from torchproof.profile import Profile
from torchproof.verdict import Evaluation
from torchproof.views import NodeView, PodView

LOST_GRACE_SECONDS = 60.0  # past a pod's deadline (or its deletion) before the operator stops waiting on it
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
class PlanMemo:
    """What each node without a pod had on record, handed from one pass of a profile to the next: a plan's
    input (`PlanInput.memo`) and its output (`Plan.memo`), never changed in place.

    A cache only: a plan is the same with it or without it. An entry is reused while the node's view is
    the same object (the informer replaces a view when its node changes) and the profile's spec and
    revalidate token are unchanged; a pass then reads one dict entry per unchanged node, not its record.
    """

    context: tuple[object, ...] = ()
    idle: Mapping[str, Idle] = field(default_factory=dict)
    order: tuple[str, ...] = ()  # the selected nodes in `validation_order`


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
    waiting: Mapping[str, str] = field(default_factory=dict)  # node -> why it waits (all, unlike the status)
    memo: PlanMemo = field(default_factory=PlanMemo, compare=False)  # for the next pass's input
