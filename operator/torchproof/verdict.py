"""Judging: a finished validation pod (or a node's labels) plus the profile give a verdict and reasons.

The probe only observes; every threshold lives here, taken from the profile. `passed` is a promise that
training jobs rely on, so it needs evidence: the result proves every check the plan asks for, its numbers
are possible, and it describes the node it labels (docs/contract.md, "Judging").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torchproof import catalogue, compat
from torchproof.contract import MAX_DEVICES
from torchproof.labels import Verdict
from torchproof.podspec import build_plan
from torchproof.profile import KnownIssue, Profile
from torchproof.reasons import Reason
from torchproof.result import AMP_RUNS, CheckOutcome, Device, ProbeResult, UntrustedResult, parse_result
from torchproof.versions import ComputeCapability, DriverVersion
from torchproof.views import PodView, Terminated

MAX_REASONS = 8
#: A reported speedup may differ this much (relative) from the throughputs it was computed from: the
#: probe rounds each number to 4 significant digits (< 0.1%), the simulator a speedup to 2 decimals.
SPEEDUP_TOLERANCE = 0.05
#: A measured throughput above this multiple of the catalogue's dense peak cannot be true. Peaks are at
#: boost clock; 25% covers clocks above the data sheet's and timer granularity, and nothing else.
PEAK_MARGIN = 1.25
# Linux signal numbers (exit code 128 + n): the container ran on a Linux node, whatever runs the operator.
_SIGNALS = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE",
            9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 15: "SIGTERM"}
_TORCH_VERSION = re.compile(r"^(\d+)\.(\d+)")
# What an `ok` check must carry to prove anything; a missing field is missing evidence.
_PROOF: Mapping[str, tuple[str, ...]] = {
    "cuda": ("kernelOk",),
    "channelsLast": ("finite", "maxRelError"),
    "conv3d": ("nanCount",),
    "multiGpu": ("allReduceOk",),
}
_AMP_PROOF = ("finite", "decreased", "maxRelError")


@dataclass(frozen=True)
class Evaluation:
    verdict: Verdict
    reasons: tuple[Reason, ...]
    known_issues: tuple[KnownIssue, ...] = ()
    numbers: Mapping[str, Any] = field(default_factory=dict)
    findings: tuple[Reason, ...] = ()


def evaluate_pod(profile: Profile, pod: PodView, node_labels: Mapping[str, str]) -> Evaluation:
    """Verdict for a finished validation pod, from its termination state alone (no log reads).

    ``node_labels`` are the labels of the node the pod validated: its GPU Feature Discovery labels are
    what the result must match.
    """
    t = pod.terminated
    if pod.pod_reason == "DeadlineExceeded":
        return _error("DeadlineExceeded", f"the probe ran past {profile.validation.runtime_timeout_seconds}s")
    if t is None:
        return _error("ProbeCrashed", f"pod {pod.phase} without a container result")
    if t.reason == "OOMKilled":
        return _error("OOMKilled", "the probe container was killed for using too much memory")
    if not t.message:
        return _error("ProbeCrashed", f"{_exit(t)} without a result")
    if t.exit_code != 0:
        # The probe exits 0 whenever it wrote a result: anything else crashed after writing it.
        return _error("ProbeExited", f"{_exit(t)} after writing a result")
    try:
        result = parse_result(t.message)
    except UntrustedResult as exc:
        return _error("UntrustedResult", str(exc))
    return judge(profile, result, node_labels)


def _exit(t: Terminated) -> str:
    if t.exit_code is None:
        return "no exit code"
    signal = _SIGNALS.get(t.exit_code - 128)
    return f"exit code {t.exit_code} ({signal or t.reason or 'no reason'})"


def _error(code: str, message: str) -> Evaluation:
    return Evaluation(verdict="error", reasons=(Reason(code, message),))


@dataclass(frozen=True)
class Board:
    """One distinct GPU model among a result's devices, named by its first device ("gpu1 (Tesla P4)")."""

    name: str
    device: Device
    fit: compat.CompatResult
    compute_capability: ComputeCapability | None  # the catalogue's for a catalogued product, else reported

    @property
    def product(self) -> str:
        return self.device.name or self.name

    @property
    def tensor_cores(self) -> bool | None:
        return catalogue.has_tensor_cores(self.device.name, self.compute_capability)

    @property
    def architecture(self) -> str | None:
        return self.fit.model.architecture if self.fit.model else None


def boards(profile: Profile, result: ProbeResult) -> tuple[Board, ...]:
    """Each distinct (product, brand, compute capability) in the result, judged against the requirements."""
    seen: dict[tuple[str | None, str | None, str | None], Board] = {}
    for d in result.gpu.devices:
        key = (d.name, d.brand, d.cc)
        if key in seen:
            continue
        hardware = compat.Hardware(product=d.name, brand=d.brand, driver=result.gpu.driver,
                                   compute_capability=d.cc, count=result.gpu.count)
        fit = compat.evaluate(profile.requirements, hardware)
        cc = fit.model.compute_capability if fit.model else _parse_cc(d.cc)
        seen[key] = Board(f"gpu{d.index} ({d.name})" if d.name else f"gpu{d.index}", d, fit, cc)
    return tuple(seen.values())


def _parse_cc(text: str | None) -> ComputeCapability | None:
    try:
        return ComputeCapability.parse(text) if text else None
    except ValueError:
        return None


def judge(profile: Profile, result: ProbeResult, node_labels: Mapping[str, str]) -> Evaluation:
    """Trust first (complete, possible, from this node), then the hardware, then each check's threshold."""
    found = boards(profile, result)
    numbers = _key_numbers(result, found)
    untrusted = [
        *_structure_gaps(profile, result),
        *_hardware_mismatches(result, found, node_labels),
        *_implausible(result, found),
    ]
    findings = [*_component_findings(profile, result)]
    if untrusted:
        return Evaluation("error", tuple(untrusted[:MAX_REASONS]), (), numbers, tuple(findings))
    several = len(found) > 1
    for b in found:
        findings += _named(b, b.fit.reasons, several)
    blocking = [r for b in found if b.fit.verdict == "incompatible" for r in _named(b, b.fit.reasons, several)]
    if blocking:
        return Evaluation("incompatible", tuple(blocking[:MAX_REASONS]), (), numbers, tuple(findings))
    issues = _known_issues(profile, found)
    speed_judged = not all(b.tensor_cores is False for b in found)
    if profile.validation.device == "cpu":
        findings.append(Reason("CpuDryRun", "the probe ran on the CPU (validation.device cpu): the flow works "
                                            "here, but nothing about a GPU is proven"))
    elif not speed_judged and "tensorCores" in result.checks:
        products = ", ".join(_about(b) for b in found)
        findings.append(Reason("NoTensorCores", f"{products}: no tensor cores; fp16 speedup not judged"))
    failures: list[Reason] = []
    gaps: list[Reason] = []
    for name, check in result.checks.items():
        failed = _judge_check(profile, name, check, speed_judged=speed_judged)
        failures += failed
        if not failed:
            gaps += _proof_gaps(name, check, speed_judged)
    allowed, skipped = _evidence(profile, result, found)
    findings += allowed
    gaps += skipped
    if failures:
        findings += gaps
        return Evaluation("failed", tuple(failures[:MAX_REASONS]), issues, numbers, tuple(findings))
    if gaps:
        return Evaluation("error", tuple(gaps[:MAX_REASONS]), (), numbers, tuple(findings))
    return Evaluation("passed", (), issues, numbers, tuple(findings))


def _named(b: Board, reasons: Iterable[Reason], several: bool) -> list[Reason]:
    """Reasons about one board name its device when the result holds more than one model."""
    return [Reason(r.code, f"{b.name}: {r.message}") if several else r for r in reasons]


def _about(b: Board) -> str:
    return b.device.name or (f"compute capability {b.compute_capability}" if b.compute_capability else b.name)


def _known_issues(profile: Profile, found: Iterable[Board]) -> tuple[KnownIssue, ...]:
    architectures = {b.architecture for b in found}
    return tuple(
        issue for issue in profile.known_issues
        if any(compat.matching_known_issues((issue,), a) for a in architectures)
    )


# -- rules of evidence ------------------------------------------------------------------------------


def _incomplete(message: str) -> Reason:
    return Reason("IncompleteResult", message)


def _structure_gaps(profile: Profile, result: ProbeResult) -> list[Reason]:
    """What makes a result no evidence of a GPU run at all, whatever its checks say."""
    device = str(build_plan(profile)["device"])
    gaps: list[Reason] = []
    if result.device != device:
        gaps.append(_incomplete(f"the probe ran on the {result.device}, not on {device} as the plan asks"))
    if not result.checks:
        gaps.append(_incomplete("the result has no checks"))
    elif all(c.status == "skipped" for c in result.checks.values()):
        gaps.append(_incomplete("every check was skipped"))
    if device != "cuda":
        return gaps
    cuda = result.checks.get("cuda")
    if cuda is None:
        gaps.append(_incomplete("cuda missing: a GPU run must prove that CUDA works"))
    elif cuda.status == "skipped":
        gaps.append(_incomplete(f"cuda skipped ({cuda.reason or 'no reason given'}) on a GPU run"))
    gpu = result.gpu
    if gpu.source == "none" or gpu.count == 0 or not gpu.devices:
        gaps.append(_incomplete(
            f"no GPU observed (gpu.source {gpu.source}, count {gpu.count}, {len(gpu.devices)} devices)"
        ))
    return gaps


def _proof_gaps(name: str, check: CheckOutcome, speed_judged: bool) -> list[Reason]:
    if check.status != "ok":
        return []
    fields = _PROOF.get(name, ())
    if name == "tensorCores" and speed_judged:
        fields = ("fp16Speedup",)
    return [_incomplete(f"{name}: ok without {key}") for key in fields if check.data.get(key) is None]


@dataclass(frozen=True)
class Observed:
    """What an allowed skip may depend on: the profile, the boards in the result, the image's torch."""

    profile: Profile
    boards: tuple[Board, ...]
    gpu_count: int
    torch: tuple[int, int] | None


@dataclass(frozen=True)
class AllowedSkip:
    """A planned check (or amp sub-run) that may be skipped, when, and why that still proves the node."""

    what: str
    why: str
    holds: Callable[[Observed], bool]


def _torch_before(version: tuple[int, int]) -> Callable[[Observed], bool]:
    """The image's torch predates an API, and so does the release the profile names (when it names one)."""

    def holds(o: Observed) -> bool:
        if o.torch is None or o.torch >= version:
            return False
        stated = o.profile.components.pytorch
        release = _torch_version(stated)
        return stated is None or (release is not None and release < version)

    return holds


def _below_ampere(o: Observed) -> bool:
    return all(b.compute_capability is not None and b.compute_capability < ComputeCapability(8, 0) for b in o.boards)


def _no_tensor_cores(o: Observed) -> bool:
    return all(b.tensor_cores is False for b in o.boards)


def _one_gpu(o: Observed) -> bool:
    return o.gpu_count < 2 and o.profile.validation.gpus_per_probe < 2


def _cpu_dry_run(o: Observed) -> bool:
    return o.profile.validation.device == "cpu"


#: Every skip a `passed` node may carry; any other skipped or missing planned check is `IncompleteResult`.
#: Conditions read the observed hardware (every board in the result must meet them) and the plan.
ALLOWED_SKIPS: tuple[AllowedSkip, ...] = (
    AllowedSkip("amp.bf16", "bf16 needs compute capability 8.0 and no GPU in the result has it", _below_ampere),
    AllowedSkip("amp.bf16", "the release's torch predates torch.autocast (PyTorch 1.10)", _torch_before((1, 10))),
    AllowedSkip("amp.native", "the release's torch predates torch.cuda.amp (PyTorch 1.6)", _torch_before((1, 6))),
    AllowedSkip("tensorCores", "the catalogue says no GPU in the result has tensor cores", _no_tensor_cores),
    AllowedSkip("multiGpu", "the pod sees one GPU, as the profile's gpusPerProbe asks", _one_gpu),
    AllowedSkip("amp.apex", "apex amp needs CUDA, which a CPU dry run does not have", _cpu_dry_run),
)


def _torch_version(text: str | None) -> tuple[int, int] | None:
    match = _TORCH_VERSION.match(text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _evidence(profile: Profile, result: ProbeResult, found: tuple[Board, ...]) -> tuple[list[Reason], list[Reason]]:
    """(findings for allowed skips, gaps) over every check and amp sub-run the plan asks for."""
    observed = Observed(profile, found, result.gpu.count if result.gpu.count is not None else len(found),
                        _torch_version(result.env.torch))
    allowed: list[Reason] = []
    gaps: list[Reason] = []

    def skipped(what: str, reason: str | None) -> None:
        why = next((s.why for s in ALLOWED_SKIPS if s.what == what and s.holds(observed)), None)
        told = reason or "no reason given"
        if why is None:
            gaps.append(_incomplete(f"{what} skipped ({told}), which the profile does not allow here"))
        else:
            allowed.append(Reason("SkipAllowed", f"{what} skipped ({told}): {why}"))

    for name, config in build_plan(profile)["checks"].items():
        check = result.checks.get(name)
        if name == "cuda":
            continue  # a structural requirement of every GPU run (_structure_gaps)
        if check is None:
            gaps.append(_incomplete(f"{name} missing from the result"))
        elif check.status == "skipped":
            skipped(name, check.reason)
        elif name == "amp" and check.status == "ok":
            for run in (r for r in AMP_RUNS if config.get(r)):
                data = check.data.get(run)
                if not isinstance(data, Mapping):
                    gaps.append(_incomplete(f"amp.{run} missing from the result"))
                elif "skipped" in data:
                    skipped(f"amp.{run}", data.get("skipped"))
                elif _amp_failure(run, data, profile.checks.amp.tolerance) is None:
                    gaps += [_incomplete(f"amp.{run}: ran without {key}")
                             for key in _AMP_PROOF if data.get(key) is None]
    return allowed, gaps


# -- the result must match the node, and its numbers must be possible ------------------------------


def _mismatch(message: str) -> Reason:
    return Reason("HardwareMismatch", message)


def _hardware_mismatches(result: ProbeResult, found: Iterable[Board], labels: Mapping[str, str]) -> list[Reason]:
    """The result against the node's GPU Feature Discovery labels, where both say something."""
    node = compat.hardware_from_labels(labels)
    gpu = result.gpu
    out: list[Reason] = []
    for b in found:
        d = b.device
        if node.product and d.name and not catalogue.same_product(d.name, node.product):
            out.append(_mismatch(f"{b.name}: the node's labels say the GPU is {node.product}"))
        have, said = _parse_cc(d.cc), _parse_cc(node.compute_capability)
        if have is not None and said is not None and have != said:
            out.append(_mismatch(f"{b.name}: compute capability {have}; the node's labels say {said}"))
    if node.driver and gpu.driver and not _same_driver(gpu.driver, node.driver):
        out.append(_mismatch(f"driver {gpu.driver}; the node's labels say {node.driver}"))
    if gpu.count is not None and node.count is not None and gpu.count > node.count:
        out.append(_mismatch(f"the result sees {gpu.count} GPUs; the node's labels say it has {node.count}"))
    if gpu.count is not None and gpu.devices and len(gpu.devices) != min(gpu.count, MAX_DEVICES):
        out.append(_mismatch(f"gpu.count {gpu.count} but {len(gpu.devices)} devices listed"))
    return out


def _same_driver(a: str, b: str) -> bool:
    """Equal in every part both give: a label set may carry only "450.51" of "450.51.06"."""
    try:
        x, y = DriverVersion.parse(a).parts, DriverVersion.parse(b).parts
    except ValueError:
        return True  # not comparable; the compatibility rules report an unreadable driver
    n = min(len(x), len(y))
    return x[:n] == y[:n]


def _implausible(result: ProbeResult, found: tuple[Board, ...]) -> list[Reason]:
    messages = [
        f"{b.name} reports compute capability {b.device.cc}; the catalogue says {b.fit.model.compute_capability}"
        for b in found
        if b.fit.model is not None and _parse_cc(b.device.cc) not in (None, b.fit.model.compute_capability)
    ]
    tc = result.checks.get("tensorCores")
    if tc is not None:
        messages += [*_speedups_disagree(tc), *_above_peak(tc, found)]
    return [Reason("ImplausibleResult", m) for m in messages]


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


# -- thresholds -------------------------------------------------------------------------------------


def _judge_check(profile: Profile, name: str, check: CheckOutcome, *, speed_judged: bool) -> list[Reason]:
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
    if name == "tensorCores" and speed_judged:
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
    runs = (check.data.get(run) for run in AMP_RUNS)
    failures = (_amp_failure(run, data, tolerance) for run, data in zip(AMP_RUNS, runs, strict=True))
    return [f for f in failures if f is not None]


def _amp_failure(run: str, data: Any, tolerance: float) -> Reason | None:
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


def _key_numbers(result: ProbeResult, found: Iterable[Board]) -> dict[str, Any]:
    numbers: dict[str, Any] = {"driver": result.gpu.driver, "cudaDriver": result.gpu.cuda_driver}
    products = [b.device.name for b in found if b.device.name]
    if products:
        numbers["gpu"] = ", ".join(dict.fromkeys(products))
    tc = result.checks.get("tensorCores")
    if tc is not None and tc.number("fp16Speedup") is not None:
        numbers["fp16Speedup"] = round(tc.number("fp16Speedup") or 0.0, 2)
    if tc is not None and tc.number("bf16Speedup") is not None:
        numbers["bf16Speedup"] = round(tc.number("bf16Speedup") or 0.0, 2)
    tflops = {d: round(v, 2) for d in ("fp32", "fp16", "bf16") if tc is not None and (v := tc.number(d)) is not None}
    if tflops:  # the metrics' GPU speed per product (metrics.py)
        numbers["tflops"] = tflops
    amp = result.checks.get("amp")
    native = amp.data.get("native") if amp else None
    if isinstance(native, Mapping) and isinstance(native.get("maxRelError"), float):
        numbers["ampMaxRelError"] = round(native["maxRelError"], 5)
    steps = sum(run["steps"] for run in amp.data.values() if isinstance(run, Mapping)
                and isinstance(run.get("steps"), int) and not isinstance(run["steps"], bool)) if amp else 0
    if amp is not None and amp.status == "ok" and amp.seconds and steps > 0:
        numbers["ampStepSeconds"] = round(amp.seconds / steps, 4)  # the check's time per step, set-up included
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
    """The pre-check from GPU Feature Discovery labels: spend no GPU on a node that certainly can't run it.
    A CPU dry run skips it: its nodes have no GPU labels, and it spends no GPU."""
    if profile.validation.device == "cpu":
        return compat.CompatResult("compatible", (), None)
    return compat.evaluate(profile.requirements, compat.hardware_from_labels(node_labels))
