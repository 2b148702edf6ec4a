"""`torchproof simulate`: the embedded cluster, a simulated GPU fleet and the real operator, in one process.

kopf and the kubernetes client talk HTTP to the embedded API server on loopback, exactly as they
would to a real one, as the ServiceAccount `deploy/rbac` creates and with only what it grants; only the
kubelet and the GPUs are simulated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import kopf
import yaml
from prometheus_client import start_http_server
from torchproof import report
from torchproof.controller import OperatorConfig, Reconciler, build_registry
from torchproof.kube import GROUP, PLURAL, VERSION, KubeApi, load_configuration
from torchproof.resources import crd_path

from torchproof_sim.cluster import EmbeddedCluster
from torchproof_sim.fleet import FleetError, load_fleet
from torchproof_sim.kubelet import SimKubelet
from torchproof_sim.rbac import kustomize_namespace, service_account_user

# Both packaged (so that `simulate` works from wheels); tests hold them equal to crds/ and deploy/rbac.
CRD_PATH = crd_path()
RBAC_PATH = Path(str(files("torchproof_sim") / "data" / "rbac"))
PROFILES = f"{GROUP}/{VERSION}/{PLURAL}"
NAMESPACE = "torchproof"
PROGRESS_SECONDS = 3.0
# Progress of long waits: on stderr through logging (its format), shown at the default level (logs.configure).
progress = logging.getLogger("torchproof.progress")


class SimulationError(Exception):
    """Bad input to `simulate`: a fleet or profile file that cannot be used."""


@dataclass
class RunningOperator:
    reconciler: Reconciler
    task: asyncio.Task[None]
    stop: asyncio.Event
    api: KubeApi
    user: str  # whom the API server sees: the operator's ServiceAccount


async def install_operator_identity(cluster: EmbeddedCluster, namespace: str = NAMESPACE) -> tuple[str, str]:
    """`deploy/rbac` moved into `namespace` as kustomize moves it, applied to the cluster; the (user, token)
    of its ServiceAccount."""
    docs = kustomize_namespace(RBAC_PATH, namespace)
    await cluster.apply_documents(docs, str(RBAC_PATH))
    (account,) = (d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
    return service_account_user(namespace, account).name, cluster.service_account_token(namespace, account)


@contextlib.asynccontextmanager
async def embedded_operator(
    cluster: EmbeddedCluster, *, namespace: str = NAMESPACE, **settings: Any
) -> AsyncIterator[RunningOperator]:
    """Run the real operator (kopf + the kubernetes client) against the embedded cluster until exit, as the
    ServiceAccount of `deploy/rbac`: a call its RBAC does not grant is refused (403), as on a real cluster."""
    user, token = await install_operator_identity(cluster, namespace)
    api = KubeApi(load_configuration(server=cluster.url, token=token))
    cfg = OperatorConfig(api=api, namespace=namespace, **settings)
    registry, reconciler = build_registry(cfg)
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(kopf.operator(
        registry=registry, standalone=True, namespaces=[namespace], stop_flag=stop, ready_flag=ready,
    ))
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()
    try:
        yield RunningOperator(reconciler, task, stop, api, user)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=15)
        await api.close()


def settled(profile: Mapping[str, Any]) -> bool:
    """Every matched node has a verdict, or waits on something that does not clear by itself."""
    meta = profile.get("metadata") or {}
    status = profile.get("status") or {}
    counts = status.get("counts") or {}
    return (
        status.get("observedGeneration") == meta.get("generation")
        and "pending" in counts
        and counts.get("pending") == counts.get("waiting", 0)
    ) or any(c.get("reason") == "InvalidSpec" for c in status.get("conditions") or [])


def progress_line(name: str, profile: Mapping[str, Any] | None) -> str:
    """How far a profile is: nodes with a verdict out of those it matches (from its status counts)."""
    counts = ((profile or {}).get("status") or {}).get("counts") or {}
    if "total" not in counts:
        return f"{name}: no status yet"
    total = int(counts["total"])
    return f"{name}: {total - int(counts.get('pending', 0))} of {total} nodes have a verdict"


async def wait_settled(cluster: EmbeddedCluster, names: Sequence[str], timeout: float,
                       every: float = PROGRESS_SECONDS) -> bool:
    """Wait until every profile settles; every `every` seconds a progress line per profile."""
    deadline = time.monotonic() + timeout
    next_progress = time.monotonic() + every
    while time.monotonic() < deadline:
        objs = [cluster.emulator.get_object(PROFILES, None, name) for name in names]
        if all(obj is not None and settled(obj) for obj in objs):
            return True
        if time.monotonic() >= next_progress:
            next_progress += every
            for name, obj in zip(names, objs, strict=True):
                progress.info("%s", progress_line(name, obj))
        await asyncio.sleep(0.1)
    return False


@dataclass
class Report:
    nodes: list[dict[str, Any]]
    profiles: list[dict[str, Any]]
    api_requests: Mapping[str, Any]
    converged: bool

    def as_json(self) -> dict[str, Any]:
        return {"converged": self.converged, **report.as_json(self.nodes, self.profiles),
                "apiRequests": dict(self.api_requests)}

    def table(self) -> str:
        total = self.api_requests.get("total", 0)
        lines = [report.table(self.nodes, self.profiles), "",
                 f"API requests: {total} {json.dumps(self.api_requests.get('byVerb', {}), sort_keys=True)}"]
        lines += [f"REFUSED (RBAC): {denied}" for denied in self.api_requests.get("denied", [])]
        if not self.converged:
            lines.append("NOT CONVERGED before the timeout")
        return "\n".join(lines)


def _by_user(cluster: EmbeddedCluster) -> dict[str, Any]:
    """Who called (the operator as its ServiceAccount), and what RBAC refused, if anything."""
    by_user: dict[str, int] = {}
    for call, count in cluster.access.calls.items():
        by_user[call.user] = by_user.get(call.user, 0) + count
    denied = [f"{c.user} {c.verb} {c.resource} in {c.namespace or 'the cluster'}" for c in cluster.access.denials()]
    return {"byUser": by_user, "denied": denied}


def _profile_names(paths: Sequence[Path]) -> list[str]:
    names = []
    for path in paths:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except (OSError, yaml.YAMLError) as exc:
            raise SimulationError(f"{path}: {exc}") from None
        for doc in docs:
            if doc.get("kind") == "PyTorchReleaseProfile":
                names.append(str((doc.get("metadata") or {}).get("name")))
    if not names:
        raise SimulationError("no PyTorchReleaseProfile in the given profile files")
    return names


async def simulate(
    *,
    fleet: Path,
    profiles: Sequence[Path],
    timeout: float = 60.0,
    serve: bool = False,
    probe_seconds: float = 0.2,
    kubeconfig: Path | None = None,
    metrics_port: int = 0,
) -> Report:
    try:
        sim_fleet = load_fleet(fleet)
    except (OSError, FleetError) as exc:
        raise SimulationError(f"{fleet}: {exc}") from None
    names = _profile_names(profiles)
    async with (
        EmbeddedCluster(crd_paths=[CRD_PATH], namespace=NAMESPACE) as cluster,
        SimKubelet(cluster.emulator, sim_fleet, probe_seconds=probe_seconds),
        embedded_operator(cluster) as op,
    ):
        with stop_on_signals() as stopped:
            for path in profiles:
                try:
                    await cluster.apply_yaml(path)
                except Exception as exc:
                    raise SimulationError(f"{path}: {exc}") from None
            converged = await until(wait_settled(cluster, names, timeout), stopped) is True
            result = Report(
                nodes=cluster.emulator.list_objects("v1/nodes"),
                profiles=[p for n in names if (p := cluster.emulator.get_object(PROFILES, None, n)) is not None],
                api_requests={**cluster.emulator.request_counts(), **_by_user(cluster)},
                converged=converged,
            )
            if serve and not stopped.is_set():
                path = cluster.write_kubeconfig(kubeconfig or Path("torchproof-sim.kubeconfig"))
                print(result.table())
                registry = op.reconciler.cfg.metrics.registry
                server, thread = start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
                try:
                    print(f"\nThe embedded cluster is up at {cluster.url}.\n  export KUBECONFIG={path}\n"
                          "  kubectl get prp; kubectl get nodes -L torchproof.dev/" + names[0] + "\n"
                          f"Metrics: http://127.0.0.1:{server.server_port}/metrics\nCtrl-C stops it.", flush=True)
                    await until(asyncio.shield(op.task), stopped)  # leaving stops the operator, uncut
                finally:
                    server.shutdown()
                    server.server_close()
                    thread.join(timeout=5)
            return result


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An Event the first SIGINT or SIGTERM sets. The handlers replace those kopf installed when the operator
    started, which would stop only the operator and leave the cluster (and a `--serve` wait) running; leaving
    `simulate` stops all of it. On exit the signals get their default handling back."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stopped.set)
    try:
        yield stopped
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def until(work: Awaitable[Any], stopped: asyncio.Event) -> Any:
    """`work`'s result, or None once `stopped` is set first (then `work` is cancelled)."""
    task, waiter = asyncio.ensure_future(work), asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    return task.result()


def parser() -> argparse.ArgumentParser:
    s = argparse.ArgumentParser(prog="torchproof simulate",
                                description="embedded cluster + simulated GPU fleet + the operator, in one process")
    s.add_argument("--fleet", required=True, help="fleet file (YAML)")
    s.add_argument("--profile", action="append", required=True, help="profile YAML (repeatable)")
    s.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for convergence")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    s.add_argument("--serve", action="store_true", help="keep the cluster up for kubectl after converging")
    s.add_argument("--kubeconfig", default=None, help="with --serve: where to write the kubeconfig")
    s.add_argument("--metrics-port", type=int, default=0,
                   help="with --serve: the loopback port of the operator's /metrics (0: any free port)")
    s.add_argument("--probe-seconds", type=float, default=0.2, help="simulated probe run time")
    return s


def main(argv: Sequence[str]) -> int:
    """`torchproof simulate ...`: the operator's CLI finds this through the `torchproof.commands` entry point,
    sets up logging (`-v`, `--log-level`, `--log-format`) and passes the rest of the arguments."""
    args = parser().parse_args(list(argv))
    try:
        result = asyncio.run(simulate(
            fleet=Path(args.fleet),
            profiles=[Path(p) for p in args.profile],
            timeout=args.timeout,
            serve=args.serve,
            probe_seconds=args.probe_seconds,
            kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
            metrics_port=args.metrics_port,
        ))
    except SimulationError as exc:
        print(f"torchproof simulate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_json(), indent=2) if args.json else result.table())
    return 0 if result.converged else 1
