"""High availability: two `torchproof run --leader-elect` replicas, one acting, on a Lease (client-go's scheme).

The elector in-process first (takeover, release, loss), then two operator processes against the embedded cluster,
each as a ServiceAccount of its own with the operator's roles, so that the API server's record tells apart what
each one called: the leader is SIGKILLed mid-validation and the standby finishes the job, with no pod twice.
"""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from torchproof import cli
from torchproof.election import Elector, Timings
from torchproof.kube import KubeApi, load_configuration
from torchproof_sim.emulator import ApiFaults
from torchproof_sim.rbac import kustomize_namespace, service_account_user
from torchproof_sim.simulate import NAMESPACE, RBAC_PATH, install_operator_identity

from tests.support.polling import eventually
from tests.support.rig import Rig, profile, rig_fixture
from tests.support.tools import free_port

LEASES = "coordination.k8s.io/v1/leases"
LEASE = "torchproof-operator"
QUICK = Timings(lease_duration=2.0, renew_deadline=1.5, retry_period=0.25)
SLACK = 1.5  # seconds, for a loaded 2-core machine: requests, scheduling

T4 = {"product": "Tesla T4", "count": 1, "driver": "450.51.06"}
FLEET = [{"name": f"t4-{i}", "gpu": dict(T4)} for i in range(6)] + [
    {"name": "k80-a", "gpu": {"product": "Tesla K80", "count": 1, "driver": "450.51.06"}}]
EXPECTED = {**{f"t4-{i}": "passed" for i in range(6)}, "k80-a": "incompatible"}
slow_env = rig_fixture(FLEET, probe_seconds=1.0)


def lease(env: Rig) -> dict[str, Any]:
    return (env.cluster.emulator.get_object(LEASES, NAMESPACE, LEASE) or {}).get("spec") or {}


@pytest.fixture
async def operator_api(env: Rig) -> AsyncIterator[KubeApi]:
    """The API adapter as the operator's ServiceAccount (its Role grants the Lease)."""
    _, token = await install_operator_identity(env.cluster)
    api = KubeApi(load_configuration(server=env.cluster.url, token=token))
    yield api
    await api.close()


def elector(api: KubeApi, identity: str, timings: Timings = QUICK) -> Elector:
    return Elector(api, NAMESPACE, LEASE, identity, timings)


@pytest.mark.parametrize(("timings", "problem"), [
    (Timings(15, 10, 0), "the retry period must be positive"),
    (Timings(15, 10, -1), "the retry period must be positive"),
    (Timings(15, 2, 2), "renew deadline (2s) must be longer than the retry period (2s)"),
    (Timings(10, 10, 2), "lease duration (10s) must be longer than the renew deadline (10s)"),
    (Timings(5, 10, 2), "lease duration (5s) must be longer than the renew deadline (10s)"),
])
def test_timings_that_cannot_work_are_refused(timings: Timings, problem: str) -> None:
    assert problem in (timings.problem() or "")


@pytest.mark.parametrize(("flags", "problem"), [
    (["--leader-elect-renew-deadline=20"], "the lease duration (15.0s) must be longer than the renew deadline (20.0s)"),
    (["--leader-elect-retry-period=0"], "the retry period must be positive, not 0.0"),
])
def test_run_refuses_such_timings_before_it_calls_anything(flags: list[str], problem: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli._run(cli.parser().parse_args(["run", "--leader-elect", "--kubeconfig=/nonexistent", *flags])) == 2
    assert capsys.readouterr().err.strip() == f"torchproof run: {problem}"


def test_run_takes_standalone_or_leader_elect_not_both(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["run", "--standalone", "--leader-elect"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_client_go_defaults_work_and_state_the_takeover() -> None:
    assert Timings().problem() is None
    assert Timings().takeover_seconds == pytest.approx(17.4)


async def test_one_leads_and_a_standby_takes_over_only_when_the_lease_runs_out(operator_api: KubeApi,
                                                                              env: Rig) -> None:
    first, second = elector(operator_api, "replica-a"), elector(operator_api, "replica-b")
    assert await first.acquire(asyncio.Event())
    assert lease(env)["holderIdentity"] == "replica-a" and lease(env)["leaseDurationSeconds"] == 2
    assert not await second.try_acquire_or_renew(1.0)  # held, and renewed: the standby waits
    stopped_renewing = time.monotonic()  # the leader dies here without a word
    assert await second.acquire(asyncio.Event())
    waited = time.monotonic() - stopped_renewing
    assert QUICK.lease_duration * 0.9 <= waited <= QUICK.takeover_seconds + SLACK, waited
    assert lease(env)["holderIdentity"] == "replica-b" and lease(env)["leaseTransitions"] == 1


async def test_a_released_lease_is_taken_at_the_next_try(operator_api: KubeApi, env: Rig) -> None:
    first, second = elector(operator_api, "replica-a"), elector(operator_api, "replica-b")
    assert await first.acquire(asyncio.Event())
    standby = asyncio.create_task(second.acquire(asyncio.Event()))
    await eventually(lambda: second.holder == "replica-a", what="the standby seeing the leader")
    released = time.monotonic()
    await first.release()
    assert "holderIdentity" not in lease(env)
    assert await asyncio.wait_for(standby, timeout=QUICK.takeover_seconds)
    assert time.monotonic() - released <= QUICK.retry_period * 1.2 + SLACK
    await first.release()  # no longer its own: nothing changes
    assert lease(env)["holderIdentity"] == "replica-b"


async def test_a_standby_stops_waiting_when_told(operator_api: KubeApi) -> None:
    assert await elector(operator_api, "replica-a").acquire(asyncio.Event())
    stopped = asyncio.Event()
    standby = asyncio.create_task(elector(operator_api, "replica-b").acquire(stopped))
    await asyncio.sleep(QUICK.retry_period)
    stopped.set()
    assert not await asyncio.wait_for(standby, timeout=QUICK.retry_period * 2)


async def test_the_leader_gives_up_at_once_when_another_holds_the_lease(operator_api: KubeApi, env: Rig) -> None:
    leader = elector(operator_api, "replica-a")
    assert await leader.acquire(asyncio.Event())
    holding = asyncio.create_task(leader.hold())
    await asyncio.sleep(QUICK.retry_period * 2)
    assert not holding.done()  # renewing
    await env.cluster.emulator.patch_object(LEASES, NAMESPACE, LEASE, {"spec": {"holderIdentity": "intruder"}})
    reason = await asyncio.wait_for(holding, timeout=QUICK.retry_period + SLACK)
    assert "intruder holds the lease" in reason and not leader.leading
    await leader.release()
    assert lease(env)["holderIdentity"] == "intruder"


async def test_the_leader_gives_up_by_the_renew_deadline_when_the_api_fails(operator_api: KubeApi,
                                                                            env: Rig) -> None:
    """Before any standby may take over: it waits a whole lease duration after the last renewal."""
    leader = elector(operator_api, "replica-a")
    assert await leader.acquire(asyncio.Event())
    holding = asyncio.create_task(leader.hold())
    await asyncio.sleep(QUICK.retry_period * 2)
    env.cluster.emulator.faults = ApiFaults(rate_500=1.0, verbs=frozenset({"get", "update"}))
    renewed = time.monotonic()  # at the latest
    reason = await asyncio.wait_for(holding, timeout=QUICK.lease_duration + SLACK)
    gave_up = time.monotonic() - renewed
    env.cluster.emulator.faults = None
    assert "renew deadline" in reason
    assert gave_up < QUICK.lease_duration, gave_up


def standby_account(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """deploy/rbac's ServiceAccount and bindings under another name, bound to the same roles."""
    out = []
    for doc in copy.deepcopy(docs):
        if doc["kind"] == "ServiceAccount":
            doc["metadata"]["name"] = name
        elif doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            doc["metadata"]["name"] = name
            doc["subjects"] = [{**s, "name": name} for s in doc["subjects"]]
        else:
            continue
        out.append(doc)
    return out


class Replica:
    """One `torchproof run --leader-elect` process, as its own ServiceAccount."""

    def __init__(self, env: Rig, pod: str, kubeconfig: Path, user: str) -> None:
        self.env, self.pod, self.kubeconfig, self.user = env, pod, kubeconfig, user
        self.health_port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "torchproof.cli", "run", "--leader-elect", f"--kubeconfig={self.kubeconfig}",
            f"--namespace={NAMESPACE}", "--metrics-port=0", f"--health-port={self.health_port}",
            f"--leader-elect-lease-duration={QUICK.lease_duration}",
            f"--leader-elect-renew-deadline={QUICK.renew_deadline}",
            f"--leader-elect-retry-period={QUICK.retry_period}",
            env={**os.environ, "PYTHONUNBUFFERED": "1", "POD_ID": self.pod},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )

    def health(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            return ""

    def calls(self) -> set[tuple[str, str]]:
        return {(c.verb, c.resource) for c in self.env.cluster.access.calls_of(self.user)}

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, str]:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        output, _ = await asyncio.wait_for(self.proc.communicate(), timeout=30)
        assert self.proc.returncode is not None
        return self.proc.returncode, output.decode(errors="replace")


async def replica(env: Rig, tmp_path: Path, pod: str) -> Replica:
    account = f"operator-{pod}"
    await env.cluster.apply_documents(standby_account(kustomize_namespace(RBAC_PATH, NAMESPACE), account))
    token = env.cluster.service_account_token(NAMESPACE, account)
    config = env.cluster.write_kubeconfig(tmp_path / f"{pod}.kubeconfig", token)
    return Replica(env, pod, config, service_account_user(NAMESPACE, account).name)


@pytest.mark.slow
async def test_the_standby_takes_over_from_a_killed_leader_with_no_pod_twice(slow_env: Rig, tmp_path: Path) -> None:
    env = slow_env
    await install_operator_identity(env.cluster)  # the Roles the bindings name
    a, b = await replica(env, tmp_path, "torchproof-a"), await replica(env, tmp_path, "torchproof-b")
    replicas = [a, b]
    try:
        await a.start()
        await eventually(lambda: lease(env).get("holderIdentity") == a.pod, timeout=30, what="a leading")
        await b.start()
        await eventually(lambda: b.health() == "standby\n", timeout=30, what="b up as a standby")
        await env.apply(profile(maxConcurrent=2))
        await eventually(lambda: env.kubelet.stats.completed >= 2 and env.kubelet.stats.live.total() > 0,
                         timeout=30, what="a mid-validation: pods done and pods running")
        assert b.calls() <= {("get", "leases"), ("update", "leases")}, b.calls()  # the standby only waits
        assert ("create", "pods") in a.calls()

        killed = time.monotonic()
        code, _ = await a.stop(signal.SIGKILL)
        assert code == -signal.SIGKILL
        await eventually(lambda: lease(env).get("holderIdentity") == b.pod,
                         timeout=QUICK.takeover_seconds + SLACK, what="b taking the lease")
        assert time.monotonic() - killed <= QUICK.takeover_seconds + SLACK
        await eventually(lambda: env.converged() and all(env.label(n) == v for n, v in EXPECTED.items()),
                         timeout=60, what="convergence under the new leader")
        assert ("create", "pods") in b.calls()
        assert b.health() != "standby\n"  # kopf's own liveness endpoint now
        assert {n: env.label(n) for n in EXPECTED} == EXPECTED
        assert max(env.kubelet.stats.max_live.values()) == 1, env.kubelet.stats.max_live

        c = await replica(env, tmp_path, "torchproof-c")
        replicas.append(c)
        await c.start()
        await eventually(lambda: c.health() == "standby\n", timeout=30, what="c up as a standby")
        code, output = await b.stop()
        stopped = time.monotonic()
        assert code == 0 and "Traceback" not in output, output[-2000:]
        await eventually(lambda: lease(env).get("holderIdentity") == c.pod,
                         timeout=QUICK.retry_period * 1.2 + SLACK, what="c taking the released lease")
        assert time.monotonic() - stopped < QUICK.lease_duration  # released: not waited out
    finally:
        for r in replicas:
            if r.proc is not None and r.proc.returncode is None:
                await r.stop()


@pytest.mark.slow
async def test_a_leader_that_loses_its_lease_exits_at_once(env: Rig, tmp_path: Path) -> None:
    """And a standby stopped while it waits just exits: it holds nothing to release."""
    await install_operator_identity(env.cluster)
    a, b = await replica(env, tmp_path, "torchproof-a"), await replica(env, tmp_path, "torchproof-b")
    await a.start()
    try:
        await eventually(lambda: lease(env).get("holderIdentity") == a.pod, timeout=30, what="a leading")
        await b.start()
        await eventually(lambda: b.health() == "standby\n", timeout=30, what="b up as a standby")
        code, output = await b.stop()
        assert code == 0 and "Traceback" not in output, output[-2000:]
        assert lease(env).get("holderIdentity") == a.pod
        await env.apply(profile())
        await eventually(env.converged, timeout=60, what="convergence")
        await env.cluster.emulator.patch_object(LEASES, NAMESPACE, LEASE, {"spec": {"holderIdentity": "intruder"}})
        assert a.proc is not None
        await asyncio.wait_for(a.proc.wait(), timeout=QUICK.retry_period + SLACK)
    finally:
        code, output = await a.stop()
    assert code == 1 and "lost the leader lease (intruder holds the lease now)" in output, output[-2000:]
