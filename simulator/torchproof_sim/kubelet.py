"""The simulated kubelet and scheduler: plays each validation pod's life on the simulated fleet.

The deciding parts (where a pod goes, whether it fits, how it ends) are pure functions over plain
dicts; `SimKubelet` only watches the emulator, sleeps and writes status patches.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections import Counter
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from torchproof.checks import default_payloads
from torchproof.contract import PLAN_ENV, PROBE_VERSION, RESULT_SCHEMA
from torchproof.labels import PROFILE_LABEL

from torchproof_sim.emulator import ClusterEmulator
from torchproof_sim.fleet import (
    GPU_RESOURCE,
    NOT_READY_TAINT,
    UNSCHEDULABLE_TAINT,
    Fleet,
    SimNode,
    build_node,
    host_address,
)
from torchproof_sim.hardware import CHECK_FAULTS, ProbeSetting, encode_result, parse_driver, probe_result
from torchproof_sim.images import lookup_image
from torchproof_sim.store import MERGE_PATCH, ApiError, Event, Obj

log = logging.getLogger(__name__)

DEFAULT_PLAN: Mapping[str, Any] = {
    "device": "cuda",
    "checks": default_payloads(),
}
GARBAGE = f'{{"schema": "{RESULT_SCHEMA}", "probe": "{PROBE_VERSION}", "device": "cu'
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
PodKey = tuple[str, str]  # (profile label, node) as the concurrency counters count them


class Clock(Protocol):
    def now(self) -> datetime.datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall time and asyncio sleeps."""

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# -- pure decisions ----------------------------------------------------------------------------------


def pod_target(pod: Mapping[str, Any]) -> str | None:
    """The node a pod is pinned to: spec.nodeName, a hostname nodeSelector, or required node affinity."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    selector = spec.get("nodeSelector") or {}
    if selector.get("kubernetes.io/hostname"):
        return str(selector["kubernetes.io/hostname"])
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    for term in required.get("nodeSelectorTerms") or []:
        for kind, key in (("matchFields", "metadata.name"), ("matchExpressions", "kubernetes.io/hostname")):
            for expr in term.get(kind) or []:
                values = expr.get("values") or []
                if expr.get("key") == key and expr.get("operator") == "In" and values:
                    return str(values[0])
    return None


def gpu_request(pod: Mapping[str, Any]) -> int:
    """GPUs the pod asks for; an extended resource's limit is its request."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("limits") or {}).get(GPU_RESOURCE, (resources.get("requests") or {}).get(
            GPU_RESOURCE, 0))
        total += int(value)
    return total


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        exists = tol.get("operator", "Equal") == "Exists"
        if not tol.get("key"):
            if exists:
                return True
            continue
        if tol["key"] == taint.get("key") and (exists or tol.get("value", "") == taint.get("value", "")):
            return True
    return False


def node_ready(node: Mapping[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _allocatable_gpus(node: Mapping[str, Any]) -> int:
    return int(((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, 0))


def _node_problem(pod: Mapping[str, Any], node: Mapping[str, Any], gpus_used: int) -> str | None:
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    spec = node.get("spec") or {}
    if spec.get("unschedulable") and not tolerates(
            tolerations, {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}):
        return "node(s) were unschedulable"
    taints = list(spec.get("taints") or [])
    if not node_ready(node):
        taints.append({"key": NOT_READY_TAINT, "effect": "NoSchedule"})
    for taint in taints:
        if taint.get("key") == UNSCHEDULABLE_TAINT or taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not tolerates(tolerations, taint):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
    if gpu_request(pod) > _allocatable_gpus(node) - gpus_used:
        return f"Insufficient {GPU_RESOURCE}"
    return None


def schedule(pod: Mapping[str, Any], node: Mapping[str, Any] | None, *, gpus_used: int, cluster_size: int,
             fault_pending: bool = False) -> str | None:
    """None when the pod fits its node; otherwise the scheduler's FailedScheduling message."""
    problem = "Insufficient memory" if fault_pending else None
    if node is not None and problem is None:
        problem = _node_problem(pod, node, gpus_used)
        if problem is None:
            return None
    counts: Counter[str] = Counter()
    others = cluster_size - (1 if node is not None else 0)
    if problem is not None:
        counts[problem] += 1
    if others > 0:
        counts["node(s) didn't match Pod's node affinity/selector"] += others
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
    return f"0/{max(cluster_size, 1)} nodes are available: {reasons}."


@dataclass(frozen=True)
class Ending:
    """How the container and the pod end."""

    phase: str
    exit_code: int
    reason: str
    message: str | None = None
    pod_reason: str | None = None


def _plan(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    for env in containers[0].get("env") or []:
        if env.get("name") == PLAN_ENV:
            try:
                plan = json.loads(env.get("value") or "")
            except ValueError:
                return None
            return plan if isinstance(plan, dict) else None
    return DEFAULT_PLAN


def ending(node: SimNode, pod: Mapping[str, Any]) -> Ending:
    """The end of a pod that ran on ``node``: a fault, or the probe's result for the image and plan."""
    faults = node.faults
    if "oomKilled" in faults:
        return Ending("Failed", 137, "OOMKilled")
    if "timeout" in faults:
        return Ending("Failed", 137, "Error", pod_reason="DeadlineExceeded")
    if "crash" in faults:
        return Ending("Failed", 1, "Error")
    if "garbageResult" in faults:
        return Ending("Succeeded", 0, "Completed", GARBAGE)
    image_ref = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("image", "")
    image = lookup_image(image_ref)
    if image is None:
        raise ValueError(f"image {image_ref!r} cannot run: it does not pull")
    plan = _plan(pod)
    if plan is None:
        return Ending("Failed", 2, "Error", f"ValueError: {PLAN_ENV} is not a JSON object")
    requested = gpu_request(pod)
    setting = ProbeSetting(
        image=image,
        board=node.gpu.board if node.gpu else None,
        visible=min(requested or node.gpu_count, node.gpu_count),  # no request: the image says "all"
        driver=node.gpu.driver if node.gpu else None,
        node=node.name,
        amp_nan="ampNaN" in faults,
        slow_tensor_cores="slowTensorCores" in faults,
        faults=CHECK_FAULTS & frozenset(faults),
    )
    message = encode_result(probe_result(setting, plan))
    if "crashAfterResult" in faults:
        return Ending("Failed", 139, "Error", message)  # SIGSEGV at exit, e.g. in a CUDA teardown
    return Ending("Succeeded", 0, "Completed", message)


# -- pod status documents ----------------------------------------------------------------------------


def _stamp(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _conditions(stamp: str, *, scheduled: bool, ready: bool, reason: str | None = None,
                message: str | None = None) -> list[dict[str, Any]]:
    sched: dict[str, Any] = {"type": "PodScheduled", "status": str(scheduled), "lastTransitionTime": stamp}
    if not scheduled:
        sched.update(reason=reason or "Unschedulable", message=message or "")
        return [sched]
    status = str(ready)
    return [
        {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
        {"type": "Ready", "status": status, "lastTransitionTime": stamp},
        {"type": "ContainersReady", "status": status, "lastTransitionTime": stamp},
        sched,
    ]


def _container(pod: Mapping[str, Any], state: dict[str, Any], *, ready: bool = False) -> dict[str, Any]:
    spec = ((pod.get("spec") or {}).get("containers") or [{}])[0]
    image = spec.get("image", "")
    return {"name": spec.get("name", "probe"), "image": image, "imageID": "", "ready": ready,
            "restartCount": 0, "started": "running" in state, "state": state}


# -- the shell ---------------------------------------------------------------------------------------


@dataclass
class _Pod:
    uid: str
    namespace: str
    name: str
    target: str
    key: PodKey
    body: dict[str, Any]
    gpus: int = 0
    bound: str | None = None
    running: bool = False
    finished: bool = False
    task: asyncio.Task[None] | None = None
    last_message: str | None = None
    stopping: bool = False


@dataclass
class KubeletStats:
    """Counters the reliability suite reads; keys are (profile label, node).

    ``running`` counts pods whose container runs; ``live`` counts pods from creation until they end or
    are deleted, so it also sees a duplicate stuck in Pending.
    """

    started: int = 0
    completed: int = 0
    running: Counter[PodKey] = field(default_factory=Counter)
    live: Counter[PodKey] = field(default_factory=Counter)
    max_running: dict[PodKey, int] = field(default_factory=dict)
    max_live: dict[PodKey, int] = field(default_factory=dict)


class SimKubelet:
    """Registers the fleet's Nodes and plays every pod pinned to one of them, until stopped.

    It reads and writes the store in-process without copies (it never mutates what it reads), and
    keeps its pods by node, so one event or status write costs the same whatever the fleet size.
    """

    def __init__(self, emulator: ClusterEmulator, fleet: Fleet, *, probe_seconds: float = 0.05,
                 clock: Clock | None = None) -> None:
        self.emulator = emulator
        self.probe_seconds = probe_seconds
        self.clock: Clock = clock or SystemClock()
        self.stats = KubeletStats()
        self.errors: list[BaseException] = []
        self._nodes: dict[str, SimNode] = {n.name: n for n in fleet.nodes}
        self._pods: dict[str, _Pod] = {}
        self._pods_on: dict[str, dict[str, _Pod]] = {}  # target node → uid → pod
        self._store = emulator.store
        self._node_type = self._store.resolve("v1/nodes")
        self._pod_type = self._store.resolve("v1/pods")
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriptions: list[Any] = []

    @property
    def fleet(self) -> Fleet:
        return Fleet(tuple(self._nodes.values()))

    async def __aenter__(self) -> SimKubelet:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        pods = self.emulator.subscribe("v1/pods", shared=True, only=self._pod_event_matters)
        nodes = self.emulator.subscribe("v1/nodes", shared=True, only=self._node_event_matters)
        self._subscriptions = [pods, nodes]
        for node in self._nodes.values():
            if self.emulator.get_object("v1/nodes", None, node.name) is None:
                await self.emulator.create_object("v1/nodes", build_node(node))
        self._tasks = [asyncio.create_task(self._watch_pods(pods)), asyncio.create_task(self._watch_nodes(nodes))]
        for pod in self.emulator.list_objects("v1/pods"):
            if (pod.get("status") or {}).get("phase", "Pending") == "Pending" and not (
                    pod.get("status") or {}).get("containerStatuses"):
                self._admit(pod)

    async def stop(self) -> None:
        tasks = self._tasks + [p.task for p in self._pods.values() if p.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sub in self._subscriptions:
            await sub.aclose()
        self._tasks, self._subscriptions = [], []

    # -- fleet changes at run time

    async def set_driver(self, name: str, driver: str) -> SimNode:
        """Install another driver (a reboot): GFD labels, bootID and later probes all change."""
        node = self._nodes[name].with_driver(parse_driver(driver))
        self._nodes[name] = node
        built = build_node(node)
        if node.gfd:
            labels = {k: v for k, v in built["metadata"]["labels"].items() if k.startswith("nvidia.com/cuda.")}
            await self.emulator.patch_object("v1/nodes", None, name, {"metadata": {"labels": labels}})
        await self.emulator.patch_object("v1/nodes", None, name, {"status": {"nodeInfo": built["status"]["nodeInfo"]}},
                                         subresource="status")
        return node

    async def add_node(self, node: SimNode) -> None:
        if node.name in self._nodes:
            raise ValueError(f"node {node.name!r} is already in the fleet")
        self._nodes[node.name] = node
        await self.emulator.create_object("v1/nodes", build_node(node))

    async def remove_node(self, name: str) -> None:
        """Delete the Node; its pods are then deleted as the pod garbage collector does for orphans."""
        if self._nodes.pop(name, None) is not None and self.emulator.get_object("v1/nodes", None, name):
            await self.emulator.delete_object("v1/nodes", None, name)
        await self._collect_orphans(name)

    # -- watching

    @staticmethod
    def _pod_event_matters(event: Event) -> bool:
        """Pods come and go; other changes (its own status writes, mostly) need no reaction."""
        return event["type"] != "MODIFIED" or bool(event["object"]["metadata"].get("deletionTimestamp"))

    def _node_event_matters(self, event: Event) -> bool:
        """A node change can only let a waiting pod in; a pod that arrives later is placed on arrival."""
        waiting = self._pods_on.get(event["object"]["metadata"]["name"], {}).values()
        return event["type"] == "DELETED" or any(p.bound is None and not p.finished for p in waiting)

    async def _watch_pods(self, events: Any) -> None:
        async for event in events:
            pod = event["object"]
            uid = pod["metadata"].get("uid", "")
            if event["type"] == "ADDED" and uid not in self._pods:
                self._admit(pod)
            elif event["type"] == "DELETED":
                self._forget(uid)
            elif pod["metadata"].get("deletionTimestamp") and uid in self._pods:
                self._stop(self._pods[uid], pod)

    async def _watch_nodes(self, events: Any) -> None:
        async for event in events:
            name = event["object"]["metadata"]["name"]
            if event["type"] == "DELETED":
                self._nodes.pop(name, None)
                await self._collect_orphans(name)
            else:
                self._retry(name)

    # -- pod life

    def _admit(self, body: dict[str, Any]) -> None:
        target = pod_target(body)
        if target is None:
            return
        meta = body["metadata"]
        pod = _Pod(uid=meta.get("uid", ""), namespace=meta["namespace"], name=meta["name"], target=target,
                   key=((meta.get("labels") or {}).get(PROFILE_LABEL, ""), target), body=body,
                   gpus=gpu_request(body))
        self._pods[pod.uid] = pod
        self._pods_on.setdefault(target, {})[pod.uid] = pod
        self._count(self.stats.live, self.stats.max_live, pod.key, +1)
        self._try_place(pod)

    def _try_place(self, pod: _Pod) -> None:
        """Bind the pod if it fits now (synchronously, so no two pods take the same GPU)."""
        node = self._nodes.get(pod.target)
        node_obj = self._node_object(pod.target) if node else None
        used = sum(p.gpus for p in self._pods_on.get(pod.target, {}).values() if p.bound)
        bypass = bool((pod.body.get("spec") or {}).get("nodeName"))
        if bypass:
            if node is None or node_obj is None or not node_ready(node_obj):
                return  # no kubelet there to pick it up (yet)
            message = None
            if pod.gpus > _allocatable_gpus(node_obj) - used:
                pod.task = asyncio.create_task(self._guard(pod, self._reject(pod, used, node_obj)))
                return
        else:
            message = schedule(pod.body, node_obj, gpus_used=used, cluster_size=len(self._nodes),
                               fault_pending=node is not None and "pending" in node.faults)
        if message is not None:
            if message != pod.last_message:
                pod.last_message = message
                pod.task = asyncio.create_task(self._guard(pod, self._unschedulable(pod, message)))
            return
        pod.bound = pod.target
        pod.task = asyncio.create_task(self._guard(pod, self._run(pod, bind=not bypass)))

    def _node_object(self, name: str) -> Obj | None:
        """The stored Node, shared: read it, never change it."""
        try:
            return self._store.get(self._node_type, None, name)
        except ApiError:
            return None

    def _retry(self, node: str) -> None:
        for pod in list(self._pods_on.get(node, {}).values()):
            if pod.bound is None and not pod.finished:
                self._try_place(pod)

    def _stop(self, pod: _Pod, body: Obj) -> None:
        """A pod deleted gracefully: its kubelet stops the container, then deletes the pod with grace 0.
        A pod on a node whose kubelet is gone stays Terminating, as on a real cluster."""
        if pod.stopping:
            return
        pod.stopping = True
        node = self._nodes.get(pod.target)
        if pod.task is not None:
            pod.task.cancel()
        if node is None or "kubeletLost" in node.faults:
            return
        grace = float(body["metadata"].get("deletionGracePeriodSeconds") or 0)
        pod.task = asyncio.create_task(self._guard(pod, self._shut_down(pod, min(grace, self.probe_seconds))))

    async def _shut_down(self, pod: _Pod, seconds: float) -> None:
        await self.clock.sleep(seconds)  # the container takes its SIGTERM
        if pod.running:
            now = _stamp(self.clock.now())
            terminated = {"exitCode": 143, "reason": "Error", "finishedAt": now,
                          "containerID": f"containerd://{pod.uid.replace('-', '')}"}
            await self._status(pod, {"phase": "Failed", "conditions": _conditions(now, scheduled=True, ready=False),
                                     "containerStatuses": [_container(pod.body, {"terminated": terminated})]})
            self._finish(pod)
        self._store.delete(self._pod_type, pod.namespace, pod.name, {"gracePeriodSeconds": 0})

    def _forget(self, uid: str) -> None:
        pod = self._pods.pop(uid, None)
        if pod is None:
            return
        on_node = self._pods_on[pod.target]
        del on_node[uid]
        if not on_node:
            del self._pods_on[pod.target]
        if pod.task is not None:
            pod.task.cancel()
        self._finish(pod)
        if not pod.finished:
            self._count(self.stats.live, self.stats.max_live, pod.key, -1)
        if pod.bound:
            self._retry(pod.bound)

    def _finish(self, pod: _Pod) -> None:
        if pod.running:
            pod.running = False
            self._count(self.stats.running, self.stats.max_running, pod.key, -1)

    async def _collect_orphans(self, node: str) -> None:
        for pod in [p for p in self._pods_on.get(node, {}).values() if p.bound]:
            self._forget(pod.uid)
            if self.emulator.get_object("v1/pods", pod.namespace, pod.name) is not None:  # PodGC: at once
                await self.emulator.delete_object("v1/pods", pod.namespace, pod.name, grace_period_seconds=0)

    @staticmethod
    def _count(current: Counter[PodKey], peak: dict[PodKey, int], key: PodKey, delta: int) -> None:
        current[key] += delta
        peak[key] = max(peak.get(key, 0), current[key])

    async def _guard(self, pod: _Pod, step: Coroutine[Any, Any, None]) -> None:
        """Run one step of a pod's life; a pod deleted under it simply stops being played."""
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.emulator.get_object("v1/pods", pod.namespace, pod.name) is None:
                return
            log.exception("simulated kubelet failed on pod %s/%s", pod.namespace, pod.name)
            self.errors.append(exc)

    async def _status(self, pod: _Pod, status: dict[str, Any]) -> None:
        self._store.patch(self._pod_type, pod.namespace, pod.name, {"status": status}, MERGE_PATCH, "status",
                          owned=True)

    async def _unschedulable(self, pod: _Pod, message: str) -> None:
        stamp = _stamp(self.clock.now())
        await self._status(pod, {"phase": "Pending", "conditions": _conditions(
            stamp, scheduled=False, ready=False, message=message)})

    async def _reject(self, pod: _Pod, used: int, node: Mapping[str, Any]) -> None:
        await self._status(pod, {
            "phase": "Failed", "reason": f"OutOf{GPU_RESOURCE}",
            "message": f"Pod Node didn't have enough resource: {GPU_RESOURCE}, requested: {pod.gpus}, "
                       f"used: {used}, capacity: {_allocatable_gpus(node)}"})
        self._count(self.stats.live, self.stats.max_live, pod.key, -1)
        pod.finished = True
        self.stats.completed += 1

    async def _run(self, pod: _Pod, *, bind: bool) -> None:
        node = self._nodes[pod.target]
        started = self.clock.now()
        stamp = _stamp(started)
        if bind:
            self._store.patch(self._pod_type, pod.namespace, pod.name, {"spec": {"nodeName": pod.target}},
                              MERGE_PATCH, owned=True)
        host_ip = host_address(node.name)
        base = {"hostIP": host_ip, "startTime": stamp}
        creating = _container(pod.body, {"waiting": {"reason": "ContainerCreating"}})
        await self._status(pod, {**base, "phase": "Pending", "containerStatuses": [creating],
                                 "conditions": _conditions(stamp, scheduled=True, ready=False)})
        deadline = (pod.body.get("spec") or {}).get("activeDeadlineSeconds")
        image = ((pod.body.get("spec") or {}).get("containers") or [{}])[0].get("image", "")
        probe_time = node.probe_seconds or self.probe_seconds
        if "imagePull" in node.faults or lookup_image(image) is None:
            await self._pull_fails(pod, image, probe_time, deadline)
            return
        await self._status(pod, {
            "phase": "Running", "podIP": host_ip,
            "conditions": _conditions(stamp, scheduled=True, ready=True),
            "containerStatuses": [_container(pod.body, {"running": {"startedAt": stamp}}, ready=True)]})
        self.stats.started += 1
        pod.running = True
        self._count(self.stats.running, self.stats.max_running, pod.key, +1)
        if "kubeletLost" in node.faults:
            return  # the kubelet dies with the container running: no result, and no deadline is enforced
        end = ending(node, pod.body)  # the probe observes the node as it is when the container starts
        if deadline is not None and deadline < probe_time:
            await self.clock.sleep(float(deadline))
            end = Ending("Failed", 137, "Error", pod_reason="DeadlineExceeded")
        else:
            await self.clock.sleep(probe_time)
        await self._terminate(pod, base, end)

    async def _pull_fails(self, pod: _Pod, image: str, delay: float, deadline: int | None) -> None:
        stamp = _stamp(self.clock.now())
        for reason, message in (
            ("ErrImagePull", f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
                             f'"{image}": not found'),
            ("ImagePullBackOff", f'Back-off pulling image "{image}"'),
        ):
            await self._status(pod, {"phase": "Pending", "conditions": _conditions(stamp, scheduled=True, ready=False),
                                     "containerStatuses": [_container(pod.body, {"waiting": {
                                         "reason": reason, "message": message}})]})
            await self.clock.sleep(delay)
        if deadline is not None:
            await self.clock.sleep(max(0.0, deadline - 2 * delay))
            await self._terminate(pod, {}, Ending("Failed", 0, "", pod_reason="DeadlineExceeded"))

    async def _terminate(self, pod: _Pod, base: Mapping[str, Any], end: Ending) -> None:
        now = _stamp(self.clock.now())
        status: dict[str, Any] = {**base, "phase": end.phase,
                                  "conditions": _conditions(now, scheduled=True, ready=False)}
        if end.reason:
            terminated: dict[str, Any] = {"exitCode": end.exit_code, "reason": end.reason,
                                          "startedAt": base.get("startTime", now), "finishedAt": now,
                                          "containerID": f"containerd://{pod.uid.replace('-', '')}"}
            if end.message:
                terminated["message"] = end.message
            status["containerStatuses"] = [_container(pod.body, {"terminated": terminated})]
        if end.pod_reason:
            status.update(reason=end.pod_reason, message=DEADLINE_MESSAGE)
        await self._status(pod, status)
        self._finish(pod)
        self._count(self.stats.live, self.stats.max_live, pod.key, -1)
        pod.bound, pod.finished = None, True
        self.stats.completed += 1
        self._retry(pod.target)
