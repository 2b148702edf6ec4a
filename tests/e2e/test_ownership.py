"""Ownership without shared writers, on the embedded cluster: two profiles label the same nodes with plain merge
patches of their own keys (no resourceVersion, so no 409), and nodes an earlier release labelled, with the shared
owned-labels list, are migrated with every label and its ownership kept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchproof import labels as L

from tests.support.polling import eventually
from tests.support.rig import FAST, KEY, NAME, Rig, profile

SECOND = "second"
LABELLED = ("t4-a", "v100-a", "k80-a", "rtx-a", "hidden-v100")
OLD = "retired"  # a profile deleted long ago whose label only the legacy list claims
HAND_MADE = "torchproof.dev/by-hand"  # set by an administrator, listed nowhere: never torchproof's


def conflicts(metrics: Any) -> float:
    return sum(s.value for metric in metrics.api_errors.collect() for s in metric.samples
               if s.name.endswith("_total") and s.labels.get("code") == "409")


async def test_two_profiles_never_conflict_and_legacy_nodes_keep_their_labels_and_ownership(env: Rig) -> None:
    async with env.operator(**FAST):
        await env.apply(profile())
        await eventually(env.converged, "the first profile to converge", 20)
    before = {n: env.label(n) for n in LABELLED}
    assert all(before.values())
    for node in LABELLED:  # as an earlier release left them: the shared list names every torchproof label
        await env.cluster.emulator.patch_object("v1/nodes", None, node, {"metadata": {
            "labels": {L.label_key(OLD): "passed", HAND_MADE: "yes"},
            "annotations": {L.LEGACY_OWNED_ANNOTATION: f"{KEY},{L.label_key(OLD)}"}}})

    patches: list[Mapping[str, Any]] = []
    async with env.operator(**FAST) as op:
        patch_node = op.reconciler.cfg.api.patch_node

        async def recorded(name: str, patch: Mapping[str, Any]) -> None:
            patches.append(patch)
            await patch_node(name, patch)

        op.reconciler.cfg.api.patch_node = recorded
        await env.apply(profile(maxConcurrent=2) | {"metadata": {"name": SECOND}})
        await eventually(lambda: env.converged(SECOND) and env.converged(), "both profiles to converge", 30)

        def migrated() -> bool:
            return all(L.LEGACY_OWNED_ANNOTATION not in env.node(n)["metadata"]["annotations"] for n in LABELLED)

        await eventually(migrated, "the legacy list gone from every node", 20)
        assert conflicts(op.reconciler.cfg.metrics) == 0
    assert patches and not any("resourceVersion" in (p.get("metadata") or {}) for p in patches)
    for node in LABELLED:
        meta = env.node(node)["metadata"]
        assert env.label(node) == before[node], node
        assert env.label(node, L.label_key(SECOND)) == before[node], node
        assert L.owns(NAME, meta["annotations"]) and L.owns(SECOND, meta["annotations"]), node
        assert L.label_key(OLD) not in meta["labels"], "the retired profile's label was torchproof's: swept"
        assert meta["labels"][HAND_MADE] == "yes"
