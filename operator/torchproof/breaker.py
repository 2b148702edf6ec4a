"""The rollout canary and circuit breaker of one profile (docs/steering.md): pure, from the records.

A wave (a new spec, or a driver rollout that changes fingerprints) validates one node of each hardware kind
first (schedule.fill_slots). Once every kind among the selected nodes has a verdict for the current spec,
the wave pauses if more than `maxFailurePercent` of the nodes judged within the window failed: no new
validation pods, no new gating taints. The breaker also caps, within the window, the share of nodes whose
label flips from passed to failed (a flip beyond it is held: the label stays, the finished pod stays, and
the wave pauses) and the share of nodes given a gating taint.

A pause holds until the spec changes or someone sets the profile's `torchproof.dev/resume-rollout`
annotation to a new value; verdicts from before the resume then no longer count. The state lives in the
profile's status (`status.rollout`), so a restart keeps it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torchproof.contract import NodeRecord, iso, parse_time
from torchproof.profile import Profile

RESUME_ANNOTATION = "torchproof.dev/resume-rollout"
MAX_TOKEN = 256  # characters of the resume annotation kept in the status (the CRD's bound)
FAILING = frozenset({"failed"})  # an error is the probe's or the node's trouble, not the release's


def _share(total: int, percent: int) -> int:
    """How many of `total` nodes a percentage allows; at least one."""
    return max(1, total * percent // 100)


def flipped(record: NodeRecord) -> bool:
    """The record turned a passed node's label to failed."""
    return record.verdict in FAILING and bool(record.history) and record.history[-1].get("verdict") == "passed"


def _counts(record: NodeRecord, window_start: float, resumed_at: float | None) -> bool:
    """Written within the window and after the last resume (a verdict of the resume's second is older)."""
    return record.at is not None and record.at >= window_start and (resumed_at is None or record.at > resumed_at)


@dataclass
class Rollout:
    """One pass's breaker: what the records say so far, updated as the pass judges nodes."""

    profile: Profile
    now: float
    window_start: float  # verdicts older than this do not count, nor those not after the last resume
    paused: bool
    reason: str
    message: str
    paused_at: float | None
    resumed: str
    resumed_at: float | None
    flips_left: int
    taints_left: int

    @classmethod
    def read(cls, profile: Profile, records: Iterable[NodeRecord | None], total: int,
             gate_claims: Iterable[float], previous: Mapping[str, Any], resume: str, now: float) -> Rollout:
        """`records`: the selected nodes'; `gate_claims`: when each gating taint now on them was added."""
        window = profile.rollout.window_seconds
        resumed = str(previous.get("resumed") or "")
        resumed_at = parse_time(previous.get("resumedAt"))
        latched = bool(previous.get("paused")) and previous.get("specHash") == profile.spec_hash
        resume = resume[:MAX_TOKEN]  # as status.rollout.resumed holds it
        if resume and resume != resumed:
            resumed, resumed_at, latched = resume, now, False
        flips = sum(1 for r in records if r is not None and _counts(r, now - window, resumed_at) and flipped(r))
        claims = sum(1 for at in gate_claims if at >= now - window)
        return cls(
            profile, now, now - window, latched,
            str(previous.get("reason") or "") if latched else "",
            str(previous.get("message") or "") if latched else "",
            parse_time(previous.get("since")) if latched else None,
            resumed, resumed_at,
            _share(total, profile.rollout.max_flip_percent) - flips,
            _share(total, profile.rollout.max_taint_percent) - claims,
        )

    def pause(self, reason: str, message: str) -> None:
        if not self.paused:
            self.paused, self.reason, self.message, self.paused_at = True, reason, message, self.now

    def hold_flip(self) -> bool:
        """A passed node is about to be labelled failed: True when the breaker holds the flip."""
        if self.paused:
            return True
        if self.flips_left <= 0:
            pct = self.profile.rollout.max_flip_percent
            self.pause("TooManyFlips", f"more than {pct}% of the nodes would lose their passed label within "
                                       f"{self.profile.rollout.window}; the rest of these flips are held")
            return True
        self.flips_left -= 1
        return False

    def take_taint(self) -> bool:
        """A node is about to get a gating taint: False when the breaker refuses it."""
        if self.paused or self.taints_left <= 0:
            return False
        self.taints_left -= 1
        return True

    def judge(self, records: Mapping[str, NodeRecord | None], kinds: Mapping[str, tuple[str, str]]) -> None:
        """Pause when the canary is complete (a verdict on every hardware kind) and too many failed."""
        spec = self.profile.spec_hash
        current = {n: r for n, r in records.items()
                   if r is not None and r.spec_hash == spec and _counts(r, self.window_start, self.resumed_at)}
        judged = {n: r for n, r in current.items() if r.verdict != "incompatible"}
        incompatible = {n for n, r in current.items() if r.verdict == "incompatible"}
        wanted = {kind for n, kind in kinds.items() if n not in incompatible}
        if not judged or not wanted <= {kinds[n] for n in judged if n in kinds}:
            return
        failed = sum(1 for r in judged.values() if r.verdict in FAILING)
        pct = self.profile.rollout.max_failure_percent
        if failed * 100 > pct * len(judged):
            self.pause("FailureRatio", f"{failed} of the {len(judged)} nodes judged for spec {spec} failed, more "
                                       f"than {pct}%: the rest of the wave waits")

    def status(self) -> dict[str, Any]:
        return {
            "paused": self.paused, "specHash": self.profile.spec_hash, "reason": self.reason or None,
            "message": self.message or None, "since": iso(self.paused_at) if self.paused_at is not None else None,
            "resumed": self.resumed or None,
            "resumedAt": iso(self.resumed_at) if self.resumed_at is not None else None,
        }
