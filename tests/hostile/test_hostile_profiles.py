"""Hostile profiles: each is refused with the path of the bad field, and nothing else changes.

Two gates: the CRD (schema and CEL, a 422 from the API server) and `parse_profile` (an `InvalidSpec`
condition on the profile). A profile that passes the first must still stop at the second, so
every case is also run through `parse_profile` directly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hostile_fleet import FLEET
from torchproof import labels as L
from torchproof.profile import InvalidSpec, parse_profile
from torchproof_sim.store import ApiError

from tests.support.polling import eventually
from tests.support.rig import NAME, Rig, cluster_rig, profile

Edit = Callable[[dict[str, Any]], None]


def spec(**fields: Any) -> Edit:
    return lambda body: body["spec"].update(fields)


def issue(i: int, **fields: Any) -> Edit:
    return lambda body: body["spec"]["knownIssues"][i].update(fields)


def renamed(name: str) -> Edit:
    return lambda body: body["metadata"].update(name=name)


def checks(section: str, **fields: Any) -> Edit:
    return lambda body: body["spec"]["checks"][section].update(fields)


def many_issues(body: dict[str, Any]) -> None:
    body["spec"]["knownIssues"] = [{"id": f"issue-{i}", "summary": "x" * 512} for i in range(65)]


def branch_off(body: dict[str, Any]) -> None:
    body["spec"]["requirements"]["driver"]["datacenterBranches"][0]["minimum"] = "440.30"


def cc_inverted(body: dict[str, Any]) -> None:
    body["spec"]["requirements"]["maxComputeCapability"] = "5.0"


# (case, edit, field path named by the API server's 422)
SCHEMA_REFUSED: list[tuple[str, Edit, str]] = [
    ("name too long for a label", renamed("p" * 64), "metadata.name"),
    ("issue id with a newline", issue(0, id="evil\ntorchproof.dev/x=passed"), "spec.knownIssues[0].id"),
    ("issue id with label text", issue(0, id="torchproof.dev/pytorch-20.06=passed"), "spec.knownIssues[0].id"),
    ("65 known issues", many_issues, "spec.knownIssues"),
    ("huge summary", issue(0, summary="s" * 513), "spec.knownIssues[0].summary"),
    ("maxConcurrent 10^12", spec(maxConcurrent=10**12), "spec.maxConcurrent"),
    ("maxConcurrent 0", spec(maxConcurrent=0), "spec.maxConcurrent"),
    ("negative time budget", lambda b: b["spec"]["checks"].update(timeBudgetSeconds=-1),
     "spec.checks.timeBudgetSeconds"),
    ("minSpeedup 1e308", checks("tensorCores", minSpeedup=1e308), "spec.checks.tensorCores.minSpeedup"),
    ("matmul size 2^31", checks("tensorCores", size=2**31), "spec.checks.tensorCores.size"),
    ("a string for a number", spec(maxConcurrent="10"), "spec.maxConcurrent"),
    ("image with a space", spec(image="nvcr.io/nvidia/pytorch:20.06-py3 --privileged"), "spec.image"),
    ("release as label text", spec(release="20.06\npassed"), "spec.release"),
    ("selector value with '='", spec(nodeSelector={"matchLabels": {"pool": "a=b"}}),
     "spec.nodeSelector.matchLabels.pool"),
    ("revalidateAfter garbage", spec(revalidateAfter="1 week"), "spec.revalidateAfter"),
    # CEL rules
    ("amp with nothing to run (CEL)", checks("amp", native=False, apex=False, bf16=False), "spec.checks.amp"),
    ("Exists selector with values (CEL)", spec(nodeSelector={"matchExpressions": [
        {"key": "pool", "operator": "Exists", "values": ["a"]}]}), "spec.nodeSelector.matchExpressions[0].values"),
    ("branch minimum off its branch (CEL)", branch_off, "spec.requirements.driver.datacenterBranches[0].minimum"),
    ("max below min capability (CEL)", cc_inverted, "spec.requirements.maxComputeCapability"),
    # object names (an RFC 1123 subdomain)
    ("profile name with '='", renamed("evil=passed"), "metadata.name"),
    ("profile name with upper case", renamed("Evil"), "metadata.name"),
    ("profile name with a slash", renamed("evil/passed"), "metadata.name"),
]

# What the schema lets through and the operator refuses: (case, edit, field path in InvalidSpec).
OPERATOR_REFUSED: list[tuple[str, Edit, str]] = [
    ("selector key with a space", spec(nodeSelector={"matchLabels": {"bad key": "x"}}),
     "spec.nodeSelector.matchLabels.bad key"),
    ("selector key with two slashes", spec(nodeSelector={"matchExpressions": [
        {"key": "a/b/c", "operator": "Exists"}]}), "spec.nodeSelector.matchExpressions[0].key"),
    ("selector value with a newline", spec(nodeSelector={"matchExpressions": [
        {"key": "pool", "operator": "In", "values": ["gpu\nx"]}]}),
     "spec.nodeSelector.matchExpressions[0].values[0]"),
    ("request above limit", lambda b: b["spec"]["validation"].update(
        resources={"requests": {"cpu": "4"}, "limits": {"cpu": "1"}}), "spec.validation.resources.requests.cpu"),
    ("toleration key injection", lambda b: b["spec"]["validation"].update(
        tolerations=[{"key": "a\nb", "operator": "Exists"}]), "spec.validation.tolerations[0].key"),
]


def bad(edit: Edit, name: str = NAME) -> dict[str, Any]:
    body = profile(name)
    edit(body)
    return body


@pytest.mark.parametrize("case,edit,field", SCHEMA_REFUSED + OPERATOR_REFUSED,
                         ids=[c[0] for c in SCHEMA_REFUSED + OPERATOR_REFUSED])
def test_parse_profile_names_the_bad_field(case: str, edit: Edit, field: str) -> None:
    body = bad(edit)
    before = copy.deepcopy(body)
    with pytest.raises(InvalidSpec) as refused:
        parse_profile(body)
    assert refused.value.field.startswith(field), (case, str(refused.value))
    assert body == before


@pytest.mark.parametrize("case,edit,field", SCHEMA_REFUSED, ids=[c[0] for c in SCHEMA_REFUSED])
async def test_the_api_server_refuses_with_422_and_the_path(case: str, edit: Edit, field: str) -> None:
    async with cluster_rig(FLEET) as r:
        with pytest.raises(ApiError) as refused:
            await r.apply(bad(edit))
        assert refused.value.code == 422, case
        causes = [c.get("field", "") for c in (refused.value.details or {}).get("causes", [])]
        assert any(c.startswith(field) for c in causes) or field in refused.value.message, (
            case, refused.value.message, causes)
        assert r.profiles() == []


def _invalid(r: Rig, name: str) -> dict[str, Any]:
    body = r.profile(name) or {}
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c.get("reason") == "InvalidSpec"),
                {})


async def test_profiles_the_operator_refuses_get_invalid_spec_and_label_nothing() -> None:
    names = [f"bad-{i}" for i in range(len(OPERATOR_REFUSED))]
    bodies = [bad(edit, name) for (_case, edit, _field), name in zip(OPERATOR_REFUSED, names, strict=True)]
    async with cluster_rig(FLEET) as r:
        nodes_before = r.node_snapshot()
        async with r.operator():
            for body in bodies:
                await r.apply(body)
            await r.apply(profile("good-neighbour"))
            for name, (case, _edit, field) in zip(names, OPERATOR_REFUSED, strict=True):
                condition = await eventually(lambda n=name: _invalid(r, n), what=f"InvalidSpec on {case}")
                assert condition["type"] == "Ready" and condition["status"] == "False"
                assert field in condition["message"], (case, condition["message"])
            await r.wait_converged("good-neighbour")
        assert r.kubelet.stats.max_live and all(p == "good-neighbour" for p, _ in r.kubelet.stats.max_live)
        for node, (labels, annotations) in r.node_snapshot().items():
            ours = {L.label_key("good-neighbour"), L.LEGACY_OWNED_ANNOTATION, L.result_annotation_key("good-neighbour")}
            assert {k: v for k, v in labels.items() if k not in ours} == nodes_before[node][0], node
            assert {k: v for k, v in annotations.items() if k not in ours} == nodes_before[node][1], node

