"""Nodes as the planner sees them: one list, then a watch, kept as NodeViews outside kopf.

kopf indexes each object through its own worker, with a readiness toggle per object that wakes every
waiting worker: at 5,000 nodes its start-up grows with the square of the fleet, and each node event
costs a deep copy of the node. Nodes are only read here, so a plain list-then-watch (as client-go's
informers do) in one thread is enough, and it says when the first list is complete.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes.watch.watch import iter_resp_lines

from torchproof.kube import KubeApi
from torchproof.views import NodeView, node_view

log = logging.getLogger(__name__)
GONE = 410


class _Expired(Exception):
    """The watch's resourceVersion is too old: list again."""


class NodeInformer:
    """`nodes` (name → NodeView) and `synced` once the first list is in; `on_change()` after each change."""

    def __init__(self, api: KubeApi, on_change: Callable[[], None], *, watch_seconds: int = 60,
                 backoff: float = 1.0) -> None:
        self.api = api
        self.on_change = on_change
        self.watch_seconds = watch_seconds
        self.backoff = backoff
        self.nodes: dict[str, NodeView] = {}
        self.synced = asyncio.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def views(self) -> list[NodeView]:
        return list(self.nodes.values())

    def start(self) -> None:
        """Start listing and watching in a daemon thread; changes are applied in the calling event loop."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="torchproof-nodes", daemon=True)
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
                continue
            except Exception as exc:  # any failure: log, wait, list again (level-triggered, nothing is lost)
                if self._stop.is_set():
                    return
                log.warning("node watch failed, listing again: %s", exc)
                self._stop.wait(self.backoff)

    def _list(self) -> str:
        response: Any = self.api.core.list_node(_preload_content=False)
        document = json.loads(response.data)
        views = {view.name: view for view in map(node_view, document.get("items") or [])}
        self._post(self._replace, views)
        return str((document.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, version: str) -> str:
        response: Any = self.api.core.list_node(
            watch=True, resource_version=version, allow_watch_bookmarks=True,
            timeout_seconds=self.watch_seconds, _preload_content=False,
        )
        self._response = response
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if self._stop.is_set():
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                version = self._event(event) or version
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
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            self._post(self._put, node_view(obj))
        elif kind == "DELETED":
            self._post(self._drop, str((obj.get("metadata") or {}).get("name", "")))
        return str(version) if version else None

    def _post(self, fn: Callable[[Any], None], arg: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn, arg)
        except RuntimeError:  # the loop is closed: the operator is gone
            self._stop.set()

    # -- in the event loop

    def _replace(self, views: dict[str, NodeView]) -> None:
        self.nodes = views
        self.synced.set()
        self.on_change()

    def _put(self, view: NodeView) -> None:
        self.nodes[view.name] = view
        self.on_change()

    def _drop(self, name: str) -> None:
        self.nodes.pop(name, None)
        self.on_change()
