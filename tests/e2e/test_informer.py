"""The informer keeps a faithful cache through broken watches: a list after a failed watch replaces it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from torchproof.informer import Informer
from torchproof.kube import KubeApi, load_api_client
from torchproof.views import PodView, pod_view
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.emulator import ApiFaults
from torchproof_sim.simulate import wait_for

NAMESPACE = "torchproof"
PODS = "v1/pods"


def pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "probe"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}


@pytest.fixture
async def cluster() -> AsyncIterator[EmbeddedCluster]:
    async with EmbeddedCluster(namespace=NAMESPACE) as c:
        yield c


async def test_a_pod_deleted_while_the_watch_is_down_is_dropped_and_remembered(cluster: EmbeddedCluster) -> None:
    api = KubeApi(load_api_client(server=cluster.url, token=cluster.admin_token))
    changed: list[str] = []
    informer: Informer[PodView] = Informer(
        "pods", lambda **kw: api.core.list_namespaced_pod(NAMESPACE, label_selector="app=probe", **kw),
        pod_view, lambda view: changed.append(view.name), clock=time.time, watch_seconds=1, backoff=0.05,
    )
    await cluster.emulator.create_object(PODS, pod("kept"))
    await cluster.emulator.create_object(PODS, pod("doomed"))
    informer.start()
    try:
        await wait_for(informer.synced.is_set, what="the first list")
        assert set(informer.items) == {"kept", "doomed"} and informer.gone == {}
        cluster.emulator.faults = ApiFaults(rate_500=1.0, verbs=frozenset({"watch"}))
        await wait_for(lambda: cluster.emulator.request_counts()["byVerb"].get("list", 0) >= 3,
                       what="the informer to fall back to listing")
        assert informer.restarts >= 2, "each broken watch counts (torchproof_watch_restarts_total)"
        before = time.time()
        await cluster.emulator.delete_object(PODS, NAMESPACE, "doomed")
        await wait_for(lambda: "doomed" not in informer.items, what="the relist to drop the deleted pod")
        assert set(informer.items) == {"kept"}
        assert informer.gone["doomed"] >= before
        assert changed.count("doomed") >= 2, "added, then dropped: both are changes"
        cluster.emulator.faults = None
        await cluster.emulator.create_object(PODS, pod("late"))
        await wait_for(lambda: "late" in informer.items, what="the watch to resume")
    finally:
        informer.stop()
        api.close()
