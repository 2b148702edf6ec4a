"""Which nodes get a validation pod, and when: the selection, each profile's node order, the free slots
filled one hardware kind first, and the backoff after a refused create."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

from torchproof.plantypes import CreateBackoff, Tally
from torchproof.profile import Profile
from torchproof.views import NodeView

CREATE_BACKOFF_BASE = 1.0  # the first wait after a refused create, doubling per refusal ...
CREATE_BACKOFF_MAX = 300.0  # ... up to this
CREATE_BACKOFF_JITTER = (0.8, 1.2)  # each wait is scaled within these bounds, so refused nodes drift apart


def selects(profile: Profile, node: NodeView) -> bool:
    if profile.node_selector is not None:
        return profile.node_selector.matches(node.labels)
    return node.labels.get("nvidia.com/gpu.present") == "true" or node.gpus > 0


def validation_order(profile: str, node: str) -> tuple[int, str]:
    """Each profile walks the fleet in its own fixed order: in one shared order, profiles would all run pods
    on the same few nodes at the same moment. Every pass walks its nodes in this order, so candidates, and
    labels written in one pass (the pre-check's), follow it."""
    return zlib.crc32(f"{profile}\0{node}".encode()), node


def fill_slots(
    profile: Profile, tally: Tally, nodes: Mapping[str, NodeView], retrying: Sequence[NodeView], running: int,
) -> list[NodeView]:
    """The nodes that get a pod now: free slots (`maxConcurrent` less the `running` ones) go to the nodes
    retrying a refused create (they had a slot), then to one candidate of each hardware kind that no
    node shows yet (running or with a verdict), so the fleet's picture appears early, then in order.
    Walks the candidates (`tally.candidates`, in order) only as far as the slots and those kinds need."""
    slots = max(0, profile.max_concurrent - (running - len(retrying)))
    if not slots or not (tally.candidates or retrying):
        return []
    uncovered = {kind for kind in tally.candidate_kinds if kind not in tally.covering}
    first: list[NodeView] = []
    rest: list[NodeView] = []
    for _, name in tally.candidates:
        if not uncovered and len(rest) >= slots:
            break
        node = nodes[name]
        if node.kind in uncovered:
            uncovered.discard(node.kind)
            first.append(node)
        else:
            rest.append(node)
    return [*retrying, *first, *rest][:slots]


def refused_create(
    previous: CreateBackoff | None, spec_hash: str, node: str, status: int, message: str, now: float,
    base: float = CREATE_BACKOFF_BASE, cap: float = CREATE_BACKOFF_MAX,
) -> CreateBackoff:
    """The backoff after one more refusal: base doubling to cap, with a jitter drawn from the node and the
    attempt (deterministic, so the plan stays a function of its input)."""
    attempts = previous.attempts + 1 if previous is not None and previous.spec_hash == spec_hash else 1
    delay = min(cap, base * 2.0 ** min(attempts - 1, 32))
    low, high = CREATE_BACKOFF_JITTER
    draw = zlib.crc32(f"{node}\0{attempts}".encode()) / 2**32
    reason = f"CreateRefused: {status} {message}"[:300]
    return CreateBackoff(spec_hash, attempts, now + delay * (low + (high - low) * draw), reason)
