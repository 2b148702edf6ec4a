"""Static compatibility: can this node's GPU and driver run the release at all?

The verdict is "incompatible" only when a known fact rules the release out; when a fact is missing
it is "unknown" and the probe decides. The same rules judge the facts the probe observes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from torchproof.catalogue import ARCHITECTURES, GpuModel, architecture_for, lookup
from torchproof.profile import KnownIssue, Requirements
from torchproof.reasons import Reason
from torchproof.versions import ComputeCapability, DriverVersion

Verdict = Literal["compatible", "incompatible", "unknown"]

_DATACENTER_BRANDS = frozenset({"tesla", "datacenter"})
_CONSUMER_BRANDS = frozenset(
    {"geforce", "geforce rtx", "quadro", "quadro rtx", "titan", "titan rtx", "nvidia rtx"}
)


@dataclass(frozen=True)
class Hardware:
    """What is known about a node's GPUs; None where nothing says."""

    product: str | None = None
    brand: str | None = None
    driver: str | None = None
    compute_capability: str | None = None
    count: int | None = None
    partial: tuple[str, ...] = ()  # facts labelled only in part: unknown, never judged as if complete


@dataclass(frozen=True)
class CompatResult:
    verdict: Verdict
    reasons: tuple[Reason, ...]
    model: GpuModel | None


def hardware_from_labels(labels: Mapping[str, str]) -> Hardware:
    """Hardware from GPU Feature Discovery's ``nvidia.com/*`` node labels."""

    def get(key: str) -> str | None:
        value = labels.get(f"nvidia.com/{key}")
        return (value.strip() or None) if isinstance(value, str) else None

    partial: list[str] = []

    def driver_from(key: str, value: str | None) -> str | None:
        """A driver known to its minor at least: a bare major ("440") is a partial fact, not 440.0."""
        if value is not None and "." not in value:
            partial.append(f"nvidia.com/{key}={value} without a minor version")
            return None
        return value

    def joined(prefix: str, names: tuple[str, ...]) -> str | None:
        parts: list[str] = []
        for name in names:
            part = get(f"{prefix}.{name}")
            if part is None:
                break
            parts.append(part)
        return driver_from(f"{prefix}.{names[0]}", ".".join(parts) or None)

    driver = (
        driver_from("cuda.driver-version.full", get("cuda.driver-version.full"))
        or joined("cuda.driver-version", ("major", "minor", "revision"))
        or joined("cuda.driver", ("major", "minor", "rev"))
    )
    major, minor = get("gpu.compute.major"), get("gpu.compute.minor")
    if (major is None) != (minor is None):
        partial.append("nvidia.com/gpu.compute.major and .minor are not both labelled")
    count = get("gpu.count")
    return Hardware(
        product=get("gpu.product"),
        driver=driver,
        compute_capability=f"{major}.{minor}" if major is not None and minor is not None else None,
        count=int(count) if count is not None and count.isascii() and count.isdigit() else None,
        partial=tuple(partial),
    )


def _datacenter(model: GpuModel | None, brand: str | None) -> bool | None:
    if model is not None:
        return model.datacenter
    name = (brand or "").strip().lower()
    if name in _DATACENTER_BRANDS:
        return True
    if name in _CONSUMER_BRANDS:
        return False
    return None


def _board(model: GpuModel | None, hw: Hardware) -> str:
    return model.product if model is not None else hw.product or "the GPU"


class _Findings:
    """Reasons sorted by what they mean for the verdict."""

    def __init__(self) -> None:
        self.blocking: list[Reason] = []
        self.missing: list[Reason] = []
        self.info: list[Reason] = []

    def verdict(self) -> Verdict:
        if self.blocking:
            return "incompatible"
        return "unknown" if self.missing else "compatible"


def _check_driver(req: Requirements, hw: Hardware, model: GpuModel | None, out: _Findings) -> None:
    if hw.driver is None:
        said = "; ".join(hw.partial) or "no driver version reported for the node"
        out.missing.append(Reason("DriverUnknown", said))
        return
    try:
        driver = DriverVersion.parse(hw.driver)
    except ValueError as exc:
        out.missing.append(Reason("DriverUnknown", str(exc)))
        return
    minimum = req.driver.minimum
    if driver >= minimum:
        return
    branches = req.driver.datacenter_branches
    listed = ", ".join(str(b.branch) for b in branches)
    branch = next((b for b in branches if b.branch == driver.branch), None)
    if branch is None:
        message = f"{driver} < {minimum}"
        if branches:
            message += f" and branch {driver.branch} is not a forward-compatible branch for datacenter boards"
            message += f" ({listed})"
        out.blocking.append(Reason("DriverTooOld", message))
        return
    if driver < branch.minimum:
        message = f"{driver} < {minimum} and < {branch.minimum}, the minimum on branch {branch.branch}"
        out.blocking.append(Reason("DriverTooOld", message))
        return
    board = _board(model, hw)
    datacenter = _datacenter(model, hw.brand)
    if datacenter is None:
        message = (f"{driver} < {minimum}; branch {branch.branch} works only on datacenter boards "
                   f"and whether {board} is one is unknown")
        out.missing.append(Reason("BoardClassUnknown", message))
    elif datacenter:
        message = f"{driver} on datacenter board {board}: CUDA forward compatibility, branch {branch.branch}"
        out.info.append(Reason("ForwardCompatibility", message))
    else:
        message = f"{driver} < {minimum} and {board} is not a datacenter board"
        out.blocking.append(Reason("DriverTooOld", message))


def _compute_capability(hw: Hardware, model: GpuModel | None, out: _Findings) -> ComputeCapability | None:
    if hw.compute_capability is not None:
        try:
            return ComputeCapability.parse(hw.compute_capability)
        except ValueError as exc:
            if model is None:
                out.missing.append(Reason("ComputeCapabilityUnknown", str(exc)))
    if model is not None:
        return model.compute_capability
    if hw.compute_capability is None:
        what = f"{hw.product!r} is not in the GPU catalogue" if hw.product else "no GPU product reported"
        out.missing.append(Reason("ComputeCapabilityUnknown", f"no compute capability reported and {what}"))
    return None


def _check_gpu(req: Requirements, hw: Hardware, model: GpuModel | None, out: _Findings) -> None:
    cc = _compute_capability(hw, model, out)
    if cc is None:
        return
    architecture = model.architecture if model is not None else architecture_for(cc)
    about = ", ".join(x for x in (architecture, model.product if model else hw.product) if x)
    shown = f"{cc} ({about})" if about else str(cc)
    low, high = req.min_compute_capability, req.max_compute_capability
    if cc < low:
        out.blocking.append(Reason("ComputeCapabilityTooLow", f"{shown} < {low}"))
        return
    if high is not None and cc > high:
        out.blocking.append(Reason("ComputeCapabilityTooHigh", f"{shown} > {high}"))
        return
    named = req.architectures
    if not named or architecture is None or architecture in named:
        return
    newest = max(named, key=ARCHITECTURES.index)
    listed = ", ".join(sorted(named, key=ARCHITECTURES.index))
    if ARCHITECTURES.index(architecture) > ARCHITECTURES.index(newest):
        message = f"{architecture} is newer than the architectures the release names ({listed}); {cc} ≥ {low}"
        out.info.append(Reason("ArchitectureNotListed", message))
    else:
        out.blocking.append(Reason("ArchitectureUnsupported", f"{architecture} is not one of {listed}"))


def evaluate(req: Requirements, hw: Hardware) -> CompatResult:
    """Judge a node's hardware against a release's requirements, without running anything."""
    model = lookup(hw.product) if hw.product else None
    out = _Findings()
    _check_driver(req, hw, model, out)
    _check_gpu(req, hw, model, out)
    verdict = out.verdict()
    if verdict == "incompatible":
        return CompatResult(verdict, tuple(out.blocking), model)
    return CompatResult(verdict, (*out.missing, *out.info), model)


def matching_known_issues(
    issues: Iterable[KnownIssue], architecture: str | None, precisions: frozenset[str] | None = None
) -> tuple[KnownIssue, ...]:
    """Issues that may affect a GPU; an unknown architecture or no precision filter rules nothing out."""

    def applies(issue: KnownIssue) -> bool:
        arch_ok = architecture is None or not issue.architectures or architecture in issue.architectures
        precision_ok = precisions is None or not issue.precisions or bool(issue.precisions & precisions)
        return arch_ok and precision_ok

    return tuple(i for i in issues if applies(i))
