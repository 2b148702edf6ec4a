"""memory: allocate a large fraction of each GPU's free memory, write a pattern and read it back, within a
time bound; words read back wrong and ECC errors NVML counts meanwhile fail the node."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torchproof.checks.base import Board, Check, CheckOutcome, Observed, SimulatedPod, cuda_failure, fmt
from torchproof.checks.fields import COUNT, DEVICE_COUNT, MEMORY_MIB, Validator, boolean, integer, optional
from torchproof.profile import Checks, MemoryCheck
from torchproof.reasons import Reason

if TYPE_CHECKING:
    from torchproof.result import ProbeResult

#: What a CPU dry run allocates: enough to run the same code, bounded so that it fits a small pod.
CPU_MIB = 64


class Memory(Check[MemoryCheck]):
    name = "memory"
    schema: ClassVar[Mapping[str, Validator]] = {
        "devices": optional(integer(DEVICE_COUNT)), "freeMiB": optional(integer(MEMORY_MIB)),
        "testedMiB": optional(integer(MEMORY_MIB)), "mismatches": optional(integer(COUNT)),
        "eccErrors": optional(integer(COUNT)), "complete": optional(boolean),
    }
    proof = ("testedMiB", "mismatches")
    simulated_seconds = 0.8

    def settings(self, checks: Checks) -> MemoryCheck:
        return checks.memory

    def payload(self, settings: MemoryCheck) -> dict[str, Any]:
        return {"fraction": settings.fraction, "maxSeconds": settings.max_seconds}

    def judge(self, settings: MemoryCheck, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        reasons = []
        wrong, ecc = outcome.number("mismatches"), outcome.number("eccErrors")
        if wrong:
            reasons.append(Reason("MemoryMismatch", f"{int(wrong)} words of GPU memory read back wrong"))
        if ecc:
            reasons.append(Reason("MemoryEccErrors", f"{int(ecc)} uncorrected ECC errors during the memory check"))
        return reasons

    def implausible(self, outcome: CheckOutcome, boards: tuple[Board, ...]) -> list[str]:
        tested, free = outcome.number("testedMiB"), outcome.number("freeMiB")
        if tested is not None and free is not None and tested > free:
            return [f"memory: testedMiB {tested:g} is more than the {free:g} MiB free"]
        return []

    def findings(self, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        if outcome.flag("complete") is False:
            return [Reason("MemoryPartlyTested", f"the time bound stopped the memory check at "
                                                 f"{fmt(outcome.data.get('testedMiB'))} MiB")]
        return []

    def summary(self, outcome: CheckOutcome) -> dict[str, Any]:
        tested = outcome.number("testedMiB")
        return {} if tested is None else {"memoryTestedMiB": int(tested)}

    def describe(self, result: ProbeResult, outcome: CheckOutcome) -> str:
        return (f"{fmt(outcome.data.get('testedMiB'))} of {fmt(outcome.data.get('freeMiB'))} MiB free, "
                f"{fmt(outcome.data.get('mismatches'))} wrong, ECC errors {fmt(outcome.data.get('eccErrors'))}")

    def simulate(self, pod: SimulatedPod, payload: Mapping[str, Any]) -> dict[str, Any]:
        failed = cuda_failure(pod)
        if failed is not None:
            return failed
        faulty = "memoryErrors" in pod.faults
        if pod.device == "cpu":
            return {"status": "ok", "seconds": 0.3, "devices": 0, "freeMiB": None, "testedMiB": CPU_MIB,
                    "mismatches": 0, "eccErrors": None, "complete": True}
        free = max(pod.memory_mib - 600, 0)  # the CUDA context and the earlier checks' cache
        return {"status": "ok", "seconds": self.simulated_seconds, "devices": pod.visible, "freeMiB": free,
                "testedMiB": int(free * float(payload.get("fraction", 0.8))), "mismatches": 24 if faulty else 0,
                "eccErrors": 2 if faulty else 0, "complete": True}


CHECK = Memory()
