"""channelsLast: a convolution in channels-last memory format agrees with the contiguous one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torchproof.checks.base import Check, CheckOutcome, Observed, SimulatedPod, cuda_failure, fmt
from torchproof.checks.fields import REL_ERROR, Validator, boolean, number, optional
from torchproof.profile import ChannelsLastCheck, Checks
from torchproof.reasons import Reason

if TYPE_CHECKING:
    from torchproof.result import ProbeResult


class ChannelsLast(Check[ChannelsLastCheck]):
    name = "channelsLast"
    schema: ClassVar[Mapping[str, Validator]] = {
        "finite": optional(boolean), "maxRelError": optional(number(REL_ERROR)),
    }
    proof = ("finite", "maxRelError")
    simulated_seconds = 0.4

    def settings(self, checks: Checks) -> ChannelsLastCheck:
        return checks.channels_last

    def judge(self, settings: ChannelsLastCheck, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        error = outcome.number("maxRelError")
        if outcome.flag("finite") is False:
            return [Reason("ChannelsLastMismatch", "channels-last output not finite")]
        if error is not None and error > settings.tolerance:
            return [Reason("ChannelsLastMismatch", f"relative error {error:.3g} > {settings.tolerance:g}")]
        return []

    def describe(self, result: ProbeResult, outcome: CheckOutcome) -> str:
        return f"finite {fmt(outcome.flag('finite'))}, rel err {fmt(outcome.number('maxRelError'))}"

    def simulate(self, pod: SimulatedPod, payload: Mapping[str, Any]) -> dict[str, Any]:
        failed = cuda_failure(pod)
        if failed is not None:
            return failed
        return {"status": "ok", "seconds": self.simulated_seconds, "finite": True, "maxRelError": 0.002}


CHECK = ChannelsLast()
