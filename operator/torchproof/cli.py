"""`torchproof run | status | simulate | probe`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `torchproof --version` and `probe` need none of the operator
    from torchproof.election import Timings
    from torchproof.kube import KubeApi


def _run(args: argparse.Namespace) -> int:
    import kopf
    from kopf._core.engines import peering  # kopf does not export its Identity type
    from prometheus_client import start_http_server

    from torchproof.controller import OperatorConfig, build_registry
    from torchproof.election import Timings
    from torchproof.kube import KubeApi, connection_info, load_api_client

    timings = Timings(args.leader_elect_lease_duration, args.leader_elect_renew_deadline,
                      args.leader_elect_retry_period)
    if args.leader_elect and (problem := timings.problem()):
        print(f"torchproof run: {problem}", file=sys.stderr)
        return 2
    api_client = load_api_client(kubeconfig=args.kubeconfig)
    cfg = OperatorConfig(api=KubeApi(api_client), namespace=args.namespace)
    registry, _ = build_registry(cfg)

    @kopf.on.login(registry=registry)
    def login(**_: object) -> kopf.ConnectionInfo:
        """kopf's watches use the credentials of the API adapter (--kubeconfig or in-cluster), not a guess."""
        return connection_info(api_client.configuration)

    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address, registry=cfg.metrics.registry)
    identity = operator_identity(os.environ)

    async def operate(stopped: asyncio.Event | None = None) -> None:
        await kopf.operator(
            registry=registry,
            namespaces=[args.namespace],
            standalone=args.standalone or args.leader_elect,  # with a Lease, kopf's peering has nothing to add
            identity=peering.Identity(identity),
            liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
            stop_flag=stopped,
        )

    if not args.leader_elect:
        asyncio.run(operate())
        return 0
    return asyncio.run(_lead(args, KubeApi(api_client, workers=2), identity, timings, operate))


async def _lead(args: argparse.Namespace, api: KubeApi, identity: str, timings: Timings,
                operate: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Wait as a standby until this replica holds the Lease, then operate while it renews it. A lost Lease ends
    the process at once, as client-go's does: another replica may be acting already. A clean stop (SIGTERM)
    releases it, so that the standby takes over at its next try."""
    from torchproof.election import Elector, standby_health

    elector = Elector(api, args.namespace, args.leader_elect_lease_name, identity, timings)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # kopf installs its own once it runs, and sees `stopped`
        loop.add_signal_handler(sig, stopped.set)
    async with standby_health(args.health_port):
        leading = await elector.acquire(stopped)
    if not leading:
        api.close()
        return 0

    def lost(task: asyncio.Task[str]) -> None:
        if not task.cancelled():
            print(f"torchproof run: lost the leader lease ({task.result()}); exiting so that only the new leader"
                  " acts", file=sys.stderr, flush=True)
            os._exit(1)

    holding = asyncio.create_task(elector.hold(), name="torchproof-lease")
    holding.add_done_callback(lost)
    try:
        await operate(stopped)
    finally:
        holding.remove_done_callback(lost)
        holding.cancel()
        await elector.release()
        api.close()
    return 0


def operator_identity(environ: Mapping[str, str]) -> str:
    """Who this operator is to its peers: the pod's name (`POD_ID`, from the downward API), else host and pid.

    kopf's own fallback asks `getpass.getuser()`, which raises in an image whose user has no passwd entry.
    """
    return environ.get("POD_ID") or f"torchproof@{socket.gethostname()}/{os.getpid()}"


def _status(args: argparse.Namespace) -> int:
    """The fleet table of a live cluster, from its labels, records and profile statuses."""
    from kubernetes.config import ConfigException

    from torchproof import report
    from torchproof.kube import KubeApi, KubeError, load_api_client

    try:
        api = KubeApi(load_api_client(kubeconfig=args.kubeconfig), workers=2)
    except ConfigException as exc:
        print(f"torchproof status: no cluster to read: {exc}", file=sys.stderr)
        return 2

    async def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await api.list_nodes(), await api.list_profiles()

    try:
        nodes, profiles = asyncio.run(read())
    except KubeError as exc:
        print(f"torchproof status: {exc}", file=sys.stderr)
        return 1
    finally:
        api.close()
    if args.profile:
        profiles = [p for p in profiles if (p.get("metadata") or {}).get("name") in args.profile]
    profiles.sort(key=lambda p: str((p.get("metadata") or {}).get("name")))
    print(json.dumps(report.as_json(nodes, profiles), indent=2) if args.json else report.table(nodes, profiles))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from torchproof import simulate as sim

    try:
        report = asyncio.run(sim.simulate(
            fleet=Path(args.fleet),
            profiles=[Path(p) for p in args.profile],
            timeout=args.timeout,
            serve=args.serve,
            probe_seconds=args.probe_seconds,
            kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        ))
    except sim.SimulationError as exc:
        print(f"torchproof simulate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_json(), indent=2) if args.json else report.table())
    return 0 if report.converged else 1


def _probe(args: argparse.Namespace, rest: list[str]) -> int:
    from torchproof import localprobe

    return localprobe.main(rest)


def _version() -> str:
    """The installed distribution's version (pyproject.toml), as the image's label says it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchproof")
    except PackageNotFoundError:
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchproof", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument("-v", "--verbose", action="store_true", help="log the operator's work")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig or in-cluster config")
    run.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE") or "torchproof",
                     help="where validation pods and the probe ConfigMap go (default: $POD_NAMESPACE, else torchproof)")
    run.add_argument("--kubeconfig", default=None)
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0: off)")
    run.add_argument("--metrics-address", default="0.0.0.0", help="address the /metrics server listens on")
    run.add_argument("--health-port", type=int, default=8081, help="kopf liveness /healthz port (0: off)")
    replicas = run.add_mutually_exclusive_group()
    replicas.add_argument("--standalone", action="store_true", help="no kopf peering (one replica only)")
    replicas.add_argument("--leader-elect", action="store_true",
                          help="act only while holding a coordination.k8s.io Lease (several replicas, one acts)")
    run.add_argument("--leader-elect-lease-name", default="torchproof-operator",
                     help="the Lease, in --namespace (default: torchproof-operator)")
    run.add_argument("--leader-elect-lease-duration", type=float, default=15.0, metavar="SECONDS",
                     help="how long a standby waits on a leader that stopped renewing (default: 15)")
    run.add_argument("--leader-elect-renew-deadline", type=float, default=10.0, metavar="SECONDS",
                     help="how long the leader tries to renew before it gives up and exits (default: 10)")
    run.add_argument("--leader-elect-retry-period", type=float, default=2.0, metavar="SECONDS",
                     help="how often the leader renews and a standby tries (default: 2)")

    st = sub.add_parser("status", help="print each profile's fleet table from a live cluster")
    st.add_argument("--kubeconfig", default=None)
    st.add_argument("--profile", action="append", help="only this profile (repeatable); default: every profile")
    st.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    s = sub.add_parser("simulate", help="embedded cluster + simulated GPU fleet + the operator, in one process")
    s.add_argument("--fleet", required=True, help="fleet file (YAML)")
    s.add_argument("--profile", action="append", required=True, help="profile YAML (repeatable)")
    s.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for convergence")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    s.add_argument("--serve", action="store_true", help="keep the cluster up for kubectl after converging")
    s.add_argument("--kubeconfig", default=None, help="with --serve: where to write the kubeconfig")
    s.add_argument("--probe-seconds", type=float, default=0.2, help="simulated probe run time")

    sub.add_parser("probe", help="run the probe here and print its findings (see `torchproof probe --help`)",
                   add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["probe"]:
        return _probe(argparse.Namespace(), argv[1:])
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("kopf").setLevel(logging.ERROR)
        logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry warnings: the command says what failed
    if args.command == "run":
        return _run(args)
    if args.command == "status":
        return _status(args)
    return _simulate(args)


if __name__ == "__main__":
    sys.exit(main())
