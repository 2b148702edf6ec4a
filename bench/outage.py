"""What an API outage costs the operator's node informer at fleet scale: the LISTs of the whole fleet it sends
while every list and watch fails, and how long it takes to see a change once they work again.

Run: `python -m bench.outage [--nodes 5000] [--seconds 60]`. The embedded cluster (this process) holds the
fleet of `bench.scale`; the informer is the operator's (`informer.Informer` over the API adapter, its default
backoff). The outage answers every list and watch with a 500 (`ApiFaults`); the informer's watch is short (1 s)
so that it meets the outage within a second, as a broken connection would make it. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from torchproof.informer import Informer, Source
from torchproof.kube import KubeApi, load_configuration
from torchproof.views import NodeView, node_view
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.emulator import ApiFaults
from torchproof_sim.fleet import build_node, parse_fleet

from bench.scale.fleet import fleet_data

NODES = "v1/nodes"
WATCH_SECONDS = 1


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(0.02)


def lists(cluster: EmbeddedCluster) -> int:
    """LIST requests served, failed ones included (the informer is the only client that lists)."""
    return int(cluster.emulator.request_counts()["byVerb"].get("list", 0))


async def measure(nodes: int, seconds: float) -> dict[str, Any]:
    async with EmbeddedCluster() as cluster:
        fleet = parse_fleet(fleet_data(nodes)).nodes
        for sim in fleet:
            await cluster.emulator.create_object(NODES, build_node(sim))
        async with KubeApi(load_configuration(server=cluster.url, token=cluster.admin_token)) as api:
            informer: Informer[NodeView] = Informer(api, Source("nodes", "/api/v1/nodes", {}), node_view,
                                                    lambda _: None, clock=time.time, watch_seconds=WATCH_SECONDS)
            informer.start()
            try:
                await wait_for(informer.synced.is_set, timeout=120, what="the first list")
                before = lists(cluster)
                cluster.emulator.faults = ApiFaults(rate_500=1.0, verbs=frozenset({"list", "watch"}))
                await asyncio.sleep(seconds)  # the outage itself, not a wait for a condition
                during = lists(cluster) - before
                cluster.emulator.faults = None
                ended = time.monotonic()
                name = fleet[0].name
                await cluster.emulator.patch_object(NODES, None, name, {"metadata": {"labels": {"outage": "over"}}})
                await wait_for(lambda: informer.items[name].labels.get("outage") == "over", timeout=120,
                               what="the informer to see a change after the outage")
                return {"nodes": nodes, "outageSeconds": seconds, "listsDuringOutage": during,
                        "listsWithAConstant1sRetry": int(seconds), "secondsToSeeAChangeAfter":
                        round(time.monotonic() - ended, 2), "listsAfter": lists(cluster) - before - during}
            finally:
                await informer.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--seconds", type=float, default=60.0, help="how long lists and watches fail (default 60)")
    args = p.parse_args()
    print(json.dumps(asyncio.run(measure(args.nodes, args.seconds)), indent=2))


if __name__ == "__main__":
    main()
