"""Which Kubernetes client the operator's API adapter should use: CPU and time per call at fleet scale.

Run: `python -m bench.api_client [--nodes 5000] [--patches 500] [--events 1000]`. The embedded cluster runs in
a child process, so the figures are the client's own CPU (this process's `time.process_time`). For each
candidate installed: one LIST of every node, one watch receiving `--events` node changes, and `--patches`
merge patches of a node's labels, 8 in flight. Responses are read raw (JSON bytes, no model objects) in
every candidate: the operator keeps compact views, not client models.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp

IN_FLIGHT = 8
MERGE = "application/merge-patch+json"


def node(i: int) -> dict[str, Any]:
    """A GPU node of about the size of a real one (labels, capacity, conditions, images)."""
    labels = {f"nvidia.com/gpu.{k}": "x" * 12 for k in ("product", "family", "memory", "count", "driver")}
    labels.update({"kubernetes.io/hostname": f"node-{i}", "nvidia.com/gpu.present": "true"})
    return {
        "metadata": {"name": f"node-{i}", "labels": labels},
        "status": {
            "capacity": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "8"},
            "conditions": [{"type": t, "status": "False", "reason": t + "Ok", "message": "fine " * 8}
                           for t in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")],
            "images": [{"names": [f"nvcr.io/nvidia/pytorch:{20 + k}.0{k}-py3"], "sizeBytes": 10**10}
                       for k in range(6)],
        },
    }


def serve(nodes: int, pipe: multiprocessing.connection.Connection) -> None:
    """The child: an embedded cluster with `nodes` nodes; on "patch N" it changes N nodes itself."""
    from torchproof_sim.cluster import EmbeddedCluster

    async def main() -> None:
        async with EmbeddedCluster() as cluster:
            for i in range(nodes):
                await cluster.emulator.create_object("v1/nodes", node(i))
            pipe.send((cluster.url, cluster.admin_token))
            loop = asyncio.get_running_loop()
            while True:
                command = await loop.run_in_executor(None, pipe.recv)
                if command == "stop":
                    return
                for i in range(int(command.split()[1])):
                    await cluster.emulator.patch_object(
                        "v1/nodes", None, f"node-{i % nodes}",
                        {"metadata": {"annotations": {"bench": str(time.monotonic())}}})
                pipe.send("done")

    asyncio.run(main())


@dataclass
class Client:
    """One candidate: list all nodes (→ count and resourceVersion), open a watch, patch a node, close."""

    name: str
    list_nodes: Callable[[], Awaitable[tuple[int, str]]]
    watch_nodes: Callable[[str, int], Awaitable[int]]
    patch_node: Callable[[str], Awaitable[None]]
    close: Callable[[], Awaitable[None]]


def sync_pool(url: str, token: str) -> Client:
    """The official synchronous client in a thread pool (the adapter before this change)."""
    from kubernetes import client
    from kubernetes.watch.watch import iter_resp_lines

    configuration = client.Configuration()
    configuration.host = url
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    configuration.connection_pool_maxsize = 32
    core = client.CoreV1Api(client.ApiClient(configuration))
    pool = ThreadPoolExecutor(16)

    async def run(fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    def listed() -> tuple[int, str]:
        response: Any = core.list_node(_preload_content=False)  # raw urllib3 response, not a model
        document = json.loads(response.data)
        return len(document["items"]), document["metadata"]["resourceVersion"]

    def watched(version: str, events: int) -> int:
        response: Any = core.list_node(watch=True, resource_version=version, _preload_content=False)
        seen = 0
        for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
            if line.strip():
                json.loads(line)
                seen += 1
                if seen >= events:
                    break
        response.release_conn()
        return seen

    def patched(name: str) -> None:
        response: Any = core.patch_node(name, {"metadata": {"labels": {"torchproof.dev/x": "passed"}}},
                                   _content_type=MERGE, _preload_content=False)
        _ = response.data
        response.release_conn()

    async def close() -> None:
        pool.shutdown()

    return Client("kubernetes (sync) + threads", lambda: run(listed),
                  lambda v, n: run(partial(watched, v, n)), lambda n: run(partial(patched, n)), close)


def kubernetes_aio(url: str, token: str) -> Client:
    """The official asyncio client (`kubernetes.aio`, aiohttp underneath), raw responses."""
    from kubernetes.aio import client

    configuration = client.Configuration(host=url, api_key={"BearerToken": token},
                                         api_key_prefix={"BearerToken": "Bearer"})
    api_client = client.ApiClient(configuration)
    core = client.CoreV1Api(api_client)

    async def listed() -> tuple[int, str]:
        response = await core.list_node_without_preload_content()
        document = json.loads(await response.read())
        return len(document["items"]), document["metadata"]["resourceVersion"]

    async def watched(version: str, events: int) -> int:
        response = await core.list_node_without_preload_content(watch=True, resource_version=version)
        seen = 0
        async for line in response.content:
            if line.strip():
                json.loads(line)
                seen += 1
                if seen >= events:
                    break
        response.release()
        return seen

    async def patched(name: str) -> None:
        response = await core.patch_node_without_preload_content(
            name, {"metadata": {"labels": {"torchproof.dev/x": "passed"}}}, _content_type=MERGE)
        await response.read()

    return Client("kubernetes.aio", listed, watched, patched, api_client.close)


def plain_aiohttp(url: str, token: str) -> Client:
    """aiohttp directly: one session, paths and bodies written by the adapter."""
    session = aiohttp.ClientSession(url, headers={"Authorization": f"Bearer {token}"})

    async def listed() -> tuple[int, str]:
        async with session.get("/api/v1/nodes") as response:
            document = json.loads(await response.read())
        return len(document["items"]), document["metadata"]["resourceVersion"]

    async def watched(version: str, events: int) -> int:
        seen = 0
        async with session.get("/api/v1/nodes", params={"watch": "true", "resourceVersion": version}) as response:
            async for line in response.content:
                if line.strip():
                    json.loads(line)
                    seen += 1
                    if seen >= events:
                        break
        return seen

    async def patched(name: str) -> None:
        async with session.patch(f"/api/v1/nodes/{name}", data=json.dumps(
                {"metadata": {"labels": {"torchproof.dev/x": "passed"}}}),
                headers={"Content-Type": MERGE}) as response:
            await response.read()

    return Client("aiohttp", listed, watched, patched, session.close)


async def measure(make: Callable[[str, str], Client], url: str, token: str, pipe: Any,
                  args: argparse.Namespace) -> dict[str, Any]:
    client = make(url, token)
    try:
        await client.list_nodes()  # warm: connections, imports, lazily built validators
        cpu, wall = time.process_time(), time.perf_counter()
        count, version = await client.list_nodes()
        list_cpu, list_wall = time.process_time() - cpu, time.perf_counter() - wall
        assert count == args.nodes, count
        watch = asyncio.ensure_future(client.watch_nodes(version, args.events))
        await asyncio.sleep(0.5)  # the watch is open before the changes start
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(None, pipe.send, f"patch {args.events}")
        seen = await watch
        watch_cpu, watch_wall = time.process_time() - cpu, time.perf_counter() - wall
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        semaphore = asyncio.Semaphore(IN_FLIGHT)

        async def one(i: int) -> None:
            async with semaphore:
                await client.patch_node(f"node-{i}")

        await one(0)
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.patches)))
        patch_cpu, patch_wall = time.process_time() - cpu, time.perf_counter() - wall
        return {
            "client": client.name,
            "list_cpu_ms": round(list_cpu * 1e3, 1), "list_wall_ms": round(list_wall * 1e3, 1),
            "watch_cpu_ms_per_1000": round(watch_cpu * 1e3 * 1000 / seen, 1),
            "watch_wall_ms_per_1000": round(watch_wall * 1e3 * 1000 / seen, 1),
            "patch_cpu_ms": round(patch_cpu * 1e3 / args.patches, 3),
            "patch_wall_ms": round(patch_wall * 1e3 / args.patches, 3),
        }
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--patches", type=int, default=500)
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(args.nodes, child), daemon=True)
    server.start()
    url, token = parent.recv()
    try:
        for make in (sync_pool, kubernetes_aio, plain_aiohttp):
            print(json.dumps(asyncio.run(measure(make, url, token, parent, args))), flush=True)
    finally:
        parent.send("stop")
        server.join(30)


if __name__ == "__main__":
    main()
