"""multiGpu: peer access and an NCCL all-reduce across the GPUs in the pod."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torchproof.checks.base import AllowedSkip, Check, CheckOutcome, Observed, SimulatedPod, cuda_failure, fmt, skipped
from torchproof.checks.fields import DEVICE_COUNT, Validator, boolean, integer, optional
from torchproof.profile import Checks, MultiGpuCheck
from torchproof.reasons import Reason

if TYPE_CHECKING:
    from torchproof.result import ProbeResult


def _one_gpu(o: Observed) -> bool:
    return o.gpu_count < 2 and o.profile.validation.gpus_per_probe < 2


class MultiGpu(Check[MultiGpuCheck]):
    name = "multiGpu"
    schema: ClassVar[Mapping[str, Validator]] = {
        "devices": optional(integer(DEVICE_COUNT)), "peerAccess": optional(boolean), "allReduceOk": optional(boolean),
    }
    proof = ("allReduceOk",)
    allowed_skips = (AllowedSkip("multiGpu", "the pod sees one GPU, as the profile's gpusPerProbe asks", _one_gpu),)
    simulated_seconds = 0.8

    def settings(self, checks: Checks) -> MultiGpuCheck:
        return checks.multi_gpu

    def judge(self, settings: MultiGpuCheck, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        if outcome.flag("peerAccess") is False or outcome.flag("allReduceOk") is False:
            return [Reason("MultiGpuFailed", "peer access or NCCL all-reduce failed")]
        return []

    def describe(self, result: ProbeResult, outcome: CheckOutcome) -> str:
        return (f"{fmt(outcome.data.get('devices'))} GPUs, peer access {fmt(outcome.flag('peerAccess'))}, "
                f"all-reduce ok {fmt(outcome.flag('allReduceOk'))}")

    def simulate(self, pod: SimulatedPod, payload: Mapping[str, Any]) -> dict[str, Any]:
        failed = cuda_failure(pod)
        if failed is not None:
            return failed
        if pod.device == "cpu":
            return skipped(0.0, "device cpu")
        if pod.visible < 2:
            return skipped(0.0, f"{pod.visible} GPU in the pod")
        return {"status": "ok", "seconds": self.simulated_seconds, "devices": pod.visible, "peerAccess": True,
                "allReduceOk": True}


CHECK = MultiGpu()
