"""sdpa: scaled_dot_product_attention forward and backward with each backend (flash, memory-efficient, math)
agrees with an fp32 reference written out by hand, so that a broken attention kernel fails the node."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torchproof.checks.base import (
    AllowedSkip,
    Check,
    CheckOutcome,
    Observed,
    SimulatedPod,
    Skipped,
    below,
    cpu_dry_run,
    cuda_failure,
    fmt,
    skipped,
    subrun_gaps,
    torch_before,
    torch_version,
)
from torchproof.checks.fields import REL_ERROR, Validator, known_fields, number, optional, string
from torchproof.profile import Checks, SdpaCheck
from torchproof.reasons import Reason
from torchproof.versions import ComputeCapability

if TYPE_CHECKING:
    from torchproof.result import ProbeResult

BACKENDS = ("flash", "memEfficient", "math")
_PROOF = ("forwardError", "backwardError")
_RUN: Mapping[str, Validator] = {
    "forwardError": optional(number(REL_ERROR)), "backwardError": optional(number(REL_ERROR)),
    "error": optional(string), "skipped": optional(string),
}
#: What the simulator reports for a backend that works, and for one the sdpaMismatch fault breaks.
SIMULATED_ERROR, BROKEN_ERROR = 0.0012, 0.37
FLASH_FROM = ComputeCapability(8, 0)


def _run(value: Any, path: str) -> dict[str, Any]:
    return known_fields(value, path, _RUN)


def failure(backend: str, data: Any, tolerance: float) -> Reason | None:
    """What a backend that ran shows wrong; None for a good one, a skipped one or none at all."""
    if not isinstance(data, Mapping) or "skipped" in data:
        return None
    if data.get("error"):
        return Reason("SdpaFailed", f"sdpa {backend}: {data['error']}")
    worst = max((v for v in (data.get(k) for k in _PROOF) if isinstance(v, float)), default=None)
    if worst is not None and worst > tolerance:
        return Reason("SdpaMismatch", f"sdpa {backend}: error {worst:.3g} against the math reference > {tolerance:g}")
    return None


class Sdpa(Check[SdpaCheck]):
    name = "sdpa"
    schema: ClassVar[Mapping[str, Validator]] = {"dtype": optional(string),
                                                 **{b: optional(_run) for b in BACKENDS}}
    allowed_skips = (
        AllowedSkip("sdpa", "the release's torch predates scaled_dot_product_attention (PyTorch 2.0)",
                    torch_before((2, 0))),
        AllowedSkip("sdpa.flash", "flash attention needs compute capability 8.0 and no GPU in the result has it",
                    below(FLASH_FROM)),
        AllowedSkip("sdpa.flash", "the release's torch has no flash kernel for every board (before PyTorch 2.2)",
                    torch_before((2, 2))),
        AllowedSkip("sdpa.flash", "a CPU dry run has no flash attention kernel", cpu_dry_run),
        AllowedSkip("sdpa.memEfficient", "a CPU dry run has no memory-efficient attention kernel", cpu_dry_run),
    )
    simulated_seconds = 0.7

    def settings(self, checks: Checks) -> SdpaCheck:
        return checks.sdpa

    def judge(self, settings: SdpaCheck, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        failures = (failure(b, outcome.data.get(b), settings.tolerance) for b in BACKENDS)
        return [f for f in failures if f is not None]

    def evidence(self, settings: SdpaCheck, outcome: CheckOutcome, observed: Observed, skip: Skipped) -> list[Reason]:
        return subrun_gaps("sdpa", BACKENDS, outcome, skip, _PROOF, failure, settings.tolerance)

    def summary(self, outcome: CheckOutcome) -> dict[str, Any]:
        errors = [v for b in BACKENDS if isinstance(run := outcome.data.get(b), Mapping)
                  for v in (run.get(k) for k in _PROOF) if isinstance(v, float)]
        return {"sdpaMaxError": round(max(errors), 5)} if errors else {}

    def describe(self, result: ProbeResult, outcome: CheckOutcome) -> str:
        parts = []
        for backend in BACKENDS:
            run = outcome.data.get(backend)
            if not isinstance(run, Mapping):
                continue
            if "skipped" in run or "error" in run:
                parts.append(f"{backend}: {run.get('skipped') or run.get('error')}")
            else:
                parts.append(f"{backend} fwd {fmt(run.get('forwardError'))} bwd {fmt(run.get('backwardError'))}")
        return f"{fmt(outcome.data.get('dtype'))}: " + "; ".join(parts)

    def simulate(self, pod: SimulatedPod, payload: Mapping[str, Any]) -> dict[str, Any]:
        failed = cuda_failure(pod)
        if failed is not None:
            return failed
        version = torch_version(pod.torch)
        if version is not None and version < (2, 0):
            return skipped(0.0, f"torch {pod.torch} has no scaled_dot_product_attention")
        good = {"forwardError": SIMULATED_ERROR, "backwardError": SIMULATED_ERROR * 2}
        if pod.device == "cpu":
            return {"status": "ok", "seconds": 0.9, "dtype": "float32", "flash": {"skipped": "cpu mode"},
                    "memEfficient": {"skipped": "cpu mode"}, "math": good}
        broken = {"forwardError": BROKEN_ERROR, "backwardError": BROKEN_ERROR} if "sdpaMismatch" in pod.faults \
            else good
        flash: dict[str, Any] = broken if pod.compute_capability >= FLASH_FROM else {
            "skipped": "No available kernel: flash attention needs compute capability 8.0"}
        return {"status": "ok", "seconds": self.simulated_seconds, "dtype": "float16", "flash": flash,
                "memEfficient": good, "math": good}


CHECK = Sdpa()
