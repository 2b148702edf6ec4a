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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torchproof.contract import iso, parse_time
from torchproof.profile import Profile
from torchproof.recordsums import RecordSums

RESUME_ANNOTATION = "torchproof.dev/resume-rollout"
MAX_TOKEN = 256  # characters of the resume annotation kept in the status (the CRD's bound)


def _share(total: int, percent: int) -> int:
    """How many of `total` nodes a percentage allows; at least one."""
    return max(1, total * percent // 100)


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
    def read(cls, profile: Profile, sums: RecordSums, previous: Mapping[str, Any], resume: str,
             now: float) -> Rollout:
        """`sums`: over the selected nodes' records and gating claims as the pass finds them."""
        window = profile.rollout.window_seconds
        resumed = str(previous.get("resumed") or "")
        resumed_at = parse_time(previous.get("resumedAt"))
        latched = bool(previous.get("paused")) and previous.get("specHash") == profile.spec_hash
        resume = resume[:MAX_TOKEN]  # as status.rollout.resumed holds it
        if resume and resume != resumed:
            resumed, resumed_at, latched = resume, now, False
        flips, claims, total = sums.flips_since(now - window, resumed_at), sums.claims_since(now - window), sums.total
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

    def judge(self, sums: RecordSums) -> None:
        """Pause when the canary is complete (a verdict on every hardware kind) and too many failed; `sums`:
        over the selected nodes' records once the plan is applied. Only records of the current spec, within
        the window and after the last resume (a verdict of the resume's second is older) count."""
        judged, failed, complete = sums.canary(self.window_start, self.resumed_at)
        if not judged or not complete:
            return
        pct = self.profile.rollout.max_failure_percent
        if failed * 100 > pct * judged:
            self.pause("FailureRatio", f"{failed} of the {judged} nodes judged for spec {self.profile.spec_hash} "
                                       f"failed, more than {pct}%: the rest of the wave waits")

    def status(self) -> dict[str, Any]:
        return {
            "paused": self.paused, "specHash": self.profile.spec_hash, "reason": self.reason or None,
            "message": self.message or None, "since": iso(self.paused_at) if self.paused_at is not None else None,
            "resumed": self.resumed or None,
            "resumedAt": iso(self.resumed_at) if self.resumed_at is not None else None,
        }
