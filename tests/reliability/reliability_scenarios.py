"""Fault scenarios, each a function of a seed: the tests run a few seeds, bench/reliability.py many.

Every scenario runs the fleet under its faults, waits (with a deadline) for the operator to settle,
and reports every broken invariant (`reliability_harness.audit`) with the figures the doc reports.
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reliability_harness import (
    FLEET,
    NAME,
    READS,
    WRITES,
    Faults,
    Rig,
    rig,
    truth_of,
)
from torchproof_sim.simulate import PROFILES

from tests.support.polling import eventually
from tests.support.rig import profile

BODY = profile(maxConcurrent=3)


@dataclass
class Outcome:
    scenario: str
    seed: int
    problems: list[str]
    correct: int
    total: int
    injected: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def _score(r: Rig, truth: Mapping[str, str | None]) -> tuple[int, int]:
    labels = r.labels(NAME)
    return sum(1 for n, v in truth.items() if labels.get(n) == v), len(truth)


def _faults(seed: int, verbs: frozenset[str] = WRITES, **rates: float) -> Faults:
    given: dict[str, Any] = {"rate_500": 0.05, "rate_429": 0.03, "rate_409": 0.03, **rates}
    return Faults(seed=seed, verbs=verbs, **given)


async def _running(r: Rig) -> None:
    await eventually(lambda: any((p.get("status") or {}).get("phase") == "Running" for p in r.pods()),
                     "a running validation pod", 20)


async def api_faults(seed: int) -> Outcome:
    """500/429/409 on writes, slow answers, and every watch stream cut after 7 events."""
    return await _api_faults("api-faults", seed, WRITES)


async def read_faults(seed: int) -> Outcome:
    """As `api_faults`, and 500/429 on get, list and watch too: a failed watch makes kopf list again."""
    return await _api_faults("read-faults", seed, READS | WRITES)


async def _api_faults(scenario: str, seed: int, verbs: frozenset[str]) -> Outcome:
    truth = await truth_of(FLEET, BODY)
    async with rig() as r:
        faults = _faults(seed, verbs, rate_500=0.08, rate_429=0.05, rate_409=0.05,
                         slow_seconds=0.05, slow_rate=0.1)
        faults.cut_watch_after_events = 7
        r.inject(faults)
        async with r.operator(threaded=True):
            await r.apply(BODY)
            problems = await r.settle({NAME: truth})
        faults.injected["watch streams (each cut after 7 events)"] = r.emulator.request_counts()["byVerb"].get(
            "watch", 0)
        return Outcome(scenario, seed, problems, *_score(r, truth), faults.injected)


async def restarts(seed: int) -> Outcome:
    """The operator cancelled mid-validation three times, under write faults; a fourth one finishes."""
    rng = random.Random(seed)
    truth = await truth_of(FLEET, BODY)
    async with rig(probe_seconds=0.3) as r:
        faults = _faults(seed)
        r.inject(faults)
        for i in range(3):
            async with r.operator(threaded=True) as op:
                if i == 0:
                    await r.apply(BODY)
                await _running(r)
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                await op.kill()
                faults.injected["operator kills"] += 1
        async with r.operator(threaded=True):
            problems = await r.settle({NAME: truth})
        return Outcome("restarts", seed, problems, *_score(r, truth), faults.injected)


def _pooled(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**n, "labels": {"pool": "gpu"}} if "gpu" in n else n for n in nodes]


CHURN_FLEET = _pooled(FLEET)
NEW_NODE = {"name": "t4-new", "gpu": {"product": "Tesla T4", "count": 1, "driver": "450.51.06"},
            "labels": {"pool": "gpu"}}
CHURN_BODY = profile(maxConcurrent=3, nodeSelector={"matchLabels": {"pool": "gpu"}})


def _churned() -> list[dict[str, Any]]:
    """The fleet as it ends after `churn`: its truth is measured on this fleet without faults."""
    nodes = [copy.deepcopy(n) for n in CHURN_FLEET if n["name"] != "v100-slow"] + [NEW_NODE]
    for n in nodes:
        if n["name"] == "t4-nan":
            n["labels"] = {"pool": "batch"}
        if n["name"] == "t4-a":
            n["gpu"] = {**n["gpu"], "driver": "410.48"}
    return nodes


async def churn(seed: int) -> Outcome:
    """Nodes deleted, added, relabelled out of the selector and rebooted onto another driver, and pods
    evicted, in a seeded order during validation, under write faults."""
    rng = random.Random(seed)
    truth = await truth_of(_churned(), CHURN_BODY)
    async with rig(CHURN_FLEET, probe_seconds=0.15) as r:
        faults = _faults(seed)
        r.inject(faults)
        actions: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("node deleted", lambda: r.kubelet.remove_node("v100-slow")),
            ("node added", lambda: r.add_node(NEW_NODE)),
            ("node relabelled out of the selector", lambda: r.relabel("t4-nan", {"pool": "batch"})),
            ("driver changed", lambda: r.set_driver("t4-a", "410.48")),
            ("pod evicted", r.evict),
            ("pod evicted", r.evict),
        ]
        rng.shuffle(actions)
        async with r.operator(threaded=True):
            await r.apply(CHURN_BODY)
            await _running(r)
            for what, act in actions:
                await asyncio.sleep(rng.uniform(0.0, 0.2))
                await act()
                faults.injected[what] += 1
            problems = await r.settle({NAME: truth})
        return Outcome("churn", seed, problems, *_score(r, truth), faults.injected)


async def profile_edits(seed: int) -> Outcome:
    """The profile edited (a new generation) while its pods run, a second profile deleted mid-flight."""
    rng = random.Random(seed)
    truth = await truth_of(FLEET, BODY)
    first = copy.deepcopy(BODY)
    first["spec"]["checks"]["amp"]["steps"] = 9
    second = profile("second", maxConcurrent=1)
    async with rig(profiles=[NAME, "second"], probe_seconds=0.15) as r:
        faults = _faults(seed)
        r.inject(faults)
        async with r.operator(threaded=True):
            await r.apply(first)
            await r.apply(second)
            await eventually(lambda: any("second" in p["metadata"]["name"] for p in r.pods()),
                             "a pod of the second profile", 20)
            edits = [
                ("profile edited", lambda: r.emulator.patch_object(
                    PROFILES, None, NAME, {"spec": {"checks": {"amp": {"steps": 8}}}})),
                ("profile deleted", lambda: r.emulator.delete_object(PROFILES, None, "second")),
            ]
            rng.shuffle(edits)
            for what, act in edits:
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                await act()
                faults.injected[what] += 1
            problems = await r.settle({NAME: truth}, gone=["second"])
        return Outcome("profile-edits", seed, problems, *_score(r, truth), faults.injected)


def scramble_watches(r: Rig, seed: int, *, duplicate: float = 0.3, max_delay: float = 0.05) -> Counter[str]:
    """Deliver HTTP watch events late and some of them twice.

    Each stream keeps its own order (the API server guarantees that much), but streams drift apart
    by up to `max_delay`, so a pod's end may arrive before the label written for the pod before it,
    and a duplicated event arrives after later ones of other streams. In-process subscribers (the
    simulated kubelet, the write auditor) are not touched.
    """
    rng = random.Random(seed)
    store = r.emulator.store
    original = store.subscribe
    seen: Counter[str] = Counter()
    loop = asyncio.get_running_loop()

    def subscribe(rt: Any, listener: Callable[[Any, Any], None]) -> Callable[[], None]:
        if getattr(listener, "__qualname__", "").split(".")[-1] != "listen":
            return original(rt, listener)
        last = [loop.time()]

        def deliver(event: Any, before: Any) -> None:
            copies = 2 if rng.random() < duplicate else 1
            seen["events delayed"] += 1
            seen["events duplicated"] += copies - 1
            for _ in range(copies):
                last[0] = max(last[0] + 1e-4, loop.time() + rng.uniform(0.0, max_delay))
                loop.call_at(last[0], listener, event, before)

        return original(rt, deliver)

    store.subscribe = subscribe
    return seen


async def event_chaos(seed: int) -> Outcome:
    """Duplicate and reordered watch events, with write faults and one restart mid-validation."""
    truth = await truth_of(FLEET, BODY)
    async with rig(probe_seconds=0.15) as r:
        faults = _faults(seed)
        r.inject(faults)
        seen = scramble_watches(r, seed)
        async with r.operator(threaded=True) as op:
            await r.apply(BODY)
            await _running(r)
            await op.kill()
            faults.injected["operator kills"] += 1
        async with r.operator(threaded=True):
            problems = await r.settle({NAME: truth})
        return Outcome("event-chaos", seed, problems, *_score(r, truth), faults.injected + seen)


SCENARIOS: dict[str, Callable[[int], Awaitable[Outcome]]] = {
    "api-faults": api_faults,
    "read-faults": read_faults,
    "restarts": restarts,
    "churn": churn,
    "profile-edits": profile_edits,
    "event-chaos": event_chaos,
}


async def run(scenario: str, seed: int) -> Outcome:
    started = time.monotonic()
    outcome = await SCENARIOS[scenario](seed)
    outcome.seconds = time.monotonic() - started
    return outcome

