"""How fast the embedded API server serves a fleet: create N nodes, merge-patch each, list, watch.

Run: `.venv/bin/python bench/sim_speed.py [N ...]` (default 100 1000 5000). Requests go over HTTP
on loopback through one aiohttp session with a few requests in flight, as an operator would send them.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
from torchproof_sim import EmbeddedCluster

IN_FLIGHT = 8


async def timed(count: int, send: Callable[[int], Awaitable[None]]) -> float:
    """Requests per second for `count` calls of `send`, IN_FLIGHT at a time."""
    semaphore = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with semaphore:
            await send(i)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - start)


async def run(n: int) -> None:
    async with EmbeddedCluster() as cluster, aiohttp.ClientSession(
            cluster.url, headers={"Authorization": f"Bearer {cluster.admin_token}"}) as http:
        async def create(i: int) -> None:
            body = {"metadata": {"name": f"node-{i}", "labels": {"nvidia.com/gpu.present": "true"}}}
            async with http.post("/api/v1/nodes", json=body) as response:
                assert response.status == 201, await response.text()

        async def patch(i: int) -> None:
            body = {"metadata": {"labels": {"torchproof.dev/pytorch-20.06": "passed"}}}
            headers = {"Content-Type": "application/merge-patch+json"}
            async with http.patch(f"/api/v1/nodes/node-{i}", json=body, headers=headers) as response:
                assert response.status == 200, await response.text()

        created = await timed(n, create)
        patched = await timed(n, patch)
        start = time.perf_counter()
        async with http.get("/api/v1/nodes", params={"labelSelector": "nvidia.com/gpu.present=true"}) as response:
            listed = len((await response.json())["items"])
        list_seconds = time.perf_counter() - start
        start = time.perf_counter()
        async with http.get("/api/v1/nodes", params={"watch": "true", "resourceVersion": "1"}) as response:
            events = 0
            while events < 2 * n:
                line = await response.content.readline()
                events += bool(line.strip())
        watch_seconds = time.perf_counter() - start
        assert listed == n
        print(f"N={n:5d}  create {created:7.0f} req/s  merge-patch {patched:7.0f} req/s  "
              f"list {list_seconds:6.3f} s  watch replay of {2 * n} events {watch_seconds:6.3f} s")


def main() -> None:
    for n in [int(a) for a in sys.argv[1:]] or [100, 1000, 5000]:
        asyncio.run(run(n))


if __name__ == "__main__":
    main()
