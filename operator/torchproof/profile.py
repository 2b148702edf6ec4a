"""The typed PyTorchReleaseProfile: parse once, at the edge, then trust the value everywhere.

`parse_profile` applies the CRD's defaults (an object read from a file, or written before a default
existed, may lack them) and re-checks what the CRD checks, so a profile that slipped past admission
(an old CRD, a local file) fails here with the field's path instead of deep inside a handler.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from decimal import Decimal
from functools import cached_property
from types import MappingProxyType
from typing import Any, Final

from torchproof.catalogue import ARCHITECTURES
from torchproof.versions import ComputeCapability, DriverVersion

PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")
PRECISIONS: Final = ("fp32", "fp16", "amp", "tf32", "bf16")
SEVERITIES: Final = ("info", "warning", "critical")
SELECTOR_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")
COMPONENTS: Final = ("cuda", "pytorch", "python", "ubuntu", "cudnn", "nccl", "tensorrt")
TAINT_EFFECTS: Final = ("NoSchedule", "PreferNoSchedule", "NoExecute")
DEVICES: Final = ("cuda", "cpu")

_NAME = re.compile(r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_RELEASE = re.compile(r"^\d{2}\.\d{2}$")
_IMAGE = re.compile(r"^[a-z0-9][A-Za-z0-9._/:@-]*$")
_COMPONENT = re.compile(r"^[0-9][0-9A-Za-z.+-]*$")
_DRIVER = re.compile(r"^\d{1,4}(\.\d{1,4}){0,2}$")
_CC = re.compile(r"^\d{1,2}\.\d$")
_ISSUE_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DURATION = re.compile(r"^(\d{1,6}[hms])+$")
_DURATION_PART = re.compile(r"(\d+)([hms])")
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_QUANTITY_SCALE: Final = {
    None: Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}
_UNITS: Final = {"h": 3600, "m": 60, "s": 1}
# The device plugin's names: whole GPUs, or MIG devices under the mixed strategy (mig-1g.5gb, mig-1c.3g.20gb,
# mig-1g.10gb.me), as docs/profile.md says.
GPU_RESOURCE: Final = "nvidia.com/gpu"
_GPU_RESOURCE = re.compile(r"^nvidia\.com/(gpu|mig-[0-9]+(c\.[0-9]+)?g\.[0-9]+gb(\.[a-z0-9]+)*)$")
RESOURCE_NAMES: Final = ("cpu", "memory", "ephemeral-storage")


# Section 9 of issue 8; the CRD says the same in CEL (tests/unit/test_crd.py keeps the two in step).
NOTHING_TO_VALIDATE: Final = ("checks.cuda and checks.gpu cannot be disabled: every verdict rests on the CUDA "
                              "check and on the GPUs the probe observes (docs/contract.md, rules of evidence)")
START_MARGIN_SECONDS: Final = 30  # container and CUDA start, outside the probe's own budget
ROOT_NEEDS_RUN_AS_ROOT: Final = "runAsUser 0 (root) needs runAsNonRoot: false"
ONE_MIG_DEVICE: Final = ("a MIG resource gives a container one usable MIG device: gpusPerProbe must be 1 unless "
                         f"gpuResource is {GPU_RESOURCE}")
CPU_NEEDS_SELECTOR: Final = "validation.device cpu needs a nodeSelector (the default selects GPU nodes)"
BUDGET_OVER_TIMEOUT: Final = (f"checks.timeBudgetSeconds plus {START_MARGIN_SECONDS}s (container and CUDA start) "
                              "must not exceed validation.runtimeTimeoutSeconds, or the pod's deadline cuts the "
                              "probe off")


class InvalidSpec(Exception):
    """A profile the operator cannot act on; ``field`` is the path of the first bad value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Components:
    """Versions the release ships; the verdict compares them with what the probe finds."""

    cuda: str | None = None
    pytorch: str | None = None
    python: str | None = None
    ubuntu: str | None = None
    cudnn: str | None = None
    nccl: str | None = None
    tensorrt: str | None = None


@dataclass(frozen=True)
class BranchRequirement:
    """An older driver branch that datacenter boards may use through CUDA forward compatibility."""

    branch: int
    minimum: DriverVersion


@dataclass(frozen=True)
class DriverRequirement:
    minimum: DriverVersion
    datacenter_branches: tuple[BranchRequirement, ...] = ()


@dataclass(frozen=True)
class Requirements:
    driver: DriverRequirement
    min_compute_capability: ComputeCapability
    max_compute_capability: ComputeCapability | None = None
    architectures: frozenset[str] = frozenset()


@dataclass(frozen=True)
class EnvironmentCheck:
    enabled: bool = True


@dataclass(frozen=True)
class GpuCheck:
    enabled: bool = True


@dataclass(frozen=True)
class CudaCheck:
    enabled: bool = True


@dataclass(frozen=True)
class AmpCheck:
    enabled: bool = True
    native: bool = True
    apex: bool = True
    bf16: bool = True
    steps: int = 8
    tolerance: float = 0.05


@dataclass(frozen=True)
class TensorCoresCheck:
    enabled: bool = True
    size: int = 4096
    iterations: int = 20
    min_speedup: float = 2.0


@dataclass(frozen=True)
class ChannelsLastCheck:
    enabled: bool = True
    tolerance: float = 0.01


@dataclass(frozen=True)
class Conv3dCheck:
    enabled: bool = True
    iterations: int = 5


@dataclass(frozen=True)
class MultiGpuCheck:
    enabled: bool = True


@dataclass(frozen=True)
class Checks:
    environment: EnvironmentCheck = EnvironmentCheck()
    gpu: GpuCheck = GpuCheck()
    cuda: CudaCheck = CudaCheck()
    amp: AmpCheck = AmpCheck()
    tensor_cores: TensorCoresCheck = TensorCoresCheck()
    channels_last: ChannelsLastCheck = ChannelsLastCheck()
    conv3d: Conv3dCheck = Conv3dCheck()
    multi_gpu: MultiGpuCheck = MultiGpuCheck()
    time_budget_seconds: int = 120


@dataclass(frozen=True)
class KnownIssue:
    """A documented problem of the release; empty architectures/precisions mean "all"."""

    id: str
    summary: str
    architectures: frozenset[str] = frozenset()
    precisions: frozenset[str] = frozenset()
    severity: str = "warning"
    workaround: str | None = None


@dataclass(frozen=True)
class SelectorRequirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        present = self.key in labels and labels[self.key] in self.values
        return present if self.operator == "In" else not present


@dataclass(frozen=True)
class LabelSelector:
    """A metav1.LabelSelector: every matchLabels pair and every expression must hold."""

    match_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    match_expressions: tuple[SelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            e.matches(labels) for e in self.match_expressions
        )


@dataclass(frozen=True)
class PodSecurity:
    """Whom the probe runs as. The defaults pass Pod Security `restricted`; root needs a namespace whose
    enforced level is `baseline` or `privileged` (docs/profile.md)."""

    run_as_user: int = 1000
    run_as_non_root: bool = True
    read_only_root_filesystem: bool = True


DEFAULT_SHM_SIZE: Final = "1Gi"  # NGC's containers ask for --shm-size=1g


@dataclass(frozen=True)
class ValidationSettings:
    device: str = "cuda"  # cpu: a dry run of the whole flow on nodes without GPUs, never proof of a GPU node
    gpus_per_probe: int = 1
    gpu_resource: str = GPU_RESOURCE
    runtime_class_name: str | None = None
    shm_size: str = DEFAULT_SHM_SIZE
    security: PodSecurity = PodSecurity()
    runtime_timeout_seconds: int = 600
    pending_timeout_seconds: int = 300
    priority_class_name: str | None = None
    tolerations: tuple[Mapping[str, Any], ...] = ()
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Profile:
    name: str
    generation: int
    uid: str | None
    release: str
    image: str
    image_pull_policy: str
    image_pull_secrets: tuple[str, ...]
    components: Components
    requirements: Requirements
    checks: Checks
    known_issues: tuple[KnownIssue, ...]
    node_selector: LabelSelector | None
    validation: ValidationSettings
    max_concurrent: int
    revalidate_after_seconds: int | None

    @cached_property
    def spec_hash(self) -> str:
        """Changes exactly when a node's earlier result no longer proves this spec (12 hex digits).

        Scheduling knobs (selector, concurrency, timeouts, revalidation, priority, tolerations, resources)
        and known issues are left out: changing them must not re-run every probe. What the probe runs on
        and as (GPU resource, runtime class, /dev/shm, security context) is in, but only where it differs
        from its default, so that profiles written before those fields existed keep their hash.
        """
        relevant: dict[str, Any] = {
            "release": self.release,
            "image": self.image,
            "components": self.components,
            "requirements": self.requirements,
            "checks": self.checks,
            "gpusPerProbe": self.validation.gpus_per_probe,
        }
        pod, default = _pod_environment(self.validation), _pod_environment(ValidationSettings())
        changed = {key: value for key, value in pod.items() if value != default[key]}
        if changed:
            relevant["pod"] = changed
        text = json.dumps(_canonical(relevant), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _pod_environment(v: ValidationSettings) -> dict[str, Any]:
    """What the probe runs on and as; sizes as bytes, so that 1Gi and 1024Mi are the same spec."""
    return {"device": v.device, "gpuResource": v.gpu_resource, "runtimeClassName": v.runtime_class_name,
            "shmBytes": format(_quantity(v.shm_size).normalize(), "f"), "securityContext": v.security}


def _canonical(value: Any) -> Any:
    if isinstance(value, DriverVersion | ComputeCapability):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, frozenset):
        return sorted(_canonical(v) for v in value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    return value


def parse_duration(text: str) -> int:
    """Seconds in a duration such as ``168h``, ``30m``, ``90s`` or ``1h30m``."""
    if not isinstance(text, str) or not _DURATION.match(text):
        raise ValueError(f"invalid duration {text!r}: expected numbers with units h, m or s: 168h, 1h30m")
    return sum(int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def _quantity(text: str) -> Decimal:
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"invalid quantity {text!r}: expected a number and an optional unit, like 500m, 4Gi")
    return Decimal(match.group(1)) * _QUANTITY_SCALE[match.group(2)]


# ---- readers: each takes the parent mapping, the key and the parent's path ------------------------


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _object(value: Any, path: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidSpec(path, f"must be an object, not {_kind(value)}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise InvalidSpec(f"{path}.{unknown[0]}", f"unknown field (known: {', '.join(allowed)})")
    return value


def _opt_str(
    m: Mapping[str, Any],
    key: str,
    path: str,
    *,
    max_length: int,
    pattern: re.Pattern[str] | None = None,
    choices: Sequence[str] | None = None,
) -> str | None:
    value = m.get(key)
    where = f"{path}.{key}"
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidSpec(where, f"must be a string, not {_kind(value)}")
    if len(value) > max_length:
        raise InvalidSpec(where, f"longer than {max_length} characters")
    if choices is not None and value not in choices:
        raise InvalidSpec(where, f"{value!r} is not one of {', '.join(choices)}")
    if pattern is not None and not pattern.match(value):
        raise InvalidSpec(where, f"{value!r} does not match {pattern.pattern}")
    return value


def _str(
    m: Mapping[str, Any],
    key: str,
    path: str,
    *,
    max_length: int,
    pattern: re.Pattern[str] | None = None,
    choices: Sequence[str] | None = None,
    default: str | None = None,
) -> str:
    value = _opt_str(m, key, path, max_length=max_length, pattern=pattern, choices=choices)
    if value is not None:
        return value
    if default is None:
        raise InvalidSpec(f"{path}.{key}", "required")
    return default


def _int(m: Mapping[str, Any], key: str, path: str, *, default: int | None, lo: int, hi: int) -> int:
    value = m.get(key)
    where = f"{path}.{key}"
    if value is None:
        if default is None:
            raise InvalidSpec(where, "required")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(where, f"must be an integer, not {_kind(value)}")
    if not lo <= value <= hi:
        raise InvalidSpec(where, f"{value} is outside {lo}..{hi}")
    return value


def _number(m: Mapping[str, Any], key: str, path: str, *, default: float, lo: float, hi: float) -> float:
    value = m.get(key)
    where = f"{path}.{key}"
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSpec(where, f"must be a number, not {_kind(value)}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidSpec(where, f"{value} is outside {lo}..{hi}")
    return float(value)


def _bool(m: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = m.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidSpec(f"{path}.{key}", f"must be true or false, not {_kind(value)}")
    return value


def _list(m: Mapping[str, Any], key: str, path: str, *, max_items: int) -> list[tuple[str, Any]]:
    """Items with their own paths (``path.key[i]``)."""
    value = m.get(key)
    where = f"{path}.{key}"
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidSpec(where, f"must be a list, not {_kind(value)}")
    if len(value) > max_items:
        raise InvalidSpec(where, f"has {len(value)} items, at most {max_items} allowed")
    return [(f"{where}[{i}]", item) for i, item in enumerate(value)]


def _str_set(
    m: Mapping[str, Any], key: str, path: str, *, choices: Sequence[str] | None = None, max_items: int,
    max_length: int = 63, pattern: re.Pattern[str] | None = None,
) -> tuple[str, ...]:
    out: list[str] = []
    for where, item in _list(m, key, path, max_items=max_items):
        if not isinstance(item, str):
            raise InvalidSpec(where, f"must be a string, not {_kind(item)}")
        if choices is not None and item not in choices:
            raise InvalidSpec(where, f"{item!r} is not one of {', '.join(choices)}")
        if len(item) > max_length or (pattern is not None and not pattern.match(item)):
            raise InvalidSpec(where, f"{item!r} is not valid here")
        if item in out:
            raise InvalidSpec(where, f"{item!r} is listed twice")
        out.append(item)
    return tuple(out)


def _driver_version(text: str, where: str) -> DriverVersion:
    try:
        return DriverVersion.parse(text)
    except ValueError as exc:
        raise InvalidSpec(where, str(exc)) from None


def _compute_capability(text: str, where: str) -> ComputeCapability:
    try:
        return ComputeCapability.parse(text)
    except ValueError as exc:
        raise InvalidSpec(where, str(exc)) from None


# ---- sections -------------------------------------------------------------------------------------


def _components(value: Any, path: str) -> Components:
    m = _object(value, path, COMPONENTS)
    return Components(**{k: _opt_str(m, k, path, max_length=64, pattern=_COMPONENT) for k in COMPONENTS})


def _driver(value: Any, path: str) -> DriverRequirement:
    m = _object(value, path, ("minimum", "datacenterBranches"))
    if not m:
        raise InvalidSpec(f"{path}.minimum", "required")
    minimum = _driver_version(_str(m, "minimum", path, max_length=16, pattern=_DRIVER), f"{path}.minimum")
    branches: list[BranchRequirement] = []
    for where, item in _list(m, "datacenterBranches", path, max_items=16):
        b = _object(item, where, ("branch", "minimum"))
        branch = _int(b, "branch", where, default=None, lo=1, hi=9999)
        low = _driver_version(_str(b, "minimum", where, max_length=16, pattern=_DRIVER), f"{where}.minimum")
        if low.branch != branch:
            raise InvalidSpec(f"{where}.minimum", f"{low} is not on branch {branch}")
        if branch >= minimum.branch:
            raise InvalidSpec(f"{where}.branch", f"{branch} is not older than the minimum driver {minimum}")
        if any(x.branch == branch for x in branches):
            raise InvalidSpec(f"{where}.branch", f"branch {branch} is listed twice")
        branches.append(BranchRequirement(branch, low))
    return DriverRequirement(minimum, tuple(branches))


def _requirements(value: Any, path: str) -> Requirements:
    allowed = ("driver", "minComputeCapability", "maxComputeCapability", "architectures")
    m = _object(value, path, allowed)
    if not m:
        raise InvalidSpec(path, "required")
    low = _compute_capability(
        _str(m, "minComputeCapability", path, max_length=5, pattern=_CC), f"{path}.minComputeCapability"
    )
    high_text = _opt_str(m, "maxComputeCapability", path, max_length=5, pattern=_CC)
    high: ComputeCapability | None = None
    if high_text is not None:
        high = _compute_capability(high_text, f"{path}.maxComputeCapability")
        if high < low:
            raise InvalidSpec(f"{path}.maxComputeCapability", f"{high} is below minComputeCapability {low}")
    return Requirements(
        driver=_driver(m.get("driver"), f"{path}.driver"),
        min_compute_capability=low,
        max_compute_capability=high,
        architectures=frozenset(_str_set(m, "architectures", path, choices=ARCHITECTURES, max_items=9)),
    )


def _checks(value: Any, path: str) -> Checks:
    names = ("environment", "gpu", "cuda", "amp", "tensorCores", "channelsLast", "conv3d", "multiGpu")
    m = _object(value, path, (*names, "timeBudgetSeconds"))

    def section(key: str, allowed: Sequence[str]) -> tuple[Mapping[str, Any], str]:
        where = f"{path}.{key}"
        return _object(m.get(key), where, ("enabled", *allowed)), where

    env, p_env = section("environment", ())
    gpu, p_gpu = section("gpu", ())
    cuda, p_cuda = section("cuda", ())
    amp, p_amp = section("amp", ("native", "apex", "bf16", "steps", "tolerance"))
    tc, p_tc = section("tensorCores", ("size", "iterations", "minSpeedup"))
    cl, p_cl = section("channelsLast", ("tolerance",))
    c3, p_c3 = section("conv3d", ("iterations",))
    mg, p_mg = section("multiGpu", ())
    amp_check = AmpCheck(
        enabled=_bool(amp, "enabled", p_amp, True),
        native=_bool(amp, "native", p_amp, True),
        apex=_bool(amp, "apex", p_amp, True),
        bf16=_bool(amp, "bf16", p_amp, True),
        steps=_int(amp, "steps", p_amp, default=8, lo=1, hi=100),
        tolerance=_number(amp, "tolerance", p_amp, default=0.05, lo=0.0, hi=1.0),
    )
    if amp_check.enabled and not (amp_check.native or amp_check.apex or amp_check.bf16):
        raise InvalidSpec(p_amp, "enabled, but native, apex and bf16 are all false")
    if not (_bool(cuda, "enabled", p_cuda, True) and _bool(gpu, "enabled", p_gpu, True)):
        raise InvalidSpec(path, NOTHING_TO_VALIDATE)
    return Checks(
        environment=EnvironmentCheck(_bool(env, "enabled", p_env, True)),
        gpu=GpuCheck(_bool(gpu, "enabled", p_gpu, True)),
        cuda=CudaCheck(_bool(cuda, "enabled", p_cuda, True)),
        amp=amp_check,
        tensor_cores=TensorCoresCheck(
            enabled=_bool(tc, "enabled", p_tc, True),
            size=_int(tc, "size", p_tc, default=4096, lo=256, hi=16384),
            iterations=_int(tc, "iterations", p_tc, default=20, lo=1, hi=200),
            min_speedup=_number(tc, "minSpeedup", p_tc, default=2.0, lo=0.0, hi=100.0),
        ),
        channels_last=ChannelsLastCheck(
            enabled=_bool(cl, "enabled", p_cl, True),
            tolerance=_number(cl, "tolerance", p_cl, default=0.01, lo=0.0, hi=1.0),
        ),
        conv3d=Conv3dCheck(
            enabled=_bool(c3, "enabled", p_c3, True),
            iterations=_int(c3, "iterations", p_c3, default=5, lo=1, hi=100),
        ),
        multi_gpu=MultiGpuCheck(_bool(mg, "enabled", p_mg, True)),
        time_budget_seconds=_int(m, "timeBudgetSeconds", path, default=120, lo=10, hi=3600),
    )


def _known_issues(spec: Mapping[str, Any], path: str) -> tuple[KnownIssue, ...]:
    issues: list[KnownIssue] = []
    allowed = ("id", "summary", "architectures", "precisions", "severity", "workaround")
    for where, item in _list(spec, "knownIssues", path, max_items=64):
        m = _object(item, where, allowed)
        issue = KnownIssue(
            id=_str(m, "id", where, max_length=63, pattern=_ISSUE_ID),
            summary=_str(m, "summary", where, max_length=512),
            architectures=frozenset(_str_set(m, "architectures", where, choices=ARCHITECTURES, max_items=9)),
            precisions=frozenset(_str_set(m, "precisions", where, choices=PRECISIONS, max_items=5)),
            severity=_str(m, "severity", where, max_length=16, choices=SEVERITIES, default="warning"),
            workaround=_opt_str(m, "workaround", where, max_length=1024),
        )
        if any(i.id == issue.id for i in issues):
            raise InvalidSpec(f"{where}.id", f"{issue.id!r} is listed twice")
        issues.append(issue)
    return tuple(issues)


def _selector(value: Any, path: str) -> LabelSelector | None:
    if value is None:
        return None
    m = _object(value, path, ("matchLabels", "matchExpressions"))
    labels = m.get("matchLabels") or {}
    where = f"{path}.matchLabels"
    if not isinstance(labels, Mapping):
        raise InvalidSpec(where, f"must be an object, not {_kind(labels)}")
    if len(labels) > 64:
        raise InvalidSpec(where, f"has {len(labels)} entries, at most 64 allowed")
    for key in labels:
        if not isinstance(key, str) or len(key) > 317 or not _LABEL_KEY.match(key):
            raise InvalidSpec(f"{where}.{key}", "not a valid label key")
        _str(labels, key, where, max_length=63, pattern=_LABEL_VALUE, default="")
    expressions: list[SelectorRequirement] = []
    for where, item in _list(m, "matchExpressions", path, max_items=32):
        e = _object(item, where, ("key", "operator", "values"))
        key = _str(e, "key", where, max_length=317, pattern=_LABEL_KEY)
        operator = _str(e, "operator", where, max_length=16, choices=SELECTOR_OPERATORS)
        values = _str_set(e, "values", where, max_items=64, pattern=_LABEL_VALUE)
        if operator in ("In", "NotIn") and not values:
            raise InvalidSpec(f"{where}.values", f"must not be empty for operator {operator}")
        if operator in ("Exists", "DoesNotExist") and values:
            raise InvalidSpec(f"{where}.values", f"must be empty for operator {operator}")
        expressions.append(SelectorRequirement(key, operator, values))
    return LabelSelector(MappingProxyType(dict(labels)), tuple(expressions))


def _tolerations(m: Mapping[str, Any], path: str) -> tuple[Mapping[str, Any], ...]:
    out: list[Mapping[str, Any]] = []
    for where, item in _list(m, "tolerations", path, max_items=32):
        t = _object(item, where, ("key", "operator", "value", "effect", "tolerationSeconds"))
        key = _opt_str(t, "key", where, max_length=317, pattern=_LABEL_KEY)
        operator = _str(t, "operator", where, max_length=8, choices=("Exists", "Equal"), default="Equal")
        value = _opt_str(t, "value", where, max_length=63, pattern=_LABEL_VALUE)
        effect = _opt_str(t, "effect", where, max_length=16, choices=TAINT_EFFECTS)
        seconds = t.get("tolerationSeconds")
        if key is None and operator != "Exists":
            raise InvalidSpec(f"{where}.operator", "must be Exists when key is empty")
        if operator == "Exists" and value:
            raise InvalidSpec(f"{where}.value", "must be empty when operator is Exists")
        if seconds is not None:
            _int(t, "tolerationSeconds", where, default=None, lo=-(2**63), hi=2**63 - 1)
            if effect != "NoExecute":
                raise InvalidSpec(f"{where}.tolerationSeconds", "only allowed with effect NoExecute")
        given = {"key": key, "operator": operator, "value": value, "effect": effect}
        given["tolerationSeconds"] = seconds
        out.append(MappingProxyType({k: v for k, v in given.items() if v is not None}))
    return tuple(out)


def _resources(value: Any, path: str) -> Mapping[str, Mapping[str, str]]:
    m = _object(value, path, ("requests", "limits"))
    out: dict[str, Mapping[str, str]] = {}
    amounts: dict[str, dict[str, Decimal]] = {}
    for part in ("requests", "limits"):
        where = f"{path}.{part}"
        r = _object(m.get(part), where, RESOURCE_NAMES)
        strings: dict[str, str] = {}
        for name in RESOURCE_NAMES:
            text = _opt_str(r, name, where, max_length=32)
            if text is not None:
                try:
                    amounts.setdefault(part, {})[name] = _quantity(text)
                except ValueError as exc:
                    raise InvalidSpec(f"{where}.{name}", str(exc)) from None
                strings[name] = text
        if strings:
            out[part] = MappingProxyType(strings)
    for name, limit in amounts.get("limits", {}).items():
        request = amounts.get("requests", {}).get(name)
        if request is not None and request > limit:
            given = f"{out['requests'][name]} exceeds the limit {out['limits'][name]}"
            raise InvalidSpec(f"{path}.requests.{name}", given)
    return MappingProxyType(out)


def _security(value: Any, path: str) -> PodSecurity:
    m = _object(value, path, ("runAsUser", "runAsNonRoot", "readOnlyRootFilesystem"))
    security = PodSecurity(
        run_as_user=_int(m, "runAsUser", path, default=1000, lo=0, hi=2**31 - 1),
        run_as_non_root=_bool(m, "runAsNonRoot", path, True),
        read_only_root_filesystem=_bool(m, "readOnlyRootFilesystem", path, True),
    )
    if security.run_as_user == 0 and security.run_as_non_root:
        raise InvalidSpec(f"{path}.runAsUser", ROOT_NEEDS_RUN_AS_ROOT)
    return security


def _shm_size(m: Mapping[str, Any], path: str, resources: Mapping[str, Mapping[str, str]]) -> str:
    """A memory-backed /dev/shm counts against the container's memory limit, so it must fit inside it."""
    where = f"{path}.shmSize"
    text = _str(m, "shmSize", path, max_length=32, default=DEFAULT_SHM_SIZE)
    try:
        size = _quantity(text)
    except ValueError as exc:
        raise InvalidSpec(where, str(exc)) from None
    if size <= 0:
        raise InvalidSpec(where, f"{text} is not more than 0")
    limit = resources.get("limits", {}).get("memory")
    if limit is not None and size > _quantity(limit):
        raise InvalidSpec(where, f"{text} exceeds resources.limits.memory {limit} (a memory-backed /dev/shm "
                                 "counts against the memory limit)")
    return text


def _validation(value: Any, path: str) -> ValidationSettings:
    allowed = ("device", "gpusPerProbe", "gpuResource", "runtimeClassName", "shmSize", "securityContext",
               "runtimeTimeoutSeconds", "pendingTimeoutSeconds", "priorityClassName", "tolerations", "resources")
    m = _object(value, path, allowed)
    gpus = _int(m, "gpusPerProbe", path, default=1, lo=1, hi=8)
    gpu_resource = _str(m, "gpuResource", path, max_length=63, pattern=_GPU_RESOURCE, default=GPU_RESOURCE)
    if gpu_resource != GPU_RESOURCE and gpus != 1:
        raise InvalidSpec(f"{path}.gpusPerProbe", ONE_MIG_DEVICE)
    resources = _resources(m.get("resources"), f"{path}.resources")
    return ValidationSettings(
        device=_str(m, "device", path, max_length=4, choices=DEVICES, default="cuda"),
        gpus_per_probe=gpus,
        gpu_resource=gpu_resource,
        runtime_class_name=_opt_str(m, "runtimeClassName", path, max_length=253, pattern=_DNS_SUBDOMAIN),
        shm_size=_shm_size(m, path, resources),
        security=_security(m.get("securityContext"), f"{path}.securityContext"),
        runtime_timeout_seconds=_int(m, "runtimeTimeoutSeconds", path, default=600, lo=30, hi=86400),
        pending_timeout_seconds=_int(m, "pendingTimeoutSeconds", path, default=300, lo=30, hi=86400),
        priority_class_name=_opt_str(m, "priorityClassName", path, max_length=253, pattern=_DNS_SUBDOMAIN),
        tolerations=_tolerations(m, path),
        resources=resources,
    )


_SPEC_FIELDS: Final = (
    "release", "image", "imagePullPolicy", "imagePullSecrets", "components", "requirements", "checks",
    "knownIssues", "nodeSelector", "validation", "maxConcurrent", "revalidateAfter",
)


def parse_profile(obj: Mapping[str, Any]) -> Profile:
    """The whole object as the API returns it (metadata and spec) → Profile, or InvalidSpec."""
    if not isinstance(obj, Mapping):
        raise InvalidSpec("<root>", f"must be an object, not {_kind(obj)}")
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        raise InvalidSpec("metadata", "required")
    name = _str(meta, "name", "metadata", max_length=63, pattern=_NAME)
    generation = meta.get("generation", 1)
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
        raise InvalidSpec("metadata.generation", f"must be a positive integer, not {generation!r}")
    uid = _opt_str(meta, "uid", "metadata", max_length=64)
    if obj.get("spec") is None:
        raise InvalidSpec("spec", "required")
    spec = _object(obj.get("spec"), "spec", _SPEC_FIELDS)
    secrets: list[str] = []
    for where, item in _list(spec, "imagePullSecrets", "spec", max_items=16):
        ref = _object(item, where, ("name",))
        secrets.append(_str(ref, "name", where, max_length=253, pattern=_DNS_SUBDOMAIN))
    revalidate = _opt_str(spec, "revalidateAfter", "spec", max_length=32)
    revalidate_seconds: int | None = None
    if revalidate is not None:
        try:
            revalidate_seconds = parse_duration(revalidate)
        except ValueError as exc:
            raise InvalidSpec("spec.revalidateAfter", str(exc)) from None
        if revalidate_seconds < 60:
            raise InvalidSpec("spec.revalidateAfter", f"{revalidate} is shorter than 60s")
    profile = Profile(
        name=name,
        generation=generation,
        uid=uid,
        release=_str(spec, "release", "spec", max_length=5, pattern=_RELEASE),
        image=_str(spec, "image", "spec", max_length=512, pattern=_IMAGE),
        image_pull_policy=_str(spec, "imagePullPolicy", "spec", max_length=16, choices=PULL_POLICIES,
                               default="IfNotPresent"),
        image_pull_secrets=tuple(secrets),
        components=_components(spec.get("components"), "spec.components"),
        requirements=_requirements(spec.get("requirements"), "spec.requirements"),
        checks=_checks(spec.get("checks"), "spec.checks"),
        known_issues=_known_issues(spec, "spec"),
        node_selector=_selector(spec.get("nodeSelector"), "spec.nodeSelector"),
        validation=_validation(spec.get("validation"), "spec.validation"),
        max_concurrent=_int(spec, "maxConcurrent", "spec", default=10, lo=1, hi=1000),
        revalidate_after_seconds=revalidate_seconds,
    )
    if profile.validation.device == "cpu" and profile.node_selector is None:
        raise InvalidSpec("spec.nodeSelector", CPU_NEEDS_SELECTOR)
    if profile.checks.time_budget_seconds + START_MARGIN_SECONDS > profile.validation.runtime_timeout_seconds:
        raise InvalidSpec("spec.checks.timeBudgetSeconds", BUDGET_OVER_TIMEOUT)
    return profile
