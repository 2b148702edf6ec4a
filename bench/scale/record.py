"""What the benchmark sees happen in the cluster, timed at the moment the API server commits it.

Store listeners run inside each write, so a timestamp here is when the change became visible to every
watcher: a pod's termination (written by the simulated kubelet), a node's label (written by the
operator), a profile's status. They only read the objects, and keep a few numbers per node.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torchproof import labels as L
from torchproof_sim.store import Store

FINISHED = ("Succeeded", "Failed")


@dataclass
class Recorder:
    """Times of pod terminations, first verdict labels and status changes, keyed by (profile, node).

    `pods_active` holds each profile's pods that exist and have not finished: what maxConcurrent bounds.
    """

    profiles: tuple[str, ...]
    clock: Callable[[], float] = time.monotonic
    terminated: dict[tuple[str, str], float] = field(default_factory=dict)
    labelled: dict[tuple[str, str], float] = field(default_factory=dict)
    verdicts: dict[str, Counter[str]] = field(default_factory=dict)
    status_changes: dict[str, list[float]] = field(default_factory=dict)
    pods_active: dict[str, set[str]] = field(default_factory=dict)
    pods_peak: Counter[str] = field(default_factory=Counter)
    pods_created: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._keys = {L.label_key(p): p for p in self.profiles}
        self.verdicts = {p: Counter() for p in self.profiles}
        self.status_changes = {p: [] for p in self.profiles}
        self.pods_active = {p: set() for p in self.profiles}

    def attach(self, store: Store) -> Callable[[], None]:
        """Listen to nodes, pods and profiles; returns the function that stops listening."""
        stops = [
            store.subscribe(store.resolve("v1/nodes"), self.on_node),
            store.subscribe(store.resolve("v1/pods"), self.on_pod),
            store.subscribe(store.resolve("torchproof.dev/v1alpha1/pytorchreleaseprofiles"), self.on_profile),
        ]

        def stop() -> None:
            for unsubscribe in stops:
                unsubscribe()

        return stop

    def on_node(self, event: Mapping[str, Any], before: Mapping[str, Any] | None) -> None:
        labels = _labels(event["object"])
        old = _labels(before)
        for key, profile in self._keys.items():
            verdict = labels.get(key)
            if verdict in L.VERDICTS and old.get(key) != verdict:
                node = event["object"]["metadata"]["name"]
                if (profile, node) not in self.labelled:
                    self.labelled[(profile, node)] = self.clock()
                    self.verdicts[profile][verdict] += 1

    def on_pod(self, event: Mapping[str, Any], before: Mapping[str, Any] | None) -> None:
        pod = event["object"]
        meta = pod["metadata"]
        profile = (meta.get("labels") or {}).get(L.PROFILE_LABEL)
        if profile not in self.verdicts:
            return
        active = self.pods_active[profile]
        if event["type"] == "ADDED":
            self.pods_created[profile] += 1
            active.add(meta["name"])
            self.pods_peak[profile] = max(self.pods_peak[profile], len(active))
        finished = _phase(pod) in FINISHED
        if event["type"] == "DELETED" or finished:
            active.discard(meta["name"])
        if finished and _phase(before) not in FINISHED:
            node = (meta.get("annotations") or {}).get(L.NODE_ANNOTATION, "")
            self.terminated.setdefault((profile, node), self.clock())

    def on_profile(self, event: Mapping[str, Any], before: Mapping[str, Any] | None) -> None:
        obj = event["object"]
        name = obj["metadata"]["name"]
        if name in self.status_changes and event["type"] == "MODIFIED" and obj.get("status") != (
                before or {}).get("status"):
            self.status_changes[name].append(self.clock())

    def labelled_count(self) -> int:
        return len(self.labelled)

    def latencies(self) -> list[float]:
        """Seconds from each pod's termination to its node's verdict label for that pod's profile."""
        return [self.labelled[key] - at for key, at in self.terminated.items() if key in self.labelled]


def _labels(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _phase(obj: Mapping[str, Any] | None) -> str | None:
    return ((obj or {}).get("status") or {}).get("phase")


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def min_gap(times: Iterable[float]) -> float | None:
    ordered = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    return min(gaps) if gaps else None
