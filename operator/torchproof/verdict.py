"""Judging: a finished validation pod (or a node's labels) plus the profile give a verdict and reasons.

The probe only observes; every threshold lives here, taken from the profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torchproof import compat
from torchproof.labels import Verdict
from torchproof.profile import KnownIssue, Profile
from torchproof.reasons import Reason
from torchproof.result import CheckOutcome, ProbeResult, UntrustedResult, parse_result
from torchproof.versions import ComputeCapability
from torchproof.views import PodView

MAX_REASONS = 8
TENSOR_CORES_FROM = ComputeCapability.parse("7.0")  # Volta: the first tensor cores


@dataclass(frozen=True)
class Evaluation:
    verdict: Verdict
    reasons: tuple[Reason, ...]
    known_issues: tuple[KnownIssue, ...] = ()
    numbers: Mapping[str, Any] = field(default_factory=dict)
    findings: tuple[Reason, ...] = ()


def evaluate_pod(profile: Profile, pod: PodView) -> Evaluation:
    """Verdict for a finished validation pod, from its termination state alone (no log reads)."""
    t = pod.terminated
    if pod.pod_reason == "DeadlineExceeded":
        return _error("DeadlineExceeded", f"the probe ran past {profile.validation.runtime_timeout_seconds}s")
    if t is None:
        return _error("ProbeCrashed", f"pod {pod.phase} without a container result")
    if t.reason == "OOMKilled":
        return _error("OOMKilled", "the probe container was killed for using too much memory")
    if not t.message:
        return _error("ProbeCrashed", f"exit code {t.exit_code} ({t.reason or 'no reason'}) without a result")
    try:
        result = parse_result(t.message)
    except UntrustedResult as exc:
        return _error("UntrustedResult", str(exc))
    return judge(profile, result)


def _error(code: str, message: str) -> Evaluation:
    return Evaluation(verdict="error", reasons=(Reason(code, message),))


def hardware_from_result(result: ProbeResult) -> compat.Hardware:
    first = result.gpu.devices[0] if result.gpu.devices else None
    return compat.Hardware(
        product=first.name if first else None,
        brand=first.brand if first else None,
        driver=result.gpu.driver,
        compute_capability=first.cc if first else None,
        count=result.gpu.count,
    )


def judge(profile: Profile, result: ProbeResult) -> Evaluation:
    """Observed hardware against the requirements, then each check against its threshold."""
    hardware = hardware_from_result(result)
    fit = compat.evaluate(profile.requirements, hardware)
    architecture = fit.model.architecture if fit.model else None
    issues = compat.matching_known_issues(profile.known_issues, architecture)
    numbers = _key_numbers(result)
    findings = [*_component_findings(profile, result), *fit.reasons]
    if fit.verdict == "incompatible":
        return Evaluation("incompatible", fit.reasons, (), numbers, tuple(findings))
    judged = dict(result.checks)
    cc = fit.model.compute_capability if fit.model else _observed_cc(result)
    if "tensorCores" in judged and cc is not None and cc < TENSOR_CORES_FROM:
        del judged["tensorCores"]
        findings.append(Reason("NoTensorCores", f"compute capability {cc} has no tensor cores; speedup not judged"))
    reasons = [r for name, check in judged.items() for r in _judge_check(profile, name, check)]
    if result.device != "cuda":
        reasons.insert(0, Reason("NotOnGpu", "the probe ran on the CPU, not on a GPU"))
    verdict: Verdict = "failed" if reasons else "passed"
    return Evaluation(verdict, tuple(reasons[:MAX_REASONS]), issues, numbers, tuple(findings))


def _observed_cc(result: ProbeResult) -> ComputeCapability | None:
    cc = result.gpu.devices[0].cc if result.gpu.devices else None
    try:
        return ComputeCapability.parse(cc) if cc else None
    except ValueError:
        return None


def _judge_check(profile: Profile, name: str, check: CheckOutcome) -> list[Reason]:
    if check.status == "error":
        code = "CudaUnavailable" if name == "cuda" else "CheckError"
        return [Reason(code, f"{name}: {check.error or 'error'}")]
    if check.status == "timeout":
        return [Reason("CheckTimeout", f"{name}: cut by the time budget")]
    if check.status != "ok":
        return []
    c = profile.checks
    if name == "cuda":
        if check.flag("available") is False:
            return [Reason("CudaUnavailable", "torch.cuda.is_available() is False")]
        if check.flag("kernelOk") is False:
            return [Reason("CudaKernelWrong", "a CUDA kernel returned a wrong result")]
    if name == "amp":
        return _judge_amp(check, c.amp.tolerance)
    if name == "tensorCores":
        speedup = check.number("fp16Speedup")
        if speedup is not None and speedup < c.tensor_cores.min_speedup:
            return [Reason("TensorCoresSlow", f"fp16 GEMM {speedup:.2f}x fp32 < {c.tensor_cores.min_speedup:g}x")]
    if name == "channelsLast":
        error = check.number("maxRelError")
        if check.flag("finite") is False:
            return [Reason("ChannelsLastMismatch", "channels-last output not finite")]
        if error is not None and error > c.channels_last.tolerance:
            return [Reason("ChannelsLastMismatch", f"relative error {error:.3g} > {c.channels_last.tolerance:g}")]
    if name == "conv3d":
        nans = check.number("nanCount")
        if nans:
            return [Reason("Conv3dNaN", f"{int(nans)} NaN outputs in cuDNN 3D convolution")]
    if name == "multiGpu" and (check.flag("peerAccess") is False or check.flag("allReduceOk") is False):
        return [Reason("MultiGpuFailed", "peer access or NCCL all-reduce failed")]
    return []


def _judge_amp(check: CheckOutcome, tolerance: float) -> list[Reason]:
    reasons: list[Reason] = []
    for run in ("native", "apex", "bf16"):
        data = check.data.get(run)
        if not isinstance(data, Mapping) or "skipped" in data:
            continue
        label = f"amp {run}"
        if data.get("error"):
            reasons.append(Reason("CheckError", f"{label}: {data['error']}"))
        elif data.get("finite") is False:
            reasons.append(Reason("AmpNotFinite", f"{label}: loss or output not finite"))
        elif data.get("decreased") is False:
            reasons.append(Reason("AmpNotConverging", f"{label}: loss did not decrease"))
        elif isinstance(data.get("maxRelError"), float) and data["maxRelError"] > tolerance:
            reasons.append(Reason("AmpMismatch", f"{label}: relative error {data['maxRelError']:.3g} > {tolerance:g}"))
        elif isinstance(data.get("steps"), int) and data.get("skippedSteps") == data["steps"] and data["steps"] > 0:
            reasons.append(Reason("AmpScalerStuck", f"{label}: the GradScaler skipped every step"))
    return reasons


def _key_numbers(result: ProbeResult) -> dict[str, Any]:
    numbers: dict[str, Any] = {"driver": result.gpu.driver, "cudaDriver": result.gpu.cuda_driver}
    if result.gpu.devices:
        numbers["gpu"] = result.gpu.devices[0].name
    tc = result.checks.get("tensorCores")
    if tc is not None and tc.number("fp16Speedup") is not None:
        numbers["fp16Speedup"] = round(tc.number("fp16Speedup") or 0.0, 2)
    amp = result.checks.get("amp")
    native = amp.data.get("native") if amp else None
    if isinstance(native, Mapping) and isinstance(native.get("maxRelError"), float):
        numbers["ampMaxRelError"] = round(native["maxRelError"], 5)
    if result.seconds is not None:
        numbers["probeSeconds"] = round(result.seconds, 1)
    return {k: v for k, v in numbers.items() if v is not None}


def _component_findings(profile: Profile, result: ProbeResult) -> list[Reason]:
    want = profile.components
    env = result.env
    pairs = [
        ("pytorch", want.pytorch, env.torch),
        ("cuda", want.cuda, env.vars.get("CUDA_VERSION") or env.cuda),
        ("python", want.python, env.python),
        ("cudnn", want.cudnn, env.cudnn),
        ("nccl", want.nccl, env.nccl),
        ("release", profile.release, env.vars.get("NVIDIA_PYTORCH_VERSION")),
    ]
    return [
        Reason("ComponentMismatch", f"{name}: image has {have}, profile says {expected}")
        for name, expected, have in pairs
        if expected and have and not _same_version(expected, have)
    ]


def _same_version(expected: str, have: str) -> bool:
    """'3.6' matches '3.6.10'; '11.0.167' matches '11.0.167'; '11.0' (torch.version.cuda) matches '11.0.167'."""
    e, h = expected.split("."), have.split(".")
    n = min(len(e), len(h))
    return e[:n] == h[:n]


def static_evaluation(profile: Profile, node_labels: Mapping[str, str]) -> compat.CompatResult:
    """The pre-check from GPU Feature Discovery labels: spend no GPU on a node that certainly can't run it."""
    return compat.evaluate(profile.requirements, compat.hardware_from_labels(node_labels))
