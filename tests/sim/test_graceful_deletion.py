"""Graceful deletion of pods, as kube-apiserver and the kubelet do it: a DELETE of a pod on a node sets
`deletionTimestamp` (now + the grace) and `deletionGracePeriodSeconds` and the pod is Terminating; its
kubelet stops the container and deletes it with grace 0. A pod on no node, or finished, goes at once."""

from __future__ import annotations

import asyncio
import datetime
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from torchproof_sim import BackgroundCluster, EmbeddedCluster, run_in_thread
from torchproof_sim.fleet import parse_fleet
from torchproof_sim.kubelet import SimKubelet
from torchproof_sim.podadmission import grace_period
from torchproof_sim.store import ApiError

from tests.support.pods import IMAGE, NS, current, pinned, wait_pod
from tests.support.polling import eventually

FLEET = {"nodes": [
    {"name": "t4", "gpu": {"product": "Tesla T4", "driver": "450.51.06"}, "probeSeconds": 30},
    {"name": "lost", "gpu": {"product": "Tesla T4", "driver": "450.51.06"}, "faults": ["kubeletLost"]},
]}


def pod(name: str, node: str | None = "t4", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"restartPolicy": "Never", "containers": [{"name": "probe", "image": IMAGE}], **spec}
    if node is not None:
        body["affinity"] = pinned(node)
    return {"metadata": {"name": name, "namespace": NS}, "spec": body}


@pytest.fixture
async def cluster() -> AsyncIterator[EmbeddedCluster]:
    async with EmbeddedCluster(namespace=NS) as running:
        yield running


@pytest.fixture
async def kubelet(cluster: EmbeddedCluster) -> AsyncIterator[SimKubelet]:
    async with SimKubelet(cluster.emulator, parse_fleet(FLEET), probe_seconds=0.05) as running:
        yield running
    assert running.errors == []


async def running(cluster: EmbeddedCluster, name: str) -> dict[str, Any]:
    return await wait_pod(cluster, name, lambda p: p["status"].get("phase") == "Running")


def seconds_ahead(stamp: str) -> float:
    then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return (then - datetime.datetime.now(datetime.UTC)).total_seconds()


async def test_a_running_pod_goes_terminating_then_its_kubelet_stops_and_removes_it(
        cluster: EmbeddedCluster, kubelet: SimKubelet) -> None:
    await cluster.emulator.create_object("v1/pods", pod("p"))
    await running(cluster, "p")
    events = cluster.emulator.subscribe("v1/pods")
    await cluster.emulator.delete_object("v1/pods", NS, "p")
    terminating = current(cluster, "p")
    assert terminating is not None, "still there: Terminating"
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30, "terminationGracePeriodSeconds' default"
    assert 28 <= seconds_ahead(terminating["metadata"]["deletionTimestamp"]) <= 31
    seen = []
    async with asyncio.timeout(5):
        async for event in events:
            seen.append(event)
            if event["type"] == "DELETED":
                break
    await events.aclose()  # type: ignore[attr-defined]
    last_status = seen[-2]["object"]["status"]
    assert seen[0]["type"] == "MODIFIED" and seen[-1]["type"] == "DELETED"
    assert last_status["phase"] == "Failed"
    assert last_status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143, "stopped by SIGTERM"
    await eventually(lambda: kubelet.stats.running[("", "t4")] == 0 and kubelet.stats.live[("", "t4")] == 0,
                     "the kubelet to count the pod gone")


@pytest.mark.parametrize(("case", "spec", "options", "grace"), [
    ("the pod's own terminationGracePeriodSeconds", {"terminationGracePeriodSeconds": 7}, None, 7),
    ("gracePeriodSeconds in DeleteOptions", {}, 5, 5),
    ("DeleteOptions over the pod's", {"terminationGracePeriodSeconds": 7}, 3, 3),
    ("a negative grace is 1", {}, -4, 1),
])
async def test_the_grace_period_comes_from_the_delete_or_the_pod(
        cluster: EmbeddedCluster, case: str, spec: dict[str, Any], options: int | None, grace: int) -> None:
    await cluster.emulator.create_object("v1/pods", {**pod("p", None), "spec": {**pod("p", None)["spec"],
                                                                               "nodeName": "t4", **spec}})
    await cluster.emulator.delete_object("v1/pods", NS, "p", grace_period_seconds=options)
    terminating = current(cluster, "p")
    assert terminating is not None and terminating["metadata"]["deletionGracePeriodSeconds"] == grace


@pytest.mark.parametrize(("case", "node_name", "phase", "options"), [
    ("not scheduled", None, "Pending", None),
    ("succeeded", "t4", "Succeeded", None),
    ("failed", "t4", "Failed", None),
    ("grace 0 asked for", "t4", "Running", 0),
])
async def test_a_pod_on_no_node_finished_or_deleted_with_grace_0_goes_at_once(
        cluster: EmbeddedCluster, case: str, node_name: str | None, phase: str, options: int | None) -> None:
    body = pod("p", None)
    if node_name:
        body["spec"]["nodeName"] = node_name
    await cluster.emulator.create_object("v1/pods", body)
    await cluster.emulator.patch_object("v1/pods", NS, "p", {"status": {"phase": phase}}, subresource="status")
    await cluster.emulator.delete_object("v1/pods", NS, "p", grace_period_seconds=options)
    assert current(cluster, "p") is None


async def test_a_later_delete_may_only_shorten_the_grace(cluster: EmbeddedCluster) -> None:
    body = pod("p", None)
    body["spec"]["nodeName"] = "nowhere"  # no kubelet: it stays Terminating
    await cluster.emulator.create_object("v1/pods", body)
    await cluster.emulator.delete_object("v1/pods", NS, "p", grace_period_seconds=20)
    first = current(cluster, "p")
    await cluster.emulator.delete_object("v1/pods", NS, "p", grace_period_seconds=60)
    assert current(cluster, "p") == first, "a longer grace changes nothing"
    await cluster.emulator.delete_object("v1/pods", NS, "p", grace_period_seconds=10)
    shortened = current(cluster, "p")
    assert shortened is not None and shortened["metadata"]["deletionGracePeriodSeconds"] == 10
    await cluster.emulator.delete_object("v1/pods", NS, "p", grace_period_seconds=0)
    assert current(cluster, "p") is None


async def test_a_pod_whose_kubelet_is_gone_stays_terminating_and_its_name_stays_taken(
        cluster: EmbeddedCluster, kubelet: SimKubelet) -> None:
    await cluster.emulator.create_object("v1/pods", pod("p", "lost"))
    await running(cluster, "p")
    await cluster.emulator.delete_object("v1/pods", NS, "p")
    await asyncio.sleep(0.3)  # several kubelet stop times: nothing stops it
    stuck = current(cluster, "p")
    assert stuck is not None and stuck["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiError) as refused:
        await cluster.emulator.create_object("v1/pods", pod("p", "lost"))
    assert (refused.value.code, refused.value.reason) == (409, "AlreadyExists")


async def test_a_terminating_pod_with_a_finalizer_waits_for_it_after_the_kubelet(
        cluster: EmbeddedCluster, kubelet: SimKubelet) -> None:
    body = pod("p")
    body["metadata"]["finalizers"] = ["example.dev/hold"]
    await cluster.emulator.create_object("v1/pods", body)
    await running(cluster, "p")
    await cluster.emulator.delete_object("v1/pods", NS, "p")
    held = await eventually(lambda: (p := current(cluster, "p")) and p["metadata"]["deletionGracePeriodSeconds"] == 0
                            and p, "the kubelet's grace-0 delete")
    assert held["status"]["phase"] == "Failed"
    await cluster.emulator.patch_object("v1/pods", NS, "p", {"metadata": {"finalizers": None}})
    assert current(cluster, "p") is None


async def test_a_terminating_pods_status_writes_do_not_remove_it(cluster: EmbeddedCluster) -> None:
    body = pod("p", None)
    body["spec"]["nodeName"] = "nowhere"
    await cluster.emulator.create_object("v1/pods", body)
    await cluster.emulator.delete_object("v1/pods", NS, "p")
    await cluster.emulator.patch_object("v1/pods", NS, "p", {"status": {"phase": "Running"}}, subresource="status")
    assert current(cluster, "p") is not None


@pytest.fixture
def background() -> Iterator[BackgroundCluster]:
    with run_in_thread(namespace=NS) as running_cluster:
        yield running_cluster


@pytest.mark.parametrize(("how", "query", "body"), [
    ("a DeleteOptions body", "", {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 4}),
    ("a query parameter", "?gracePeriodSeconds=4", None),
])
def test_http_delete_options_set_the_grace(background: BackgroundCluster, how: str, query: str,
                                           body: dict[str, Any] | None) -> None:
    manifest = pod("p", None)
    manifest["spec"]["nodeName"] = "nowhere"
    background.call(background.emulator.create_object("v1/pods", manifest))
    request = urllib.request.Request(
        f"{background.url}/api/v1/namespaces/{NS}/pods/p{query}", method="DELETE",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {background.admin_token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    assert response.status == 200
    assert answer["metadata"]["deletionGracePeriodSeconds"] == 4 and answer["metadata"]["deletionTimestamp"]


@pytest.mark.parametrize(("spec", "status", "requested", "grace"), [
    ({"nodeName": "n", "terminationGracePeriodSeconds": 30}, {"phase": "Running"}, None, 30),
    ({"nodeName": "n", "terminationGracePeriodSeconds": 30}, {"phase": "Running"}, "12", 12),
    ({"nodeName": "n"}, {"phase": "Running"}, None, 0),
    ({}, {"phase": "Pending"}, 30, 0),
    ({"nodeName": "n"}, {"phase": "Succeeded"}, 30, 0),
    ({"nodeName": "n"}, {"phase": "Running"}, "soon", 0),
    ({"nodeName": "n"}, {"phase": "Running"}, -1, 1),
])
def test_grace_period_table(spec: dict[str, Any], status: dict[str, Any], requested: Any, grace: int) -> None:
    assert grace_period({"spec": spec, "status": status}, requested) == grace
