"""Judging: a finished validation pod (or a node's labels) plus the profile give a verdict and reasons.

The probe only observes; every threshold is the operator's, taken from the profile, and each check's own
rules live in its module of `torchproof.checks`, which this iterates. `passed` is a promise that
training jobs rely on, so it needs evidence: the result proves every check the plan asks for, its numbers
are possible, and it describes the node it labels (docs/contract.md, "Judging").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torchproof import catalogue, compat
from torchproof.checks import BY_NAME, REGISTRY
from torchproof.checks.base import AllowedSkip, Board, CheckOutcome, Observed, incomplete, torch_version
from torchproof.contract import MAX_DEVICES
from torchproof.labels import Verdict
from torchproof.podspec import build_plan
from torchproof.profile import KnownIssue, Profile
from torchproof.reasons import Reason
from torchproof.result import ProbeResult, UntrustedResult, parse_result
from torchproof.versions import ComputeCapability, DriverVersion
from torchproof.views import PodView, Terminated

MAX_REASONS = 8
# Linux signal numbers (exit code 128 + n): the container ran on a Linux node, whatever runs the operator.
_SIGNALS = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE",
            9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 15: "SIGTERM"}
#: Every skip a `passed` node may carry, from each check's own list; any other skipped or missing planned
#: check is `IncompleteResult`. Conditions read the observed hardware (every board must meet them) and the plan.
ALLOWED_SKIPS: tuple[AllowedSkip, ...] = tuple(skip for check in REGISTRY for skip in check.allowed_skips)


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
    observed = _observed(profile, result, found)
    if profile.validation.device == "cpu":
        findings.append(Reason("CpuDryRun", "the probe ran on the CPU (validation.device cpu): the flow works "
                                            "here, but nothing about a GPU is proven"))
    else:
        for name, outcome in result.checks.items():
            findings += BY_NAME[name].findings(outcome, observed)
    failures: list[Reason] = []
    gaps: list[Reason] = []
    for name, outcome in result.checks.items():
        failed = _judge_check(profile, name, outcome, observed)
        failures += failed
        if not failed:
            gaps += _proof_gaps(name, outcome, observed)
    allowed, skipped = _evidence(profile, result, observed)
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


def _known_issues(profile: Profile, found: Iterable[Board]) -> tuple[KnownIssue, ...]:
    architectures = {b.architecture for b in found}
    return tuple(
        issue for issue in profile.known_issues
        if any(compat.matching_known_issues((issue,), a) for a in architectures)
    )


# -- rules of evidence ------------------------------------------------------------------------------


def _structure_gaps(profile: Profile, result: ProbeResult) -> list[Reason]:
    """What makes a result no evidence of a GPU run at all, whatever its checks say."""
    device = str(build_plan(profile)["device"])
    gaps: list[Reason] = []
    if result.device != device:
        gaps.append(incomplete(f"the probe ran on the {result.device}, not on {device} as the plan asks"))
    if not result.checks:
        gaps.append(incomplete("the result has no checks"))
    elif all(c.status == "skipped" for c in result.checks.values()):
        gaps.append(incomplete("every check was skipped"))
    if device != "cuda":
        return gaps
    for check in (c for c in REGISTRY if c.proves_gpu_run):
        outcome = result.checks.get(check.name)
        if outcome is None:
            gaps.append(incomplete(f"{check.name} missing: a GPU run must prove that {check.proves_gpu_run}"))
        elif outcome.status == "skipped":
            gaps.append(incomplete(f"{check.name} skipped ({outcome.reason or 'no reason given'}) on a GPU run"))
    gpu = result.gpu
    if gpu.source == "none" or gpu.count == 0 or not gpu.devices:
        gaps.append(incomplete(
            f"no GPU observed (gpu.source {gpu.source}, count {gpu.count}, {len(gpu.devices)} devices)"
        ))
    return gaps


def _proof_gaps(name: str, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
    if outcome.status != "ok":
        return []
    fields = BY_NAME[name].proof_fields(observed)
    return [incomplete(f"{name}: ok without {key}") for key in fields if outcome.data.get(key) is None]


def _observed(profile: Profile, result: ProbeResult, found: tuple[Board, ...]) -> Observed:
    count = result.gpu.count if result.gpu.count is not None else len(found)
    return Observed(profile, found, count, torch_version(result.env.torch))


def _evidence(profile: Profile, result: ProbeResult, observed: Observed) -> tuple[list[Reason], list[Reason]]:
    """(findings for allowed skips, gaps) over every check and sub-run the plan asks for."""
    allowed: list[Reason] = []
    gaps: list[Reason] = []

    def skipped(what: str, reason: str | None) -> Reason | None:
        why = next((s.why for s in ALLOWED_SKIPS if s.what == what and s.holds(observed)), None)
        told = reason or "no reason given"
        if why is None:
            return incomplete(f"{what} skipped ({told}), which the profile does not allow here")
        allowed.append(Reason("SkipAllowed", f"{what} skipped ({told}): {why}"))
        return None

    for check in REGISTRY:
        if check.proves_gpu_run or check.plan(profile.checks) is None:
            continue  # a structural requirement of every GPU run (_structure_gaps), or not planned
        outcome = result.checks.get(check.name)
        if outcome is None:
            gaps.append(incomplete(f"{check.name} missing from the result"))
        elif outcome.status == "skipped":
            gaps += [gap for gap in (skipped(check.name, outcome.reason),) if gap is not None]
        elif outcome.status == "ok":
            gaps += check.evidence(check.settings(profile.checks), outcome, observed, skipped)
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
    for name, outcome in result.checks.items():
        messages += BY_NAME[name].implausible(outcome, found)
    return [Reason("ImplausibleResult", m) for m in messages]


# -- thresholds -------------------------------------------------------------------------------------


def _judge_check(profile: Profile, name: str, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
    check = BY_NAME[name]
    if outcome.status == "error":
        return [Reason(check.error_code, f"{name}: {outcome.error or 'error'}")]
    if outcome.status == "timeout":
        return [Reason("CheckTimeout", f"{name}: cut by the time budget")]
    if outcome.status != "ok":
        return []
    return check.judge(check.settings(profile.checks), outcome, observed)


def _key_numbers(result: ProbeResult, found: Iterable[Board]) -> dict[str, Any]:
    numbers: dict[str, Any] = {"driver": result.gpu.driver, "cudaDriver": result.gpu.cuda_driver}
    products = [b.device.name for b in found if b.device.name]
    if products:
        numbers["gpu"] = ", ".join(dict.fromkeys(products))
    for name, outcome in result.checks.items():
        numbers.update(BY_NAME[name].summary(outcome))
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
