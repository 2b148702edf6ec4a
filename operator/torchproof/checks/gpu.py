"""gpu: the boards, driver and memory that NVML (or torch, without NVML) reports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torchproof.checks.base import Check, CheckOutcome, SimulatedPod, fmt, skipped
from torchproof.profile import Checks, GpuCheck

if TYPE_CHECKING:
    from torchproof.result import ProbeResult


class Gpu(Check[GpuCheck]):
    name = "gpu"
    simulated_seconds = 0.05

    def settings(self, checks: Checks) -> GpuCheck:
        return checks.gpu

    def describe(self, result: ProbeResult, outcome: CheckOutcome) -> str:
        g = result.gpu
        devices = ", ".join(f"{d.name} (cc {fmt(d.cc)}, {fmt(d.memory_mib)} MiB)" for d in g.devices)
        text = f"{g.source}: driver {fmt(g.driver)}, cuda driver {fmt(g.cuda_driver)}, {fmt(g.count)} GPU"
        return text + (f": {devices}" if devices else "") + (f" [{g.note}]" if g.note else "")

    def simulate(self, pod: SimulatedPod, payload: Mapping[str, Any]) -> dict[str, Any]:
        if pod.device == "cpu" or pod.gpu_visible:
            return {"status": "ok", "seconds": self.simulated_seconds}
        return skipped(0.0, "no GPU visible")


CHECK = Gpu()
