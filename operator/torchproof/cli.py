"""`torchproof run | status | probe | cleanup | profile`, and `simulate` where the embedded cluster is installed."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `torchproof --version` and `probe` need none of the operator
    from torchproof.election import Timings
    from torchproof.kube import KubeApi

BUILTIN = frozenset({"run", "status", "probe", "cleanup", "profile"})


def _run(args: argparse.Namespace) -> int:
    import kopf
    from kopf._core.engines import peering  # kopf does not export its Identity type
    from prometheus_client import start_http_server

    from torchproof.connection import NoCluster, connect, until_reachable
    from torchproof.controller import OperatorConfig, build_registry
    from torchproof.election import Timings
    from torchproof.kube import KubeApi, KubeError

    timings = Timings(args.leader_elect_lease_duration, args.leader_elect_renew_deadline,
                      args.leader_elect_retry_period)
    if args.leader_elect and (problem := timings.problem()):
        return _fail("run", problem, 2)
    try:
        configuration = connect(args.kubeconfig)
    except NoCluster as exc:
        return _fail("run", f"no cluster to read: {exc}", 2)
    cfg = OperatorConfig(api=KubeApi(configuration), namespace=args.namespace)
    registry, _ = build_registry(cfg)  # kopf logs in from the adapter's Configuration: one credential path

    identity = operator_identity(os.environ)

    async def operate(stopped: asyncio.Event | None = None) -> None:
        async with cfg.api:  # closed also when kopf never starts (its cleanup handler closes it otherwise)
            await until_reachable(cfg.api.list_profiles)  # retry lines while the API server does not answer
            if args.metrics_port:
                start_http_server(args.metrics_port, addr=args.metrics_address, registry=cfg.metrics.registry)
            await kopf.operator(
                registry=registry,
                namespaces=[args.namespace],
                standalone=args.standalone or args.leader_elect,  # with a Lease, kopf's peering has nothing to add
                identity=peering.Identity(identity),
                liveness_endpoint=liveness_url(args.health_address, args.health_port),
                stop_flag=stopped,
            )

    try:
        if not args.leader_elect:
            asyncio.run(operate())
            return 0
        # The Lease has its own session: a renewal never queues behind the operator's writes for a connection.
        return asyncio.run(_lead(args, KubeApi(configuration, cfg.metrics), identity, timings, operate))
    except KubeError as exc:
        hint = " (is the CRD installed? kubectl apply -k deploy/crd)" if exc.status == 404 else ""
        return _fail("run", f"{exc}{hint}", 1)


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
        await api.close()
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
        await api.close()
    return 0


def liveness_url(address: str, port: int) -> str | None:
    """kopf's liveness endpoint (None: off); an IPv6 address goes in brackets."""
    if not port:
        return None
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/healthz"


def _fail(command: str, message: str, code: int) -> int:
    """A command's error: one line on stderr, never a traceback."""
    print(f"torchproof {command}: {' '.join(message.split())}", file=sys.stderr)
    return code


def operator_identity(environ: Mapping[str, str]) -> str:
    """Who this operator is to its peers: the pod's name (`POD_ID`, from the downward API), else host and pid.

    kopf's own fallback asks `getpass.getuser()`, which raises in an image whose user has no passwd entry.
    """
    return environ.get("POD_ID") or f"torchproof@{socket.gethostname()}/{os.getpid()}"


def _status(args: argparse.Namespace) -> int:
    """The fleet table of a live cluster, from its labels, records and profile statuses."""
    from torchproof import report
    from torchproof.connection import NoCluster, connect
    from torchproof.kube import KubeApi, KubeError

    try:
        api = KubeApi(connect(args.kubeconfig))
    except NoCluster as exc:
        return _fail("status", f"no cluster to read: {exc}", 2)

    async def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with api:
            return await api.list_nodes(), await api.list_profiles()

    try:
        nodes, profiles = asyncio.run(read())
    except KubeError as exc:
        return _fail("status", str(exc), 1)
    if args.profile:
        profiles = [p for p in profiles if (p.get("metadata") or {}).get("name") in args.profile]
    profiles.sort(key=lambda p: str((p.get("metadata") or {}).get("name")))
    print(json.dumps(report.as_json(nodes, profiles), indent=2) if args.json else report.table(nodes, profiles))
    return 0


def _probe(rest: list[str]) -> int:
    from torchproof import localprobe

    return localprobe.main(rest, own_logging=False)


def _cleanup(args: argparse.Namespace) -> int:
    """Every torchproof mark removed without the operator (docs/install.md, "Uninstall")."""
    from torchproof import cleanup
    from torchproof.connection import NoCluster, connect
    from torchproof.kube import KubeApi, KubeError

    try:
        api = KubeApi(connect(args.kubeconfig))
    except NoCluster as exc:
        return _fail("cleanup", f"no cluster to read: {exc}", 2)

    async def execute() -> tuple[list[str], str]:
        async with api:
            return await cleanup.execute(api, args.namespace, dry_run=args.dry_run, force=args.force)

    try:
        lines, summary = asyncio.run(execute())
    except cleanup.CleanupRefused as exc:
        return _fail("cleanup", str(exc), 1)
    except KubeError as exc:
        return _fail("cleanup", f"{exc} (what was done before stays done; run it again)", 1)
    prefix = "would change " if args.dry_run else ""
    print("\n".join([f"{prefix}{line}" for line in lines] + [summary]))
    return 0


def _profile(args: argparse.Namespace) -> int:
    """`profile generate`: profiles/pytorch-YY.MM.yaml from the release catalogue (docs/profile.md)."""
    from pathlib import Path

    import yaml

    from torchproof import releases

    table_path = Path(args.table)
    try:
        table = yaml.safe_load(table_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return _fail("profile", f"cannot read the catalogue {table_path}: {exc}", 2)
    wanted = releases.releases(table) if args.all else args.releases
    if not wanted:
        return _fail("profile", "name a release (YY.MM) or give --all", 2)
    try:
        texts = {releases.file_name(r): releases.profile_text(table, r) for r in wanted}
    except releases.CatalogueError as exc:
        return _fail("profile", str(exc), 2)
    if args.stdout:
        print("---\n".join(texts.values()), end="")
        return 0
    out = Path(args.out) if args.out else table_path.parent
    stale = [name for name, text in texts.items() if not (out / name).is_file()
             or (out / name).read_text(encoding="utf-8") != text]
    if args.all:
        known = set(texts)
        stale += sorted(p.name for p in out.glob("pytorch-*.yaml") if p.name not in known)
    if args.check:
        for name in stale:
            print(f"{out / name}: differs from the catalogue (run `make profiles`)", file=sys.stderr)
        return 1 if stale else 0
    for name in stale:
        if name in texts:
            (out / name).write_text(texts[name], encoding="utf-8")
        else:
            (out / name).unlink()
    print(f"{len(stale)} of {len(texts)} profile(s) written under {out}")
    return 0


def _version() -> str:
    """The installed distribution's version (pyproject.toml), as the image's label says it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchproof")
    except PackageNotFoundError:
        return "unknown (not installed)"


def plugins() -> dict[str, EntryPoint]:
    """Subcommands other distributions add (`torchproof.commands` entry points), by name, not yet imported:
    the operator never imports the simulator; `torchproof simulate` loads it only when it is the command."""
    return {ep.name: ep for ep in entry_points(group="torchproof.commands") if ep.name not in BUILTIN}


def parser() -> argparse.ArgumentParser:
    from torchproof import logs

    p = argparse.ArgumentParser(prog="torchproof", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    logs.add_arguments(p)
    logging_options = argparse.ArgumentParser(add_help=False)
    logs.add_arguments(logging_options, defaults=False)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[logging_options], **kwargs)

    run = command("run", help="run the operator against the current kubeconfig or in-cluster config")
    run.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE") or "torchproof",
                     help="where validation pods and the probe ConfigMap go (default: $POD_NAMESPACE, else torchproof)")
    run.add_argument("--kubeconfig", default=None)
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port (0: off)")
    run.add_argument("--metrics-address", default="0.0.0.0", help="address the /metrics server listens on")
    run.add_argument("--health-port", type=int, default=8081, help="kopf liveness /healthz port (0: off)")
    run.add_argument("--health-address", default="0.0.0.0", help="address the /healthz server listens on")
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

    st = command("status", help="print each profile's fleet table from a live cluster")
    st.add_argument("--kubeconfig", default=None)
    st.add_argument("--profile", action="append", help="only this profile (repeatable); default: every profile")
    st.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    for name, entry in sorted(plugins().items()):  # e.g. `simulate`, from the torchproof-sim distribution
        command(name, help=f"(from {entry.dist.name if entry.dist else entry.value}; `torchproof {name} --help`)",
                add_help=False)

    command("probe", help="run the probe here and print its findings (see `torchproof probe --help`)",
            add_help=False)

    pr = command("profile", help="release profiles from the catalogue (`torchproof profile generate 24.10`)")
    gen = pr.add_subparsers(dest="action", required=True).add_parser(
        "generate", help="write profiles/pytorch-YY.MM.yaml for these releases from profiles/releases.yaml")
    gen.add_argument("releases", nargs="*", metavar="YY.MM", help="releases to generate (or --all)")
    gen.add_argument("--all", action="store_true",
                     help="every release in the table; profiles of releases it no longer lists are removed")
    gen.add_argument("--table", default="profiles/releases.yaml", help="the catalogue (default: %(default)s)")
    gen.add_argument("--out", default=None, help="where the profiles go (default: the catalogue's directory)")
    gen.add_argument("--check", action="store_true", help="write nothing; exit 1 if a profile differs")
    gen.add_argument("--stdout", action="store_true", help="print the profiles instead of writing them")

    c = command("cleanup", help="remove every torchproof mark from nodes, and its pods, without the operator")
    c.add_argument("--kubeconfig", default=None, help="the administrator's (default: $KUBECONFIG, ~/.kube/config)")
    c.add_argument("--namespace", default="torchproof", help="the operator's namespace (default: torchproof)")
    c.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    c.add_argument("--force", action="store_true", help="even while an operator pod runs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from torchproof import logs

    argv = list(sys.argv[1:] if argv is None else argv)
    if "simulate" in argv and "simulate" not in plugins() and not {"-h", "--help"} & set(argv[:argv.index("simulate")]):
        return _fail("simulate", "the embedded cluster is not installed: pip install ./simulator (make demo does)", 2)
    p = parser()
    args, rest = p.parse_known_args(argv)
    logs.configure(args)
    if args.command == "probe":  # its own options: localprobe's parser
        return _probe(rest)
    if args.command in plugins():  # its own options too: the plugin's parser
        return int(plugins()[args.command].load()(rest))
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    commands = {"run": _run, "status": _status, "cleanup": _cleanup, "profile": _profile}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:  # Ctrl-C: stop quietly, as the shell expects
        return 130


if __name__ == "__main__":
    sys.exit(main())
