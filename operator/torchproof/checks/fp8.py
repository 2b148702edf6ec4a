"""fp8: an FP8 (e4m3) matmul through torch._scaled_mm agrees with the bf16 product of the same inputs, on
GPUs that have FP8 tensor cores (compute capability 8.9 and later) with a torch that can drive them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torchproof.checks.base import (
    AllowedSkip,
    Check,
    CheckOutcome,
    Observed,
    SimulatedPod,
    below,
    cpu_dry_run,
    cuda_failure,
    fmt,
    rounded,
    skipped,
    torch_before,
    torch_version,
)
from torchproof.checks.fields import MATMUL_SIZE, REL_ERROR, TFLOPS, Validator, integer, number, optional, string
from torchproof.profile import Checks, Fp8Check
from torchproof.reasons import Reason
from torchproof.versions import ComputeCapability

if TYPE_CHECKING:
    from torchproof.result import ProbeResult

FP8_FROM = ComputeCapability(8, 9)
SIMULATED_ERROR, BROKEN_ERROR = 0.011, 0.42


class Fp8(Check[Fp8Check]):
    name = "fp8"
    schema: ClassVar[Mapping[str, Validator]] = {
        "size": optional(integer(MATMUL_SIZE)), "dtype": optional(string), "relError": optional(number(REL_ERROR)),
        "tflops": optional(number(TFLOPS)),
    }
    proof = ("relError",)
    allowed_skips = (
        AllowedSkip("fp8", "FP8 matmuls need compute capability 8.9 and no GPU in the result has it", below(FP8_FROM)),
        AllowedSkip("fp8", "the release's torch predates torch._scaled_mm (PyTorch 2.1)", torch_before((2, 1))),
        AllowedSkip("fp8", "a CPU dry run has no FP8 matmul", cpu_dry_run),
    )
    simulated_seconds = 0.5

    def settings(self, checks: Checks) -> Fp8Check:
        return checks.fp8

    def payload(self, settings: Fp8Check) -> dict[str, Any]:
        return {"size": settings.size}

    def judge(self, settings: Fp8Check, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        error = outcome.number("relError")
        if error is not None and error > settings.tolerance:
            return [Reason("Fp8Mismatch", f"FP8 matmul error {error:.3g} against bf16 > {settings.tolerance:g}")]
        return []

    def summary(self, outcome: CheckOutcome) -> dict[str, Any]:
        return rounded(outcome, "relError", "fp8RelError", 5)

    def describe(self, result: ProbeResult, outcome: CheckOutcome) -> str:
        return (f"{fmt(outcome.data.get('dtype'))} n={fmt(outcome.data.get('size'))}: rel err "
                f"{fmt(outcome.number('relError'))} vs bf16, {fmt(outcome.number('tflops'))} TFLOP/s")

    def simulate(self, pod: SimulatedPod, payload: Mapping[str, Any]) -> dict[str, Any]:
        failed = cuda_failure(pod)
        if failed is not None:
            return failed
        if pod.device == "cpu":
            return skipped(0.0, "cpu mode")
        version = torch_version(pod.torch)
        if version is not None and version < (2, 1):
            return skipped(0.0, f"torch {pod.torch} has no torch._scaled_mm")
        if pod.compute_capability < FP8_FROM:
            return skipped(0.0, f"compute capability {pod.compute_capability} < 8.9")
        error = BROKEN_ERROR if "fp8Mismatch" in pod.faults else SIMULATED_ERROR
        return {"status": "ok", "seconds": self.simulated_seconds, "size": int(payload.get("size", 2048)),
                "dtype": "float8_e4m3fn", "relError": error, "tflops": round(pod.throughput.fp16 * 1.6, 1)}


CHECK = Fp8()
