"""The informer keeps a faithful cache through broken watches: a list after a failed watch replaces it; an outage
costs a bounded number of lists (exponential backoff), not one per retry interval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from torchproof.informer import Backoff, Informer, Source
from torchproof.kube import KubeApi, KubeError, load_configuration
from torchproof.views import PodView, pod_view
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.emulator import ApiFaults

from tests.support.polling import eventually

NAMESPACE = "torchproof"
PODS = "v1/pods"
OUTAGE_SECONDS = 3.0
SOURCE = Source("pods", f"/api/v1/namespaces/{NAMESPACE}/pods", {"labelSelector": "app=probe"})


def pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "probe"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}


@pytest.fixture
async def cluster() -> AsyncIterator[EmbeddedCluster]:
    async with EmbeddedCluster(namespace=NAMESPACE) as c:
        yield c


@pytest.fixture
async def api(cluster: EmbeddedCluster) -> AsyncIterator[KubeApi]:
    async with KubeApi(load_configuration(server=cluster.url, token=cluster.admin_token)) as api:
        yield api


async def test_a_pod_deleted_while_the_watch_is_down_is_dropped_and_remembered(cluster: EmbeddedCluster,
                                                                               api: KubeApi) -> None:
    changed: list[str] = []
    informer: Informer[PodView] = Informer(
        api, SOURCE, pod_view, lambda view: changed.append(view.name), clock=time.time, watch_seconds=1,
        backoff=Backoff(first=0.05, cap=0.2),
    )
    await cluster.emulator.create_object(PODS, pod("kept"))
    await cluster.emulator.create_object(PODS, pod("doomed"))
    informer.start()
    try:
        await eventually(informer.synced.is_set, what="the first list")
        assert set(informer.items) == {"kept", "doomed"} and informer.gone == {}
        cluster.emulator.faults = ApiFaults(rate_500=1.0, verbs=frozenset({"watch"}))
        await eventually(lambda: cluster.emulator.request_counts()["byVerb"].get("list", 0) >= 3,
                         what="the informer to fall back to listing")
        before = time.time()
        await cluster.emulator.delete_object(PODS, NAMESPACE, "doomed")
        await eventually(lambda: "doomed" not in informer.items, what="the relist to drop the deleted pod")
        assert set(informer.items) == {"kept"}
        assert informer.gone["doomed"] >= before
        assert changed.count("doomed") >= 2, "added, then dropped: both are changes"
        cluster.emulator.faults = None
        await cluster.emulator.create_object(PODS, pod("late"))
        await eventually(lambda: "late" in informer.items, what="the watch to resume")
    finally:
        await informer.stop()


async def test_an_outage_costs_a_bounded_number_of_lists(cluster: EmbeddedCluster, api: KubeApi) -> None:
    """Lists and watches all fail for 3 s: with delays from 0.05 s doubling to a 1 s cap, about seven lists;
    a constant 0.05 s retry would make sixty."""
    informer: Informer[PodView] = Informer(api, SOURCE, pod_view, lambda _: None, clock=time.time,
                                           watch_seconds=1, backoff=Backoff(first=0.05, cap=1.0))
    await cluster.emulator.create_object(PODS, pod("kept"))
    informer.start()
    try:
        await eventually(informer.synced.is_set, what="the first list")
        cluster.emulator.faults = ApiFaults(rate_500=1.0, verbs=frozenset({"list", "watch"}))
        first = informer.relists
        await eventually(lambda: informer.relists >= first + 2, what="the informer to list again")
        during = informer.relists
        await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself, not a wait for a condition
        assert informer.relists - during <= 8, informer.relists - during
        cluster.emulator.faults = None
        await cluster.emulator.create_object(PODS, pod("after"))
        await eventually(lambda: "after" in informer.items, timeout=10, what="the informer to recover")
    finally:
        await informer.stop()


class ExpiringApi:
    """Lists succeed; the first watch answers 410 Gone (its version too old), later ones stay open."""

    def __init__(self) -> None:
        self.lists = 0

    async def list_raw(self, what: str, path: str, params: Any) -> dict[str, Any]:
        self.lists += 1
        return {"metadata": {"resourceVersion": str(self.lists)}, "items": [pod("kept")]}

    async def watch(self, what: str, path: str, params: Any, version: str, seconds: int) -> AsyncIterator[Any]:
        if self.lists == 1:
            raise KubeError(f"watch {what}", 410, "too old resource version")
        await asyncio.Event().wait()
        yield {}


async def test_an_expired_watch_lists_again_at_once_without_backing_off() -> None:
    api = ExpiringApi()
    informer: Informer[PodView] = Informer(api, SOURCE, pod_view, lambda _: None,  # type: ignore[arg-type]
                                           clock=time.time, backoff=Backoff(first=60.0))
    informer.start()
    try:
        await eventually(lambda: api.lists >= 2, timeout=5, what="a second list at once, not after 30-60 s")
    finally:
        await informer.stop()


def test_backoff_doubles_to_its_cap_with_jitter_and_waits_at_least_retry_after() -> None:
    backoff = Backoff(first=1.0, cap=8.0)
    assert [backoff.delay(n, rand=lambda: 1.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff.delay(3, rand=lambda: 0.0) == 2.0  # jitter: half the nominal delay at least
    assert backoff.delay(1, retry_after=5.0, rand=lambda: 1.0) == 5.0


def test_changes_name_what_changed_since_a_version_and_a_relist_keeps_unchanged_views() -> None:
    informer: Informer[PodView] = Informer(None, SOURCE, pod_view, lambda _: None,  # type: ignore[arg-type]
                                           clock=time.time)
    informer._replace({name: pod_view(pod(name)) for name in ("a", "b", "c")})
    start, names = informer.changes(-1)
    assert names is None, "older than anything remembered: the consumer compares every item"
    assert informer.changes(0) == (start, {"a", "b", "c"})
    kept = informer.items["b"]
    informer._put(("a", pod_view(pod("a"))))
    informer._drop("c")
    assert informer.changes(start) == (start + 2, {"a", "c"})
    informer._replace({name: pod_view(pod(name)) for name in ("a", "b", "d")})
    assert informer.items["b"] is kept, "an unchanged object keeps its view object"
    assert informer.changes(start + 2) == (start + 3, {"d"})
    assert informer.changes(informer.version) == (informer.version, set())
