"""The breaker's sums kept per node (recordsums.py) count what a walk over every record counts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from torchproof.contract import NodeRecord
from torchproof.recordsums import FAILING, Marks, RecordSums, flipped

KINDS = [("Tesla-T4", "450"), ("A100-SXM4-40GB", "450"), ("", "")]
SPEC = "s1"


@st.composite
def node_marks(draw: st.DrawFn) -> Marks:
    record = None
    if draw(st.booleans()):
        verdict = draw(st.sampled_from(["passed", "failed", "error", "incompatible"]))
        history = ({"verdict": draw(st.sampled_from(["passed", "failed"]))},) if draw(st.booleans()) else ()
        record = NodeRecord(verdict=verdict, at=draw(st.none() | st.integers(0, 20).map(float)), generation=1,
                            spec_hash=draw(st.sampled_from([SPEC, "old"])), history=history)
    claim = draw(st.none() | st.integers(0, 20).map(float))
    return Marks(draw(st.sampled_from(KINDS)), record, claim, record is not None and record.spec_hash == SPEC,
                 "", None, False)


def counts(at: float | None, start: float, resumed: float | None) -> bool:
    return at is not None and at >= start and (resumed is None or at > resumed)


@given(st.lists(node_marks(), max_size=30), st.data(), st.integers(0, 20).map(float),
       st.none() | st.integers(0, 20).map(float))
def test_sums_count_flips_claims_and_the_canary_as_a_walk_over_the_records(
    every: list[Marks], data: st.DataObject, start: float, resumed: float | None,
) -> None:
    gone = data.draw(st.sets(st.integers(0, max(len(every) - 1, 0))))
    sums = RecordSums()
    for m in every:
        sums.add(m)
    for i in sorted(gone):
        if i < len(every):
            sums.remove(every[i])
    kept = [m for i, m in enumerate(every) if i not in gone]
    again = RecordSums()
    for m in kept:
        again.add(m)
    assert sums == again, "removing a node's marks leaves the sums of the others"
    records = [(m.kind, m.record) for m in kept]
    assert sums.total == len(kept)
    assert sums.flips_since(start, resumed) == sum(
        1 for _, r in records if r is not None and counts(r.at, start, resumed) and flipped(r))
    assert sums.claims_since(start) == sum(1 for m in kept if m.claim_at is not None and m.claim_at >= start)
    current = [(k, r) for k, r in records if r is not None and r.spec_hash == SPEC and counts(r.at, start, resumed)]
    judged = [(k, r) for k, r in current if r.verdict != "incompatible"]
    incompatible = {id(r) for _, r in current if r.verdict == "incompatible"}
    wanted = {k for k, r in records if id(r) not in incompatible}
    assert sums.canary(start, resumed) == (
        len(judged), sum(1 for _, r in judged if r.verdict in FAILING), wanted <= {k for k, _ in judged})
