"""cuda: torch sees CUDA and a kernel computes the right answer; every GPU run must prove it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torchproof.checks.base import NO_KERNEL, Check, CheckOutcome, Observed, SimulatedPod, fmt, skipped
from torchproof.checks.fields import Validator, boolean, optional
from torchproof.profile import Checks, CudaCheck
from torchproof.reasons import Reason

if TYPE_CHECKING:
    from torchproof.result import ProbeResult


class Cuda(Check[CudaCheck]):
    name = "cuda"
    schema: ClassVar[Mapping[str, Validator]] = {"available": optional(boolean), "kernelOk": optional(boolean)}
    proof = ("kernelOk",)
    error_code = "CudaUnavailable"
    proves_gpu_run = "CUDA works"
    simulated_seconds = 1.9

    def settings(self, checks: Checks) -> CudaCheck:
        return checks.cuda

    def judge(self, settings: CudaCheck, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        if outcome.flag("available") is False:
            return [Reason("CudaUnavailable", "torch.cuda.is_available() is False")]
        if outcome.flag("kernelOk") is False:
            return [Reason("CudaKernelWrong", "a CUDA kernel returned a wrong result")]
        return []

    def describe(self, result: ProbeResult, outcome: CheckOutcome) -> str:
        return f"available {fmt(outcome.flag('available'))}, kernel ok {fmt(outcome.flag('kernelOk'))}"

    def simulate(self, pod: SimulatedPod, payload: Mapping[str, Any]) -> dict[str, Any]:
        if pod.device == "cpu":
            return skipped(0.0, "device cpu")
        if pod.failure is None:
            return {"status": "ok", "seconds": self.simulated_seconds, "available": True, "kernelOk": True}
        return {"status": "error", "seconds": 0.4, "available": pod.failure == NO_KERNEL, "kernelOk": False,
                "error": pod.failure}


CHECK = Cuda()
