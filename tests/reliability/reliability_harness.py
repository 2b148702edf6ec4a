"""The reliability suite's rig: a seeded fleet, the fault-free truth, and the invariants checked after every run.

`audit` returns problems as text instead of asserting, so the soak runner (bench/reliability.py) can
count them over many seeds and the tests can print all of them at once.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from torchproof import labels as L
from torchproof_sim.emulator import ApiFaults
from torchproof_sim.fleet import parse_fleet
from torchproof_sim.simulate import NAMESPACE, settled
from torchproof_sim.store import ApiError

from tests.support import rig as support
from tests.support.polling import eventually
from tests.support.rig import NAME

READS = frozenset({"get", "list", "watch"})
WRITES = frozenset({"create", "update", "patch", "delete"})

# Labels and annotations torchproof does not own, on every node from its birth: two of them share
# torchproof's domain (one looks like a profile's label), so "owns the domain" would be a bug.
FOREIGN_LABELS = {
    "team": "ml",
    "torchproof.dev/other": "keep",
    "torchproof.dev/pytorch-20.06-old": "passed",
}
FOREIGN_ANNOTATIONS = {"example.com/note": "do-not-touch", "torchproof.dev/comment": "mine"}

T4 = {"product": "Tesla T4", "count": 4, "driver": "418.87.01"}
V100 = {"product": "Tesla V100-SXM2-16GB", "count": 8, "driver": "450.51.06"}
# Each node's fault-free verdict for pytorch-20.06 (None: not a GPU node, never labelled); the truth the
# tests use is measured by a fault-free run, and `test_truth_matches_the_fleet_comments` holds it to these.
FLEET: list[dict[str, Any]] = [
    {"name": "t4-a", "gpu": T4},                                                        # passed (418 branch)
    {"name": "v100-a", "gpu": V100},                                                    # passed
    {"name": "k80-a", "gpu": {"product": "Tesla K80", "count": 4, "driver": "450.51.06"}},  # incompatible
    {"name": "rtx-a", "gpu": {"product": "GeForce RTX 2080 Ti", "count": 1, "driver": "440.100"}},  # incompat.
    {"name": "hidden-v100", "gfd": False, "gpu": {**V100, "count": 1}},                 # passed (probe decides)
    {"name": "t4-garbage", "gpu": T4, "faults": ["garbageResult"]},                     # error (UntrustedResult)
    {"name": "t4-nan", "gpu": T4, "faults": ["ampNaN"]},                                # failed (AmpNotFinite)
    {"name": "v100-slow", "gpu": V100, "faults": ["slowTensorCores"]},                  # failed
    {"name": "t4-crash", "gpu": T4, "faults": ["crash"]},                               # error (ProbeCrashed)
    {"name": "cpu-1"},                                                                  # not selected
]
COMMENTED_TRUTH = {
    "t4-a": "passed", "v100-a": "passed", "k80-a": "incompatible", "rtx-a": "incompatible",
    "hidden-v100": "passed", "t4-garbage": "error", "t4-nan": "failed", "v100-slow": "failed",
    "t4-crash": "error", "cpu-1": None,
}


def fleet(nodes: Iterable[Mapping[str, Any]] = FLEET) -> list[dict[str, Any]]:
    """Fleet entries with the foreign labels added, so nodes created later carry them too."""
    out = []
    for node in nodes:
        entry = copy.deepcopy(dict(node))
        entry["labels"] = {**FOREIGN_LABELS, **entry.get("labels", {})}
        out.append(entry)
    return out


class Faults(ApiFaults):
    """`ApiFaults`, counted by kind."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.injected: Counter[str] = Counter()

    def draw(self, verb: str, conditional: bool = True) -> tuple[float, ApiError | None]:
        delay, error = super().draw(verb, conditional)
        if delay:
            self.injected["slow"] += 1
        if error is not None:
            self.injected[str(error.code)] += 1
        return delay, error


@dataclass
class NodeWrites:
    """Every change to every Node, seen at the store (HTTP and in-process writes alike).

    A change to a label or annotation key outside `owned` is a violation, unless the scenario itself
    made it under `quiet()` (relabelling, a driver change).
    """

    owned_labels: set[str]
    owned_annotations: set[str]
    writes: int = 0
    violations: list[str] = field(default_factory=list)
    paused: bool = False

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """The test's own writes (relabelling, a driver change) are not the operator's."""
        self.paused = True
        try:
            yield
        finally:
            self.paused = False

    def see(self, event: Mapping[str, Any], before: Mapping[str, Any] | None) -> None:
        if event["type"] != "MODIFIED" or before is None or self.paused:
            return
        self.writes += 1
        after, prior = event["object"]["metadata"], before["metadata"]
        name = after["name"]
        for kind, owned in (("labels", self.owned_labels), ("annotations", self.owned_annotations)):
            new, old = after.get(kind) or {}, prior.get(kind) or {}
            for key in set(new) | set(old):
                if new.get(key) != old.get(key) and key not in owned:
                    self.violations.append(f"{name}: {kind[:-1]} {key} {old.get(key)!r} -> {new.get(key)!r}")


@dataclass
class Rig(support.Rig):
    """The shared rig, with every Node write watched and API faults injectable."""

    writes: NodeWrites = field(default_factory=lambda: NodeWrites(set(), set()))
    names: list[str] = field(default_factory=list)  # the profiles whose marks are owned
    faults: ApiFaults | None = None

    async def add_node(self, entry: Mapping[str, Any]) -> None:
        node = parse_fleet({"nodes": fleet([entry])}).nodes[0]
        with self.writes.quiet():
            await self.kubelet.add_node(node)
            await self.emulator.patch_object("v1/nodes", None, node.name, {
                "metadata": {"annotations": FOREIGN_ANNOTATIONS}})

    async def relabel(self, node: str, labels: Mapping[str, str | None]) -> None:
        with self.writes.quiet():
            await self.emulator.patch_object("v1/nodes", None, node, {"metadata": {"labels": dict(labels)}})

    async def set_driver(self, node: str, driver: str) -> None:
        with self.writes.quiet():
            await self.kubelet.set_driver(node, driver)

    async def evict(self) -> str | None:
        """Delete one running validation pod as someone else would (an eviction, a drain)."""
        running = [p for p in self.pods() if (p.get("status") or {}).get("phase") == "Running"
                   and not p["metadata"].get("deletionTimestamp")]
        if not running:
            return None
        name = str(running[0]["metadata"]["name"])
        with contextlib.suppress(ApiError):
            await self.emulator.delete_object("v1/pods", NAMESPACE, name)
        return name

    def inject(self, faults: ApiFaults | None) -> None:
        self.faults = faults
        self.emulator.faults = faults

    async def settle(self, truth: Mapping[str, Mapping[str, str | None]], gone: Iterable[str] = (),
                     timeout: float = 15.0) -> list[str]:
        """Wait (with a deadline) until nothing is left to converge, then return every invariant broken."""
        with contextlib.suppress(AssertionError):
            await eventually(lambda: not audit(self, truth, gone), "every invariant to hold", timeout, every=0.05)
        return audit(self, truth, gone)


@contextlib.asynccontextmanager
async def rig(nodes: Iterable[Mapping[str, Any]] = FLEET, *, profiles: Iterable[str] = (NAME,),
              probe_seconds: float = 0.05) -> AsyncIterator[Rig]:
    names = list(profiles)
    writes = NodeWrites(
        owned_labels={L.label_key(n) for n in names},
        owned_annotations={L.LEGACY_OWNED_ANNOTATION, *(L.result_annotation_key(n) for n in names)},
    )
    async with support.cluster_rig(fleet(nodes), probe_seconds=probe_seconds) as base:
        cluster, kubelet = base.cluster, base.kubelet
        for node in kubelet.fleet.nodes:
            await cluster.emulator.patch_object("v1/nodes", None, node.name, {
                "metadata": {"annotations": FOREIGN_ANNOTATIONS}})
        store = cluster.emulator.store
        unsubscribe = store.subscribe(store.resolve("v1/nodes"), writes.see)
        try:
            yield Rig(cluster, kubelet, writes, names)
        finally:
            cluster.emulator.faults = None
            unsubscribe()


_TRUTH: dict[str, dict[str, str | None]] = {}


async def truth_of(nodes: Iterable[Mapping[str, Any]], body: Mapping[str, Any]) -> dict[str, str | None]:
    """Each node's label after a fault-free run of the same fleet and profile (cached per input)."""
    nodes = list(nodes)
    key = json.dumps([nodes, body], sort_keys=True)
    if key not in _TRUTH:
        name = body["metadata"]["name"]
        async with rig(nodes, profiles=[name]) as clean, clean.operator(threaded=True):
            await clean.apply(dict(body))
            await clean.wait_converged(name, timeout=30)
            _TRUTH[key] = clean.labels(name)
    return dict(_TRUTH[key])


def _status_problems(r: Rig, name: str, labels: Mapping[str, str | None], matched: int) -> list[str]:
    body = r.profile(name)
    if body is None:
        return [f"{name}: profile missing"]
    status = body.get("status") or {}
    counts = status.get("counts") or {}
    if not settled(body):
        return [f"{name}: not settled: counts={counts} observed={status.get('observedGeneration')}"]
    want = {v: sum(1 for x in labels.values() if x == v) for v in L.VERDICTS}
    got = {v: counts.get(v) for v in L.VERDICTS}
    problems = []
    if got != want or counts.get("total") != matched or counts.get("pending") != 0:
        problems.append(f"{name}: status counts {counts} but node labels give {want}, total {matched}")
    return problems


def _record_problems(r: Rig, name: str) -> list[str]:
    """A label must come with its own record, from a result the operator trusted or an explicit error."""
    problems = []
    key, rkey = L.label_key(name), L.result_annotation_key(name)
    sim = {n.name: n for n in r.kubelet.fleet.nodes}
    for node in r.nodes():
        meta = node["metadata"]
        label = (meta.get("labels") or {}).get(key)
        if label is None:
            continue
        try:
            record = json.loads((meta.get("annotations") or {}).get(rkey, ""))
        except ValueError:
            problems.append(f"{meta['name']}: label {label} without a readable result record")
            continue
        if record.get("verdict") != label:
            problems.append(f"{meta['name']}: label {label} but record verdict {record.get('verdict')}")
        faults = sim[meta["name"]].faults if meta["name"] in sim else frozenset()
        if "garbageResult" in faults and not (
                label == "error" and str((record.get("reasons") or [""])[0]).startswith("UntrustedResult")):
            problems.append(f"{meta['name']}: garbage result gave {label} {record.get('reasons')}")
        if not L.owns(name, meta.get("annotations") or {}):
            problems.append(f"{meta['name']}: label {key} set but not owned")
    return problems


def audit(r: Rig, truth: Mapping[str, Mapping[str, str | None]], gone: Iterable[str] = ()) -> list[str]:
    """Every invariant of the issue, checked on the cluster as it is now; [] when all hold."""
    problems: list[str] = []
    for name, want in truth.items():
        labels = r.labels(name)
        wrong = {n: (labels.get(n), v) for n, v in want.items() if labels.get(n) != v}
        wrong |= {n: (v, None) for n, v in labels.items() if n not in want and v is not None}
        if wrong:
            problems.append(f"{name}: labels (got, want) differ from the fault-free truth: {wrong}")
        problems += _status_problems(r, name, labels, sum(1 for v in want.values() if v is not None))
        problems += _record_problems(r, name)
    for name in gone:
        if r.profile(name) is not None:
            problems.append(f"{name}: deleted profile still present (finalizer not released)")
        for node in r.nodes():
            meta = node["metadata"]
            annotations = meta.get("annotations") or {}
            if L.label_key(name) in (meta.get("labels") or {}) or L.result_annotation_key(name) in annotations:
                problems.append(f"{meta['name']}: label or record of deleted profile {name} left")
            if L.label_key(name) in L.legacy_owned(annotations):
                problems.append(f"{meta['name']}: owned-labels still lists deleted profile {name}")
    for node in r.nodes():
        meta = node["metadata"]
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        lost = {k: labels.get(k) for k, v in FOREIGN_LABELS.items() if labels.get(k) != v}
        lost |= {k: annotations.get(k) for k, v in FOREIGN_ANNOTATIONS.items() if annotations.get(k) != v}
        if lost:
            problems.append(f"{meta['name']}: foreign labels/annotations changed: {lost}")
    problems += [f"foreign write: {v}" for v in r.writes.violations[:10]]
    doubled = {k: v for k, v in r.kubelet.stats.max_live.items() if v > 1}
    if doubled:
        problems.append(f"two validation pods at once for (profile, node): {doubled}")
    if r.pods():
        problems.append(f"pods left: {sorted(p['metadata']['name'] for p in r.pods())}")
    configmaps = [c["metadata"]["name"] for c in r.emulator.list_objects("v1/configmaps", NAMESPACE)]
    if len(configmaps) > 1 or any(not c.startswith("torchproof-probe-") for c in configmaps):
        problems.append(f"configmaps left: {configmaps} (only the one shared probe ConfigMap may stay)")
    if r.kubelet.errors:
        problems.append(f"simulated kubelet errors: {r.kubelet.errors[:3]}")
    return problems
