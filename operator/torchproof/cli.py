"""`torchproof run | status | simulate | probe`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _run(args: argparse.Namespace) -> int:
    import kopf
    from kopf._core.engines import peering  # kopf does not export its Identity type
    from prometheus_client import start_http_server

    from torchproof.controller import OperatorConfig, build_registry
    from torchproof.kube import KubeApi, connection_info, load_api_client

    api_client = load_api_client(kubeconfig=args.kubeconfig)
    cfg = OperatorConfig(api=KubeApi(api_client), namespace=args.namespace)
    registry, _ = build_registry(cfg)

    @kopf.on.login(registry=registry)
    def login(**_: object) -> kopf.ConnectionInfo:
        """kopf's watches use the credentials of the API adapter (--kubeconfig or in-cluster), not a guess."""
        return connection_info(api_client.configuration)

    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_address, registry=cfg.metrics.registry)
    asyncio.run(kopf.operator(
        registry=registry,
        namespaces=[args.namespace],
        standalone=args.standalone,
        identity=peering.Identity(operator_identity(os.environ)),
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
    ))
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchproof", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log the operator's work")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig or in-cluster config")
    run.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE") or "torchproof",
                     help="where validation pods and the probe ConfigMap go (default: $POD_NAMESPACE, else torchproof)")
    run.add_argument("--kubeconfig", default=None)
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0: off)")
    run.add_argument("--metrics-address", default="0.0.0.0", help="address the /metrics server listens on")
    run.add_argument("--health-port", type=int, default=8081, help="kopf liveness /healthz port (0: off)")
    run.add_argument("--standalone", action="store_true", help="no kopf peering (one replica only)")

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
