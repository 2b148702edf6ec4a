"""Authentication and RBAC in the embedded cluster: who a request is, what the stored Roles and bindings let
it do, and the answers a real API server gives when they do not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from gadgets import GROUP, PLURAL, VERSION
from torchproof_sim import BackgroundCluster
from torchproof_sim.rbac import Attributes, Call, kustomize_namespace, rule_allows, service_account_user
from torchproof_sim.simulate import RBAC_PATH

NS = "testns"
BOT = service_account_user(NS, "bot").name
ROLES: list[tuple[str, dict[str, Any]]] = [
    ("v1/serviceaccounts", {"metadata": {"name": "bot", "namespace": NS}}),
    ("rbac.authorization.k8s.io/v1/roles", {"metadata": {"name": "bot", "namespace": NS}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["mine"]},
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["patch"]}]}),
    ("rbac.authorization.k8s.io/v1/rolebindings", {
        "metadata": {"name": "bot", "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bot"},
        "subjects": [{"kind": "ServiceAccount", "name": "bot"}]}),  # no namespace: the binding's own
    ("rbac.authorization.k8s.io/v1/clusterroles", {"metadata": {"name": "node-lister"}, "rules": [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]}),
    ("rbac.authorization.k8s.io/v1/clusterrolebindings", {
        "metadata": {"name": "bot-nodes"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-lister"},
        "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": NS}]}),
    ("rbac.authorization.k8s.io/v1/clusterroles", {"metadata": {"name": "secret-reader"}, "rules": [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}),
    ("rbac.authorization.k8s.io/v1/rolebindings", {  # a ClusterRole, granted in one namespace only
        "metadata": {"name": "bot-secrets", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "secret-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": NS}]}),
]


def request(bg: BackgroundCluster, method: str, path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(bg.url + path, data, headers, method=method),
                                    timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture
def bot(background: BackgroundCluster) -> str:
    for resource, obj in ROLES:
        background.call(background.emulator.create_object(resource, obj))
    return background.cluster.service_account_token(NS, "bot")


GADGET = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/g"
ALLOWED = [  # (method, path, body, status): allowed, so the handler's answer (404: allowed, not there)
    ("GET", f"/api/v1/namespaces/{NS}/pods", None, 200),
    ("GET", f"/api/v1/namespaces/{NS}/pods/p", None, 404),
    ("GET", f"/api/v1/namespaces/{NS}/configmaps/mine", None, 404),
    ("GET", "/api/v1/nodes", None, 200),
    ("PATCH", f"{GADGET}/status", {"status": {}}, 404),
    ("GET", "/api/v1/namespaces/default/secrets/s", None, 404),
    ("GET", "/apis", None, 200),
    ("GET", f"/apis/{GROUP}/{VERSION}", None, 200),
    ("GET", "/version", None, 200),
]
DENIED = [  # (method, path, body, message of the 403)
    ("GET", "/api/v1/namespaces/default/pods", None,
     f'pods is forbidden: User "{BOT}" cannot list resource "pods" in API group "" in the namespace "default"'),
    ("POST", f"/api/v1/namespaces/{NS}/pods", {"metadata": {"name": "p"}},
     f'pods is forbidden: User "{BOT}" cannot create resource "pods" in API group "" in the namespace "{NS}"'),
    ("GET", f"/api/v1/namespaces/{NS}/configmaps/theirs", None,
     f'configmaps "theirs" is forbidden: User "{BOT}" cannot get resource "configmaps" in API group "" in the '
     f'namespace "{NS}"'),
    ("GET", f"/api/v1/namespaces/{NS}/configmaps", None,  # resourceNames grant no list
     f'configmaps is forbidden: User "{BOT}" cannot list resource "configmaps" in API group "" in the '
     f'namespace "{NS}"'),
    ("DELETE", f"/api/v1/namespaces/{NS}/pods", None,
     f'pods is forbidden: User "{BOT}" cannot deletecollection resource "pods" in API group "" in the '
     f'namespace "{NS}"'),
    ("GET", "/api/v1/nodes/n", None,
     f'nodes "n" is forbidden: User "{BOT}" cannot get resource "nodes" in API group "" at the cluster scope'),
    ("GET", "/api/v1/nodes?watch=1", None,
     f'nodes is forbidden: User "{BOT}" cannot watch resource "nodes" in API group "" at the cluster scope'),
    ("PATCH", GADGET, {"spec": {}},  # the status subresource's grant is not the object's
     f'{PLURAL}.{GROUP} "g" is forbidden: User "{BOT}" cannot patch resource "{PLURAL}" in API group "{GROUP}" '
     f'in the namespace "{NS}"'),
    ("GET", f"/api/v1/namespaces/{NS}/secrets/s", None,  # the ClusterRole is bound in "default" only
     f'secrets "s" is forbidden: User "{BOT}" cannot get resource "secrets" in API group "" in the namespace '
     f'"{NS}"'),
    ("GET", "/api/v1/namespaces/default", None,
     f'namespaces "default" is forbidden: User "{BOT}" cannot get resource "namespaces" in API group "" in the '
     'namespace "default"'),
    ("GET", "/metrics", None, f'forbidden: User "{BOT}" cannot get path "/metrics"'),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), ALLOWED)
def test_what_the_bindings_grant_is_allowed(background: BackgroundCluster, bot: str, method: str, path: str,
                                            body: Any, status: int) -> None:
    assert request(background, method, path, bot, body)[0] == status


@pytest.mark.parametrize(("method", "path", "body", "message"), DENIED)
def test_anything_else_is_forbidden_as_a_real_server_says(background: BackgroundCluster, bot: str, method: str,
                                                          path: str, body: Any, message: str) -> None:
    code, status = request(background, method, path, bot, body)
    assert (code, status["kind"], status["reason"], status["code"]) == (403, "Status", "Forbidden", 403)
    assert status["message"] == message
    assert not background.emulator.list_objects("v1/pods", NS)  # nothing changed


def test_anonymous_requests_see_only_version_and_health(background: BackgroundCluster) -> None:
    assert request(background, "GET", "/version", None)[0] == 200
    code, status = request(background, "GET", f"/api/v1/namespaces/{NS}/pods", None)
    assert (code, status["message"]) == (403, 'pods is forbidden: User "system:anonymous" cannot list resource '
                                               f'"pods" in API group "" in the namespace "{NS}"')
    assert request(background, "GET", "/apis", None) == (403, {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden",
        "message": 'forbidden: User "system:anonymous" cannot get path "/apis"', "details": {}, "code": 403})


@pytest.mark.parametrize("token", ["not-a-token", "torchproof-sim"])
def test_a_token_the_cluster_did_not_mint_is_unauthorized(background: BackgroundCluster, token: str) -> None:
    code, status = request(background, "GET", "/version", token)
    assert (code, status["reason"], status["message"]) == (401, "Unauthorized", "Unauthorized")


@pytest.mark.parametrize("authorization", ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer ", "token abc"])
def test_no_bearer_token_is_anonymous(background: BackgroundCluster, authorization: str) -> None:
    headers = {"Authorization": authorization}
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(f"{background.url}/api/v1/nodes", headers=headers), timeout=10)
    assert refused.value.code == 403
    assert json.loads(refused.value.read())["message"].startswith('nodes is forbidden: User "system:anonymous"')


def test_a_service_account_token_dies_with_its_account(background: BackgroundCluster, bot: str) -> None:
    assert request(background, "GET", f"/api/v1/namespaces/{NS}/pods", bot)[0] == 200
    background.call(background.emulator.delete_object("v1/serviceaccounts", NS, "bot"))
    assert request(background, "GET", f"/api/v1/namespaces/{NS}/pods", bot)[0] == 401


def test_the_admin_may_do_anything(background: BackgroundCluster) -> None:
    token = background.admin_token
    assert request(background, "POST", "/api/v1/nodes", token, {"metadata": {"name": "n"}})[0] == 201
    assert request(background, "DELETE", "/api/v1/namespaces/default/pods", token)[0] == 200
    assert request(background, "GET", "/metrics", token)[0] != 403


def test_every_request_is_recorded_by_user(background: BackgroundCluster, bot: str) -> None:
    request(background, "GET", f"/api/v1/namespaces/{NS}/pods", bot)
    request(background, "GET", f"/api/v1/namespaces/{NS}/pods", bot)
    request(background, "POST", f"/api/v1/namespaces/{NS}/pods", bot, {"metadata": {"name": "p"}})
    request(background, "PATCH", f"{GADGET}/status", bot, {"status": {}})
    calls = background.cluster.access.calls
    assert calls[Call(BOT, "list", "", "pods", NS, True)] == 2
    assert calls[Call(BOT, "create", "", "pods", NS, False)] == 1
    assert calls[Call(BOT, "patch", GROUP, f"{PLURAL}/status", NS, True)] == 1
    assert background.cluster.access.denials() == [Call(BOT, "create", "", "pods", NS, False)]


def _attrs(verb: str, resource: str | None = None, group: str = "", sub: str | None = None,
           name: str | None = None, path: str = "") -> Attributes:
    return Attributes(verb, path, resource, group, sub, "ns" if resource else None, name)


RULES = [  # (rule, request, allowed)
    ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, _attrs("get", "pods"), True),
    ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, _attrs("list", "pods"), False),
    ({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}, _attrs("deletecollection", "pods"), True),
    ({"apiGroups": ["apps"], "resources": ["pods"], "verbs": ["get"]}, _attrs("get", "pods"), False),
    ({"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}, _attrs("get", "pods", "x.dev"), True),
    ({"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}, _attrs("get", "pods", sub="log"), True),
    ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, _attrs("get", "pods", sub="log"), False),
    ({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}, _attrs("get", "pods"), False),
    ({"apiGroups": [""], "resources": ["*/status"], "verbs": ["patch"]}, _attrs("patch", "pods", sub="status"),
     True),
    ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["a"]},
     _attrs("get", "pods", name="a"), True),
    ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["a"]},
     _attrs("get", "pods", name="b"), False),
    ({"apiGroups": [""], "resources": ["pods"], "verbs": ["create"], "resourceNames": ["a"]},
     _attrs("create", "pods"), False),
    ({"nonResourceURLs": ["/apis/*"], "verbs": ["get"]}, _attrs("get", path="/apis/x.dev/v1"), True),
    ({"nonResourceURLs": ["/apis/*"], "verbs": ["get"]}, _attrs("get", path="/apis"), False),
    ({"nonResourceURLs": ["/version"], "verbs": ["get"]}, _attrs("post", path="/version"), False),
    ({"nonResourceURLs": ["*"], "verbs": ["get"]}, _attrs("get", "pods"), False),  # URLs grant no resources
    ({"apiGroups": [""], "resources": ["*"], "verbs": ["*"]}, _attrs("get", path="/apis"), False),
]


@pytest.mark.parametrize(("rule", "attrs", "allowed"), RULES)
def test_rule_matching(rule: dict[str, Any], attrs: Attributes, allowed: bool) -> None:
    assert rule_allows(rule, attrs) is allowed


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_as_a_service_account_is_refused_as_by_a_real_server(background: BackgroundCluster, bot: str,
                                                                      tmp_path: Path) -> None:
    config = background.cluster.write_kubeconfig(tmp_path / "kubeconfig", bot)
    done = subprocess.run(["kubectl", f"--kubeconfig={config}", "get", "pods", "-n", "default"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == (f'Error from server (Forbidden): pods is forbidden: User "{BOT}" cannot list '
                                   'resource "pods" in API group "" in the namespace "default"')
    mine = subprocess.run(["kubectl", f"--kubeconfig={config}", "get", "pods", "-n", NS],
                          capture_output=True, text=True, timeout=60)
    assert mine.returncode == 0, mine.stderr


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_deploy_rbac_moved_into_a_namespace_is_what_kustomize_renders(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": "gpu-validation", "resources": [os.path.relpath(RBAC_PATH, tmp_path)]}))
    out = subprocess.run(["kubectl", "kustomize", str(tmp_path)], check=True, capture_output=True, text=True)
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]

    def key(doc: dict[str, Any]) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    assert sorted(kustomize_namespace(RBAC_PATH, "gpu-validation"), key=key) == sorted(rendered, key=key)
