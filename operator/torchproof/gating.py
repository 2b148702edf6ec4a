"""Opt-in gating (`gate: true`): a new or changed GPU node carries `torchproof.dev/<profile>=unvalidated:
NoSchedule` until it passes; the validation pod tolerates it (podspec.py).

Ownership as for labels (labels.py): torchproof owns the taint while the profile's own claim annotation
`gate.torchproof.dev/<profile>` is on the node, which says when it was added. A taint with the key that
torchproof did not add is never touched. The claim is written before the taint and removed after it, so a
crash in between leaves a claim without a taint (which the next pass completes or drops), never an
unowned taint. Taints are one list on the node that others write too: the list is changed by a JSON patch
that first tests it is still the list the plan read, so a concurrent writer makes the patch fail (and the
next pass plan again) instead of being overwritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torchproof import labels as L
from torchproof.breaker import Rollout
from torchproof.contract import NodeRecord, iso, parse_time
from torchproof.views import NodeView

TAINT_VALUE = "unvalidated"
TAINT_EFFECT = "NoSchedule"
UNGATED = frozenset({"passed", "incompatible"})  # an incompatible node cannot run the image: no gate


def taint(profile: str) -> dict[str, str]:
    return {"key": L.label_key(profile), "value": TAINT_VALUE, "effect": TAINT_EFFECT}


def toleration(profile: str) -> dict[str, str]:
    return {"key": L.label_key(profile), "operator": "Exists", "effect": TAINT_EFFECT}


@dataclass(frozen=True)
class GateUpdate:
    """Add or remove a profile's gating taint: the claim (a merge patch) and the taints (a JSON patch)."""

    node: str
    profile: str
    add: bool
    claim: Mapping[str, Any]
    taints: tuple[Mapping[str, Any], ...]
    ops: tuple[Mapping[str, Any], ...]


def _ops(node: NodeView, taints: list[dict[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    if not node.taints:
        return ({"op": "add", "path": "/spec/taints", "value": taints},)
    return ({"op": "test", "path": "/spec/taints", "value": [dict(t) for t in node.taints]},
            {"op": "replace", "path": "/spec/taints", "value": taints})


def has_taint(node: NodeView, profile: str) -> bool:
    return any(t.get("key") == L.label_key(profile) for t in node.taints)


def claimed_at(node: NodeView, profile: str) -> float | None:
    return parse_time(node.annotations.get(L.gate_annotation_key(profile)))


def release(node: NodeView, profile: str) -> GateUpdate | None:
    """Remove the profile's taint and claim where torchproof added them; None if it has none."""
    key = L.gate_annotation_key(profile)
    if key not in node.annotations:
        return None
    claim = {"metadata": {"annotations": {key: None}}}
    if not has_taint(node, profile):
        return GateUpdate(node.name, profile, False, claim, node.taints, ())
    kept = [dict(t) for t in node.taints if t.get("key") != L.label_key(profile)]
    return GateUpdate(node.name, profile, False, claim, tuple(kept), _ops(node, kept))


def gate_updates(
    profile: str, gate: bool, nodes: Sequence[NodeView], verdicts: Mapping[str, str | None],
    records: Mapping[str, NodeRecord | None], rollout: Rollout,
) -> list[GateUpdate]:
    """The gating writes of one pass over the selected nodes, given their labels once the plan is applied."""
    out: list[GateUpdate] = []
    for node in nodes:
        verdict, record = verdicts.get(node.name), records.get(node.name)
        changed = verdict == "passed" and record is not None and record.fingerprint != node.fingerprint
        wanted = gate and (verdict not in UNGATED or changed)
        if not wanted:
            update = release(node, profile)
            if update is not None:
                out.append(update)
        elif not has_taint(node, profile) and rollout.take_taint():
            key = L.gate_annotation_key(profile)
            at = node.annotations.get(key) or iso(rollout.now)
            taints = [*(dict(t) for t in node.taints), taint(profile)]
            out.append(GateUpdate(node.name, profile, True, {"metadata": {"annotations": {key: at}}}, tuple(taints),
                                  _ops(node, taints)))
    return out
