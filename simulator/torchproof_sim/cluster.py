"""An embedded cluster on loopback: the emulator behind `kmock.Server`, a kubeconfig, YAML apply.

HTTP requests are authenticated and authorised by RBAC (`rbac.py`) unless `authorize=False`: the
kubeconfig carries the admin's token (`system:masters`); `service_account_token` mints one for a
ServiceAccount, which may do what the Roles and bindings stored in the cluster grant it. The cluster
listens twice: `url` (plain HTTP, for in-process clients) and `secure_url` (HTTPS, `tls.py`), which
the kubeconfig names, since kubectl sends credentials only over TLS.

`run_in_thread()` serves one from a background event loop for synchronous callers (kubectl, the sync
kubernetes client); `BackgroundCluster.call()` runs coroutines in that loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import aiohttp.test_utils
import kmock
import yaml

from torchproof_sim.emulator import ClusterEmulator
from torchproof_sim.rbac import Access, bootstrap_policy
from torchproof_sim.store import ApiError, Obj
from torchproof_sim.tls import loopback_certificate

T = TypeVar("T")
SYSTEM_NAMESPACES = ("default", "kube-system")


class EmbeddedCluster:
    """An API server in this process, on a loopback port; an async context manager."""

    def __init__(self, *, crd_paths: Sequence[Path] = (), namespace: str = "torchproof",
                 namespace_labels: Mapping[str, str] | None = None,
                 host: str = "127.0.0.1", port: int | None = None, authorize: bool = True,
                 field_validation: str = "Strict") -> None:
        """`namespace_labels`: the operator namespace's, e.g. Pod Security's `enforce` level (none by default).
        `field_validation`: for writes that name no `fieldValidation` (the kubernetes client's never do);
        `Strict`, not the real server's `Warn`, so that a misspelt field in the operator's writes fails its tests."""
        self.crd_paths = tuple(Path(p) for p in crd_paths)
        self.namespace = namespace
        self.namespace_labels = dict(namespace_labels or {})
        self.emulator = ClusterEmulator(field_validation=field_validation)
        self.access = Access(self.emulator.store)
        if authorize:
            self.emulator.access = self.access
        self._server = kmock.Server(self.emulator, host=host, port=port)
        self._certificate = loopback_certificate()
        self._tls_server = (aiohttp.test_utils.RawTestServer(self.emulator, host=host, port=0)
                            if self._certificate is not None else None)
        self.url = ""
        self.secure_url = ""  # "" without openssl

    async def __aenter__(self) -> EmbeddedCluster:
        await self.emulator.__aenter__()
        try:
            await self._server.__aenter__()
            self.url = str(self._server.url).rstrip("/")
            if self._tls_server is not None and self._certificate is not None:
                await self._tls_server.start_server(ssl=self._certificate.server_context())
                self.secure_url = str(self._tls_server.make_url("")).rstrip("/")
            for name in dict.fromkeys((*SYSTEM_NAMESPACES, self.namespace)):
                labels = self.namespace_labels if name == self.namespace else {}
                await self.emulator.create_object("v1/namespaces", {"metadata": {"name": name, "labels": labels}})
            for resource, obj in bootstrap_policy():
                await self.emulator.create_object(resource, obj)
            for path in self.crd_paths:
                await self.apply_yaml(path)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._tls_server is not None:
            await self._tls_server.close()
        with contextlib.suppress(RuntimeError):  # not started when entering failed early
            await self._server.__aexit__(exc_type, exc, tb)
        await self.emulator.__aexit__(exc_type, exc, tb)

    @property
    def admin_token(self) -> str:
        return self.access.admin_token

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token for a ServiceAccount: valid while it exists; it may do what RBAC grants it."""
        return self.access.service_account_token(namespace, name)

    def write_kubeconfig(self, path: Path, token: str | None = None, *, tls: bool = True) -> Path:
        """A kubeconfig for kubectl and `kubernetes.config.load_kube_config`: HTTPS where there is a
        certificate and `tls` (else plain HTTP, over which kubectl sends no credentials but the Python
        client does), a bearer token: the admin's unless `token` is given."""
        server: dict[str, str] = {"server": self.url}
        if tls and self.secure_url and self._certificate is not None:
            ca = base64.b64encode(self._certificate.cert.read_bytes()).decode()
            server = {"server": self.secure_url, "certificate-authority-data": ca}
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "torchproof-sim",
            "clusters": [{"name": "torchproof-sim", "cluster": server}],
            "users": [{"name": "torchproof-sim", "user": {"token": token or self.admin_token}}],
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
        return await self.apply_documents(documents, str(path))

    async def apply_documents(self, documents: Sequence[Any], source: str = "manifest") -> list[Obj]:
        """Create or replace each object, as the admin; nothing changes unless every one is usable."""
        store = self.emulator.store
        plan = []
        for index, doc in enumerate(documents):  # check every document before changing anything
            where = f"{source} document {index}"
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

    @property
    def admin_token(self) -> str:
        return self.cluster.admin_token

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
