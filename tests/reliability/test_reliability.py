"""Fault scenarios on fixed seeds: the fleet ends with its fault-free labels and every invariant holds."""

from __future__ import annotations

import pytest
from reliability_harness import COMMENTED_TRUTH, FLEET, NAME, NAMESPACE, audit, rig, truth_of
from reliability_scenarios import BODY, run
from torchproof import labels as L

CASES = [("api-faults", 1), ("read-faults", 1), ("restarts", 1), ("churn", 1), ("profile-edits", 1),
         ("event-chaos", 1)]


async def test_the_fault_free_truth_matches_the_fleet_comments() -> None:
    assert await truth_of(FLEET, BODY) == COMMENTED_TRUTH


@pytest.mark.parametrize("scenario,seed", CASES)
async def test_scenario_converges_to_the_truth_with_every_invariant_held(scenario: str, seed: int) -> None:
    outcome = await run(scenario, seed)
    assert outcome.problems == [], f"{scenario} seed {seed}: " + "\n".join(outcome.problems)
    assert outcome.correct == outcome.total
    assert sum(outcome.injected.values()) > 0, "the scenario injected nothing"


async def test_the_audit_sees_each_broken_invariant() -> None:
    truth = await truth_of(FLEET, BODY)
    async with rig() as r, r.operator(threaded=True):
        await r.apply(BODY)
        assert await r.settle({NAME: truth}) == []
        await r.emulator.patch_object("v1/nodes", None, "t4-a", {"metadata": {
            "labels": {"team": "web", L.label_key(NAME): "failed"}}})
        await r.emulator.create_object("v1/configmaps", {"metadata": {"name": "stray", "namespace": NAMESPACE}})
        problems = "\n".join(audit(r, {NAME: truth}))
    assert "foreign write: t4-a: label team 'ml' -> 'web'" in problems
    assert "'t4-a': ('failed', 'passed')" in problems
    assert "t4-a: label failed but record verdict passed" in problems
    assert "status counts" in problems
    assert "configmaps left" in problems
