"""Nodes and validation pods as the planner sees them: one list, then a watch, kept as views outside kopf.

kopf indexes each object through its own worker, with a readiness toggle per object that wakes every
waiting worker: at 5,000 nodes its start-up grows with the square of the fleet, and each event costs a
deep copy of the body and a pass through its handler machinery. Nodes and pods are only read here, so a
plain list-then-watch (as client-go's reflectors do) in one task per resource is enough, through the API
adapter (its errors, metrics and credentials). It says when the first list is complete, and a list after a
broken watch replaces the cache: an object deleted while the watch was down is dropped, not kept forever.
Failures back off exponentially with jitter (and wait at least a 429's `Retry-After`), so an outage of a
minute costs a handful of lists of the fleet, not one a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from torchproof.kube import KubeApi, KubeError

log = logging.getLogger(__name__)
GONE = 410
TOMBSTONE_SECONDS = 60.0

V = TypeVar("V")


@dataclass(frozen=True)
class Backoff:
    """Delays after consecutive failures: `first`, doubling up to `cap`, each drawn from [½, 1] of itself (jitter:
    replicas and informers that failed together do not retry together). The cap is client-go's reflector's
    (30 s): after an outage ends, the fleet is seen again within it."""

    first: float = 1.0
    cap: float = 30.0

    def delay(self, failures: int, retry_after: float | None = None,
              rand: Callable[[], float] = random.random) -> float:
        nominal: float = min(self.cap, self.first * 2.0 ** max(0, failures - 1))
        return max(nominal * (0.5 + rand() / 2), retry_after or 0.0)


@dataclass(frozen=True)
class Source:
    """What an informer lists and watches: `path` and query `params` (a label selector) on the API server."""

    what: str
    path: str
    params: Mapping[str, str]


class Informer(Generic[V]):
    """`items` (name → view) and `synced` once the first list is in; `on_change(view)` after each change.

    `gone` remembers, for `TOMBSTONE_SECONDS`, when each deleted name was seen to go: a pod created and
    deleted between two passes is never in `items` when a pass looks, so its creation expectation needs it.
    `relists` counts the lists made (the first included). `changes(since)` names the objects changed
    since a `version` it returned: a consumer then looks at those alone, not at every item.
    """

    def __init__(
        self,
        api: KubeApi,
        source: Source,
        view: Callable[[Mapping[str, Any]], V],
        on_change: Callable[[V], None],
        *,
        clock: Callable[[], float],
        watch_seconds: int = 60,
        backoff: Backoff = Backoff(),
    ) -> None:
        self.api = api
        self.source = source
        self.what = source.what
        self.view = view
        self.on_change = on_change
        self.clock = clock
        self.watch_seconds = watch_seconds
        self.backoff = backoff
        self.items: dict[str, V] = {}
        self.gone: dict[str, float] = {}
        self.synced = asyncio.Event()
        self.relists = 0
        self.version = 0  # counts the changes
        self._changed: dict[str, int] = {}  # name → the version of its last change, oldest first
        self._forgotten = 0  # changes up to this version have left `_changed`
        self._task: asyncio.Task[None] | None = None

    def views(self) -> list[V]:
        return list(self.items.values())

    def changes(self, since: int) -> tuple[int, set[str] | None]:
        """The current version, and the names changed (put, deleted, or different in a relist) after version
        `since`; None when that is older than what is remembered (about two changes per item)."""
        if since < self._forgotten:
            return self.version, None
        names: set[str] = set()
        for name, version in reversed(self._changed.items()):
            if version <= since:
                break
            names.add(name)
        return self.version, names

    def _touch(self, name: str) -> None:
        self.version += 1
        self._changed.pop(name, None)
        self._changed[name] = self.version
        while len(self._changed) > 2 * len(self.items) + 1024:
            self._forgotten = self._changed.pop(next(iter(self._changed)))

    def start(self) -> None:
        """Start listing and watching in a task of the running event loop."""
        self._task = asyncio.create_task(self._run(), name=f"torchproof-{self.what}")

    async def stop(self) -> None:
        """Stop now: end the open watch too, so that no request outlives the operator."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                version = await self._list()
                while True:
                    version = await self._watch(version)
                    failures = 0  # a watch that ran its course: the server is back
            except Exception as exc:  # any failure: back off, list again (level-triggered, nothing is lost)
                kube = exc if isinstance(exc, KubeError) else None
                if kube is not None and kube.status == GONE:
                    continue  # the watch's resourceVersion is too old: list again at once
                failures += 1
                delay = self.backoff.delay(failures, kube.retry_after if kube is not None else None)
                log.warning("%s watch failed, listing again in %.1fs: %s", self.what, delay, exc)
                await asyncio.sleep(delay)

    async def _list(self) -> str:
        self.relists += 1
        document = await self.api.list_raw(self.what, self.source.path, self.source.params)
        self._replace({str((item.get("metadata") or {}).get("name", "")): self.view(item)
                       for item in document.get("items") or []})
        return str((document.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self, version: str) -> str:
        events = self.api.watch(self.what, self.source.path, self.source.params, version, self.watch_seconds)
        async with contextlib.aclosing(events):  # an event that ends the watch closes its request at once
            async for event in events:
                version = self._event(event) or version
        return version

    def _event(self, event: dict[str, Any]) -> str | None:
        kind, obj = event.get("type"), event.get("object") or {}
        meta = obj.get("metadata") or {}
        if kind in ("ADDED", "MODIFIED"):
            self._put((str(meta.get("name", "")), self.view(obj)))
        elif kind == "DELETED":
            self._drop(str(meta.get("name", "")))
        version = meta.get("resourceVersion")
        return str(version) if version else None

    # -- in the event loop

    def _replace(self, views: dict[str, V]) -> None:
        """A relist: an unchanged object keeps its view object, so that consumers keyed on it see no change."""
        old, self.items = self.items, views
        for name, view in old.items():
            if name not in views:
                self._bury(name)
                self._touch(name)
                self.on_change(view)
        for name, view in views.items():
            if name in old and old[name] == view:
                views[name] = old[name]
            else:
                self._touch(name)
                self.on_change(view)
        self.synced.set()

    def _put(self, item: tuple[str, V]) -> None:
        name, view = item
        self.items[name] = view
        self._touch(name)
        self.on_change(view)

    def _drop(self, name: str) -> None:
        view = self.items.pop(name, None)
        self._bury(name)
        self._touch(name)
        if view is not None:
            self.on_change(view)

    def _bury(self, name: str) -> None:
        now = self.clock()
        self.gone.pop(name, None)
        self.gone[name] = now
        while self.gone:
            oldest = next(iter(self.gone))
            if now - self.gone[oldest] <= TOMBSTONE_SECONDS:
                break
            del self.gone[oldest]
