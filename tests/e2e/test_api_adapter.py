"""The API adapter: a 429 is waited on for its Retry-After, every failure is a `KubeError`, every call counted."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from torchproof.kube import KubeApi, KubeError, load_configuration
from torchproof.metrics import Metrics
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.emulator import ApiFaults

from tests.support.polling import eventually

NODE = {"metadata": {"name": "gpu-0", "labels": {"nvidia.com/gpu.present": "true"}}}


@pytest.fixture
async def cluster() -> AsyncIterator[EmbeddedCluster]:
    async with EmbeddedCluster() as c:
        await c.emulator.create_object("v1/nodes", NODE)
        yield c


async def test_a_throttled_call_waits_for_retry_after_then_succeeds(cluster: EmbeddedCluster) -> None:
    metrics = Metrics()
    async with KubeApi(load_configuration(server=cluster.url, token=cluster.admin_token), metrics) as api:
        cluster.emulator.faults = ApiFaults(rate_429=1.0, verbs=frozenset({"patch"}))
        start = time.monotonic()
        patching = asyncio.ensure_future(api.patch_node("gpu-0", {"metadata": {"labels": {"a": "b"}}}))
        await eventually(lambda: metrics.api_requests.labels("patch", "node", "429")._value.get() >= 1,
                         what="a 429")
        cluster.emulator.faults = None
        await patching
        assert time.monotonic() - start >= 0.9, "the server's Retry-After: 1 was waited on"
        assert (cluster.emulator.get_object("v1/nodes", None, "gpu-0") or {})["metadata"]["labels"]["a"] == "b"
        assert metrics.api_requests.labels("patch", "node", "200")._value.get() == 1
        assert metrics.api_errors.labels("patch node", "429")._value.get() == 0, "a retried 429 is no failure"


async def test_a_429_past_the_calls_deadline_fails_at_once_with_its_retry_after(cluster: EmbeddedCluster) -> None:
    async with KubeApi(load_configuration(server=cluster.url, token=cluster.admin_token)) as api:
        cluster.emulator.faults = ApiFaults(rate_429=1.0, verbs=frozenset({"get"}))
        with pytest.raises(KubeError) as caught:
            await api.get_lease("torchproof", "lease", timeout=0.5)
        assert (caught.value.status, caught.value.retry_after) == (429, 1.0)


async def test_every_failure_is_a_kube_error_and_counted(cluster: EmbeddedCluster) -> None:
    metrics = Metrics()
    async with KubeApi(load_configuration(server=cluster.url, token="wrong"), metrics) as api:
        with pytest.raises(KubeError) as refused:
            await api.list_nodes()
        assert refused.value.status == 401
        with pytest.raises(KubeError) as refused_watch:
            async for _ in api.watch("nodes", "/api/v1/nodes", {}, "0", 1):
                pass
        assert refused_watch.value.status == 401
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    async with KubeApi(load_configuration(server=f"http://127.0.0.1:{port}"), metrics) as api:
        for call in (api.list_nodes(), api.patch_node("gpu-0", {}), api.list_profiles()):
            with pytest.raises(KubeError) as unreachable:
                await call
            assert unreachable.value.status == 0
    assert metrics.api_errors.labels("list nodes", "401")._value.get() == 1
    assert metrics.api_errors.labels("watch nodes", "401")._value.get() == 1
    assert metrics.api_errors.labels("patch node", "0")._value.get() == 1
    assert metrics.api_requests.labels("list", "nodes", "401")._value.get() == 1


async def test_the_token_is_read_once_a_minute_and_again_after_a_401(cluster: EmbeddedCluster) -> None:
    configuration = load_configuration(server=cluster.url, token="stale")
    mounted = {"token": "stale"}
    reads: list[str] = []

    def refresh(c: Any) -> None:  # what the kubeconfig and in-cluster loaders install: the token read afresh
        reads.append(mounted["token"])
        c.api_key = {"authorization": mounted["token"]}

    configuration.refresh_api_key_hook = refresh
    async with KubeApi(configuration) as api:
        with pytest.raises(KubeError) as refused:
            await api.list_nodes()
        assert refused.value.status == 401
        first = len(reads)
        mounted["token"] = cluster.admin_token  # rotated
        for _ in range(5):
            assert [n["metadata"]["name"] for n in await api.list_nodes()] == ["gpu-0"]
    assert len(reads) == 2 * first, "read at the first call, and again after the 401 only"
