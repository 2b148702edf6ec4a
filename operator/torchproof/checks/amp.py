"""amp: a few mixed-precision training steps with each API the image offers (native, apex, bf16)."""

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
    cuda_failure,
    fmt,
    subrun_gaps,
    torch_before,
)
from torchproof.checks.fields import (
    LOSS,
    REL_ERROR,
    STEPS,
    Validator,
    boolean,
    integer,
    known_fields,
    number,
    optional,
    string,
)
from torchproof.profile import AmpCheck, Checks
from torchproof.reasons import Reason
from torchproof.versions import ComputeCapability

if TYPE_CHECKING:
    from torchproof.result import ProbeResult

RUNS = ("native", "apex", "bf16")
_PROOF = ("finite", "decreased", "maxRelError")
_RUN: Mapping[str, Validator] = {
    "api": optional(string), "dtype": optional(string), "steps": optional(integer(STEPS)),
    "firstLoss": optional(number(LOSS)), "lastLoss": optional(number(LOSS)), "finite": optional(boolean),
    "decreased": optional(boolean), "maxRelError": optional(number(REL_ERROR)),
    "skippedSteps": optional(integer(STEPS)), "error": optional(string), "skipped": optional(string),
}


def _run(value: Any, path: str) -> dict[str, Any]:
    return known_fields(value, path, _RUN)


def _below_ampere(o: Observed) -> bool:
    return all(b.compute_capability is not None and b.compute_capability < ComputeCapability(8, 0) for b in o.boards)


def _cpu_dry_run(o: Observed) -> bool:
    return o.profile.validation.device == "cpu"


def failure(run: str, data: Any, tolerance: float) -> Reason | None:
    """What an amp sub-run that ran shows wrong; None for a good one, a skipped one or none at all."""
    if not isinstance(data, Mapping) or "skipped" in data:
        return None
    label = f"amp {run}"
    if data.get("error"):
        return Reason("CheckError", f"{label}: {data['error']}")
    if data.get("finite") is False:
        return Reason("AmpNotFinite", f"{label}: loss or output not finite")
    if data.get("decreased") is False:
        return Reason("AmpNotConverging", f"{label}: loss did not decrease")
    if isinstance(data.get("maxRelError"), float) and data["maxRelError"] > tolerance:
        return Reason("AmpMismatch", f"{label}: relative error {data['maxRelError']:.3g} > {tolerance:g}")
    if isinstance(data.get("steps"), int) and data.get("skippedSteps") == data["steps"] and data["steps"] > 0:
        return Reason("AmpScalerStuck", f"{label}: the GradScaler skipped every step")
    return None


def _simulated_run(api: str, dtype: str, steps: int, rel_error: float, nan: bool) -> dict[str, Any]:
    return {"api": api, "dtype": dtype, "steps": steps, "firstLoss": 2.31,
            "lastLoss": None if nan else 1.02, "finite": not nan, "decreased": not nan,
            "maxRelError": None if nan else rel_error, "skippedSteps": 0}


def _simulated_cpu(payload: Mapping[str, Any], steps: int, nan: bool) -> dict[str, Any]:
    """As the probe on a CPU: native autocast in bf16 (the CPU has no fp16 autocast), no apex, bf16."""
    out: dict[str, Any] = {"status": "ok", "seconds": 3.5}
    if payload.get("native"):
        out["native"] = _simulated_run("torch.autocast+torch.amp.GradScaler", "bfloat16", steps, 0.012, nan)
    if payload.get("apex"):
        out["apex"] = {"skipped": "apex amp needs cuda"}
    if payload.get("bf16"):
        out["bf16"] = _simulated_run("torch.autocast", "bfloat16", steps, 0.012, nan)
    return out


class Amp(Check[AmpCheck]):
    name = "amp"
    schema: ClassVar[Mapping[str, Validator]] = {run: optional(_run) for run in RUNS}
    allowed_skips = (
        AllowedSkip("amp.bf16", "bf16 needs compute capability 8.0 and no GPU in the result has it", _below_ampere),
        AllowedSkip("amp.bf16", "the release's torch predates torch.autocast (PyTorch 1.10)", torch_before((1, 10))),
        AllowedSkip("amp.native", "the release's torch predates torch.cuda.amp (PyTorch 1.6)", torch_before((1, 6))),
        AllowedSkip("amp.apex", "apex amp needs CUDA, which a CPU dry run does not have", _cpu_dry_run),
    )
    simulated_seconds = 2.1

    def settings(self, checks: Checks) -> AmpCheck:
        return checks.amp

    def payload(self, settings: AmpCheck) -> dict[str, Any]:
        return {"steps": settings.steps, "native": settings.native, "apex": settings.apex, "bf16": settings.bf16}

    def judge(self, settings: AmpCheck, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        failures = (failure(run, outcome.data.get(run), settings.tolerance) for run in RUNS)
        return [f for f in failures if f is not None]

    def evidence(self, settings: AmpCheck, outcome: CheckOutcome, observed: Observed, skip: Skipped) -> list[Reason]:
        planned = self.payload(settings)
        return subrun_gaps("amp", [r for r in RUNS if planned[r]], outcome, skip, _PROOF, failure, settings.tolerance)

    def summary(self, outcome: CheckOutcome) -> dict[str, Any]:
        """The native run's error, and the check's seconds per training step (set-up included) for metrics.py."""
        out: dict[str, Any] = {}
        native = outcome.data.get("native")
        if isinstance(native, Mapping) and isinstance(native.get("maxRelError"), float):
            out["ampMaxRelError"] = round(native["maxRelError"], 5)
        steps = sum(run["steps"] for run in outcome.data.values() if isinstance(run, Mapping)
                    and isinstance(run.get("steps"), int) and not isinstance(run["steps"], bool))
        if outcome.status == "ok" and outcome.seconds and steps > 0:
            out["ampStepSeconds"] = round(outcome.seconds / steps, 4)
        return out

    def describe(self, result: ProbeResult, outcome: CheckOutcome) -> str:
        parts = []
        for name in RUNS:
            run = outcome.data.get(name)
            if not run:
                continue
            if "skipped" in run or "error" in run:
                parts.append(f"{name}: {run.get('skipped') or run.get('error')}")
                continue
            parts.append(
                f"{name} {fmt(run.get('dtype'))}: loss {fmt(run.get('firstLoss'))}->{fmt(run.get('lastLoss'))}"
                f", rel err {fmt(run.get('maxRelError'))}, skipped {fmt(run.get('skippedSteps'))}"
                f"/{fmt(run.get('steps'))}"
            )
        return "; ".join(parts)

    def simulate(self, pod: SimulatedPod, payload: Mapping[str, Any]) -> dict[str, Any]:
        failed = cuda_failure(pod)
        if failed is not None:
            return failed
        steps = int(payload.get("steps", 8))
        if pod.device == "cpu":
            return _simulated_cpu(payload, steps, pod.amp_nan)
        out: dict[str, Any] = {"status": "ok", "seconds": self.simulated_seconds}
        if payload.get("native"):
            out["native"] = (_simulated_run("torch.cuda.amp", "float16", steps, 0.004, pod.amp_nan)
                             if pod.native_amp else {"skipped": f"torch {pod.torch} has no torch.cuda.amp"})
        if payload.get("apex"):
            out["apex"] = (_simulated_run("apex.amp", "float16", steps, 0.005, False) if pod.apex
                           else {"skipped": "apex not importable"})
        if payload.get("bf16"):
            if pod.compute_capability < ComputeCapability(8, 0):
                out["bf16"] = {"skipped": f"compute capability {pod.compute_capability} < 8.0"}
            elif not pod.autocast:
                out["bf16"] = {"skipped": f"torch {pod.torch} has no torch.autocast"}
            else:
                out["bf16"] = _simulated_run("torch.autocast", "bfloat16", steps, 0.012, False)
        return out


CHECK = Amp()
