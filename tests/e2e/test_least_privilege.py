"""Least privilege, both ways: the operator, run as its ServiceAccount through everything it does, calls only
what `deploy/default` grants it, and uses every grant."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from torchproof_sim.rbac import DISCOVERY_URLS, Attributes, Call, granted, rule_allows
from torchproof_sim.simulate import NAMESPACE, simulate

from tests.support.polling import eventually
from tests.support.rig import FAST, NAME, ROOT, Rig, profile
from tests.support.scenarios import exercise_everything
from tests.support.tools import kubectl, render

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the kustomization")
Grant = tuple[str, str, str, str | None]
ACCOUNT = {"kind": "ServiceAccount", "name": "torchproof", "namespace": NAMESPACE}


def operator_rbac(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Roles and ClusterRoles that the rendered bindings give the operator's ServiceAccount."""
    bound = {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in docs
             if b["kind"] in ("RoleBinding", "ClusterRoleBinding") and ACCOUNT in b["subjects"]}
    return [d for d in docs if (d["kind"], d["metadata"]["name"]) in bound]


def covers(grant: Grant, call: Call) -> bool:
    verb, group, resource, namespace = grant
    return (verb in ("*", call.verb) and group in ("*", call.group) and resource in ("*", call.resource)
            and namespace in (None, call.namespace))


async def test_the_rbac_grants_exactly_what_the_operator_uses(env: Rig) -> None:
    rules = operator_rbac(render(ROOT / "deploy" / "default"))
    user = await exercise_everything(env)
    calls = env.cluster.access.calls_of(user)
    resource_calls = [c for c in calls if not c.resource.startswith("/")]
    grants = set(granted(rules))
    assert all(c.allowed for c in calls), [c for c in calls if not c.allowed]
    uncovered = [c for c in resource_calls if not any(covers(g, c) for g in grants)]
    assert not uncovered, f"called without a grant in deploy/rbac: {uncovered}"
    unused = sorted((g for g in grants if not any(covers(g, c) for c in resource_calls)), key=str)
    assert not unused, f"granted but never used: {unused}"
    urls = {c.resource for c in calls if c.resource.startswith("/")}
    discovery = {"verbs": ["get"], "nonResourceURLs": list(DISCOVERY_URLS)}
    assert all(rule_allows(discovery, Attributes("get", url)) for url in urls), urls  # as any user may
    events = {c.namespace for c in resource_calls if c.resource == "events"}
    assert events == {NAMESPACE}  # about a cluster-scoped profile, in the operator's own namespace


def test_the_operator_is_bound_only_to_its_own_roles() -> None:
    """So that the rules `operator_rbac` reads are all it holds: a RoleBinding to a Role of its namespace (a
    namespaced grant) and a ClusterRoleBinding to a ClusterRole (a cluster-wide one)."""
    docs = render(ROOT / "deploy" / "default")
    bindings = {(b["kind"], b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace")): b["subjects"]
                for b in docs if b["kind"] in ("RoleBinding", "ClusterRoleBinding")}
    assert bindings == {("RoleBinding", "Role", "torchproof", NAMESPACE): [ACCOUNT],
                        ("ClusterRoleBinding", "ClusterRole", "torchproof", None): [ACCOUNT]}
    assert {(d["kind"], d["metadata"].get("namespace")) for d in operator_rbac(docs)} == {
        ("Role", NAMESPACE), ("ClusterRole", None)}


async def test_kubectl_describe_finds_the_events_in_the_operators_namespace(env: Rig, tmp_path: Path) -> None:
    config = env.cluster.write_kubeconfig(tmp_path / "kubeconfig")
    async with env.operator(**FAST):
        await env.apply(profile())
        await eventually(env.converged, what="convergence")
        await eventually(lambda: env.cluster.emulator.list_objects("v1/events", NAMESPACE), what="an Event")
    assert not env.cluster.emulator.list_objects("v1/events", "default")
    described = await kubectl(config, "describe", "prp", NAME)
    events = described[described.index("Events:"):]
    assert "NodesPassed" in events and "3 node(s) passed validation" in events, described


async def test_simulate_runs_the_operator_as_its_service_account() -> None:
    report = await simulate(fleet=ROOT / "examples" / "fleet.yaml", profiles=[ROOT / "profiles" / "pytorch-20.06.yaml"],
                            timeout=60, probe_seconds=0.05)
    assert report.converged
    assert list(report.api_requests["byUser"]) == [f"system:serviceaccount:{NAMESPACE}:torchproof"]
    assert report.api_requests["denied"] == []
