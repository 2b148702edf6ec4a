"""The simulated fleet: a YAML description of GPU nodes, parsed strictly, and the v1 Nodes it yields.

Parsing is pure and all-or-nothing: any bad value raises `FleetError` naming its path
(``nodes[3].gpu.driver: ...``), so a typo never silently becomes a healthy node.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from torchproof.versions import DriverVersion

from torchproof_sim.hardware import CHECK_FAULTS, Board, board, cuda_for_driver, gfd_family, parse_driver

FAULTS = frozenset(
    {"imagePull", "pending", "oomKilled", "timeout", "crash", "garbageResult", "ampNaN", "slowTensorCores",
     "kubeletLost", "crashAfterResult"}
) | CHECK_FAULTS
TAINT_EFFECTS = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})
DEFAULT_KERNEL = "5.15.0-105-generic"
KUBELET_VERSION = "v1.29.4"
OS_IMAGE = "Ubuntu 22.04.4 LTS"
GPU_RESOURCE = "nvidia.com/gpu"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
_BOOT_NAMESPACE = uuid.UUID("8a7d3f52-5f0e-4c1a-9a57-2f1b8f7f6c10")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_TAINT = re.compile(r"^(?P<key>[^=:\s]+)(=(?P<value>[^:\s]*))?:(?P<effect>\w+)$")
_NODE_KEYS = frozenset(
    {"gfd", "ready", "unschedulable", "labels", "faults", "kernelVersion", "taints", "probeSeconds"}
)
_ENTRY_KEYS = _NODE_KEYS | {"name", "gpu", "replicas"}
_GPU_KEYS = frozenset({"product", "count", "driver", "computeCapability", "brand", "datacenter", "memoryMiB"})


class FleetError(ValueError):
    """The fleet file is wrong; the message starts with the path of the offending value."""


@dataclass(frozen=True)
class SimGpu:
    """The identical GPUs of one node and the driver they run."""

    board: Board
    count: int
    driver: DriverVersion

    @property
    def cuda_driver(self) -> str:
        return cuda_for_driver(self.driver)


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "value": self.value, "effect": self.effect} if self.value else {
            "key": self.key, "effect": self.effect}


@dataclass(frozen=True)
class SimNode:
    """One simulated node; ``generation`` counts reboots (a driver change) and feeds the bootID."""

    name: str
    gpu: SimGpu | None = None
    gfd: bool = True
    ready: bool = True
    unschedulable: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    faults: frozenset[str] = frozenset()
    taints: tuple[Taint, ...] = ()
    kernel_version: str = DEFAULT_KERNEL
    probe_seconds: float | None = None
    generation: int = 0

    @property
    def gpu_count(self) -> int:
        return self.gpu.count if self.gpu else 0

    @property
    def boot_id(self) -> str:
        return str(uuid.uuid5(_BOOT_NAMESPACE, f"{self.name}/{self.generation}"))

    def with_driver(self, driver: DriverVersion) -> SimNode:
        """The node after a driver change: a new driver and, as after a reboot, a new bootID."""
        if self.gpu is None:
            raise ValueError(f"node {self.name!r} has no GPU, so no driver")
        return replace(self, gpu=replace(self.gpu, driver=driver), generation=self.generation + 1)


@dataclass(frozen=True)
class Fleet:
    nodes: tuple[SimNode, ...] = field(default_factory=tuple)

    def node(self, name: str) -> SimNode | None:
        return next((n for n in self.nodes if n.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)


# -- parsing -----------------------------------------------------------------------------------------


def _fail(path: str, message: str) -> FleetError:
    return FleetError(f"{path}: {message}")


def _mapping(value: Any, path: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, f"expected a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise _fail(f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"expected a non-empty string, got {value!r}")
    return value.strip()


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, f"expected true or false, got {value!r}")
    return value


def _int(value: Any, path: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _positive(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise _fail(path, f"expected a number of seconds > 0, got {value!r}")
    return float(value)


def _label_key(key: Any, path: str) -> str:
    if not isinstance(key, str):
        raise _fail(path, f"label key must be a string, got {key!r}")
    prefix, _, name = key.rpartition("/")
    if not _LABEL_NAME.match(name) or (prefix and not _NAME.match(prefix)):
        raise _fail(path, f"not a valid label key {key!r}")
    return key


def _labels(value: Any, path: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise _fail(path, f"expected a mapping of strings, got {type(value).__name__}")
    out = []
    for key, val in value.items():
        where = f"{path}.{key}"
        _label_key(key, where)
        if not isinstance(val, str) or (val and not _LABEL_NAME.match(val)):
            raise _fail(where, f"not a valid label value {val!r} (quote numbers and booleans)")
        out.append((key, val))
    return tuple(out)


def _faults(value: Any, path: str) -> frozenset[str]:
    if not isinstance(value, list):
        raise _fail(path, f"expected a list of fault names, got {type(value).__name__}")
    for i, name in enumerate(value):
        if name not in FAULTS:
            raise _fail(f"{path}[{i}]", f"unknown fault {name!r} (known: {', '.join(sorted(FAULTS))})")
    return frozenset(value)


def _taint(value: Any, path: str) -> Taint:
    if isinstance(value, str):
        match = _TAINT.match(value.strip())
        if not match:
            raise _fail(path, f"not a taint {value!r}: expected KEY[=VALUE]:EFFECT")
        key, val, effect = match["key"], match["value"] or "", match["effect"]
    else:
        raw = _mapping(value, path, frozenset({"key", "value", "effect"}))
        key = _str(raw.get("key"), f"{path}.key")
        val = str(raw.get("value", ""))
        effect = _str(raw.get("effect"), f"{path}.effect")
    if effect not in TAINT_EFFECTS:
        raise _fail(path, f"unknown taint effect {effect!r} (known: {', '.join(sorted(TAINT_EFFECTS))})")
    _label_key(key, path)
    return Taint(key, val, effect)


def _taints(value: Any, path: str) -> tuple[Taint, ...]:
    if not isinstance(value, list):
        raise _fail(path, f"expected a list of taints, got {type(value).__name__}")
    return tuple(_taint(t, f"{path}[{i}]") for i, t in enumerate(value))


_FIELDS: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    "gfd": ("gfd", _bool),
    "ready": ("ready", _bool),
    "unschedulable": ("unschedulable", _bool),
    "labels": ("labels", _labels),
    "faults": ("faults", _faults),
    "kernelVersion": ("kernel_version", _str),
    "taints": ("taints", _taints),
    "probeSeconds": ("probe_seconds", _positive),
}


def _node_fields(raw: Mapping[str, Any], path: str) -> dict[str, Any]:
    return {attr: parse(raw[key], f"{path}.{key}") for key, (attr, parse) in _FIELDS.items() if key in raw}


def _gpu(value: Any, path: str) -> SimGpu:
    raw = _mapping(value, path, _GPU_KEYS)
    product = _str(raw.get("product"), f"{path}.product")
    driver_text = raw.get("driver")
    if not isinstance(driver_text, str):
        raise _fail(f"{path}.driver", f'expected a quoted version like "450.51.06", got {driver_text!r}')
    try:
        driver = parse_driver(driver_text)
    except ValueError:
        raise _fail(f"{path}.driver", f'not a driver version "{driver_text}"') from None
    cc = raw.get("computeCapability")
    if cc is not None and not isinstance(cc, str):
        raise _fail(f"{path}.computeCapability", f"expected a quoted value like \"7.5\", got {cc!r}")
    datacenter = _bool(raw["datacenter"], f"{path}.datacenter") if "datacenter" in raw else None
    brand = _str(raw["brand"], f"{path}.brand") if "brand" in raw else None
    memory = _int(raw["memoryMiB"], f"{path}.memoryMiB", 1) if "memoryMiB" in raw else None
    try:
        gpu_board = board(
            product, compute_capability=cc, brand=brand, datacenter=datacenter, memory_mib=memory
        )
    except ValueError as exc:
        where = f"{path}.computeCapability" if cc is not None else f"{path}.product"
        raise _fail(where, str(exc)) from None
    return SimGpu(gpu_board, _int(raw.get("count", 1), f"{path}.count", 1), driver)


def _name(value: Any, path: str) -> str:
    name = _str(value, path)
    if len(name) > 253 or not _NAME.match(name):
        raise _fail(path, f"not a valid node name {name!r} (lower-case DNS subdomain)")
    return name


def _entries(raw: Mapping[str, Any], path: str, defaults: Mapping[str, Any]) -> list[SimNode]:
    name = _name(raw.get("name"), f"{path}.name")
    fields = {**defaults, **_node_fields(raw, path)}
    if "labels" in defaults and "labels" in fields:
        fields["labels"] = tuple({**dict(defaults["labels"]), **dict(fields["labels"])}.items())
    if "gpu" in raw:
        fields["gpu"] = _gpu(raw["gpu"], f"{path}.gpu")
    if "replicas" not in raw:
        return [SimNode(name=name, **fields)]
    count = _int(raw["replicas"], f"{path}.replicas", 1)
    return [SimNode(name=_name(f"{name}-{i}", f"{path}.replicas"), **fields) for i in range(count)]


def parse_fleet(data: Any) -> Fleet:
    """Build a `Fleet` from parsed YAML, or raise `FleetError` naming the first bad path."""
    top = _mapping(data, "fleet", frozenset({"nodes", "defaults"}))
    defaults = _node_fields(_mapping(top.get("defaults", {}), "defaults", _NODE_KEYS), "defaults")
    raw_nodes = top.get("nodes")
    if not isinstance(raw_nodes, list):
        raise _fail("nodes", f"expected a list of nodes, got {type(raw_nodes).__name__}")
    nodes: list[SimNode] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_nodes):
        path = f"nodes[{i}]"
        for node in _entries(_mapping(raw, path, _ENTRY_KEYS), path, defaults):
            if node.name in seen:
                raise _fail(f"{path}.name", f"duplicate node name {node.name!r}")
            seen.add(node.name)
            nodes.append(node)
    return Fleet(tuple(nodes))


def load_fleet(path: str | Path) -> Fleet:
    """Read and parse a fleet file; YAML syntax errors become `FleetError` too."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise FleetError(f"{path}: {exc}") from None
    return parse_fleet(data)


# -- the v1 Node -------------------------------------------------------------------------------------


def _gfd_labels(gpu: SimGpu) -> dict[str, str]:
    b = gpu.board
    parts = [*str(gpu.driver).split("."), "", ""]  # GFD keeps the text: revision "01", not "1"
    cuda_major, cuda_minor = gpu.cuda_driver.split(".")
    labels = {
        "gpu.present": "true",
        "gpu.product": b.product.replace(" ", "-"),
        "gpu.count": str(gpu.count),
        "gpu.memory": str(b.memory_mib),
        "gpu.family": gfd_family(b.architecture),
        "gpu.compute.major": str(b.compute_capability.major),
        "gpu.compute.minor": str(b.compute_capability.minor),
        "cuda.driver-version.major": parts[0],
        "cuda.driver-version.minor": parts[1],
        "cuda.driver-version.revision": parts[2],
        "cuda.driver-version.full": str(gpu.driver),
        "cuda.driver.major": parts[0],
        "cuda.driver.minor": parts[1],
        "cuda.driver.rev": parts[2],
        "cuda.runtime-version.major": cuda_major,
        "cuda.runtime-version.minor": cuda_minor,
        "cuda.runtime-version.full": gpu.cuda_driver,
        "mig.capable": "true" if re.search(r"A100|A30|H100|H200|B200", b.product.upper()) else "false",
    }
    return {f"nvidia.com/{k}": v for k, v in labels.items() if v}


def node_taints(node: SimNode) -> list[dict[str, str]]:
    """Spec taints, plus the ones the node lifecycle controller adds for cordoned and NotReady nodes."""
    taints = [t.to_dict() for t in node.taints]
    if node.unschedulable:
        taints.append({"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"})
    if not node.ready:
        taints.append({"key": NOT_READY_TAINT, "effect": "NoSchedule"})
    return taints


def host_address(name: str) -> str:
    """The node's InternalIP, derived from its name (the kubelet reports it as each pod's hostIP)."""
    host = uuid.uuid5(_BOOT_NAMESPACE, name).int
    return f"10.{host % 250}.{host // 250 % 250}.{host // 62500 % 250 + 1}"


def build_node(node: SimNode) -> dict[str, Any]:
    """The v1 Node a kubelet, the device plugin and (when ``gfd``) GPU Feature Discovery would publish."""
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    }
    if node.gpu and node.gfd:
        labels.update(_gfd_labels(node.gpu))
    labels.update(dict(node.labels))
    gpus = node.gpu_count
    capacity = {
        "cpu": str(8 + 8 * gpus),
        "memory": f"{(64 + 64 * gpus) * 1024 * 1024}Ki",
        "ephemeral-storage": "488245288Ki",
        "pods": "110",
    }
    if node.gpu:
        capacity[GPU_RESOURCE] = str(gpus)
    conditions = [
        {"type": kind, "status": "False", "reason": f"KubeletHas{reason}"}
        for kind, reason in (
            ("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
            ("PIDPressure", "SufficientPID"),
        )
    ]
    conditions.append(
        {"type": "Ready", "status": "True", "reason": "KubeletReady",
         "message": "kubelet is posting ready status"}
        if node.ready else
        {"type": "Ready", "status": "False", "reason": "KubeletNotReady",
         "message": "container runtime network not ready: NetworkReady=false"}
    )
    spec: dict[str, Any] = {"unschedulable": node.unschedulable}
    if taints := node_taints(node):
        spec["taints"] = taints
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels},
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": host_address(node.name)},
                {"type": "Hostname", "address": node.name},
            ],
            "nodeInfo": {
                "bootID": node.boot_id,
                "machineID": uuid.uuid5(_BOOT_NAMESPACE, f"machine/{node.name}").hex,
                "kernelVersion": node.kernel_version,
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "osImage": OS_IMAGE,
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "containerd://1.7.13",
            },
        },
    }
