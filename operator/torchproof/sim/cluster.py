"""An embedded cluster on loopback: the emulator behind `kmock.Server`, a kubeconfig, YAML apply.

`run_in_thread()` serves one from a background event loop for synchronous callers (kubectl, the sync
kubernetes client); `BackgroundCluster.call()` runs coroutines in that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import kmock
import yaml

from torchproof.sim.emulator import ClusterEmulator
from torchproof.sim.store import ApiError, Obj

T = TypeVar("T")
SYSTEM_NAMESPACES = ("default", "kube-system")


class EmbeddedCluster:
    """An API server in this process, on a loopback port; an async context manager."""

    def __init__(self, *, crd_paths: Sequence[Path] = (), namespace: str = "torchproof",
                 namespace_labels: Mapping[str, str] | None = None,
                 host: str = "127.0.0.1", port: int | None = None) -> None:
        """`namespace_labels`: the operator namespace's, e.g. Pod Security's `enforce` level (none by default)."""
        self.crd_paths = tuple(Path(p) for p in crd_paths)
        self.namespace = namespace
        self.namespace_labels = dict(namespace_labels or {})
        self.emulator = ClusterEmulator()
        self._server = kmock.Server(self.emulator, host=host, port=port)
        self.url = ""

    async def __aenter__(self) -> EmbeddedCluster:
        await self.emulator.__aenter__()
        try:
            await self._server.__aenter__()
            self.url = str(self._server.url).rstrip("/")
            for name in dict.fromkeys((*SYSTEM_NAMESPACES, self.namespace)):
                labels = self.namespace_labels if name == self.namespace else {}
                await self.emulator.create_object("v1/namespaces", {"metadata": {"name": name, "labels": labels}})
            for path in self.crd_paths:
                await self.apply_yaml(path)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        with contextlib.suppress(RuntimeError):  # not started when entering failed early
            await self._server.__aexit__(exc_type, exc, tb)
        await self.emulator.__aexit__(exc_type, exc, tb)

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for kubectl and `kubernetes.config.load_kube_config` (plain HTTP, no auth)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "torchproof-sim",
            "clusters": [{"name": "torchproof-sim", "cluster": {"server": self.url}}],
            "users": [{"name": "torchproof-sim", "user": {"token": "torchproof-sim"}}],
            "contexts": [{"name": "torchproof-sim", "context": {
                "cluster": "torchproof-sim", "user": "torchproof-sim", "namespace": self.namespace}}],
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    async def apply_yaml(self, path: Path) -> list[Obj]:
        """Create or replace each document of a YAML file (CRDs, profiles); status is kept."""
        try:
            documents = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not YAML: {exc}") from None
        store = self.emulator.store
        plan = []
        for index, doc in enumerate(documents):  # check every document before changing anything
            where = f"{path} document {index}"
            if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
                raise ValueError(f"{where}: needs apiVersion and kind")
            name = (doc.get("metadata") or {}).get("name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"{where}: needs metadata.name")
            try:
                rt = store.by_kind(doc["apiVersion"], doc["kind"])
            except ApiError as exc:
                raise ValueError(f"{where}: {exc.message}") from None
            namespace = (doc["metadata"].get("namespace") or self.namespace) if rt.namespaced else None
            plan.append((rt, namespace, name, doc))
        results = []
        for rt, namespace, name, doc in plan:
            try:
                store.get(rt, namespace, name)
            except ApiError:
                results.append(store.create(rt, namespace, doc))
            else:
                meta = {k: v for k, v in doc["metadata"].items() if k != "resourceVersion"}
                results.append(store.replace(rt, namespace, name, {**doc, "metadata": meta}))
        return results


class BackgroundCluster:
    """An EmbeddedCluster served by an event loop in a daemon thread."""

    def __init__(self, cluster: EmbeddedCluster) -> None:
        self.cluster = cluster
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="embedded-cluster", daemon=True)

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def emulator(self) -> ClusterEmulator:
        return self.cluster.emulator

    def call(self, awaitable: Awaitable[T], timeout: float = 30.0) -> T:
        """Run a coroutine in the cluster's loop and wait for its result."""
        async def wrapped() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout)

    def start(self) -> BackgroundCluster:
        self._thread.start()
        self.call(self.cluster.__aenter__())
        return self

    def stop(self) -> None:
        try:
            self.call(self.cluster.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@contextlib.contextmanager
def run_in_thread(**kwargs: Any) -> Iterator[BackgroundCluster]:
    """`with run_in_thread(crd_paths=[...]) as bg:` — a running cluster for synchronous code."""
    background = BackgroundCluster(EmbeddedCluster(**kwargs)).start()
    try:
        yield background
    finally:
        background.stop()
