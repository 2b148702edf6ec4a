"""One rig for the tests that run the operator: the embedded cluster, the simulated kubelet and fleet, and the
real operator (kopf + the kubernetes client over HTTP, as the ServiceAccount of deploy/rbac) in one of two
modes: in the test's event loop (`simulate.embedded_operator`), or in a thread of its own (`OperatorThread`),
as a separate process would run, so that killing it cannot reach the kubelet's pods."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from torchproof import labels as L
from torchproof.controller import OperatorConfig, build_registry
from torchproof.kube import KubeApi, load_configuration
from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.fleet import parse_fleet
from torchproof_sim.kubelet import SimKubelet
from torchproof_sim.simulate import CRD_PATH, NAMESPACE, PROFILES, embedded_operator, install_operator_identity, settled

from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
PROFILE = yaml.safe_load((ROOT / "profiles" / "pytorch-20.06.yaml").read_text())
NAME = PROFILE["metadata"]["name"]
KEY = L.label_key(NAME)
FAST: dict[str, Any] = {"batch_window": 0.02, "status_interval": 0.2}
# error_backoff short as well, so that a failed pass is retried within a test's deadline (2 s in production).
SETTINGS: dict[str, Any] = {**FAST, "error_backoff": 0.2}

MIXED_FLEET: list[dict[str, Any]] = [
    {"name": "t4-a", "gpu": {"product": "Tesla T4", "count": 4, "driver": "418.87.01"}},
    {"name": "v100-a", "gpu": {"product": "Tesla V100-SXM2-16GB", "count": 8, "driver": "450.51.06"}},
    {"name": "k80-a", "gpu": {"product": "Tesla K80", "count": 4, "driver": "450.51.06"}},
    {"name": "rtx-a", "gpu": {"product": "GeForce RTX 2080 Ti", "count": 1, "driver": "440.100"}},
    {"name": "hidden-v100", "gfd": False,
     "gpu": {"product": "Tesla V100-SXM2-16GB", "count": 1, "driver": "450.51.06"}},
    {"name": "cpu-1", "labels": {"team": "web"}},
]


def profile(name: str = NAME, **spec: Any) -> dict[str, Any]:
    """The shipped 20.06 profile under `name`, with `spec` fields replaced."""
    body = copy.deepcopy(PROFILE)
    body["metadata"]["name"] = name
    body["spec"].update(spec)
    return body


def condition(body: Mapping[str, Any] | None, type_: str) -> dict[str, Any]:
    """A profile's status condition of `type_` ({} when it has none)."""
    conditions = ((body or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


def converged(body: Mapping[str, Any] | None) -> bool:
    """The one definition the tests wait on: the profile has `settled` (`torchproof simulate`'s own test:
    every matched node has a verdict or waits on something that does not clear by itself) and its status
    carries the Ready condition a user reads."""
    return body is not None and settled(body) and bool(condition(body, "Ready"))


def assert_nothing_denied(cluster: EmbeddedCluster) -> None:
    """No request was refused: the operator's RBAC covered every call it made (and the admin's too)."""
    denied = [f"{c.user} {c.verb} {c.resource}{'.' + c.group if c.group else ''} in {c.namespace or 'the cluster'}"
              for c in cluster.access.denials()]
    assert not denied, f"refused requests: {denied}"


class OperatorThread:
    """The real operator (`build_registry`, kopf, the kubernetes client) in its own thread and event loop.

    As a separate process would be: `kill()` cancels it mid-request and mid-pass, and kopf's shutdown,
    which cancels every task its loop started after it, cannot reach the simulated kubelet's pods.
    (`simulate.embedded_operator` shares the test's loop, so a cancelled operator there also ends
    every pod the kubelet is playing.)
    """

    def __init__(self, url: str, token: str, namespace: str = NAMESPACE, **settings: Any) -> None:
        self.url = url
        self.token = token
        self.namespace = namespace
        self.settings = settings
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    async def start(self) -> None:
        self._thread.start()
        if not await asyncio.to_thread(self.ready.wait, 20):
            raise AssertionError(f"the operator did not start: {self.error!r}")

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._operate())
        finally:
            loop.run_until_complete(self._wind_down())
            loop.close()

    @staticmethod
    async def _wind_down() -> None:
        """As asyncio.run ends, but without waiting for executor threads that may block in a read:
        every task ends and every transport closes, so the API server sees the connections go."""
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.get_running_loop().shutdown_asyncgens()
        await asyncio.sleep(0.05)

    async def _operate(self) -> None:
        api = KubeApi(load_configuration(server=self.url, token=self.token))
        registry, _ = build_registry(OperatorConfig(api=api, namespace=self.namespace, **self.settings))
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        try:
            await kopf.operator(registry=registry, standalone=True, namespaces=[self.namespace],
                                stop_flag=self.stopping, ready_flag=self.ready)
        except Exception as exc:
            self.error = exc
            raise
        finally:
            await api.close()

    async def kill(self) -> None:
        """Cancel the operator where it stands (mid-request, mid-pass), not a graceful stop."""
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        await asyncio.to_thread(self._thread.join, 20)

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.to_thread(self._thread.join, 20)
        if self._thread.is_alive():
            raise AssertionError("the operator did not stop within 20 s")


@dataclass
class Rig:
    """The embedded cluster and its kubelet, read as the tests read them; the operator is started on demand."""

    cluster: EmbeddedCluster
    kubelet: SimKubelet

    @property
    def emulator(self) -> Any:
        return self.cluster.emulator

    def node(self, name: str) -> dict[str, Any]:
        obj = self.emulator.get_object("v1/nodes", None, name)
        assert obj is not None, name
        return obj

    def nodes(self) -> list[dict[str, Any]]:
        return self.emulator.list_objects("v1/nodes")

    def label(self, node: str, key: str = KEY) -> str | None:
        return (self.node(node)["metadata"].get("labels") or {}).get(key)

    def labels(self, name: str = NAME) -> dict[str, str | None]:
        """Each node's label of profile `name` (None where it has none)."""
        key = L.label_key(name)
        return {n["metadata"]["name"]: (n["metadata"].get("labels") or {}).get(key) for n in self.nodes()}

    def node_snapshot(self) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
        """Each node's labels and annotations."""
        return {n["metadata"]["name"]: (dict(n["metadata"].get("labels") or {}),
                                        dict(n["metadata"].get("annotations") or {}))
                for n in self.nodes()}

    def profile(self, name: str = NAME) -> dict[str, Any] | None:
        return self.emulator.get_object(PROFILES, None, name)

    def profiles(self) -> list[dict[str, Any]]:
        return self.emulator.list_objects(PROFILES)

    def status(self, name: str = NAME) -> dict[str, Any]:
        return (self.profile(name) or {}).get("status") or {}

    def condition(self, type_: str, name: str = NAME) -> dict[str, Any]:
        return condition(self.profile(name), type_)

    def pods(self) -> list[dict[str, Any]]:
        return self.emulator.list_objects("v1/pods", NAMESPACE)

    def converged(self, name: str = NAME) -> bool:
        return converged(self.profile(name))

    async def wait_converged(self, name: str = NAME, timeout: float = 20.0) -> None:
        """Converged, and every validation pod gone."""
        await eventually(lambda: self.converged(name) and not self.pods(), f"{name} to converge", timeout)

    async def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.emulator.create_object(PROFILES, copy.deepcopy(dict(body)))

    @contextlib.asynccontextmanager
    async def operator(self, *, threaded: bool = False, **settings: Any) -> AsyncIterator[Any]:
        """The operator with `SETTINGS` (or `settings`): in this event loop (a `RunningOperator`), or with
        `threaded`, in a thread of its own (an `OperatorThread`, which a test may `kill()`)."""
        settings = settings or SETTINGS
        if not threaded:
            async with embedded_operator(self.cluster, **settings) as running:
                yield running
            return
        _, token = await install_operator_identity(self.cluster, NAMESPACE)  # as deployed: its ServiceAccount
        op = OperatorThread(self.cluster.url, token, NAMESPACE, **settings)
        await op.start()
        try:
            yield op
        finally:
            await op.stop()

    async def operator_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig with the operator's ServiceAccount token (deploy/rbac installed), for `torchproof run`
        as a process, where a pod would find its ServiceAccount's token."""
        _, token = await install_operator_identity(self.cluster)
        return self.cluster.write_kubeconfig(path, token)


@contextlib.asynccontextmanager
async def cluster_rig(nodes: list[dict[str, Any]], *, probe_seconds: float = 0.05) -> AsyncIterator[Rig]:
    """The embedded cluster with the CRD installed and a kubelet playing `nodes` (fleet entries)."""
    fleet = parse_fleet({"nodes": copy.deepcopy(nodes)})
    async with (
        EmbeddedCluster(crd_paths=[CRD_PATH], namespace=NAMESPACE) as cluster,
        SimKubelet(cluster.emulator, fleet, probe_seconds=probe_seconds) as kubelet,
    ):
        yield Rig(cluster, kubelet)


def rig_fixture(nodes: list[dict[str, Any]] | None = None, probe_seconds: float = 0.05) -> Callable[..., Any]:
    """A fixture of a `Rig` over `nodes` (or over the `fleet_nodes` fixture, for tests that parametrize it),
    which fails the test at teardown if any request was refused (401, 403)."""
    if nodes is not None:
        fixed = nodes

        @pytest.fixture
        async def fixed_rig() -> AsyncIterator[Rig]:
            async with cluster_rig(fixed, probe_seconds=probe_seconds) as rig:
                yield rig
                assert_nothing_denied(rig.cluster)

        return fixed_rig

    @pytest.fixture
    async def fleet_rig(fleet_nodes: list[dict[str, Any]]) -> AsyncIterator[Rig]:
        async with cluster_rig(fleet_nodes, probe_seconds=probe_seconds) as rig:
            yield rig
            assert_nothing_denied(rig.cluster)

    return fleet_rig
