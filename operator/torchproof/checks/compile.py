"""compile: torch.compile of the toy model (inductor on a GPU) runs and agrees with eager; the first compile,
which is what a training job waits for, is timed and bounded by the profile's maxSeconds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torchproof.checks.base import (
    AllowedSkip,
    Board,
    Check,
    CheckOutcome,
    Observed,
    SimulatedPod,
    cuda_failure,
    fmt,
    rounded,
    skipped,
    torch_before,
    torch_version,
)
from torchproof.checks.fields import REL_ERROR, SECONDS, Validator, number, optional, string
from torchproof.profile import Checks, CompileCheck
from torchproof.reasons import Reason

if TYPE_CHECKING:
    from torchproof.result import ProbeResult

#: The backend a CPU dry run compiles with: inductor's C++ build takes most of a minute on a small CPU,
#: aot_eager traces through the same dynamo and AOTAutograd in seconds (docs/probe.md).
CPU_BACKEND = "aot_eager"
#: The first compile is timed inside the check, so it cannot outlast the check (rounding aside).
CLOCK_SLACK = 0.5
COMPILE_ERROR = "BackendCompilerFailed: backend='inductor' raised: CalledProcessError: ptxas exited with status 1"


class Compile(Check[CompileCheck]):
    name = "compile"
    schema: ClassVar[Mapping[str, Validator]] = {
        "backend": optional(string), "firstSeconds": optional(number(SECONDS)), "maxError": optional(number(REL_ERROR)),
    }
    proof = ("firstSeconds", "maxError")
    allowed_skips = (
        AllowedSkip("compile", "the release's torch predates torch.compile (PyTorch 2.0)", torch_before((2, 0))),
    )
    simulated_seconds = 0.9

    def settings(self, checks: Checks) -> CompileCheck:
        return checks.compile

    def payload(self, settings: CompileCheck) -> dict[str, Any]:
        return {"maxSeconds": settings.max_seconds}

    def judge(self, settings: CompileCheck, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        error = outcome.number("maxError")
        if error is not None and error > settings.tolerance:
            return [Reason("CompileMismatch", f"compiled output differs from eager by {error:.3g} > "
                                              f"{settings.tolerance:g}")]
        return []

    def implausible(self, outcome: CheckOutcome, boards: tuple[Board, ...]) -> list[str]:
        first = outcome.number("firstSeconds")
        if first is not None and outcome.seconds is not None and first > outcome.seconds + CLOCK_SLACK:
            return [f"compile: firstSeconds {first:g} is longer than the check's own {outcome.seconds:g}s"]
        return []

    def summary(self, outcome: CheckOutcome) -> dict[str, Any]:
        return rounded(outcome, "firstSeconds", "compileSeconds", 1)

    def describe(self, result: ProbeResult, outcome: CheckOutcome) -> str:
        return (f"{fmt(outcome.data.get('backend'))}: first compile {fmt(outcome.number('firstSeconds'))}s, "
                f"rel err {fmt(outcome.number('maxError'))} vs eager")

    def simulate(self, pod: SimulatedPod, payload: Mapping[str, Any]) -> dict[str, Any]:
        failed = cuda_failure(pod)
        if failed is not None:
            return failed
        version = torch_version(pod.torch)
        if version is not None and version < (2, 0):
            return skipped(0.0, f"torch {pod.torch} has no torch.compile")
        if pod.device == "cpu":
            return {"status": "ok", "seconds": 3.4, "backend": CPU_BACKEND, "firstSeconds": 3.2, "maxError": 0.0}
        if "compileError" in pod.faults:
            return {"status": "error", "seconds": 4.2, "error": COMPILE_ERROR}
        return {"status": "ok", "seconds": self.simulated_seconds, "backend": "inductor", "firstSeconds": 0.8,
                "maxError": 0.0004}


CHECK = Compile()
