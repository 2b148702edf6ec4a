"""What a check is made of, so that the rest of the operator can iterate checks instead of naming them.

A check is one object with every part the operator and the simulator need: its settings in the typed
profile, the payload it puts into the probe plan, the schema of its slice of the probe result, the rule
that judges it (thresholds, proof fields, allowed skips, impossible numbers), its key numbers, its line in
the local table, and what a simulated probe would report for it. The base class gives the common
behaviour; a check module overrides only what is its own, and must give its settings, its table line
and its simulated outcome.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from torchproof import catalogue, compat
from torchproof.checks.fields import Validator
from torchproof.profile import Checks, Profile
from torchproof.reasons import Reason
from torchproof.versions import ComputeCapability

if TYPE_CHECKING:
    from torchproof.result import Device, ProbeResult

# What a simulated CUDA start reports when it cannot run the image's kernels.
DRIVER_TOO_OLD = "RuntimeError: CUDA driver version is insufficient for CUDA runtime version"
NO_KERNEL = "RuntimeError: CUDA error: no kernel image is available for execution on the device"
NO_DRIVER = "RuntimeError: Found no NVIDIA driver on your system"
_TORCH_VERSION = re.compile(r"^(\d+)\.(\d+)")


@dataclass(frozen=True)
class CheckOutcome:
    """One check as the probe reported it: a status word and the check's own numbers."""

    status: str
    seconds: float | None
    error: str | None
    reason: str | None
    data: Mapping[str, Any] = field(default_factory=dict)

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def flag(self, key: str) -> bool | None:
        value = self.data.get(key)
        return value if isinstance(value, bool) else None


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


@dataclass(frozen=True)
class Observed:
    """What a judge may depend on besides the check itself: the profile, the result's boards, the torch."""

    profile: Profile
    boards: tuple[Board, ...]
    gpu_count: int
    torch: tuple[int, int] | None

    @property
    def speed_judged(self) -> bool:
        """Throughput is judged unless the catalogue says no board in the result has tensor cores."""
        return not all(b.tensor_cores is False for b in self.boards)


@dataclass(frozen=True)
class AllowedSkip:
    """A planned check (or sub-run) that may be skipped, when, and why that still proves the node."""

    what: str
    why: str
    holds: Callable[[Observed], bool]


#: Called by a check's `evidence` for a skipped sub-run with (what, the probe's reason): an allowed skip
#: is noted, one that is not comes back as the gap to report.
Skipped = Callable[[str, str | None], Reason | None]


@dataclass(frozen=True)
class Throughput:
    """Dense matmul TFLOP/s a simulated board reaches; None where the board has no such path."""

    fp32: float
    fp16: float
    tf32: float | None = None


@dataclass(frozen=True)
class SimulatedPod:
    """What a simulated probe can observe in one pod, as plain facts (the simulator derives them)."""

    device: str  # the plan's device, "cuda" or "cpu"
    failure: str | None  # the CUDA start error (NO_DRIVER, DRIVER_TOO_OLD, NO_KERNEL), None when CUDA works
    gpu_visible: bool  # NVML sees a board in the pod
    visible: int
    compute_capability: ComputeCapability
    throughput: Throughput
    torch: str
    native_amp: bool
    apex: bool
    autocast: bool
    tf32: bool
    amp_nan: bool = False
    slow_tensor_cores: bool = False
    memory_mib: int = 0  # NVML's total memory of one board
    datacenter: bool = False
    faults: frozenset[str] = frozenset()  # the simulator's check faults (docs/fleet.md), by name


def cpu_dry_run(o: Observed) -> bool:
    """The profile asks for a CPU dry run (validation.device cpu): nothing GPU-only can run."""
    return o.profile.validation.device == "cpu"


def below(cc: ComputeCapability) -> Callable[[Observed], bool]:
    """Every GPU in the result is below this compute capability (and the result names at least one)."""

    def holds(o: Observed) -> bool:
        return bool(o.boards) and all(b.compute_capability is not None and b.compute_capability < cc
                                      for b in o.boards)

    return holds


def torch_version(text: str | None) -> tuple[int, int] | None:
    """(major, minor) of a torch version string such as "1.6.0a0+9907a3e"."""
    match = _TORCH_VERSION.match(text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def torch_before(version: tuple[int, int]) -> Callable[[Observed], bool]:
    """The image's torch predates an API, and so does the release the profile names (when it names one)."""

    def holds(o: Observed) -> bool:
        if o.torch is None or o.torch >= version:
            return False
        stated = o.profile.components.pytorch
        release = torch_version(stated)
        return stated is None or (release is not None and release < version)

    return holds


def incomplete(message: str) -> Reason:
    return Reason("IncompleteResult", message)


def skipped(seconds: float, reason: str) -> dict[str, Any]:
    return {"status": "skipped", "seconds": seconds, "reason": reason}


class Enabled(Protocol):
    @property
    def enabled(self) -> bool: ...


S = TypeVar("S", bound=Enabled)


class Check(ABC, Generic[S]):
    """One check; a subclass sets its name and settings and overrides the parts that are its own."""

    #: The check's key in the plan, the result and the profile's `checks`.
    name: str = ""
    #: The fields of its result object, validated as untrusted input; unknown fields are dropped.
    schema: ClassVar[Mapping[str, Validator]] = {}
    #: What an `ok` must carry to prove anything; a missing field is missing evidence.
    proof: tuple[str, ...] = ()
    #: Skips a `passed` node may carry; any other skip of a planned check is `IncompleteResult`.
    allowed_skips: tuple[AllowedSkip, ...] = ()
    #: The reason code of an `error` status.
    error_code: str = "CheckError"
    #: Set when every GPU run must carry this check `ok`: what it proves ("CUDA works").
    proves_gpu_run: str | None = None
    #: How long the check takes in the simulator, in seconds.
    simulated_seconds: float = 0.0

    @abstractmethod
    def settings(self, checks: Checks) -> S:
        """This check's section of the typed profile."""

    def payload(self, settings: S) -> dict[str, Any]:
        """What the plan passes to the probe's check function."""
        return {}

    def plan(self, checks: Checks) -> dict[str, Any] | None:
        """The plan entry, or None when the profile disables the check."""
        settings = self.settings(checks)
        return self.payload(settings) if settings.enabled else None

    def proof_fields(self, observed: Observed) -> tuple[str, ...]:
        return self.proof

    def judge(self, settings: S, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        """Threshold failures of an `ok` outcome."""
        return []

    def evidence(self, settings: S, outcome: CheckOutcome, observed: Observed, skip: Skipped) -> list[Reason]:
        """Gaps inside an `ok` outcome: planned sub-runs missing, skipped without leave, or unproven."""
        return []

    def implausible(self, outcome: CheckOutcome, boards: tuple[Board, ...]) -> list[str]:
        """Numbers this outcome cannot truly have on these boards (the result is then untrusted)."""
        return []

    def findings(self, outcome: CheckOutcome, observed: Observed) -> list[Reason]:
        """Notes on the record that do not change the verdict."""
        return []

    def summary(self, outcome: CheckOutcome) -> dict[str, Any]:
        """Key numbers for the node record and the profile status."""
        return {}

    @abstractmethod
    def describe(self, result: ProbeResult, outcome: CheckOutcome) -> str:
        """The numbers column of `torchproof probe`'s table for an `ok` outcome."""

    @abstractmethod
    def simulate(self, pod: SimulatedPod, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The result object a probe would write for this check in a simulated pod."""


def subrun_gaps(check: str, runs: Sequence[str], outcome: CheckOutcome, skip: Skipped,
                proof: tuple[str, ...], failure: Callable[[str, Any, float], Reason | None],
                tolerance: float) -> list[Reason]:
    """The evidence of a check made of planned sub-runs (amp's precisions, sdpa's backends): each present,
    skipped only as allowed, and a good one carrying every proof field."""
    gaps: list[Reason] = []
    for run in runs:
        data = outcome.data.get(run)
        if not isinstance(data, Mapping):
            gaps.append(incomplete(f"{check}.{run} missing from the result"))
        elif "skipped" in data:
            gaps += [gap for gap in (skip(f"{check}.{run}", data.get("skipped")),) if gap is not None]
        elif failure(run, data, tolerance) is None:
            gaps += [incomplete(f"{check}.{run}: ran without {key}") for key in proof if data.get(key) is None]
    return gaps


def rounded(outcome: CheckOutcome, field: str, key: str, digits: int) -> dict[str, Any]:
    """A summary of one of the outcome's numbers, rounded, under the record's key; nothing when it is absent."""
    value = outcome.number(field)
    return {} if value is None else {key: round(value, digits)}


def cuda_failure(pod: SimulatedPod) -> dict[str, Any] | None:
    """The outcome of a check that needs CUDA when CUDA cannot start in the pod; None when it can."""
    if pod.failure == NO_KERNEL:
        return {"status": "error", "seconds": 0.1, "error": NO_KERNEL}
    if pod.failure is not None:
        return skipped(0.0, "cuda unavailable")
    return None


def fmt(value: Any) -> str:
    """A number or flag as the local table shows it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
