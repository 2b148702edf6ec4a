"""The simulated kubelet against the real embedded API server: scheduling, pod lives, faults, counters."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from torchproof.result import parse_result
from torchproof_sim import EmbeddedCluster
from torchproof_sim.fleet import parse_fleet
from torchproof_sim.hardware import NO_KERNEL
from torchproof_sim.kubelet import SimKubelet, schedule

from tests.support.pods import IMAGE, NS, pinned, wait_pod
from tests.support.polling import eventually

PLAN = {
    "schema": "torchproof.dev/probe-plan/v1", "profile": "pytorch-20.06", "device": "cuda",
    "checks": {"environment": {}, "gpu": {}, "cuda": {}, "amp": {"steps": 8, "native": True, "apex": True},
               "tensorCores": {"size": 4096, "iterations": 20}, "channelsLast": {}, "conv3d": {"iterations": 5},
               "multiGpu": {}},
}
FLEET = {
    "nodes": [
        {"name": "t4", "gpu": {"product": "Tesla T4", "count": 1, "driver": "418.87.01"}},
        {"name": "v100x2", "gpu": {"product": "Tesla V100-SXM2-16GB", "count": 2, "driver": "450.51.06"},
         "probeSeconds": 0.2},
        {"name": "slow", "gpu": {"product": "Tesla T4", "count": 1, "driver": "450.51.06"}, "probeSeconds": 0.3},
        {"name": "k80", "gpu": {"product": "Tesla K80", "driver": "418.87.01"}},
        {"name": "rtx", "gpu": {"product": "GeForce RTX 2080 Ti", "driver": "440.100"}},
        {"name": "big", "gpu": {"product": "NVIDIA A100-SXM4-80GB", "count": 8, "driver": "450.80.02"}},
        {"name": "cordoned", "gpu": {"product": "Tesla T4", "driver": "450.51.06"}, "unschedulable": True},
        {"name": "down", "gpu": {"product": "Tesla T4", "driver": "450.51.06"}, "ready": False},
        {"name": "tainted", "gpu": {"product": "Tesla T4", "driver": "450.51.06"},
         "taints": ["dedicated=ml:NoSchedule"]},
        *({"name": fault.lower(), "gpu": {"product": "Tesla T4", "driver": "450.51.06"}, "faults": [fault]}
          for fault in ("imagePull", "pending", "oomKilled", "timeout", "crash", "garbageResult", "ampNaN",
                        "slowTensorCores", "crashAfterResult")),
    ],
}


def make_pod(name: str, node: str, *, gpus: int = 1, image: str = IMAGE, profile: str = "pytorch-20.06",
             plan: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "labels": {"torchproof.dev/profile": profile}},
        "spec": {
            "restartPolicy": "Never", "affinity": pinned(node),
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{
                "name": "probe", "image": image,
                "env": [{"name": "TORCHPROOF_PLAN", "value": json.dumps(plan or PLAN)}],
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
            }],
            **spec,
        },
    }


class FastClock:
    """Records requested sleeps and yields instead of waiting them out."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def now(self) -> datetime.datetime:
        return datetime.datetime(2020, 6, 30, tzinfo=datetime.UTC)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def cluster() -> AsyncIterator[EmbeddedCluster]:
    async with EmbeddedCluster(namespace=NS) as running:
        yield running


@pytest.fixture
async def kubelet(cluster: EmbeddedCluster) -> AsyncIterator[SimKubelet]:
    async with SimKubelet(cluster.emulator, parse_fleet(FLEET), probe_seconds=0.02) as running:
        yield running
    assert running.errors == []


def finished(pod: dict[str, Any]) -> bool:
    return pod["status"].get("phase") in ("Succeeded", "Failed")


def unschedulable(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "PodScheduled" and c["status"] == "False" for c in pod["status"].get("conditions", []))


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    return state


def result_of(pod: dict[str, Any]) -> dict[str, Any]:
    message = terminated(pod)["message"]
    assert len(message.encode()) <= 4096
    parse_result(message)  # the operator's own contract parser accepts it
    doc: dict[str, Any] = json.loads(message)
    return doc


async def run_pod(cluster: EmbeddedCluster, node: str, **kwargs: Any) -> dict[str, Any]:
    name = f"p-{node}"
    await cluster.emulator.create_object("v1/pods", make_pod(name, node, **kwargs))
    return await wait_pod(cluster, name, finished)


async def test_pinned_pod_completes_with_a_contract_result(cluster: EmbeddedCluster, kubelet: SimKubelet) -> None:
    pod = await run_pod(cluster, "t4")
    assert pod["spec"]["nodeName"] == "t4"
    assert pod["status"]["phase"] == "Succeeded"
    assert terminated(pod)["exitCode"] == 0 and terminated(pod)["reason"] == "Completed"
    result = result_of(pod)
    assert result["schema"] == "torchproof.dev/probe-result/v1"
    assert set(result["checks"]) == set(PLAN["checks"])
    assert result["gpu"] == {**result["gpu"], "source": "nvml", "driver": "418.87.01", "cudaDriver": "10.1",
                             "count": 1}
    assert result["gpu"]["devices"][0] | {"uuid": ""} == {
        "index": 0, "name": "Tesla T4", "brand": "Tesla", "uuid": "", "cc": "7.5", "memoryMiB": 15109,
        "ecc": True, "eccErrors": 0, "mig": False}
    assert result["env"]["vars"] == {"NVIDIA_PYTORCH_VERSION": "20.06", "CUDA_VERSION": "11.0.167"}
    assert result["checks"]["cuda"]["status"] == "ok"  # T4 on 418: forward compatibility
    assert result["checks"]["multiGpu"]["status"] == "skipped"
    assert 6 <= result["checks"]["tensorCores"]["fp16Speedup"] <= 8


async def test_only_the_planned_checks_are_reported(cluster: EmbeddedCluster, kubelet: SimKubelet) -> None:
    pod = await run_pod(cluster, "t4", plan={"device": "cuda", "checks": {"cuda": {}, "amp": {"native": True}}})
    result = result_of(pod)
    assert set(result["checks"]) == {"cuda", "amp"}
    assert set(result["checks"]["amp"]) == {"status", "seconds", "native"}


async def test_consumer_board_on_old_driver_cannot_start_cuda(cluster: EmbeddedCluster, kubelet: SimKubelet) -> None:
    checks = result_of(await run_pod(cluster, "rtx"))["checks"]
    assert checks["cuda"] == {"status": "error", "seconds": 0.4, "available": False, "kernelOk": False,
                              "error": "RuntimeError: CUDA driver version is insufficient for CUDA runtime version"}
    for name in ("amp", "tensorCores", "channelsLast", "conv3d", "multiGpu"):
        assert checks[name] == {"status": "skipped", "seconds": 0.0, "reason": "cuda unavailable"}


async def test_kepler_has_no_kernels_in_20_06(cluster: EmbeddedCluster, kubelet: SimKubelet) -> None:
    checks = result_of(await run_pod(cluster, "k80"))["checks"]
    assert checks["cuda"]["available"] is True
    assert checks["cuda"]["error"] == NO_KERNEL
    assert checks["amp"]["status"] == "error"


async def test_eight_gpu_result_fits_the_termination_message(cluster: EmbeddedCluster, kubelet: SimKubelet) -> None:
    result = result_of(await run_pod(cluster, "big", gpus=8))
    assert result["gpu"]["count"] == 8 and len(result["gpu"]["devices"]) == 8
    assert result["checks"]["multiGpu"]["devices"] == 8
    assert result["checks"]["tensorCores"]["fp16Speedup"] > 10


@pytest.mark.parametrize(("fault", "check"), [
    ("oomKilled", lambda p: terminated(p) == {**terminated(p), "exitCode": 137, "reason": "OOMKilled"}
     and "message" not in terminated(p) and p["status"]["phase"] == "Failed"),
    ("crash", lambda p: terminated(p)["exitCode"] == 1 and terminated(p)["reason"] == "Error"
     and "message" not in terminated(p) and p["status"]["phase"] == "Failed"),
    ("timeout", lambda p: p["status"]["phase"] == "Failed" and p["status"]["reason"] == "DeadlineExceeded"),
    ("garbageResult", lambda p: p["status"]["phase"] == "Succeeded" and terminated(p)["exitCode"] == 0
     and not _is_json(terminated(p)["message"])),
    ("ampNaN", lambda p: result_of(p)["checks"]["amp"]["native"] | {"firstLoss": 0} == {
        "api": "torch.cuda.amp", "dtype": "float16", "steps": 8, "firstLoss": 0, "lastLoss": None,
        "finite": False, "decreased": False, "maxRelError": None, "skippedSteps": 0}),
    ("slowTensorCores", lambda p: result_of(p)["checks"]["tensorCores"]["fp16Speedup"] == pytest.approx(1.1, 0.05)),
    ("crashAfterResult", lambda p: p["status"]["phase"] == "Failed" and terminated(p)["exitCode"] == 139
     and result_of(p)["checks"]["cuda"]["status"] == "ok"),
])
async def test_fault_ends_the_pod_as_specified(cluster: EmbeddedCluster, kubelet: SimKubelet, fault: str,
                                               check: Callable[[dict[str, Any]], bool]) -> None:
    assert check(await run_pod(cluster, fault.lower()))


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def waiting_reason(pod: dict[str, Any]) -> str | None:
    statuses = pod["status"].get("containerStatuses") or [{}]
    reason: str | None = statuses[0].get("state", {}).get("waiting", {}).get("reason")
    return reason


@pytest.mark.parametrize("node, image", [("imagepull", IMAGE), ("t4", "nvcr.io/nvidia/pytorch:99.01-py3")])
async def test_pull_failure_backs_off_and_never_runs(cluster: EmbeddedCluster, kubelet: SimKubelet, node: str,
                                                     image: str) -> None:
    await cluster.emulator.create_object("v1/pods", make_pod("pull", node, image=image))
    await wait_pod(cluster, "pull", lambda p: waiting_reason(p) == "ErrImagePull")
    pod = await wait_pod(cluster, "pull", lambda p: waiting_reason(p) == "ImagePullBackOff")
    assert pod["status"]["phase"] == "Pending"
    assert kubelet.stats.started == 0


@pytest.mark.parametrize("node, reason", [
    ("pending", "1 Insufficient memory"),
    ("cordoned", "1 node(s) were unschedulable"),
    ("down", "1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }"),
    ("tainted", "1 node(s) had untolerated taint {dedicated: ml}"),
    ("t4", "1 Insufficient nvidia.com/gpu"),
    ("nowhere", "node(s) didn't match Pod's node affinity/selector"),
])
async def test_unschedulable_pods_stay_pending_with_the_scheduler_message(
        cluster: EmbeddedCluster, kubelet: SimKubelet, node: str, reason: str) -> None:
    await cluster.emulator.create_object("v1/pods", make_pod("wait", node, gpus=2 if node == "t4" else 1))
    pod = await wait_pod(cluster, "wait", unschedulable)
    condition = pod["status"]["conditions"][0]
    assert condition["reason"] == "Unschedulable"
    assert condition["message"].startswith(f"0/{len(kubelet.fleet.nodes)} nodes are available: ")
    assert reason in condition["message"]
    assert pod["status"]["phase"] == "Pending" and "nodeName" not in pod["spec"]


async def test_pod_waiting_for_a_gpu_runs_when_the_holder_finishes(cluster: EmbeddedCluster,
                                                                    kubelet: SimKubelet) -> None:
    await cluster.emulator.create_object("v1/pods", make_pod("first", "slow"))
    await wait_pod(cluster, "first", lambda p: p["status"].get("phase") == "Running")
    await cluster.emulator.create_object("v1/pods", make_pod("second", "slow", profile="other"))
    await wait_pod(cluster, "second", unschedulable)
    await wait_pod(cluster, "first", finished)
    second = await wait_pod(cluster, "second", finished)
    assert second["status"]["phase"] == "Succeeded"
    assert kubelet.stats.max_running == {("pytorch-20.06", "slow"): 1, ("other", "slow"): 1}


async def test_uncordoning_a_node_schedules_its_waiting_pod(cluster: EmbeddedCluster, kubelet: SimKubelet) -> None:
    await cluster.emulator.create_object("v1/pods", make_pod("w", "cordoned"))
    await wait_pod(cluster, "w", unschedulable)
    uncordon = {"spec": {"unschedulable": False, "taints": None}}
    await cluster.emulator.patch_object("v1/nodes", None, "cordoned", uncordon)
    assert (await wait_pod(cluster, "w", finished))["status"]["phase"] == "Succeeded"


async def test_concurrency_counters_see_two_pods_for_one_node_and_profile(
        cluster: EmbeddedCluster, kubelet: SimKubelet) -> None:
    for name in ("a", "b"):
        await cluster.emulator.create_object("v1/pods", make_pod(name, "v100x2"))
    for name in ("a", "b"):
        await wait_pod(cluster, name, finished)
    key = ("pytorch-20.06", "v100x2")
    assert kubelet.stats.max_running[key] == 2 and kubelet.stats.max_live[key] == 2
    assert kubelet.stats.running[key] == 0 and kubelet.stats.live[key] == 0
    assert (kubelet.stats.started, kubelet.stats.completed) == (2, 2)


async def test_pod_deleted_mid_run_stops_and_frees_its_gpu(cluster: EmbeddedCluster, kubelet: SimKubelet) -> None:
    await cluster.emulator.create_object("v1/pods", make_pod("doomed", "slow"))
    await wait_pod(cluster, "doomed", lambda p: p["status"].get("phase") == "Running")
    await cluster.emulator.delete_object("v1/pods", NS, "doomed")
    await eventually(lambda: kubelet.stats.running[("pytorch-20.06", "slow")] == 0, "the kubelet to see the delete")
    await cluster.emulator.create_object("v1/pods", make_pod("next", "slow"))
    await wait_pod(cluster, "next", lambda p: p["status"].get("phase") == "Running")
    assert kubelet.stats.completed == 0


async def test_bound_pod_over_gpu_capacity_is_rejected_by_the_kubelet(cluster: EmbeddedCluster,
                                                                       kubelet: SimKubelet) -> None:
    pod = make_pod("direct", "t4", gpus=3, nodeName="t4")
    await cluster.emulator.create_object("v1/pods", pod)
    done = await wait_pod(cluster, "direct", finished)
    assert done["status"]["reason"] == "OutOfnvidia.com/gpu"


async def test_set_driver_changes_labels_boot_id_and_later_probes(cluster: EmbeddedCluster,
                                                                  kubelet: SimKubelet) -> None:
    before = cluster.emulator.get_object("v1/nodes", None, "rtx")
    assert before is not None
    await kubelet.set_driver("rtx", "450.51.06")
    after = cluster.emulator.get_object("v1/nodes", None, "rtx")
    assert after is not None
    assert after["metadata"]["labels"]["nvidia.com/cuda.driver-version.full"] == "450.51.06"
    assert after["metadata"]["labels"]["nvidia.com/cuda.runtime-version.full"] == "11.0"
    assert after["status"]["nodeInfo"]["bootID"] != before["status"]["nodeInfo"]["bootID"]
    result = result_of(await run_pod(cluster, "rtx"))
    assert result["gpu"]["driver"] == "450.51.06" and result["checks"]["cuda"]["status"] == "ok"
    with pytest.raises(ValueError, match="45x"):
        await kubelet.set_driver("rtx", "45x")


async def test_added_node_registers_and_runs_a_waiting_pod(cluster: EmbeddedCluster, kubelet: SimKubelet) -> None:
    await cluster.emulator.create_object("v1/pods", make_pod("early", "new"))
    await wait_pod(cluster, "early", unschedulable)
    new = parse_fleet({"nodes": [{"name": "new", "gpu": {"product": "Tesla P100-PCIE-16GB", "driver": "450.51.06"}}]})
    await kubelet.add_node(new.nodes[0])
    assert cluster.emulator.get_object("v1/nodes", None, "new") is not None
    speedup = result_of(await wait_pod(cluster, "early", finished))["checks"]["tensorCores"]["fp16Speedup"]
    assert 1.5 <= speedup < 2.0  # Pascal: fast fp16, no tensor cores
    with pytest.raises(ValueError, match="already"):
        await kubelet.add_node(new.nodes[0])


async def test_removed_node_takes_its_pods_with_it(cluster: EmbeddedCluster, kubelet: SimKubelet) -> None:
    await cluster.emulator.create_object("v1/pods", make_pod("orphan", "slow"))
    await wait_pod(cluster, "orphan", lambda p: p["status"].get("phase") == "Running")
    await kubelet.remove_node("slow")
    assert cluster.emulator.get_object("v1/nodes", None, "slow") is None
    assert cluster.emulator.get_object("v1/pods", NS, "orphan") is None
    assert "slow" not in kubelet.fleet.names


async def test_active_deadline_shorter_than_the_probe_ends_the_pod(cluster: EmbeddedCluster) -> None:
    clock = FastClock()
    fleet = parse_fleet({"nodes": [{"name": "n", "gpu": {"product": "Tesla T4", "driver": "450.51.06"},
                                    "probeSeconds": 30}]})
    async with SimKubelet(cluster.emulator, fleet, clock=clock) as kubelet:
        await cluster.emulator.create_object("v1/pods", make_pod("late", "n", activeDeadlineSeconds=5))
        pod = await wait_pod(cluster, "late", finished)
    assert pod["status"]["reason"] == "DeadlineExceeded" and pod["status"]["phase"] == "Failed"
    assert clock.sleeps == [5.0] and kubelet.errors == []


async def test_pods_that_existed_before_start_are_played(cluster: EmbeddedCluster) -> None:
    await cluster.emulator.create_object("v1/pods", make_pod("old", "t4"))
    async with SimKubelet(cluster.emulator, parse_fleet(FLEET), probe_seconds=0.01):
        assert (await wait_pod(cluster, "old", finished))["status"]["phase"] == "Succeeded"


def test_schedule_message_counts_the_other_nodes() -> None:
    node = {"status": {"allocatable": {"nvidia.com/gpu": "1"}, "conditions": [{"type": "Ready", "status": "True"}]}}
    pod = make_pod("x", "n", gpus=1)
    assert schedule(pod, node, gpus_used=0, cluster_size=3) is None
    assert schedule(pod, node, gpus_used=1, cluster_size=1) == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    assert schedule(pod, node, gpus_used=1, cluster_size=3) == (
        "0/3 nodes are available: 1 Insufficient nvidia.com/gpu, "
        "2 node(s) didn't match Pod's node affinity/selector.")
