"""The profile's status (counts equal to the node labels, conditions with a stable lastTransitionTime, the
failing and waiting nodes) and its Events, per transition and never per pass, from one pass's decisions."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any

from torchproof import history as H
from torchproof import labels as L
from torchproof.classify import Classifier
from torchproof.contract import iso
from torchproof.plantypes import Entry, EventSpec, PlanInput, Tally
from torchproof.views import cached_record

MAX_FAILING_NODES = 20
CONDITION_TYPES = ("Ready", "Progressing", "Degraded")


def _failing(inp: PlanInput, b: Classifier, tally: Tally, entries: Mapping[str, Entry]) -> list[dict[str, Any]]:
    fresh = {u.node: u.evaluation for u in b.update if u.evaluation is not None}
    out: list[dict[str, Any]] = []
    for name in heapq.nsmallest(MAX_FAILING_NODES, tally.failing):
        evaluation = fresh.get(name)
        if evaluation is not None:
            reasons = [str(r) for r in evaluation.reasons]
        else:
            record = cached_record(
                entries[name].view.annotations.get(L.result_annotation_key(inp.profile.name), "{}")
            )
            reasons = [r[:200] for r in record.reasons[:4]] if record is not None else []
        out.append({"node": name, "verdict": entries[name].verdict, "reasons": reasons[:4]})
    return out


def _counts(tally: Tally) -> dict[str, int]:
    states = tally.states
    counts: dict[str, int] = {verdict: tally.verdicts[verdict] for verdict in L.VERDICTS}
    counts["pending"] = states["pending"] + states["waiting"] + states["running"]
    counts.update(running=states["running"], waiting=states["waiting"], skipped=states["skipped"])
    counts["total"] = tally.selected
    return counts


def _condition(
    previous: Mapping[str, Mapping[str, Any]], now: float, generation: int,
    type_: str, status: bool, reason: str, message: str,
) -> dict[str, Any]:
    value = "True" if status else "False"
    old = previous.get(type_) or {}
    changed = old.get("status") != value
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message[:1000],
        "observedGeneration": generation,
        "lastTransitionTime": iso(now) if changed or "lastTransitionTime" not in old else old["lastTransitionTime"],
    }


def invalid_spec_status(
    previous: Mapping[str, Any], meta: Mapping[str, Any], message: str, now: float
) -> dict[str, Any]:
    """Status for a spec the schema let through but the operator cannot use: say why, change nothing else."""
    generation = int(meta.get("generation") or 1)
    old = {str(c.get("type")): c for c in previous.get("conditions") or [] if isinstance(c, Mapping)}
    return {
        **{k: v for k, v in previous.items() if k in ("counts", "failingNodes")},
        "observedGeneration": generation,
        "conditions": [
            _condition(old, now, generation, "Ready", False, "InvalidSpec", message),
            _condition(old, now, generation, "Progressing", False, "InvalidSpec",
                       "fix the spec; nothing is validated from it"),
            _condition(old, now, generation, "Degraded", True, "InvalidSpec", message),
        ],
    }


def pass_failed_status(
    previous: Mapping[str, Any], generation: int, message: str, now: float
) -> dict[str, Any]:
    """The last status with Degraded=True (PassFailed) saying why planning passes fail: the rest is what
    the last pass that worked computed, since nothing newer is known."""
    old = {str(c.get("type")): c for c in previous.get("conditions") or [] if isinstance(c, Mapping)}
    degraded = _condition(old, now, generation, "Degraded", True, "PassFailed", message)
    return {
        **previous,
        "conditions": [degraded if t == "Degraded" else dict(old[t]) for t in CONDITION_TYPES
                       if t == "Degraded" or t in old],
    }


def plan_status(
    inp: PlanInput, b: Classifier, tally: Tally, entries: Mapping[str, Entry],
) -> dict[str, Any]:
    """From the tally over every selected node (plantypes.Tally) and this pass's decisions."""
    counts = _counts(tally)
    pull = b.pull_failure or (inp.status.get("imagePull") if b.blocked else None)
    previous = {str(c.get("type")): c for c in inp.status.get("conditions") or [] if isinstance(c, Mapping)}
    gen = inp.profile.generation
    converged = counts["pending"] == 0
    verdicts = ", ".join(f"{counts[v]} {v}" for v in L.VERDICTS)
    if pull:
        ready = (False, "ImagePullFailed", f"cannot pull {inp.profile.image}: {pull.get('message', '')}")
    elif converged:
        skipped = f"; {counts['skipped']} not ready or cordoned" if counts["skipped"] else ""
        ready = (True, "Converged", f"{verdicts}{skipped}")
    elif counts["pending"] == counts["waiting"]:
        # waitingNodes lists the skipped nodes too: the message counts every node it lists
        skipped = f" and {counts['skipped']} not ready or cordoned" if counts["skipped"] else ""
        ready = (False, "Waiting",
                 f"{counts['waiting']} of {counts['total']} nodes waiting{skipped} (see waitingNodes)")
    else:
        ready = (False, "Validating", f"{counts['pending']} of {counts['total']} nodes awaiting a verdict")
    rollout = b.rollout
    if pull:
        progressing = (False, "Blocked", "waiting for the image or the spec to change")
    elif rollout.paused and not converged:
        progressing = (False, "RolloutPaused", f"{rollout.reason}: {rollout.message}")
    elif converged:
        progressing = (False, "Converged", verdicts)
    elif counts["pending"] == counts["waiting"]:
        progressing = (False, "Waiting", "nothing can run now: pods unschedulable or retrying later")
    else:
        progressing = (True, "Validating", f"{counts['running']} pods running, {counts['pending']} nodes pending")
    refused = sorted(b.refused_nodes)
    if pull:
        degraded = (True, "ImagePullFailed", str(pull.get("message", "")))
    elif refused:
        degraded = (True, "PodCreateRefused", f"{len(refused)} node(s) get no validation pod; {refused[0]}: "
                                              f"{b.backoff[refused[0]].reason}")
    else:
        degraded = (False, "AsExpected", "")
    conditions = [
        _condition(previous, inp.now, gen, t, *spec)
        for t, spec in zip(CONDITION_TYPES, (ready, progressing, degraded), strict=True)
    ]
    paused = (True, rollout.reason, f"{rollout.message}; resume: annotate the profile "
                                    f"torchproof.dev/resume-rollout=<new value>") if rollout.paused else (
        False, "Running", "")
    conditions.append(_condition(previous, inp.now, gen, "RolloutPaused", *paused))
    performance = H.summary(tally.sums.values, tally.sums.regressed)
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "conditions": conditions,
        "counts": counts,
        "failingNodes": _failing(inp, b, tally, entries),
        "waitingNodes": [
            {"node": node, "reason": reason}
            for node, reason in heapq.nsmallest(MAX_FAILING_NODES, tally.waiting.items())
        ],
        "imagePull": dict(pull) if pull else None,
        "rollout": rollout.status(),
        "performance": performance,
        "performanceSummary": H.summary_text(performance),
    }
    return status


def plan_events(inp: PlanInput, b: Classifier, status: Mapping[str, Any]) -> Iterable[EventSpec]:
    """Events per transition, never per loop: verdict changes and condition changes."""
    newly = [u for u in b.update if u.verdict is not None and u.verdict != u.previous]
    for u in newly:
        if u.verdict != "passed" and u.evaluation is not None:
            reasons = "; ".join(str(r) for r in u.evaluation.reasons[:3])
            yield EventSpec("Warning", "NodeValidated", f"node {u.node} {u.verdict}: {reasons}"[:1000])
    passed = sum(1 for u in newly if u.verdict == "passed")
    if passed:
        yield EventSpec("Normal", "NodesPassed", f"{passed} node(s) passed validation")
    previous = {c.get("type"): c.get("status") for c in inp.status.get("conditions") or [] if isinstance(c, Mapping)}
    for cond in status["conditions"]:
        was = previous.get(cond["type"])
        if cond["type"] == "RolloutPaused":  # an Event when it pauses and when it resumes, not when it starts
            if was != cond["status"] and (cond["status"] == "True" or was == "True"):
                yield EventSpec("Warning" if cond["status"] == "True" else "Normal",
                                f"RolloutPaused{cond['status']}", f"{cond['reason']}: {cond['message']}"[:1000])
            continue
        if was != cond["status"] and (cond["type"] != "Degraded" or cond["status"] == "True"):
            kind = "Warning" if cond["type"] == "Degraded" or cond["reason"] == "ImagePullFailed" else "Normal"
            yield EventSpec(kind, f"{cond['type']}{cond['status']}", f"{cond['reason']}: {cond['message']}"[:1000])
