"""tensorCores: dense matmul throughput per precision, and the fp16 speedup over fp32 that tensor cores give."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from torchproof import catalogue
from torchproof.checks.base import AllowedSkip, Board, Check, CheckOutcome, Observed, SimulatedPod, cuda_failure, fmt
from torchproof.checks.fields import MATMUL_SIZE, SPEEDUP, TFLOPS, Validator, integer, number, optional
from torchproof.profile import Checks, TensorCoresCheck
from torchproof.reasons import Reason
from torchproof.versions import ComputeCapability

if TYPE_CHECKING:
    from torchproof.result import ProbeResult

#: A reported speedup may differ this much (relative) from the throughputs it was computed from: the
#: probe rounds each number to 4 significant digits (< 0.1%), the simulator a speedup to 2 decimals.
SPEEDUP_TOLERANCE = 0.05
#: A measured throughput above this multiple of the catalogue's dense peak cannot be true. Peaks are at
#: boost clock; 25% covers clocks above the data sheet's and timer granularity, and nothing else.
PEAK_MARGIN = 1.25
_RATE, _RATIO = optional(number(TFLOPS)), optional(number(SPEEDUP))


def _no_tensor_cores(o: Observed) -> bool:
    return not o.speed_judged


class TensorCores(Check[TensorCoresCheck]):
    name = "tensorCores"
    schema: ClassVar[Mapping[str, Validator]] = {
        "size": optional(integer(MATMUL_SIZE)), "fp32": _RATE, "fp16": _RATE, "bf16": _RATE, "tf32": _RATE,
        "fp16Speedup": _RATIO, "bf16Speedup": _RATIO, "tf32Speedup": _RATIO,
    }
    allowed_skips = (
        AllowedSkip("tensorCores", "the catalogue says no GPU in the result has tensor cores", _no_tensor_cores),
    )
    simulated_seconds = 1.2

    def settings(self, checks: Checks) -> TensorCoresCheck:
        return checks.tensor_cores

    def payload(self, settings: TensorCoresCheck) -> dict[str, Any]:
        return {"size": settings.size, "iterations": settings.iterations}

    def proof_fields(self, observed: Observed) -> tuple[str, ...]:
        return ("fp16Speedup",) if observed.speed_judged else ()

    def judge(self, settings: TensorCoresCheck, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        speedup = outcome.number("fp16Speedup")
        if observed.speed_judged and speedup is not None and speedup < settings.min_speedup:
            return [Reason("TensorCoresSlow", f"fp16 GEMM {speedup:.2f}x fp32 < {settings.min_speedup:g}x")]
        return []

    def implausible(self, outcome: CheckOutcome, boards: tuple[Board, ...]) -> list[str]:
        return [*_speedups_disagree(outcome), *_above_peak(outcome, boards)]

    def findings(self, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        if observed.speed_judged:
            return []
        products = ", ".join(_about(b) for b in observed.boards)
        return [Reason("NoTensorCores", f"{products}: no tensor cores; fp16 speedup not judged")]

    def summary(self, outcome: CheckOutcome) -> dict[str, Any]:
        """The speedups, and the rates per dtype that metrics.py reports per GPU product."""
        out = {f"{p}Speedup": round(v, 2) for p in ("fp16", "bf16") if (v := outcome.number(f"{p}Speedup")) is not None}
        tflops = {p: round(v, 2) for p in ("fp32", "fp16", "bf16") if (v := outcome.number(p)) is not None}
        return {**out, "tflops": tflops} if tflops else out

    def describe(self, result: ProbeResult, outcome: CheckOutcome) -> str:
        c = outcome
        rates = [f"{p} {fmt(c.number(p))}" for p in ("fp32", "fp16", "bf16", "tf32") if c.number(p) is not None]
        speedups = [f"{p} x{fmt(c.number(p + 'Speedup'))}" for p in ("fp16", "bf16", "tf32")
                    if c.number(p + "Speedup") is not None]
        return f"n={fmt(c.data.get('size'))}: " + ", ".join(rates) + " TFLOP/s" + (
            f" ({', '.join(speedups)})" if speedups else "")

    def simulate(self, pod: SimulatedPod, payload: Mapping[str, Any]) -> dict[str, Any]:
        failed = cuda_failure(pod)
        if failed is not None:
            return failed
        size = int(payload.get("size", 4096))
        if pod.device == "cpu":
            return {"status": "ok", "seconds": 4.0, "size": size, "fp32": 1.2, "fp16": None, "bf16": 1.5,
                    "tf32": None, "fp16Speedup": None, "bf16Speedup": 1.25, "tf32Speedup": None}
        t = pod.throughput
        fp16 = round(t.fp32 * 1.1, 1) if pod.slow_tensor_cores else t.fp16
        modern = pod.compute_capability >= ComputeCapability(8, 0)
        bf16 = fp16 if modern and pod.autocast else None
        tf32 = t.tf32 if modern and pod.tf32 else None

        def speedup(value: float | None) -> float | None:
            return None if value is None else round(value / t.fp32, 2)

        return {"status": "ok", "seconds": self.simulated_seconds, "size": size, "fp32": t.fp32, "fp16": fp16,
                "bf16": bf16, "tf32": tf32, "fp16Speedup": speedup(fp16), "bf16Speedup": speedup(bf16),
                "tf32Speedup": speedup(tf32)}


def _about(b: Board) -> str:
    return b.device.name or (f"compute capability {b.compute_capability}" if b.compute_capability else b.name)


def _speedups_disagree(tc: CheckOutcome) -> list[str]:
    fp32 = tc.number("fp32")
    out: list[str] = []
    for precision in ("fp16", "bf16", "tf32"):
        speedup, value = tc.number(f"{precision}Speedup"), tc.number(precision)
        if speedup is None:
            continue
        if value is None or fp32 is None or fp32 <= 0:
            out.append(f"tensorCores: {precision}Speedup {speedup:g} without the {precision} and fp32 "
                       f"throughputs it is computed from")
            continue
        ratio = value / fp32
        if abs(speedup - ratio) > SPEEDUP_TOLERANCE * ratio:
            out.append(f"tensorCores: {precision}Speedup {speedup:g}, but {precision}/fp32 is "
                       f"{value:g}/{fp32:g} = {ratio:.3g}")
    return out


def _above_peak(tc: CheckOutcome, found: tuple[Board, ...]) -> list[str]:
    """The check ran on one of the result's GPUs: above every one's peak (with the margin) is impossible."""
    peaks = [catalogue.peak(b.device.name) if b.device.name else None for b in found]
    out: list[str] = []
    for precision in ("fp32", "tf32", "fp16", "bf16"):
        value = tc.number(precision)
        limits = [float(x) for x in (getattr(p, precision, None) for p in peaks) if x is not None]
        if value is None or not found or len(limits) != len(found):
            continue  # a GPU without a listed peak for this precision is not judged on it
        limit = max(limits)
        if value > PEAK_MARGIN * limit:
            board = found[limits.index(limit)]
            out.append(f"tensorCores: {precision} {value:g} TFLOP/s is more than {PEAK_MARGIN:g}x the "
                       f"{board.product} peak of {limit:g}")
    return out


CHECK = TensorCores()
