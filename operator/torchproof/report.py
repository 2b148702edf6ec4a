"""The fleet table: per profile, each node's GPU, driver, verdict and reasons, read from the cluster's objects.

`torchproof status` prints it from a live cluster and `torchproof simulate` from the embedded one. Both read
only what a scheduler and an admin can see — GPU Feature Discovery's labels, the operator's labels and record
annotations, the profile's status — so the table never shows a fact the cluster does not hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torchproof import labels as L
from torchproof.catalogue import display_name
from torchproof.compat import hardware_from_labels
from torchproof.contract import NodeRecord

MAX_REASONS_WIDTH = 110
Obj = Mapping[str, Any]


@dataclass(frozen=True)
class NodeRow:
    node: str
    gpu: str
    driver: str
    verdict: str | None
    reasons: tuple[str, ...]
    known_issues: int

    def as_json(self) -> dict[str, Any]:
        return {"node": self.node, "gpu": self.gpu, "driver": self.driver, "verdict": self.verdict,
                "reasons": list(self.reasons), "knownIssues": self.known_issues}


def record_of(node: Obj, profile: str) -> NodeRecord | None:
    """The node's record for a profile; None when absent or not JSON (the table then shows no reasons)."""
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(L.result_annotation_key(profile))
    return NodeRecord.from_annotation(raw) if isinstance(raw, str) else None


def _gpu_and_driver(labels: Mapping[str, str], numbers: Mapping[str, Any]) -> tuple[str, str]:
    """The probe's NVML name where it ran (GFD's label value has dashes for spaces), else GFD's labels."""
    hw = hardware_from_labels(labels)
    observed = str(numbers["gpu"]) if numbers.get("gpu") else None
    product = observed or hw.product
    shown = (observed or display_name(product)) if product else "-"
    gpu = f"{hw.count}x {shown}" if product and hw.count else shown
    driver = hw.driver or (str(numbers["driver"]) if numbers.get("driver") else "-")
    return gpu, driver


def node_row(node: Obj, profile: str) -> NodeRow:
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    record = record_of(node, profile) or NodeRecord("", None, None)
    gpu, driver = _gpu_and_driver(labels, record.numbers)
    return NodeRow(
        node=str(meta.get("name", "")), gpu=gpu, driver=driver, verdict=labels.get(L.label_key(profile)),
        reasons=record.reasons, known_issues=len(record.known_issues),
    )


def rows(nodes: Sequence[Obj], profile: str) -> list[NodeRow]:
    return sorted((node_row(node, profile) for node in nodes), key=lambda row: row.node)


def _condition(profile: Obj, type_: str) -> Mapping[str, Any]:
    conditions = (profile.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if isinstance(c, Mapping) and c.get("type") == type_), {})


def table(nodes: Sequence[Obj], profiles: Sequence[Obj]) -> str:
    """One block per profile: the node rows, the Ready condition, and the nodes that wait and why."""
    lines: list[str] = []
    for profile in profiles:
        name = str((profile.get("metadata") or {}).get("name", ""))
        lines.append(f"profile {name}")
        cells = [("NODE", "GPU", "DRIVER", "VERDICT", "REASONS")]
        for row in rows(nodes, name):
            extra = [f"{row.known_issues} known issues"] if row.known_issues else []
            reasons = "; ".join([*row.reasons, *extra])
            cells.append((row.node, row.gpu, row.driver, row.verdict or "-", reasons[:MAX_REASONS_WIDTH]))
        widths = [max(len(cell[i]) for cell in cells) for i in range(4)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(cell, [*widths, 0], strict=True)).rstrip() for cell in cells]
        ready = _condition(profile, "Ready")
        lines.append(f"Ready={ready.get('status', '?')} ({ready.get('reason', '?')}): {ready.get('message', '')}")
        for waiting in (profile.get("status") or {}).get("waitingNodes") or []:
            lines.append(f"  waiting: {waiting.get('node')}: {waiting.get('reason')}")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def as_json(nodes: Sequence[Obj], profiles: Sequence[Obj]) -> dict[str, Any]:
    """The same facts as `table`, for scripts: rows per profile, and each profile's status as written."""
    return {
        "profiles": [
            {
                "name": (name := str((profile.get("metadata") or {}).get("name", ""))),
                "status": dict(profile.get("status") or {}),
                "nodes": [row.as_json() for row in rows(nodes, name)],
            }
            for profile in profiles
        ],
    }
