"""The benchmark's fleet and profiles, as plain data: a mixed fleet whose verdicts are known in advance."""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BLOCK = 20  # the mix below is per block of 20 nodes


@dataclass(frozen=True)
class Kind:
    """One hardware kind of the mix: its share of a block, its fleet entry, and its 20.06 verdict."""

    name: str
    share: int
    gpu: Mapping[str, Any]
    verdict: str
    extra: Mapping[str, Any] | None = None

    @property
    def probed(self) -> bool:
        """Nodes the static pre-check cannot decide run a validation pod; incompatible ones get none."""
        return self.verdict != "incompatible"


MIX: tuple[Kind, ...] = (
    Kind("t4-418", 3, {"product": "Tesla T4", "count": 4, "driver": "418.87.01"}, "passed"),
    Kind("t4-450", 2, {"product": "Tesla T4", "count": 1, "driver": "450.51.06"}, "passed"),
    Kind("v100-450", 3, {"product": "Tesla V100-SXM2-16GB", "count": 8, "driver": "450.51.06"}, "passed"),
    Kind("v100-440", 2, {"product": "Tesla V100-SXM2-32GB", "count": 4, "driver": "440.33.01"}, "passed"),
    Kind("a100-450", 3, {"product": "A100-SXM4-40GB", "count": 8, "driver": "450.80.02"}, "passed"),
    Kind("p100-418", 2, {"product": "Tesla P100-PCIE-16GB", "count": 1, "driver": "418.87.01"}, "passed"),
    Kind("v100-nogfd", 1, {"product": "Tesla V100-SXM2-16GB", "count": 1, "driver": "450.51.06"}, "passed",
         {"gfd": False}),
    Kind("a100-ampnan", 1, {"product": "A100-SXM4-40GB", "count": 1, "driver": "450.80.02"}, "failed",
         {"faults": ["ampNaN"]}),
    Kind("k80-418", 1, {"product": "Tesla K80", "count": 2, "driver": "418.87.01"}, "incompatible"),
    Kind("rtx2080ti-440", 1, {"product": "GeForce RTX 2080 Ti", "count": 1, "driver": "440.100"}, "incompatible"),
    Kind("t4-440-old", 1, {"product": "Tesla T4", "count": 1, "driver": "440.26"}, "incompatible"),
)


def replicas(nodes: int) -> dict[str, int]:
    """How many nodes of each kind a fleet of `nodes` has: the block's shares, the remainder to the first kind."""
    if nodes < BLOCK:
        raise ValueError(f"nodes: at least {BLOCK} (one of each kind), got {nodes}")
    total = sum(k.share for k in MIX)
    counts = {k.name: nodes * k.share // total for k in MIX}
    counts[MIX[0].name] += nodes - sum(counts.values())
    return counts


def fleet_data(nodes: int) -> dict[str, Any]:
    """A fleet file (docs/fleet.md) with `nodes` GPU nodes of mixed products and drivers."""
    entries = []
    for kind in MIX:
        count = replicas(nodes)[kind.name]
        entries.append({"name": kind.name, "gpu": dict(kind.gpu), "replicas": count, **(kind.extra or {})})
    return {"defaults": {"kernelVersion": "5.4.0-113-generic"}, "nodes": entries}


def expected_verdicts(nodes: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for kind in MIX:
        counts[kind.verdict] += replicas(nodes)[kind.name]
    return counts


def probed_nodes(nodes: int) -> int:
    return sum(replicas(nodes)[k.name] for k in MIX if k.probed)


def node_turns(profiles: int, gpus_per_probe: int = 1) -> int:
    """Probes the busiest probed node runs one after another: each pod holds its GPUs, so a node fits
    `gpus // gpus_per_probe` profiles' pods at once (a one-GPU node probes five profiles in five turns)."""
    return max(math.ceil(profiles / max(1, int(k.gpu["count"]) // gpus_per_probe)) for k in MIX if k.probed)


def ideal_seconds(probed: int, max_concurrent: int, probe_seconds: float, turns: int = 1) -> float:
    """The floor: every slot always busy, each pod exactly the probe time, no overhead anywhere, and no node
    asked for more probes at once than its GPUs fit (`turns`, from `node_turns`)."""
    return probe_seconds * max(math.ceil(probed / max_concurrent), turns)


def profiles(base: Mapping[str, Any], count: int, max_concurrent: int) -> list[dict[str, Any]]:
    """`count` copies of a profile under distinct names (`<name>`, `<name>-b`, …), each with `max_concurrent`."""
    out = []
    name = str(base["metadata"]["name"])
    for index in range(count):
        body = copy.deepcopy(dict(base))
        body["metadata"] = {"name": name if index == 0 else f"{name}-{chr(ord('a') + index)}"}
        body["spec"]["maxConcurrent"] = max_concurrent
        out.append(body)
    return out
