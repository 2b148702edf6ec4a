"""The kopf shell: indexes feed compact views in, one level-triggered loop per profile applies plans.

No per-node handler writes anything to Nodes: nodes are watched by a plain informer and validation pods
are indexed (both poke the loops awake); the profile's daemon and deletion handler are the only writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import pynvml

from torchproof import labels as L
from torchproof.expectations import Expectations
from torchproof.informer import NodeInformer
from torchproof.kube import GROUP, PLURAL, VERSION, KubeApi, KubeError
from torchproof.metrics import Metrics
from torchproof.plan import Plan, PlanInput, compute_plan, invalid_spec_status
from torchproof.podspec import build_probe_configmap, configmap_name
from torchproof.probe import PROBE_PATH
from torchproof.profile import InvalidSpec, parse_profile
from torchproof.views import NodeView, PodView, pod_view

log = logging.getLogger("torchproof")
POD_SELECTOR = {"app.kubernetes.io/managed-by": L.MANAGED_BY, "app.kubernetes.io/component": "validation"}


@dataclass
class OperatorConfig:
    api: KubeApi
    namespace: str = "torchproof"
    metrics: Metrics = field(default_factory=Metrics)
    batch_window: float = 0.1
    resync_seconds: float = 60.0
    status_interval: float = 1.0
    error_backoff: float = 2.0
    server: str | None = None
    clock: Callable[[], float] = time.time


@dataclass
class ProfileLoop:
    """What one profile's loop remembers between passes; all of it can be lost on a restart."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    expect: Expectations = field(default_factory=Expectations)
    retry_after: Mapping[str, float] = field(default_factory=dict)
    status: Mapping[str, Any] | None = None
    written: Mapping[str, Any] | None = None
    written_at: float = 0.0


class ProfileDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's change-detection essence, for profiles only: pods have no change handlers, and the essence
    (a deep copy of each body, then another to strip progress marks) was the largest cost per pod event."""

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        if body.get("kind") != "PyTorchReleaseProfile":
            return kopf.BodyEssence()
        return super().build(body=body, extra_fields=extra_fields)


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
        self.loops: dict[str, ProfileLoop] = {}
        self.failures = 0  # failed API calls so far; a pass that adds to it is retried after error_backoff

    def loop(self, name: str) -> ProfileLoop:
        return self.loops.setdefault(name, ProfileLoop())

    def poke(self, profile: str | None = None) -> None:
        targets = self.loops.values() if profile is None else [self.loops[profile]] if profile in self.loops else []
        for loop in targets:
            loop.wake.set()

    async def _safely(self, call: Awaitable[object]) -> bool:
        try:
            await call
        except KubeError as exc:
            self.cfg.metrics.api_errors.labels(exc.verb, str(exc.status)).inc()
            log.warning("%s", exc)
            self.failures += 1
            return False
        return True

    async def reconcile(
        self, body: Mapping[str, Any], nodes: Iterable[NodeView], pods: Iterable[PodView]
    ) -> float | None:
        """One pass; returns when the loop must look again even if nothing changes."""
        started = time.monotonic()
        meta = body.get("metadata") or {}
        name = str(meta.get("name"))
        loop = self.loop(name)
        now = self.cfg.clock()
        previous = loop.status if loop.status is not None else dict(body.get("status") or {})
        try:
            profile = parse_profile(body)
        except InvalidSpec as exc:
            await self._write_status(name, loop, invalid_spec_status(previous, meta, str(exc), now), now, force=True)
            return None
        plan = compute_plan(PlanInput(
            profile=profile,
            nodes=loop.expect.overlay_nodes(nodes, now),
            pods=loop.expect.overlay_pods(pods, now),
            now=now,
            namespace=self.cfg.namespace,
            configmap=self.configmap_name,
            status=previous,
            retry_after=loop.retry_after,
            profile_revalidate=str((meta.get("annotations") or {}).get(L.REVALIDATE_ANNOTATION, "")),
        ))
        failures = self.failures
        await self.apply(body, loop, plan, pods, now)
        self.cfg.metrics.reconcile_seconds.labels(name).observe(time.monotonic() - started)
        wakes = [t for t in (plan.wake_at, self._status_due(loop, plan, now)) if t is not None]
        if self.failures != failures:  # a write failed: try again after the backoff, not at the next resync
            wakes.append(now + self.cfg.error_backoff)
        return min(wakes) if wakes else None

    async def apply(
        self, body: Mapping[str, Any], loop: ProfileLoop, plan: Plan, pods: Iterable[PodView], now: float
    ) -> None:
        api, ns, m = self.cfg.api, self.cfg.namespace, self.cfg.metrics
        name = str((body.get("metadata") or {}).get("name"))
        created_at = {pod.name: pod.created for pod in pods}
        unlabelled: set[str] = set()

        async def update(u: Any) -> None:
            if await self._safely(api.patch_node(u.node, u.patch)):
                loop.expect.node_patched(u.node, u.patch, now)
                if u.evaluation is not None:
                    m.validations.labels(name, u.evaluation.verdict).inc()
                    for reason in u.evaluation.reasons:
                        m.reasons.labels(name, reason.code).inc()
            else:
                unlabelled.add(u.node)

        async def delete(d: Any) -> None:
            if await self._safely(api.delete_pod(ns, d.name)):
                loop.expect.pod_deleted(d.name, now)
                started = created_at.get(d.name)
                if d.reason == "Completed" and started is not None:
                    m.validation_seconds.labels(name).observe(max(0.0, now - started))

        async def create(manifest: Mapping[str, Any]) -> None:
            if await self._safely(api.create_pod(ns, manifest)):
                loop.expect.pod_created(manifest, now)
                m.pods_created.labels(name).inc()

        async def label_then_delete() -> None:
            await _gather(update(u) for u in plan.update)
            # A finished pod whose label did not land (a 409 from another profile's write) stays: its result
            # labels the node on the next pass instead of a whole new validation.
            await _gather(delete(d) for d in plan.delete if not (d.reason == "Completed" and d.node in unlabelled))

        async def start() -> None:
            if plan.create:
                await self._safely(api.ensure_configmap(self.configmap))
                await _gather(create(c) for c in plan.create)

        # New pods never go to a node whose pod this pass deletes, so both run at once.
        await asyncio.gather(label_then_delete(), start())
        for event in plan.events:
            await self._safely(api.post_event(body, event))
        loop.retry_after = plan.retry_after
        loop.status = plan.status
        m.observe_status(name, plan.status)
        await self._write_status(name, loop, plan.status, now)

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
        if await self._safely(self.cfg.api.patch_profile_status(name, status)):
            loop.written, loop.written_at, loop.status = status, now, status

    async def cleanup(self, name: str, nodes: Iterable[NodeView], pods: Iterable[PodView]) -> None:
        """A profile is gone: remove exactly its labels, records and pods."""
        api = self.cfg.api
        patches = [
            (node.name, patch) for node in nodes
            if (patch := L.removal_patch(name, node.labels, node.annotations, node.resource_version)) is not None
        ]
        listed = await api.list_pods(self.cfg.namespace, f"{L.PROFILE_LABEL}={name}")
        names = {pod.name for pod in pods} | {str(p["metadata"]["name"]) for p in listed}
        await _gather(api.patch_node(node, patch) for node, patch in patches)
        await _gather(api.delete_pod(self.cfg.namespace, pod) for pod in names)
        self.loops.pop(name, None)
        self.cfg.metrics.forget(name)


async def _sleep(wake: asyncio.Event, stopped: Any, timeout: float) -> None:
    async def until_stopped() -> None:
        await stopped.wait()

    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(until_stopped())}
    _, pending = await asyncio.wait(waiters, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def build_registry(cfg: OperatorConfig) -> tuple[kopf.OperatorRegistry, Reconciler]:
    """All kopf wiring for one operator instance (tests start several, one after another)."""
    registry = kopf.OperatorRegistry()
    reconciler = Reconciler(cfg)
    informer = NodeInformer(cfg.api, reconciler.poke)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        informer.start()
        settings.posting.enabled = False
        settings.persistence.finalizer = f"{L.DOMAIN}/cleanup"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=L.DOMAIN)
        settings.persistence.diffbase_storage = ProfileDiffBase(prefix=L.DOMAIN)
        settings.watching.reconnect_backoff = 0.5
        settings.networking.error_backoffs = [0.5, 1, 2, 5]
        settings.scanning.disabled = True

    if cfg.server is not None:
        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=str(cfg.server), insecure=True)

    @kopf.on.cleanup(registry=registry)
    async def stop_informer(**_: Any) -> None:
        informer.stop()
        cfg.api.disconnect()

    @kopf.index("pods", id="probe_pods", labels=POD_SELECTOR, registry=registry)
    async def probe_pods(body: kopf.Body, **_: Any) -> dict[str, PodView]:
        view = pod_view(body)
        return {view.profile: view}

    @kopf.on.event("pods", labels=POD_SELECTOR, registry=registry)
    async def pod_changed(labels: Mapping[str, str], **_: Any) -> None:
        reconciler.poke(labels.get(L.PROFILE_LABEL))

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def profile_changed(name: str, **_: Any) -> None:
        reconciler.poke(name)

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=5.0)
    async def reconcile(name: str, body: kopf.Body, stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
        probe_pods: kopf.Index[str, PodView] = kwargs["probe_pods"]
        loop = reconciler.loop(name)
        while not informer.synced.is_set() and not stopped:
            await _sleep(informer.synced, stopped, cfg.resync_seconds)
        while not stopped:
            loop.wake.clear()
            try:
                wake_at = await reconciler.reconcile(body, informer.views(), list(probe_pods.get(name, [])))
            except KubeError as exc:
                log.warning("profile %s: %s", name, exc)
                wake_at = cfg.clock() + cfg.error_backoff
            horizon = cfg.clock() + cfg.resync_seconds
            deadline = min(wake_at, horizon) if wake_at is not None else horizon
            await _sleep(loop.wake, stopped, deadline - cfg.clock())
            await asyncio.sleep(cfg.batch_window)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    async def cleanup(name: str, **kwargs: Any) -> None:
        probe_pods: kopf.Index[str, PodView] = kwargs["probe_pods"]
        if not informer.synced.is_set():
            raise kopf.TemporaryError("nodes are not listed yet", delay=1)
        try:
            await reconciler.cleanup(name, informer.views(), list(probe_pods.get(name, [])))
        except KubeError as exc:
            raise kopf.TemporaryError(str(exc), delay=2) from exc

    return registry, reconciler
