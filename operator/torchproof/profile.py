"""The typed PyTorchReleaseProfile: the CRD's schema is generated from these models, and parse once, at
the edge, then trust the value everywhere.

Each field's bounds, pattern, enum, default and description are declared once, on the model
(`torchproof.crdmodel`); `python -m torchproof.crdgen` writes the CRD from them and `parse_profile` reads
an object against the same declarations, so a profile that slipped past admission (an old CRD, a local
file) fails here with the field's path instead of deep inside a handler. The CEL rules live on the models
too and are the API server's to evaluate; what they say across fields is checked again below, once, in
`_check`, with the rule's own message where it names the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from decimal import Decimal
from functools import cached_property
from types import MappingProxyType
from typing import Any, Final

from torchproof.catalogue import ARCHITECTURES
from torchproof.crdmodel import InvalidSpec as InvalidSpec  # where the operator has always found it
from torchproof.crdmodel import Items, Rule, decode_object, prop, schema_pattern, validations, wire_name
from torchproof.versions import ComputeCapability, DriverVersion

PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")
PRECISIONS: Final = ("fp32", "fp16", "amp", "tf32", "bf16")
SEVERITIES: Final = ("info", "warning", "critical")
SELECTOR_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")
TAINT_EFFECTS: Final = ("NoSchedule", "PreferNoSchedule", "NoExecute")
DEVICES: Final = ("cuda", "cpu")

NAME_MAX_LENGTH: Final = 63  # the name part of the node label torchproof.dev/<name>
LABEL_KEY_MAX_LENGTH: Final = 317  # a DNS subdomain prefix (253), a slash and a name (63)
_NAME = schema_pattern(r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_COMPONENT: Final = r"^[0-9][0-9A-Za-z.+-]*$"
_DRIVER: Final = r"^\d{1,4}(\.\d{1,4}){0,2}$"
_CC: Final = r"^\d{1,2}\.\d$"
# Label syntax, which a structural schema cannot ask of map keys; _check holds keys and values to it.
_LABEL_KEY = schema_pattern(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE: Final = r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
DURATION: Final = r"^(\d{1,6}[hms])+$"
_DURATION_PART = re.compile(r"(\d+)([hms])", re.ASCII)
QUANTITY: Final = r"^\d+(\.\d+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
_DURATION_RE, _QUANTITY_RE, _LABEL_VALUE_RE = (schema_pattern(p) for p in (DURATION, QUANTITY, LABEL_VALUE))
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
MIN_REVALIDATE_SECONDS: Final = 60

# Section 9 of issue 8: a passed verdict needs the CUDA check and the GPUs the probe observes (gpu): without
# them no node can pass (docs/contract.md). An absent check is enabled by default.
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


def parse_duration(text: str) -> int:
    """Seconds in a duration such as ``168h``, ``30m``, ``90s`` or ``1h30m``."""
    if not isinstance(text, str) or not _DURATION_RE.search(text):
        raise ValueError(f"invalid duration {text!r}: expected numbers with units h, m or s: 168h, 1h30m")
    return sum(int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def _quantity(text: str) -> Decimal:
    match = _QUANTITY_RE.search(text)
    if match is None:
        raise ValueError(f"invalid quantity {text!r}: expected a number and an optional unit, like 500m, 4Gi")
    unit = match.group(2)
    if not unit:  # exact, as Kubernetes reads it: a product would round to the context's 28 digits
        return Decimal(text)
    return Decimal(text[: match.start(2)]) * _QUANTITY_SCALE[unit]


def _checked_quantity(text: str) -> str:
    _quantity(text)
    return text


def _quantity_prop(**settings: Any) -> Any:
    return prop(None, max_length=32, pattern=QUANTITY, convert=_checked_quantity, **settings)


@dataclass(frozen=True)
class Components:
    """Versions the release ships; the verdict compares them with what the probe finds."""

    cuda: str | None = prop(None, max_length=64, pattern=_COMPONENT)
    pytorch: str | None = prop(None, max_length=64, pattern=_COMPONENT)
    python: str | None = prop(None, max_length=64, pattern=_COMPONENT)
    ubuntu: str | None = prop(None, max_length=64, pattern=_COMPONENT)
    cudnn: str | None = prop(None, max_length=64, pattern=_COMPONENT)
    nccl: str | None = prop(None, max_length=64, pattern=_COMPONENT)
    tensorrt: str | None = prop(None, max_length=64, pattern=_COMPONENT)


# The branch is compared as a number: string(self.branch) has no size bound, so the server's cost estimate
# refuses it. split() is in the strings library.
BRANCH_RULE: Final = Rule("int(self.minimum.split('.')[0]) == self.branch",
                          "minimum must be a driver version on this branch", ".minimum")


@validations(BRANCH_RULE)
@dataclass(frozen=True)
class BranchRequirement:
    """An older driver branch that datacenter boards may use through CUDA forward compatibility."""

    branch: int = prop(minimum=1, maximum=9999)
    minimum: DriverVersion = prop(max_length=16, pattern=_DRIVER)


@dataclass(frozen=True)
class DriverRequirement:
    minimum: DriverVersion = prop(description="The driver any GPU needs.", max_length=16, pattern=_DRIVER)
    datacenter_branches: tuple[BranchRequirement, ...] = prop(
        (), description="Older branches datacenter boards may use through CUDA forward compatibility.",
        max_items=16, list_type="map", map_keys=("branch",))


MAX_CC_RULE: Final = Rule(
    "!has(self.maxComputeCapability) || double(self.maxComputeCapability) >= double(self.minComputeCapability)",
    "maxComputeCapability must not be below minComputeCapability", ".maxComputeCapability")


@validations(MAX_CC_RULE)
@dataclass(frozen=True)
class Requirements:
    driver: DriverRequirement = prop()
    min_compute_capability: ComputeCapability = prop(max_length=4, pattern=_CC)
    max_compute_capability: ComputeCapability | None = prop(None, max_length=4, pattern=_CC)
    architectures: frozenset[str] = prop(
        frozenset(), description="The architectures the release names; newer ones pass on compute capability.",
        max_items=9, list_type="set", items=Items(enum=ARCHITECTURES))


@dataclass(frozen=True)
class EnvironmentCheck:
    enabled: bool = prop(True)


@dataclass(frozen=True)
class GpuCheck:
    enabled: bool = prop(True)


@dataclass(frozen=True)
class CudaCheck:
    enabled: bool = prop(True)


# has(): the server checks the default {} against this rule without filling in the nested defaults, and an
# absent field is true by default.
AMP_RULE: Final = Rule("(has(self.enabled) && !self.enabled) || !has(self.native) || self.native || "
                       "!has(self.apex) || self.apex || !has(self.bf16) || self.bf16",
                       "amp is enabled but native, apex and bf16 are all false")


@validations(AMP_RULE)
@dataclass(frozen=True)
class AmpCheck:
    enabled: bool = prop(True)
    native: bool = prop(True)
    apex: bool = prop(True)
    bf16: bool = prop(True)
    steps: int = prop(8, minimum=1, maximum=100)
    tolerance: float = prop(0.05, minimum=0, maximum=1)


@dataclass(frozen=True)
class TensorCoresCheck:
    enabled: bool = prop(True)
    size: int = prop(4096, minimum=256, maximum=16384)
    iterations: int = prop(20, minimum=1, maximum=200)
    min_speedup: float = prop(2.0, minimum=0, maximum=100)


@dataclass(frozen=True)
class ChannelsLastCheck:
    enabled: bool = prop(True)
    tolerance: float = prop(0.01, minimum=0, maximum=1)


@dataclass(frozen=True)
class Conv3dCheck:
    enabled: bool = prop(True)
    iterations: int = prop(5, minimum=1, maximum=100)


@dataclass(frozen=True)
class MultiGpuCheck:
    enabled: bool = prop(True)


@dataclass(frozen=True)
class SdpaCheck:
    """scaled_dot_product_attention with each backend against the math reference (PyTorch 2.0+)."""

    enabled: bool = prop(True)
    tolerance: float = prop(0.02, minimum=0, maximum=1, description="Largest error of a backend's output or "
                            "gradients against the fp32 reference, relative to the reference's scale.")


@dataclass(frozen=True)
class Fp8Check:
    """An FP8 matmul (torch._scaled_mm) against bf16, where the GPU (8.9+) and torch (2.1+) have one."""

    enabled: bool = prop(True)
    size: int = prop(2048, minimum=256, maximum=16384, description="Matrix side; the probe rounds it to 16.")
    tolerance: float = prop(0.05, minimum=0, maximum=1,
                            description="Largest error against the bf16 product of the same inputs, relative.")


@dataclass(frozen=True)
class CompileCheck:
    """A torch.compile (inductor) smoke of the toy model; the first compile is timed and bounded."""

    enabled: bool = prop(True)
    max_seconds: int = prop(90, minimum=5, maximum=1800,
                            description="The compile check is cut off (timeout) after this long.")
    tolerance: float = prop(0.01, minimum=0, maximum=1,
                            description="Largest error of the compiled output against eager, relative.")


@dataclass(frozen=True)
class NcclCheck:
    """An intra-node NCCL all-reduce across every GPU of the pod, judged on bus bandwidth."""

    enabled: bool = prop(True)
    size_mib: int = prop(64, name="sizeMiB", minimum=1, maximum=4096, description="Buffer per GPU.")
    iterations: int = prop(10, minimum=1, maximum=100)
    min_bus_bandwidth: float = prop(
        1.0, name="minBusBandwidthGBps", minimum=0, maximum=100000,
        description="Bus bandwidth (GB/s, as nccl-tests computes it) below which the node fails; the default "
                    "only catches a broken path: set the fleet's own (NVLink boards reach hundreds).")


@dataclass(frozen=True)
class MemoryCheck:
    """Allocate, write and read back a large fraction of each GPU's memory, within a time bound."""

    enabled: bool = prop(True)
    fraction: float = prop(0.8, minimum=0.01, maximum=0.95, description="Of the memory free when it starts.")
    max_seconds: int = prop(20, minimum=1, maximum=600,
                            description="The fill and verify stop here and report the part they covered.")


CUDA_AND_GPU_RULE: Final = Rule(
    "(!has(self.cuda) || !has(self.cuda.enabled) || self.cuda.enabled) && "
    "(!has(self.gpu) || !has(self.gpu.enabled) || self.gpu.enabled)", NOTHING_TO_VALIDATE)


@validations(CUDA_AND_GPU_RULE)
@dataclass(frozen=True)
class Checks:
    environment: EnvironmentCheck = prop(EnvironmentCheck(), server_default=True)
    gpu: GpuCheck = prop(GpuCheck(), server_default=True)
    cuda: CudaCheck = prop(CudaCheck(), server_default=True)
    amp: AmpCheck = prop(AmpCheck(), server_default=True)
    tensor_cores: TensorCoresCheck = prop(TensorCoresCheck(), server_default=True)
    channels_last: ChannelsLastCheck = prop(ChannelsLastCheck(), server_default=True)
    conv3d: Conv3dCheck = prop(Conv3dCheck(), server_default=True)
    multi_gpu: MultiGpuCheck = prop(MultiGpuCheck(), server_default=True)
    sdpa: SdpaCheck = prop(SdpaCheck(), server_default=True)
    fp8: Fp8Check = prop(Fp8Check(), server_default=True)
    nccl: NcclCheck = prop(NcclCheck(), server_default=True)
    memory: MemoryCheck = prop(MemoryCheck(), server_default=True)
    compile: CompileCheck = prop(CompileCheck(), server_default=True)
    time_budget_seconds: int = prop(120, minimum=10, maximum=3600)


@dataclass(frozen=True)
class KnownIssue:
    """A documented problem of the release; empty architectures/precisions mean "all"."""

    id: str = prop(max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")
    summary: str = prop(max_length=512)
    architectures: frozenset[str] = prop(frozenset(), max_items=9, list_type="set", items=Items(enum=ARCHITECTURES))
    precisions: frozenset[str] = prop(frozenset(), max_items=5, list_type="set", items=Items(enum=PRECISIONS))
    severity: str = prop("warning", enum=SEVERITIES)
    workaround: str | None = prop(None, max_length=1024)


SELECTOR_VALUES_RULE: Final = Rule(
    "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 "
    ": !has(self.values) || size(self.values) == 0",
    "values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist", ".values")


@validations(SELECTOR_VALUES_RULE)
@dataclass(frozen=True)
class SelectorRequirement:
    key: str = prop(max_length=LABEL_KEY_MAX_LENGTH)
    operator: str = prop(max_length=12, enum=SELECTOR_OPERATORS)
    values: tuple[str, ...] = prop((), max_items=64, list_type="set", items=Items(max_length=63))

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

    match_labels: Mapping[str, str] = prop(factory=lambda: MappingProxyType({}), max_properties=64,
                                           items=Items(max_length=63, pattern=LABEL_VALUE))
    match_expressions: tuple[SelectorRequirement, ...] = prop((), max_items=32, list_type="atomic")

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            e.matches(labels) for e in self.match_expressions
        )


@validations(Rule("!has(self.runAsUser) || self.runAsUser != 0 || (has(self.runAsNonRoot) && !self.runAsNonRoot)",
                  ROOT_NEEDS_RUN_AS_ROOT, ".runAsUser"))
@dataclass(frozen=True)
class PodSecurity:
    """Whom the probe runs as. The defaults pass Pod Security `restricted`; root needs a namespace whose
    enforced level is `baseline` or `privileged` (docs/profile.md)."""

    run_as_user: int = prop(1000, fmt="int64", minimum=0, maximum=2**31 - 1)
    run_as_non_root: bool = prop(True)
    read_only_root_filesystem: bool = prop(True)


TOLERATION_KEY_RULE: Final = Rule(
    "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
    "operator must be Exists when key is empty")
TOLERATION_VALUE_RULE: Final = Rule(
    "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
    "value must be empty when operator is Exists")
TOLERATION_SECONDS_RULE: Final = Rule(
    "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
    "tolerationSeconds is only allowed with effect NoExecute")


@validations(TOLERATION_KEY_RULE, TOLERATION_VALUE_RULE, TOLERATION_SECONDS_RULE)
@dataclass(frozen=True)
class Toleration:
    """The wire form of a pod toleration; the profile keeps it as the mapping the pod spec takes."""

    key: str | None = prop(None, max_length=LABEL_KEY_MAX_LENGTH)
    operator: str | None = prop(None, max_length=6, enum=("Exists", "Equal"))
    value: str | None = prop(None, max_length=63)
    effect: str | None = prop(None, max_length=16, enum=TAINT_EFFECTS)
    toleration_seconds: int | None = prop(None, fmt="int64")


def _toleration_mappings(items: tuple[Toleration, ...]) -> tuple[Mapping[str, Any], ...]:
    """Equal is Kubernetes' own default operator for a toleration."""
    out = []
    for t in items:
        given = {"key": t.key, "operator": t.operator or "Equal", "value": t.value, "effect": t.effect,
                 "tolerationSeconds": t.toleration_seconds}
        out.append(MappingProxyType({k: v for k, v in given.items() if v is not None}))
    return tuple(out)


@dataclass(frozen=True)
class ResourceList:
    cpu: str | None = _quantity_prop()
    memory: str | None = _quantity_prop()
    ephemeral_storage: str | None = _quantity_prop(name="ephemeral-storage")


@dataclass(frozen=True)
class Resources:
    """The wire form of the probe container's resources; the profile keeps the given strings."""

    requests: ResourceList = prop(ResourceList())
    limits: ResourceList = prop(ResourceList())


def _resource_mappings(r: Resources) -> Mapping[str, Mapping[str, str]]:
    out: dict[str, Mapping[str, str]] = {}
    for part, given in (("requests", r.requests), ("limits", r.limits)):
        strings = {wire_name(f): getattr(given, f.name) for f in fields(ResourceList)}
        if any(v is not None for v in strings.values()):
            out[part] = MappingProxyType({k: v for k, v in strings.items() if v is not None})
    return MappingProxyType(out)


DEFAULT_SHM_SIZE: Final = "1Gi"  # NGC's containers ask for --shm-size=1g

# CUDA enumerates one MIG device per process: a second one would be requested and idle.
MIG_RULE: Final = Rule(
    f"!has(self.gpuResource) || self.gpuResource == '{GPU_RESOURCE}' || !has(self.gpusPerProbe) || "
    "self.gpusPerProbe == 1", ONE_MIG_DEVICE, ".gpusPerProbe")


@validations(MIG_RULE)
@dataclass(frozen=True)
class ValidationSettings:
    device: str = prop(
        "cuda", enum=DEVICES, max_length=4,
        description="Where the probe runs: cuda (a GPU validation), or cpu (a dry run of the whole flow on nodes "
                    "without GPUs, e.g. kind; never proof of a GPU node).")
    gpus_per_probe: int = prop(1, minimum=1, maximum=8)
    gpu_resource: str = prop(
        GPU_RESOURCE, max_length=63, pattern=r"^nvidia\.com/(gpu|mig-[0-9]+(c\.[0-9]+)?g\.[0-9]+gb(\.[a-z0-9]+)*)$",
        description="The extended resource the probe requests: whole GPUs, or one MIG device under the device "
                    "plugin's mixed strategy (nvidia.com/mig-1g.5gb).")
    runtime_class_name: str | None = prop(
        None, max_length=253, pattern=DNS_SUBDOMAIN,
        description="The RuntimeClass of the probe pod (k3s, or clusters where nvidia is not the default runtime).")
    shm_size: str = prop(DEFAULT_SHM_SIZE, max_length=32, pattern=QUANTITY, convert=_checked_quantity,
                         description="Size of the memory-backed /dev/shm; it counts against the memory limit.")
    security: PodSecurity = prop(
        PodSecurity(), name="securityContext", server_default=True,
        description="Whom the probe runs as; the defaults pass Pod Security restricted. Root needs a namespace "
                    "enforcing baseline or privileged.")
    runtime_timeout_seconds: int = prop(600, minimum=30, maximum=86400)
    pending_timeout_seconds: int = prop(300, minimum=30, maximum=86400)
    priority_class_name: str | None = prop(None, max_length=253, pattern=DNS_SUBDOMAIN)
    tolerations: tuple[Mapping[str, Any], ...] = prop((), max_items=32, list_type="atomic",
                                                      wire=tuple[Toleration, ...], convert=_toleration_mappings)
    resources: Mapping[str, Mapping[str, str]] = prop(
        factory=lambda: MappingProxyType({}), wire=Resources, convert=_resource_mappings,
        description="The probe container's cpu, memory and ephemeral-storage; requests must not exceed limits.")


@dataclass(frozen=True)
class SecretReference:
    name: str = prop(max_length=253, pattern=DNS_SUBDOMAIN)


def _secret_names(refs: tuple[SecretReference, ...]) -> tuple[str, ...]:
    return tuple(r.name for r in refs)


def _revalidate_seconds(text: str) -> int:
    seconds = parse_duration(text)
    if seconds < MIN_REVALIDATE_SECONDS:
        raise ValueError(f"{text} is shorter than {MIN_REVALIDATE_SECONDS}s")
    return seconds


# The probe's budget plus 30 s for the container and CUDA to start must fit inside the pod's deadline; absent
# values are their defaults.
BUDGET_RULE: Final = Rule(
    f"(has(self.checks) && has(self.checks.timeBudgetSeconds) ? self.checks.timeBudgetSeconds : "
    f"{Checks.time_budget_seconds}) + {START_MARGIN_SECONDS} <= (has(self.validation) && "
    f"has(self.validation.runtimeTimeoutSeconds) ? self.validation.runtimeTimeoutSeconds : "
    f"{ValidationSettings.runtime_timeout_seconds})",
    BUDGET_OVER_TIMEOUT, ".checks.timeBudgetSeconds")


# A CPU dry run would otherwise go to every GPU node (the default selector) and prove nothing there.
CPU_RULE: Final = Rule(
    "!has(self.validation) || !has(self.validation.device) || self.validation.device != 'cpu' || "
    "has(self.nodeSelector)", CPU_NEEDS_SELECTOR, ".nodeSelector")


@validations(BUDGET_RULE, CPU_RULE)
@dataclass(frozen=True, kw_only=True)
class Profile:
    """The spec's fields are the CRD's `spec`; name, generation and uid come from the object's metadata."""

    name: str
    generation: int
    uid: str | None
    release: str = prop(description="The NGC release, YY.MM.", max_length=5, pattern=r"^\d{2}\.\d{2}$")
    image: str = prop(description="The release image the probe runs in.", max_length=512,
                      pattern=r"^[a-z0-9][A-Za-z0-9._/:@-]*$")
    image_pull_policy: str = prop("IfNotPresent", enum=PULL_POLICIES)
    image_pull_secrets: tuple[str, ...] = prop((), max_items=16, list_type="map", map_keys=("name",),
                                               wire=tuple[SecretReference, ...], convert=_secret_names)
    components: Components = prop(
        Components(), description="Versions the image ships; the verdict records any the probe finds different.")
    requirements: Requirements = prop()
    checks: Checks = prop(server_default=True)
    known_issues: tuple[KnownIssue, ...] = prop((), max_items=64, list_type="map", map_keys=("id",))
    node_selector: LabelSelector | None = prop(None, description="A label selector; absent means every GPU node.")
    validation: ValidationSettings = prop(server_default=True)
    max_concurrent: int = prop(10, minimum=1, maximum=1000)
    revalidate_after_seconds: int | None = prop(
        None, name="revalidateAfter", wire=str, max_length=32, pattern=DURATION, convert=_revalidate_seconds,
        description="Re-prove a passed node after this long (168h, 30m, 90s, 1h30m); absent means never.")

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


# ---- what the CEL rules and label syntax say across fields, checked once more for objects that never
# met the API server (a local file, an old CRD) -------------------------------------------------------


def _check(p: Profile) -> None:
    _check_requirements(p.requirements, "spec.requirements")
    _check_checks(p.checks, "spec.checks")
    if p.node_selector is not None:
        _check_selector(p.node_selector, "spec.nodeSelector")
    _check_validation(p.validation, "spec.validation")
    if p.validation.device == "cpu" and p.node_selector is None:
        raise InvalidSpec("spec.nodeSelector", CPU_NEEDS_SELECTOR)
    if p.checks.time_budget_seconds + START_MARGIN_SECONDS > p.validation.runtime_timeout_seconds:
        raise InvalidSpec("spec.checks.timeBudgetSeconds", BUDGET_OVER_TIMEOUT)


def _check_requirements(r: Requirements, path: str) -> None:
    low, high = r.min_compute_capability, r.max_compute_capability
    if high is not None and high < low:
        raise InvalidSpec(f"{path}.maxComputeCapability", f"{high} is below minComputeCapability {low}")
    minimum = r.driver.minimum
    for i, b in enumerate(r.driver.datacenter_branches):
        where = f"{path}.driver.datacenterBranches[{i}]"
        if b.minimum.branch != b.branch:
            raise InvalidSpec(f"{where}.minimum", f"{b.minimum} is not on branch {b.branch}")
        if b.branch >= minimum.branch:
            raise InvalidSpec(f"{where}.branch", f"{b.branch} is not older than the minimum driver {minimum}")


def _check_checks(c: Checks, path: str) -> None:
    amp = c.amp
    if amp.enabled and not (amp.native or amp.apex or amp.bf16):
        raise InvalidSpec(f"{path}.amp", AMP_RULE.message)
    if not (c.cuda.enabled and c.gpu.enabled):
        raise InvalidSpec(path, NOTHING_TO_VALIDATE)


def _check_selector(s: LabelSelector, path: str) -> None:
    for key in s.match_labels:
        if len(key) > LABEL_KEY_MAX_LENGTH or not _LABEL_KEY.match(key):
            raise InvalidSpec(f"{path}.matchLabels.{key}", "not a valid label key")
    for i, e in enumerate(s.match_expressions):
        where = f"{path}.matchExpressions[{i}]"
        if not _LABEL_KEY.match(e.key):
            raise InvalidSpec(f"{where}.key", f"{e.key!r} is not a valid label key")
        for j, value in enumerate(e.values):
            if not _LABEL_VALUE_RE.search(value):
                raise InvalidSpec(f"{where}.values[{j}]", f"{value!r} is not a valid label value")
        if e.operator in ("In", "NotIn") and not e.values:
            raise InvalidSpec(f"{where}.values", f"must not be empty for operator {e.operator}")
        if e.operator in ("Exists", "DoesNotExist") and e.values:
            raise InvalidSpec(f"{where}.values", f"must be empty for operator {e.operator}")


def _check_validation(v: ValidationSettings, path: str) -> None:
    if v.gpu_resource != GPU_RESOURCE and v.gpus_per_probe != 1:
        raise InvalidSpec(f"{path}.gpusPerProbe", ONE_MIG_DEVICE)
    if v.security.run_as_user == 0 and v.security.run_as_non_root:
        raise InvalidSpec(f"{path}.securityContext.runAsUser", ROOT_NEEDS_RUN_AS_ROOT)
    for i, t in enumerate(v.tolerations):
        where = f"{path}.tolerations[{i}]"
        if "key" in t and not _LABEL_KEY.match(t["key"]):
            raise InvalidSpec(f"{where}.key", f"{t['key']!r} is not a valid label key")
        if "value" in t and not _LABEL_VALUE_RE.search(t["value"]):
            raise InvalidSpec(f"{where}.value", f"{t['value']!r} is not a valid label value")
        if not t.get("key") and t["operator"] != "Exists":
            raise InvalidSpec(f"{where}.operator", TOLERATION_KEY_RULE.message)
        if t["operator"] == "Exists" and t.get("value"):
            raise InvalidSpec(f"{where}.value", TOLERATION_VALUE_RULE.message)
        if "tolerationSeconds" in t and t.get("effect") != "NoExecute":
            raise InvalidSpec(f"{where}.tolerationSeconds", TOLERATION_SECONDS_RULE.message)
    requests, limits = v.resources.get("requests", {}), v.resources.get("limits", {})
    for name, limit in limits.items():
        request = requests.get(name)
        if request is not None and _quantity(request) > _quantity(limit):
            raise InvalidSpec(f"{path}.resources.requests.{name}", f"{request} exceeds the limit {limit}")
    # A memory-backed /dev/shm counts against the container's memory limit, so it must fit inside it.
    size = _quantity(v.shm_size)
    if size <= 0:
        raise InvalidSpec(f"{path}.shmSize", f"{v.shm_size} is not more than 0")
    memory = limits.get("memory")
    if memory is not None and size > _quantity(memory):
        raise InvalidSpec(f"{path}.shmSize", f"{v.shm_size} exceeds resources.limits.memory {memory} (a "
                                             "memory-backed /dev/shm counts against the memory limit)")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse_profile(obj: Mapping[str, Any]) -> Profile:
    """The whole object as the API returns it (metadata and spec) → Profile, or InvalidSpec."""
    if not isinstance(obj, Mapping):
        raise InvalidSpec("<root>", f"must be an object, not {_kind(obj)}")
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        raise InvalidSpec("metadata", "required")
    name = meta.get("name")
    if name is None:
        raise InvalidSpec("metadata.name", "required")
    if not isinstance(name, str):
        raise InvalidSpec("metadata.name", f"must be a string, not {_kind(name)}")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidSpec("metadata.name", f"longer than {NAME_MAX_LENGTH} characters")
    if not _NAME.match(name):
        raise InvalidSpec("metadata.name", f"{name!r} does not match {_NAME.pattern}")
    generation = meta.get("generation", 1)
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
        raise InvalidSpec("metadata.generation", f"must be a positive integer, not {generation!r}")
    uid = meta.get("uid")
    if uid is not None and (not isinstance(uid, str) or len(uid) > 64):
        raise InvalidSpec("metadata.uid", f"must be a string of at most 64 characters, not {uid!r}")
    if obj.get("spec") is None:
        raise InvalidSpec("spec", "required")
    profile: Profile = decode_object(Profile, obj["spec"], "spec", {"name": name, "generation": generation,
                                                                    "uid": uid})
    _check(profile)
    return profile
