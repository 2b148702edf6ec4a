"""Nodes and validation pods as the planner sees them: one list, then a watch, kept as views outside kopf.

kopf indexes each object through its own worker, with a readiness toggle per object that wakes every
waiting worker: at 5,000 nodes its start-up grows with the square of the fleet, and each event costs a
deep copy of the body and a pass through its handler machinery. Nodes and pods are only read here, so a
plain list-then-watch (as client-go's informers do) in one thread per resource is enough. It says when
the first list is complete, and a list after a broken watch replaces the cache: an object deleted while
the watch was down is dropped, not kept forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)
GONE = 410
TOMBSTONE_SECONDS = 60.0

V = TypeVar("V")


class _Expired(Exception):
    """The watch's resourceVersion is too old: list again."""


class Informer(Generic[V]):
    """`items` (name → view) and `synced` once the first list is in; `on_change(view)` after each change.

    `gone` remembers, for `TOMBSTONE_SECONDS`, when each deleted name was seen to go: a pod created and
    deleted between two passes is never in `items` when a pass looks, so its creation expectation needs it.
    """

    def __init__(
        self,
        what: str,
        list_call: Callable[..., Any],
        view: Callable[[Mapping[str, Any]], V],
        on_change: Callable[[V], None],
        *,
        clock: Callable[[], float],
        watch_seconds: int = 60,
        backoff: float = 1.0,
    ) -> None:
        self.what = what
        self.list_call = list_call
        self.view = view
        self.on_change = on_change
        self.clock = clock
        self.watch_seconds = watch_seconds
        self.backoff = backoff
        self.items: dict[str, V] = {}
        self.gone: dict[str, float] = {}
        self.synced = asyncio.Event()
        self.restarts = 0  # watches that broke or expired and were listed again (a metric)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._pending: list[tuple[Callable[[Any], None], Any]] = []

    def views(self) -> list[V]:
        return list(self.items.values())

    def start(self) -> None:
        """Start listing and watching in a daemon thread; changes are applied in the calling event loop."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"torchproof-{self.what}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop now: end the open watch too, so that no request outlives the operator."""
        self._stop.set()
        response = self._response
        if response is not None:
            response.shutdown()

    # -- the thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self._list()
                while not self._stop.is_set():
                    version = self._watch(version)
            except _Expired:
                self.restarts += 1
                continue
            except Exception as exc:  # any failure: log, wait, list again (level-triggered, nothing is lost)
                if self._stop.is_set():
                    return
                self.restarts += 1
                log.warning("%s watch failed, listing again: %s", self.what, exc)
                self._stop.wait(self.backoff)

    def _list(self) -> str:
        response: Any = self.list_call(_preload_content=False)
        document = json.loads(response.data)
        views = {str((item.get("metadata") or {}).get("name", "")): self.view(item)
                 for item in document.get("items") or []}
        self._post(self._replace, views)
        return str((document.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, version: str) -> str:
        response: Any = self.list_call(
            watch=True, resource_version=version, allow_watch_bookmarks=True,
            timeout_seconds=self.watch_seconds, _preload_content=False,
        )
        self._response = response
        try:
            if self._stop.is_set():  # stopped while the request was in flight: `stop()` did not see it
                return version
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if self._stop.is_set():
                    break
                if not line.strip():
                    continue
                version = self._event(json.loads(line)) or version
        finally:
            self._response = None
            response.release_conn()
        return version

    def _event(self, event: dict[str, Any]) -> str | None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == GONE:
                raise _Expired()
            raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
        meta = obj.get("metadata") or {}
        if kind in ("ADDED", "MODIFIED"):
            self._post(self._put, (str(meta.get("name", "")), self.view(obj)))
        elif kind == "DELETED":
            self._post(self._drop, str(meta.get("name", "")))
        version = meta.get("resourceVersion")
        return str(version) if version else None

    def _post(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Queue a change for the event loop; wake the loop only when the queue was empty (a wake-up is a
        syscall and a callback, and events come in bursts: one drain applies the whole burst)."""
        assert self._loop is not None
        with self._lock:
            self._pending.append((fn, arg))
            if len(self._pending) > 1:
                return
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: the operator is gone
            self._stop.set()

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for fn, arg in pending:
            fn(arg)

    # -- in the event loop

    def _replace(self, views: dict[str, V]) -> None:
        old, self.items = self.items, views
        for name, view in old.items():
            if name not in views:
                self._bury(name)
                self.on_change(view)
        for name, view in views.items():
            if old.get(name) != view:
                self.on_change(view)
        self.synced.set()

    def _put(self, item: tuple[str, V]) -> None:
        name, view = item
        self.items[name] = view
        self.on_change(view)

    def _drop(self, name: str) -> None:
        view = self.items.pop(name, None)
        self._bury(name)
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
