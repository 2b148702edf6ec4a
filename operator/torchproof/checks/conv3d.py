"""conv3d: repeated cuDNN 3D convolutions produce no NaN."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torchproof.checks.base import Check, CheckOutcome, Observed, SimulatedPod, cuda_failure, fmt
from torchproof.checks.fields import COUNT, STEPS, Validator, integer, optional
from torchproof.profile import Checks, Conv3dCheck
from torchproof.reasons import Reason

if TYPE_CHECKING:
    from torchproof.result import ProbeResult


class Conv3d(Check[Conv3dCheck]):
    name = "conv3d"
    schema: ClassVar[Mapping[str, Validator]] = {
        "iterations": optional(integer(STEPS)), "nanCount": optional(integer(COUNT)),
    }
    proof = ("nanCount",)
    simulated_seconds = 0.6

    def settings(self, checks: Checks) -> Conv3dCheck:
        return checks.conv3d

    def payload(self, settings: Conv3dCheck) -> dict[str, Any]:
        return {"iterations": settings.iterations}

    def judge(self, settings: Conv3dCheck, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        nans = outcome.number("nanCount")
        return [Reason("Conv3dNaN", f"{int(nans)} NaN outputs in cuDNN 3D convolution")] if nans else []

    def describe(self, result: ProbeResult, outcome: CheckOutcome) -> str:
        return f"{fmt(outcome.data.get('nanCount'))} NaN in {fmt(outcome.data.get('iterations'))} iterations"

    def simulate(self, pod: SimulatedPod, payload: Mapping[str, Any]) -> dict[str, Any]:
        failed = cuda_failure(pod)
        if failed is not None:
            return failed
        return {"status": "ok", "seconds": self.simulated_seconds, "iterations": int(payload.get("iterations", 5)),
                "nanCount": 0}


CHECK = Conv3d()
