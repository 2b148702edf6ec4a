"""Compact, typed views of Nodes and validation Pods: what the planner needs and nothing more.

The shell's kopf indexes store these views instead of whole objects, which keeps memory flat on large
fleets and keeps the planner free of Kubernetes object layout.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torchproof import labels as L
from torchproof.compat import hardware_from_labels
from torchproof.contract import NodeRecord, parse_time

FINGERPRINT_LABELS = (
    "nvidia.com/gpu.product",
    "nvidia.com/gpu.count",
    "nvidia.com/gpu.compute.major",
    "nvidia.com/gpu.compute.minor",
    "nvidia.com/cuda.driver-version.full",
    "nvidia.com/cuda.driver-version.major",
    "nvidia.com/cuda.driver-version.minor",
    "nvidia.com/cuda.driver-version.revision",
    "nvidia.com/cuda.driver.major",
    "nvidia.com/cuda.driver.minor",
    "nvidia.com/cuda.driver.rev",
)


@dataclass(frozen=True)
class NodeView:
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    ready: bool
    unschedulable: bool
    gpus: int
    fingerprint: str
    taints: tuple[Mapping[str, Any], ...] = ()
    gpu_labels: tuple[tuple[str, str], ...] = field(init=False, compare=False, repr=False)
    kind: tuple[str, str] = field(init=False, compare=False, repr=False)  # (GPU product, driver)

    def __post_init__(self) -> None:
        # GPU Feature Discovery's labels, once per node change: the planner keys its per-hardware work on them.
        gpu = tuple(sorted((k, v) for k, v in self.labels.items() if k.startswith("nvidia.com/")))
        object.__setattr__(self, "gpu_labels", gpu)
        object.__setattr__(self, "kind", _hardware_kind(gpu))


@functools.lru_cache(maxsize=4096)
def _hardware_kind(gpu_labels: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    """A fleet has few hardware kinds and many nodes: each kind is read from its labels once."""
    hardware = hardware_from_labels(dict(gpu_labels))
    return hardware.product or "", hardware.driver or ""


@dataclass(frozen=True)
class Terminated:
    exit_code: int | None
    reason: str | None
    message: str | None


@dataclass(frozen=True)
class PodView:
    name: str
    namespace: str
    profile: str
    node: str
    generation: int | None
    spec_hash: str | None
    image: str | None
    fingerprint: str | None
    created: float | None
    phase: str
    pod_reason: str | None
    unschedulable: str | None
    waiting_reason: str | None
    waiting_message: str | None
    terminated: Terminated | None
    deleting: bool
    started: float | None = None  # status.startTime: where activeDeadlineSeconds counts from
    deleted_at: float | None = None  # metadata.deletionTimestamp: a pod stuck Terminating is seen by it

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed") or self.terminated is not None


def fingerprint(labels: Mapping[str, str], node_info: Mapping[str, Any]) -> str:
    """A short hash of what, when it changes, makes an earlier verdict stale."""
    parts = [f"{key}={labels.get(key, '')}" for key in FINGERPRINT_LABELS]
    parts += [f"bootID={node_info.get('bootID', '')}", f"kernel={node_info.get('kernelVersion', '')}"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def node_view(body: Mapping[str, Any]) -> NodeView:
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    labels = dict(meta.get("labels") or {})
    annotations = {
        key: value for key, value in (meta.get("annotations") or {}).items()
        if key in (L.LEGACY_OWNED_ANNOTATION, L.REVALIDATE_ANNOTATION)
        or key.startswith((L.RESULT_ANNOTATION_PREFIX, L.GATE_ANNOTATION_PREFIX))
    }
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    allocatable = status.get("allocatable") or {}
    return NodeView(
        name=str(meta.get("name", "")),
        labels=labels,
        annotations=annotations,
        ready=ready,
        unschedulable=bool(spec.get("unschedulable")),
        gpus=_quantity(allocatable.get("nvidia.com/gpu", 0)),
        fingerprint=fingerprint(labels, status.get("nodeInfo") or {}),
        taints=tuple(dict(t) for t in spec.get("taints") or () if isinstance(t, Mapping)),
    )


def pod_view(body: Mapping[str, Any]) -> PodView:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    annotations = meta.get("annotations") or {}
    validates = _json_object(annotations.get(L.SPEC_ANNOTATION))
    generation = validates.get("generation")
    unschedulable = next(
        (
            str(c.get("message") or c.get("reason") or "Unschedulable")
            for c in status.get("conditions") or []
            if c.get("type") == "PodScheduled" and c.get("status") == "False"
        ),
        None,
    )
    waiting_reason = waiting_message = None
    terminated = None
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "waiting" in state:
            waiting_reason = state["waiting"].get("reason")
            waiting_message = state["waiting"].get("message")
        if "terminated" in state:
            t = state["terminated"]
            code = t.get("exitCode")
            terminated = Terminated(
                exit_code=code if isinstance(code, int) else None,
                reason=t.get("reason"),
                message=t.get("message"),
            )
    return PodView(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        profile=str((meta.get("labels") or {}).get(L.PROFILE_LABEL, "")),
        node=str(annotations.get(L.NODE_ANNOTATION, "")),
        generation=generation if isinstance(generation, int) else None,
        spec_hash=str(validates["specHash"]) if "specHash" in validates else None,
        image=str(validates["image"]) if "image" in validates else None,
        fingerprint=str(validates["fingerprint"]) if "fingerprint" in validates else None,
        created=parse_time(meta.get("creationTimestamp")),
        phase=str(status.get("phase") or "Pending"),
        pod_reason=status.get("reason"),
        unschedulable=unschedulable,
        waiting_reason=waiting_reason,
        waiting_message=waiting_message,
        terminated=terminated,
        deleting=bool(meta.get("deletionTimestamp")),
        started=parse_time(status.get("startTime")),
        deleted_at=parse_time(meta.get("deletionTimestamp")),
    )


def _json_object(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, str):
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def parse_record(node: NodeView, profile: str) -> NodeRecord | None:
    """The node's last verdict for a profile; None when absent, not standing, or not what the label says
    (then it revalidates)."""
    raw = node.annotations.get(L.result_annotation_key(profile))
    record = cached_record(raw) if isinstance(raw, str) else None
    if record is None or not record.standing or node.labels.get(L.label_key(profile)) != record.verdict:
        return None
    return record


def raw_record(node: NodeView, profile: str) -> NodeRecord | None:
    """The node's record for a profile as written, whether or not it still stands (history, breaker)."""
    raw = node.annotations.get(L.result_annotation_key(profile))
    return cached_record(raw) if isinstance(raw, str) else None


@functools.lru_cache(maxsize=1 << 16)
def cached_record(raw: str) -> NodeRecord | None:
    """Parsed once per distinct annotation: the planner reads records again on many passes."""
    return NodeRecord.from_annotation(raw)
