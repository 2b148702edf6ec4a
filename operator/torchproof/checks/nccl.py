"""nccl: an intra-node NCCL all-reduce across every GPU of the pod, timed; its bus bandwidth (as nccl-tests
computes it) is judged against the profile's minBusBandwidthGBps, so that a node whose GPUs talk over a
degraded path (a missing NVLink, a PCIe link trained down, peer access off) fails."""

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
    cpu_dry_run,
    cuda_failure,
    fmt,
    rounded,
    skipped,
)
from torchproof.checks.fields import (
    BANDWIDTH,
    DEVICE_COUNT,
    ITERATIONS,
    MEMORY_MIB,
    Validator,
    boolean,
    integer,
    number,
    optional,
)
from torchproof.profile import Checks, NcclCheck
from torchproof.reasons import Reason
from torchproof.versions import ComputeCapability

if TYPE_CHECKING:
    from torchproof.result import ProbeResult

#: Simulated bus bandwidth (GB/s): NVLink boards, PCIe boards, and the ncclSlow fault (a PCIe x1 link).
NVLINK_GBPS, PCIE_GBPS, SLOW_GBPS = 182.0, 9.6, 0.4


def _one_gpu(o: Observed) -> bool:
    return o.gpu_count < 2 and o.profile.validation.gpus_per_probe < 2


def bus_factor(devices: int) -> float:
    """nccl-tests' all-reduce bus bandwidth is the algorithm bandwidth times 2(n-1)/n."""
    return 2.0 * (devices - 1) / devices


class Nccl(Check[NcclCheck]):
    name = "nccl"
    schema: ClassVar[Mapping[str, Validator]] = {
        "devices": optional(integer(DEVICE_COUNT)), "sizeMiB": optional(integer(MEMORY_MIB)),
        "iterations": optional(integer(ITERATIONS)), "ok": optional(boolean),
        "algBandwidth": optional(number(BANDWIDTH)), "busBandwidth": optional(number(BANDWIDTH)),
    }
    proof = ("ok", "busBandwidth")
    allowed_skips = (
        AllowedSkip("nccl", "the pod sees one GPU, as the profile's gpusPerProbe asks", _one_gpu),
        AllowedSkip("nccl", "a CPU dry run has no NCCL", cpu_dry_run),
    )
    simulated_seconds = 0.6

    def settings(self, checks: Checks) -> NcclCheck:
        return checks.nccl

    def payload(self, settings: NcclCheck) -> dict[str, Any]:
        return {"sizeMiB": settings.size_mib, "iterations": settings.iterations}

    def judge(self, settings: NcclCheck, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        if outcome.flag("ok") is False:
            return [Reason("NcclFailed", "the NCCL all-reduce returned a wrong sum")]
        bus = outcome.number("busBandwidth")
        if bus is not None and bus < settings.min_bus_bandwidth:
            return [Reason("NcclSlow", f"all-reduce bus bandwidth {bus:.3g} GB/s < {settings.min_bus_bandwidth:g}")]
        return []

    def implausible(self, outcome: CheckOutcome, boards: tuple[Board, ...]) -> list[str]:
        alg, bus, n = outcome.number("algBandwidth"), outcome.number("busBandwidth"), outcome.number("devices")
        if alg is None or bus is None or n is None or n < 2:
            return []
        want = alg * bus_factor(int(n))
        if abs(bus - want) > 0.05 * want + 0.01:
            return [f"nccl: busBandwidth {bus:g} is not algBandwidth {alg:g} x 2(n-1)/n = {want:.4g}"]
        return []

    def summary(self, outcome: CheckOutcome) -> dict[str, Any]:
        return rounded(outcome, "busBandwidth", "ncclBusBandwidth", 1)

    def describe(self, result: ProbeResult, outcome: CheckOutcome) -> str:
        return (f"{fmt(outcome.data.get('devices'))} GPUs, {fmt(outcome.data.get('sizeMiB'))} MiB: bus "
                f"{fmt(outcome.number('busBandwidth'))} GB/s, sum ok {fmt(outcome.flag('ok'))}")

    def simulate(self, pod: SimulatedPod, payload: Mapping[str, Any]) -> dict[str, Any]:
        failed = cuda_failure(pod)
        if failed is not None:
            return failed
        if pod.device == "cpu":
            return skipped(0.0, "cpu mode")
        if pod.visible < 2:
            return skipped(0.0, f"{pod.visible} GPU in the pod")
        nvlink = pod.datacenter and pod.compute_capability >= ComputeCapability(8, 0)
        bus = SLOW_GBPS if "ncclSlow" in pod.faults else NVLINK_GBPS if nvlink else PCIE_GBPS
        return {"status": "ok", "seconds": self.simulated_seconds, "devices": pod.visible,
                "sizeMiB": int(payload.get("sizeMiB", 64)), "iterations": int(payload.get("iterations", 10)),
                "ok": True, "algBandwidth": round(bus / bus_factor(pod.visible), 3), "busBandwidth": bus}


CHECK = Nccl()
