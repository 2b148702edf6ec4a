"""The kopf shell: informers feed compact views in, one level-triggered loop per profile applies plans.

No per-node handler writes anything to Nodes: nodes and validation pods are watched by plain informers
(both poke the loops awake); kopf runs the profiles, and each profile's daemon and deletion handler are
the only writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import kopf
import pynvml

from torchproof import labels as L
from torchproof.breaker import RESUME_ANNOTATION
from torchproof.expectations import Expectations
from torchproof.gating import GateUpdate
from torchproof.history import REGRESSION
from torchproof.informer import Informer, Source
from torchproof.kube import GROUP, PLURAL, VERSION, KubeApi, KubeError, connection_info
from torchproof.metrics import InformerState, Metrics, ProfileState, Snapshot
from torchproof.plan import (
    CREATE_BACKOFF_BASE,
    CREATE_BACKOFF_MAX,
    LOST_GRACE_SECONDS,
    CreateBackoff,
    DeletePod,
    EventSpec,
    NodeUpdate,
    Plan,
    PlanInput,
    PlanMemo,
    compute_plan,
    invalid_spec_status,
    pass_failed_status,
    refused_create,
)
from torchproof.podspec import CONFIGMAP_LABELS, build_probe_configmap, configmap_name
from torchproof.probe import PROBE_PATH
from torchproof.profile import InvalidSpec, parse_profile
from torchproof.sweep import Removal, plan_removal, plan_sweep, stale_configmaps
from torchproof.text import clean_text
from torchproof.views import NodeView, PodView, node_view, pod_view

log = logging.getLogger("torchproof")
POD_SELECTOR = {"app.kubernetes.io/managed-by": L.MANAGED_BY, "app.kubernetes.io/component": "validation"}
CLEANUP_RETRY_SECONDS = 1.0
PASS_RETRY_MAX = 60.0  # a failing pass is retried after error_backoff, doubling up to this
Changes = Callable[[int], tuple[int, Collection[str] | None]]  # Informer.changes


def refuses(exc: KubeError) -> bool:
    """The API server's considered answer to a pod create (admission, a missing ServiceAccount, a quota):
    retrying at once would only be refused again. A 409 is a pod that exists; 429, 5xx and no answer pass."""
    return 400 <= exc.status < 500 and exc.status not in (409, 429)


@dataclass
class OperatorConfig:
    api: KubeApi
    namespace: str = "torchproof"
    metrics: Metrics = field(default_factory=Metrics)
    batch_window: float = 0.02
    resync_seconds: float = 60.0
    status_interval: float = 1.0
    error_backoff: float = 2.0
    clock: Callable[[], float] = time.time
    lost_grace: float = LOST_GRACE_SECONDS  # see plan.LOST_GRACE_SECONDS
    create_backoff_base: float = CREATE_BACKOFF_BASE
    create_backoff_max: float = CREATE_BACKOFF_MAX

    def __post_init__(self) -> None:
        if self.api.metrics is None:  # the adapter counts every call in the operator's registry
            self.api.metrics = self.metrics


@dataclass
class ProfileLoop:
    """What one profile's loop remembers between passes; all of it can be lost on a restart.

    `busy` is held for a whole pass, writes included; `closed` (set by the deletion handler, under `busy`)
    ends the loop, so that nothing writes for a profile once its cleanup has begun.
    """

    uid: str = ""  # of the profile object: one deleted and created again under its name gets a new loop
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False
    expect: Expectations = field(default_factory=Expectations)
    memo: PlanMemo = field(default_factory=PlanMemo)
    seen: int = -1  # the node informer's version that `memo` planned on (Informer.changes)
    overlaid: set[str] = field(default_factory=set)  # the nodes its expectations overlaid in that pass
    retry_after: Mapping[str, float] = field(default_factory=dict)
    create_backoff: Mapping[str, CreateBackoff] = field(default_factory=dict)
    failing: str | None = None  # why the last pass raised; None while passes work
    failed_passes: int = 0  # in a row, for the retry backoff
    status: Mapping[str, Any] | None = None
    written: Mapping[str, Any] | None = None
    written_at: float = 0.0
    waiting: Mapping[str, str] = field(default_factory=dict)  # the last plan's waiting nodes, for the metrics
    waiting_since: Mapping[str, float] = field(default_factory=dict)
    last_pass_at: float | None = None  # when the last pass that worked ended


def probe_files() -> dict[str, str]:
    """What the probe ConfigMap carries: the probe and the NVML bindings it imports when present."""
    return {"probe.py": PROBE_PATH.read_text(), "pynvml.py": Path(pynvml.__file__).read_text()}


async def _gather(calls: Iterable[Awaitable[object]]) -> None:
    await asyncio.gather(*calls)


class Reconciler:
    """Plans and applies one profile's pass; kept apart from kopf so tests can drive it directly."""

    def __init__(self, cfg: OperatorConfig) -> None:
        self.cfg = cfg
        files = probe_files()
        self.configmap = build_probe_configmap(cfg.namespace, files)
        self.configmap_name = configmap_name(files)
        self.configmap_at: float | None = None
        self.collected_at: float | None = None  # when old probe ConfigMaps were last looked for
        self.loops: dict[str, ProfileLoop] = {}
        self.failures = 0  # failed API calls so far; a pass that adds to it is retried after error_backoff
        self.sweep_wake = asyncio.Event()

    def loop(self, name: str, uid: str = "") -> ProfileLoop:
        found = self.loops.get(name)
        if found is None or (uid and found.uid and found.uid != uid):
            found = self.loops[name] = ProfileLoop(uid=uid)
        return found

    def poke(self, profile: str | None = None) -> None:
        targets = self.loops.values() if profile is None else [self.loops[profile]] if profile in self.loops else []
        for loop in targets:
            loop.wake.set()

    def _failed(self, exc: KubeError) -> None:
        log.warning("%s", exc)
        self.failures += 1

    async def _safely(self, call: Awaitable[object]) -> bool:
        try:
            await call
        except KubeError as exc:
            self._failed(exc)
            return False
        return True

    async def reconcile(
        self, body: Mapping[str, Any], loop: ProfileLoop, nodes: Iterable[NodeView] | Mapping[str, NodeView],
        pods: Iterable[PodView], gone: Mapping[str, float] | None = None, changes: Changes | None = None,
    ) -> float | None:
        """One pass; returns when the loop must look again even if nothing changes. `nodes` by name and
        `changes` (the node informer's): the plan classifies again only the nodes changed since the last pass."""
        started = time.monotonic()
        meta = body.get("metadata") or {}
        name = str(meta.get("name"))
        now = self.cfg.clock()
        previous = loop.status if loop.status is not None else dict(body.get("status") or {})
        try:
            profile = parse_profile(body)
        except InvalidSpec as exc:
            await self._write_status(name, loop, invalid_spec_status(previous, meta, str(exc), now), now, force=True)
            return None
        by_name = nodes if isinstance(nodes, Mapping) else {node.name: node for node in nodes}
        version, changed = changes(loop.seen) if changes is not None else (-1, None)
        observed, overlaid = loop.expect.overlay(by_name, now)
        if changed is not None:
            changed = {*changed, *overlaid, *loop.overlaid}  # an overlay's view is new, and so is its end
        plan = compute_plan(PlanInput(
            profile=profile,
            nodes=observed,
            changed=changed,
            pods=loop.expect.overlay_pods(pods, now, gone),
            now=now,
            namespace=self.cfg.namespace,
            configmap=self.configmap_name,
            status=previous,
            retry_after=loop.retry_after,
            profile_revalidate=str((meta.get("annotations") or {}).get(L.REVALIDATE_ANNOTATION, "")),
            profile_resume=str((meta.get("annotations") or {}).get(RESUME_ANNOTATION, "")),
            memo=loop.memo,
            create_backoff=loop.create_backoff,
            lost_grace=self.cfg.lost_grace,
        ))
        loop.memo, loop.seen, loop.overlaid = plan.memo, version, overlaid
        await self.apply(body, loop, plan, pods, now)
        self.cfg.metrics.reconcile_seconds.labels(name).observe(time.monotonic() - started)
        loop.last_pass_at = self.cfg.clock()
        retries = [b.retry_at for b in loop.create_backoff.values() if b.retry_at > now]  # this pass's refusals
        wakes = [t for t in (plan.wake_at, self._status_due(loop, plan, now), *retries) if t is not None]
        return min(wakes) if wakes else None

    async def run_pass(
        self, body: Mapping[str, Any], loop: ProfileLoop, nodes: Iterable[NodeView] | Mapping[str, NodeView],
        pods: Iterable[PodView], gone: Mapping[str, float] | None = None, changes: Changes | None = None,
    ) -> float:
        """`reconcile`, never raising: a failed API call is retried after error_backoff; any other exception
        marks the profile Degraded (PassFailed, with an Event and a metric, once per transition) and is
        retried with a growing backoff, until a pass works again."""
        name = str((body.get("metadata") or {}).get("name"))
        try:
            wake_at = await self.reconcile(body, loop, nodes, pods, gone, changes)
        except KubeError as exc:
            log.warning("profile %s: %s", name, exc)
            return self.cfg.clock() + self.cfg.error_backoff
        except Exception as exc:
            return await self._pass_failed(body, loop, exc)
        if loop.failing is not None:
            log.info("profile %s: passes work again", name)
        loop.failing, loop.failed_passes = None, 0
        return wake_at if wake_at is not None else self.cfg.clock() + self.cfg.resync_seconds

    async def _pass_failed(self, body: Mapping[str, Any], loop: ProfileLoop, exc: Exception) -> float:
        meta = body.get("metadata") or {}
        name = str(meta.get("name"))
        message = clean_text(f"{type(exc).__name__}: {exc}", 300)  # it may quote what a result said
        self.cfg.metrics.pass_failures.labels(name).inc()
        loop.failed_passes += 1
        now = self.cfg.clock()
        if loop.failing != message:
            log.error("profile %s: the pass failed: %s", name, message, exc_info=exc)
        if loop.failing is None:
            event = EventSpec("Warning", "DegradedTrue", f"PassFailed: {message}")
            await self._safely(self.cfg.api.post_event(self.cfg.namespace, body, event))
        previous = loop.status if loop.status is not None else dict(body.get("status") or {})
        status = pass_failed_status(previous, int(meta.get("generation") or 1), message, now)
        await self._write_status(name, loop, status, now, force=loop.failing is None)
        loop.status, loop.failing = status, message
        delay = min(PASS_RETRY_MAX, self.cfg.error_backoff * 2.0 ** min(loop.failed_passes - 1, 16))
        return now + delay * random.uniform(0.8, 1.2)

    async def apply(
        self, body: Mapping[str, Any], loop: ProfileLoop, plan: Plan, pods: Iterable[PodView], now: float
    ) -> None:
        """Send the plan's writes and wait for them: the next pass plans on what landed (and the wait keeps
        passes, whose planning is O(nodes), from running back to back on a busy fleet)."""
        api, ns, m = self.cfg.api, self.cfg.namespace, self.cfg.metrics
        name = str((body.get("metadata") or {}).get("name"))
        created_at = {pod.name: pod.created for pod in pods}
        failures = self.failures
        unlabelled: set[str] = set()
        failed = {f.node: f for f in plan.failures}
        refusals: dict[str, CreateBackoff] = {}

        async def update(u: NodeUpdate) -> None:
            patch = await self._patch_node(u)
            if patch is None:
                unlabelled.add(u.node)
                return
            loop.expect.node_patched(u.node, patch, now)
            failure = failed.get(u.node)
            if failure is not None:  # logged when its error label lands: then no later pass judges it again
                log.warning("profile %s: judging pod %s of node %s failed: %s", name, failure.pod, u.node,
                            failure.reason)
                m.evaluation_failures.labels(name).inc()
            if u.evaluation is not None:
                m.validations.labels(name, u.evaluation.verdict).inc()
                for finding in u.evaluation.findings:
                    if finding.code == REGRESSION:
                        m.steering.regressions.labels(name).inc()

        async def delete(d: DeletePod) -> None:
            if d.after_label and d.node in unlabelled:
                return  # its label did not land: the pod stays, and its result labels the node on a later pass
            if await self._safely(api.delete_pod(ns, d.name)):
                loop.expect.pod_deleted(d.name, now)
                started = created_at.get(d.name)
                if d.reason == "Completed" and started is not None:
                    m.validation_seconds.labels(name).observe(max(0.0, now - started))

        async def create(manifest: Mapping[str, Any]) -> None:
            try:
                await api.create_pod(ns, manifest)
            except KubeError as exc:
                self._failed(exc)
                if refuses(exc):
                    pod = pod_view(manifest)
                    m.create_refusals.labels(name, str(exc.status)).inc()
                    refusals[pod.node] = refused_create(
                        plan.create_backoff.get(pod.node), pod.spec_hash or "", pod.node, exc.status,
                        exc.message, now, self.cfg.create_backoff_base, self.cfg.create_backoff_max,
                    )
                return
            loop.expect.pod_created(manifest, now)
            m.pods_created.labels(name).inc()

        async def gate(g: GateUpdate) -> None:
            """The claim before an added taint, after a removed one: never a taint without its claim."""
            steps = [partial(api.patch_node, g.node, g.claim)]
            if g.ops:
                steps.append(partial(api.patch_node_taints, g.node, g.ops))
            for step in steps if g.add else reversed(steps):
                if not await self._safely(step()):
                    return
            loop.expect.node_patched(g.node, {**g.claim, "spec": {"taints": list(g.taints)}}, now)
            m.steering.gating_taints.labels(name, "add" if g.add else "remove").inc()

        async def label_then_delete() -> None:
            await _gather(update(u) for u in plan.update)
            await _gather(gate(g) for g in plan.gates)
            await _gather(delete(d) for d in plan.delete)

        async def start() -> None:
            if plan.create:
                await self._ensure_configmap(now)
                await _gather(create(c) for c in plan.create)

        # New pods never go to a node whose pod this pass deletes, so both run at once; creates are queued
        # first, since a slot's turnover (and so the fleet's time to converge) waits on them.
        events = (self._safely(api.post_event(ns, body, event)) for event in plan.events)
        await asyncio.gather(start(), label_then_delete(), *events)
        loop.retry_after = plan.retry_after
        loop.create_backoff = {**plan.create_backoff, **refusals}
        loop.status = plan.status
        loop.waiting = plan.waiting
        loop.waiting_since = {node: loop.waiting_since.get(node, now) for node in plan.waiting}
        await self._write_status(name, loop, plan.status, now)
        if self.failures != failures:  # a write failed: look again after the backoff, not at the next resync
            asyncio.get_running_loop().call_later(self.cfg.error_backoff, loop.wake.set)

    async def _patch_node(self, u: NodeUpdate) -> Mapping[str, Any] | None:
        """A plain merge patch of the profile's own keys (labels.py), which no other writer conflicts with.
        Returns the patch that landed, or None."""
        if await self._safely(self.cfg.api.patch_node(u.node, u.patch)):
            return u.patch
        return None

    async def _ensure_configmap(self, now: float) -> None:
        """The probe ConfigMap, created (or found) once per resync rather than before every batch of pods."""
        if self.configmap_at is not None and now - self.configmap_at < self.cfg.resync_seconds:
            return
        if await self._safely(self.cfg.api.ensure_configmap(self.configmap)):
            self.configmap_at = now

    def _status_due(self, loop: ProfileLoop, plan: Plan, now: float) -> float | None:
        if loop.written == plan.status:
            return None
        return loop.written_at + self.cfg.status_interval

    async def _write_status(
        self, name: str, loop: ProfileLoop, status: Mapping[str, Any], now: float, *, force: bool = False
    ) -> None:
        """At most one status write per interval per profile, and none when nothing changed."""
        if loop.written == status:
            return
        if not force and now - loop.written_at < self.cfg.status_interval:
            return
        try:
            await self.cfg.api.patch_profile_status(name, status)
        except KubeError as exc:
            if exc.status == 404:  # deleted, perhaps unseen by kopf: stop, and let the sweep clean up
                loop.closed = True
                self.sweep_wake.set()
                return
            self._failed(exc)
            return
        loop.written, loop.written_at, loop.status = status, self.cfg.clock(), status

    @staticmethod
    async def close(loop: ProfileLoop) -> None:
        """Stop a profile's loop and wait out the pass in flight: after this, only cleanup writes for it."""
        loop.closed = True
        loop.wake.set()
        async with loop.busy:
            pass

    async def cleanup(self, name: str, uid: str = "") -> None:
        """A profile is gone: remove exactly its labels, records and pods, read afresh from the API server.

        Raises `KubeError` if anything may be left (a failed write, a node changed under a patch); a retry
        lists again, so each attempt only patches what is still there.
        """
        await self.close(self.loop(name, uid))
        api = self.cfg.api
        nodes = [node_view(item) for item in await api.list_nodes()]
        pods = [pod_view(item) for item in await api.list_pods(self.cfg.namespace, f"{L.PROFILE_LABEL}={name}")]
        if not await self._remove(plan_removal(nodes, pods, {name})):
            raise KubeError("cleanup", 0, "a removal failed; listing again")
        self.loops.pop(name, None)
        self.cfg.metrics.forget(name)

    async def sweep(self, nodes: Iterable[NodeView] | None, pods: Iterable[PodView]) -> bool:
        """Remove what profiles that no longer exist left; True when nothing failed (see `sweep.py`).

        `nodes` None: list them afresh, after closing the loops of profiles gone (a profile just deleted may
        have writes in flight that the informer has not seen yet).
        """
        api = self.cfg.api
        if nodes is None:
            loops = dict(self.loops)  # before the list: a loop started later belongs to a profile that exists
            existing = await api.list_profile_names()
            for name, loop in loops.items():
                if name not in existing:
                    await self.close(loop)
                    if self.loops.get(name) is loop:
                        del self.loops[name]
            nodes = [node_view(item) for item in await api.list_nodes()]
        nodes, pods = list(nodes), list(pods)  # read before the profiles are listed
        sweep = plan_sweep(nodes, pods, await api.list_profile_names())
        if sweep.patches or sweep.pods:
            log.info("sweeping %d node(s) and %d pod(s) of deleted profiles", len(sweep.patches), len(sweep.pods))
        return await self._remove(sweep)

    async def collect_configmaps(self) -> None:
        """Delete the probe ConfigMaps of earlier probe versions that no pod uses (`sweep.stale_configmaps`).
        The pods are listed after the ConfigMaps, and all of the namespace's, not only validation pods. Nothing
        waits on this, so a failure is only counted and logged, and the next resync tries again: at most one
        attempt per resync, however often the sweep runs."""
        api, ns, now = self.cfg.api, self.cfg.namespace, self.cfg.clock()
        if self.collected_at is not None and now - self.collected_at < self.cfg.resync_seconds:
            return
        self.collected_at = now
        try:
            configmaps = await api.list_configmaps(ns, ",".join(f"{k}={v}" for k, v in CONFIGMAP_LABELS.items()))
            pods = await api.list_pods(ns, "")
        except KubeError as exc:
            self._failed(exc)
            return
        stale = stale_configmaps(configmaps, pods, self.configmap_name)
        if stale:
            log.info("deleting %d probe ConfigMap(s) of earlier probe versions: %s", len(stale), ", ".join(stale))
        await _gather(self._safely(api.delete_configmap(ns, name)) for name in stale)

    async def _remove(self, removal: Removal) -> bool:
        """Gating taints first (each before its claim), then node patches, then pods; True when every write
        landed."""
        api, failures = self.cfg.api, self.failures

        async def ungate(g: GateUpdate) -> None:
            if not g.ops or await self._safely(api.patch_node_taints(g.node, g.ops)):
                await self._safely(api.patch_node(g.node, g.claim))

        await _gather(ungate(g) for g in removal.gates)
        await _gather(self._safely(api.patch_node(node, patch)) for node, patch in removal.patches)
        await _gather(self._safely(api.delete_pod(self.cfg.namespace, pod)) for pod in removal.pods)
        return self.failures == failures


async def _sleep(wake: asyncio.Event, stopped: Any, timeout: float) -> None:
    async def until_stopped() -> None:
        await stopped.wait()

    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(until_stopped())}
    try:
        await asyncio.wait(waiters, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when cancelled: a waiter left behind would keep kopf waiting for it at exit
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def build_registry(cfg: OperatorConfig) -> tuple[kopf.OperatorRegistry, Reconciler]:
    """All kopf wiring for one operator instance (tests start several, one after another)."""
    registry = kopf.OperatorRegistry()
    reconciler = Reconciler(cfg)
    selector = ",".join(f"{k}={v}" for k, v in POD_SELECTOR.items())
    nodes: Informer[NodeView] = Informer(
        cfg.api, Source("nodes", "/api/v1/nodes", {}), node_view, lambda _: reconciler.poke(),
        clock=lambda: cfg.clock(),
    )
    pods: Informer[PodView] = Informer(
        cfg.api, Source("pods", f"/api/v1/namespaces/{cfg.namespace}/pods", {"labelSelector": selector}), pod_view,
        lambda pod: reconciler.poke(pod.profile), clock=lambda: cfg.clock(),
    )

    def snapshot() -> Snapshot:
        """What the metrics' state families are computed from, at each scrape (metrics.StateCollector)."""
        profiles = [
            ProfileState(name, loop.status or {}, loop.waiting, loop.waiting_since, loop.last_pass_at,
                         loop.failing is not None)
            for name, loop in list(reconciler.loops.items()) if not loop.closed
        ]
        informers = [InformerState(i.what, i.synced.is_set(), max(0, i.relists - 1)) for i in (nodes, pods)]
        return Snapshot(profiles, nodes.views(), informers, cfg.clock())

    cfg.metrics.watch(snapshot)
    if cfg.api.metrics is None:  # the adapter counts its requests into the operator's registry
        cfg.api.metrics = cfg.metrics

    def pods_of(profile: str) -> list[PodView]:
        return [pod for pod in pods.items.values() if pod.profile == profile]

    async def synced(stopped: Any) -> bool:
        """Wait for both informers' first lists; False if stopped first (`stopped`: an Event or kopf's flag)."""
        for informer in (nodes, pods):
            while not informer.synced.is_set() and not stopped.is_set():
                await _sleep(informer.synced, stopped, cfg.resync_seconds)
        return not stopped.is_set()

    sweeping: list[asyncio.Task[None]] = []

    async def sweeper() -> None:
        """At start and every resync over the informer's nodes; after a profile is seen deleted (or a loop
        finds its profile gone) over nodes listed afresh: the backstop of `cleanup`. Then old probe ConfigMaps."""
        never = asyncio.Event()
        if not await synced(never):
            return
        fresh = False
        while True:
            reconciler.sweep_wake.clear()
            try:
                clean = await reconciler.sweep(None if fresh else nodes.views(), pods.views())
            except KubeError as exc:
                log.warning("sweep: %s", exc)
                clean = False
            await reconciler.collect_configmaps()
            await _sleep(reconciler.sweep_wake, never, cfg.resync_seconds if clean else cfg.error_backoff)
            fresh = reconciler.sweep_wake.is_set() or not clean

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        nodes.start()
        pods.start()
        sweeping.append(asyncio.create_task(sweeper(), name="torchproof-sweep"))
        settings.posting.enabled = False
        settings.persistence.finalizer = f"{L.DOMAIN}/cleanup"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=L.DOMAIN)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=L.DOMAIN)
        settings.watching.reconnect_backoff = 0.5
        settings.networking.error_backoffs = [0.5, 1, 2, 5]
        settings.scanning.disabled = True

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        """kopf's watches use the API adapter's Configuration (--kubeconfig, in-cluster, or a server and token):
        one credential path, one identity for both."""
        return connection_info(cfg.api.configuration)

    @kopf.on.cleanup(registry=registry)
    async def stop_informers(**_: Any) -> None:
        for task in sweeping:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await nodes.stop()
        await pods.stop()
        await cfg.api.close()

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def profile_changed(name: str, type: str | None, **_: Any) -> None:
        reconciler.poke(name)
        if type == "DELETED":
            reconciler.sweep_wake.set()

    # On exit kopf cancels a daemon that has not stopped at once, unless a backoff gives it time to see
    # `stopped` first: a pass in flight then finishes its writes instead of being cut.
    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_backoff=2.0, cancellation_timeout=5.0)
    async def reconcile(name: str, uid: str, body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        loop = reconciler.loop(name, uid)
        if not await synced(stopped):
            return
        while not stopped and not loop.closed:
            loop.wake.clear()
            async with loop.busy:
                if loop.closed or body.get("metadata", {}).get("deletionTimestamp"):
                    return  # being deleted: only the deletion handler writes for it now
                wake_at = await reconciler.run_pass(body, loop, nodes.items, pods_of(name), pods.gone, nodes.changes)
            deadline = min(wake_at, cfg.clock() + cfg.resync_seconds)
            await _sleep(loop.wake, stopped, deadline - cfg.clock())
            await asyncio.sleep(cfg.batch_window)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    async def cleanup(name: str, uid: str, **_: Any) -> None:
        try:
            await reconciler.cleanup(name, uid)
        except KubeError as exc:
            raise kopf.TemporaryError(str(exc), delay=CLEANUP_RETRY_SECONDS) from exc

    return registry, reconciler
