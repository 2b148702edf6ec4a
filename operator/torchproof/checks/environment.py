"""environment: the image's Python, torch, CUDA, cuDNN, NCCL and apex, and its release variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torchproof.checks.base import Check, CheckOutcome, SimulatedPod, fmt
from torchproof.profile import Checks, EnvironmentCheck

if TYPE_CHECKING:
    from torchproof.result import ProbeResult


class Environment(Check[EnvironmentCheck]):
    name = "environment"
    simulated_seconds = 0.01

    def settings(self, checks: Checks) -> EnvironmentCheck:
        return checks.environment

    def describe(self, result: ProbeResult, outcome: CheckOutcome) -> str:
        e = result.env
        return (f"python {fmt(e.python)}, torch {fmt(e.torch)}, cuda {fmt(e.cuda)}, cudnn {fmt(e.cudnn)}, "
                f"nccl {fmt(e.nccl)}, apex {fmt(e.apex)}")

    def simulate(self, pod: SimulatedPod, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {"status": "ok", "seconds": self.simulated_seconds}


CHECK = Environment()
