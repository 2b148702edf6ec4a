"""What the breaker, the gating cap and the performance summary weigh of every selected node's record, kept
as sums that change only for the nodes a pass classifies again (plantypes.Tally holds them): a pass then
costs the nodes that changed, not the fleet.

Each selected node adds its `Marks`: what its record (and gating claim) says, reduced to the few facts the
sums need. The window of the breaker moves with the clock, so what it counts is kept as sorted times and
counted by bisection.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TypeVar

from torchproof import history as H
from torchproof.contract import NodeRecord
from torchproof.views import NodeView

FAILING = frozenset({"failed"})  # an error is the probe's or the node's trouble, not the release's

Kind = tuple[str, str]  # views.NodeView.kind
K = TypeVar("K", bound=Hashable)


def flipped(record: NodeRecord) -> bool:
    """The record turned a passed node's label to failed."""
    return record.verdict in FAILING and bool(record.history) and record.history[-1].get("verdict") == "passed"


@dataclass(frozen=True)
class Marks:
    """One selected node's part of the sums: its record once the plan is applied, and its gating claim."""

    kind: Kind
    record: NodeRecord | None
    claim_at: float | None  # when its gating taint was claimed (gating.py)
    current: bool  # the record is for the spec being validated
    product: str  # history.product
    value: float | None  # history.latest, counted only with a product
    regressed: bool  # the record carries a PerformanceRegression finding


def marks(node: NodeView, record: NodeRecord | None, claim_at: float | None, spec_hash: str) -> Marks:
    if record is None:
        return Marks(node.kind, None, claim_at, False, "", None, False)
    product = H.product(node, record.numbers)
    return Marks(
        node.kind, record, claim_at, record.spec_hash == spec_hash, product,
        H.latest(record) if product else None, any(f.startswith(H.REGRESSION) for f in record.findings),
    )


def _since(times: list[float], start: float, resumed_at: float | None) -> int:
    """How many of the sorted `times` are at or after `start` and after `resumed_at` (breaker._counts)."""
    i = bisect.bisect_left(times, start)
    if resumed_at is not None:
        i = max(i, bisect.bisect_right(times, resumed_at))
    return len(times) - i


def _insert(lists: dict[K, list[float]], key: K, value: float) -> None:
    bisect.insort(lists.setdefault(key, []), value)


def _delete(times: list[float], value: float) -> None:
    del times[bisect.bisect_left(times, value)]


def _delete_in(lists: dict[K, list[float]], key: K, value: float) -> None:
    times = lists[key]
    _delete(times, value)
    if not times:
        del lists[key]


def _bump(counter: Counter[K], key: K, step: int) -> None:
    counter[key] += step
    if not counter[key]:
        del counter[key]


@dataclass
class RecordSums:
    """The sums of the selected nodes' Marks. Equal sums for equal sets of marks: empty keys are dropped."""

    total: int = 0
    kinds: Counter[Kind] = field(default_factory=Counter)
    flips: list[float] = field(default_factory=list)  # when each flipping record was written
    claims: list[float] = field(default_factory=list)  # the gating claims' times
    judged: dict[Kind, list[float]] = field(default_factory=dict)  # current records, not incompatible
    incompatible: dict[Kind, list[float]] = field(default_factory=dict)  # current records, incompatible
    failed: list[float] = field(default_factory=list)  # current records that failed
    values: dict[str, list[float]] = field(default_factory=dict)  # each product's key numbers, sorted
    regressed: Counter[str] = field(default_factory=Counter)

    def copy(self) -> RecordSums:
        return RecordSums(
            self.total, Counter(self.kinds), list(self.flips), list(self.claims),
            {k: list(v) for k, v in self.judged.items()}, {k: list(v) for k, v in self.incompatible.items()},
            list(self.failed), {k: list(v) for k, v in self.values.items()}, Counter(self.regressed),
        )

    def add(self, m: Marks) -> None:
        self._change(m, 1)

    def remove(self, m: Marks) -> None:
        self._change(m, -1)

    def _change(self, m: Marks, step: int) -> None:
        """Add (`step` 1) or remove (-1) one node's marks: one walk, so the two can never disagree."""
        put = bisect.insort if step > 0 else _delete
        put_in = _insert if step > 0 else _delete_in
        self.total += step
        _bump(self.kinds, m.kind, step)
        if m.claim_at is not None:
            put(self.claims, m.claim_at)
        if m.product and m.value is not None:
            put_in(self.values, m.product, m.value)
        if m.regressed:
            _bump(self.regressed, m.product, step)
        at = m.record.at if m.record is not None else None
        if m.record is None or at is None:
            return
        if flipped(m.record):
            put(self.flips, at)
        if m.current:
            if m.record.verdict == "incompatible":
                put_in(self.incompatible, m.kind, at)
            else:
                put_in(self.judged, m.kind, at)
                if m.record.verdict in FAILING:
                    put(self.failed, at)

    def flips_since(self, start: float, resumed_at: float | None) -> int:
        return _since(self.flips, start, resumed_at)

    def claims_since(self, start: float) -> int:
        return _since(self.claims, start, None)

    def canary(self, start: float, resumed_at: float | None) -> tuple[int, int, bool]:
        """Of the current records within the window: how many judged, how many failed, and whether every
        hardware kind with a node not incompatible has one judged."""
        judged = {kind: _since(times, start, resumed_at) for kind, times in self.judged.items()}
        wanted = {kind for kind, n in self.kinds.items()
                  if n > _since(self.incompatible.get(kind, []), start, resumed_at)}
        covered = {kind for kind, n in judged.items() if n}
        return sum(judged.values()), _since(self.failed, start, resumed_at), wanted <= covered

    def medians(self) -> dict[str, float]:
        return {product: H.median(v) for product, v in self.values.items()}
